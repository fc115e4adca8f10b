"""`cryowarp match2d` / `match3d` end to end: MRC in, RELION STAR + peaks JSON + maps out."""

from __future__ import annotations

import json

import mrcfile
import pytest
import torch
from tests.templates._synthetic import blob_cluster, blob_volume, planted_micrograph
from typer.testing import CliRunner

from cryowarp.cli.main import app
from cryowarp.cli.match import map_from_atomic_model
from cryowarp.io.mrc import write_mrc
from cryowarp.io.star import read_star
from cryowarp.templates import TemplateMatches, estimate_diameter_a

COORDS_XY = [(70.0, 80.0), (180.0, 95.0), (120.0, 185.0)]
EULER_DEG = [(30.0, 60.0, 100.0), (200.0, 120.0, 10.0), (300.0, 20.0, 250.0)]


def test_match2d_cli_writes_relion_star_and_all_peaks(tmp_path):
    blobs = blob_cluster()
    image = planted_micrograph(blobs, (256, 256), COORDS_XY, EULER_DEG, 4.0, noise_to_signal=1.0)
    write_mrc(tmp_path / "mic.mrc", image, 4.0)
    write_mrc(tmp_path / "ref.mrc", blob_volume(blobs, 48, 4.0), 4.0)
    out = tmp_path / "matches"
    result = CliRunner().invoke(
        app,
        [
            "match2d",
            str(tmp_path / "mic.mrc"),
            "--template",
            str(tmp_path / "ref.mrc"),
            "--defocus",
            "1.5",
            "--angular-step",
            "30",
            "--diameter",
            "150",
            "--threshold",
            "12",
            "-o",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    table = read_star(out / "mic_matches.star")["particles"]
    assert list(table.columns) == [
        "rlnMicrographName",
        "rlnCoordinateX",
        "rlnCoordinateY",
        "rlnAngleRot",
        "rlnAngleTilt",
        "rlnAnglePsi",
        "rlnAutopickFigureOfMerit",
    ]
    assert (table["rlnAutopickFigureOfMerit"] > 12).all()
    # the best match is a planted particle (at 30° sampling, within 1.5 px)
    best = table.sort_values("rlnAutopickFigureOfMerit", ascending=False).iloc[0]
    truth = torch.tensor(COORDS_XY)
    assert (truth - torch.tensor([best["rlnCoordinateX"], best["rlnCoordinateY"]])).norm(dim=1).min() < 1.5
    # every peak above the floor is kept in the JSON, so other thresholds need no recomputation
    peaks = TemplateMatches.from_dict(json.loads((out / "mic_peaks.json").read_text()))
    assert len(peaks) > len(table)
    assert len(peaks.above(12.0)) == len(table)
    with mrcfile.open(out / "mic_scores.mrc", permissive=False) as mrc:
        assert mrc.data.shape == (256, 256)
    assert (out / "mic_scores.png").stat().st_size > 1000


def test_match2d_cli_needs_a_pixel_size(tmp_path):
    write_mrc(tmp_path / "mic.mrc", torch.zeros(64, 64), None)
    write_mrc(tmp_path / "ref.mrc", torch.zeros(8, 8, 8), 1.0)
    result = CliRunner().invoke(
        app,
        [
            "match2d",
            str(tmp_path / "mic.mrc"),
            "--template",
            str(tmp_path / "ref.mrc"),
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0
    assert "--pixel-size" in result.output


def test_map_from_atomic_model_of_beta_galactosidase(shared_data):
    # 5a1a (β-galactosidase, D2 tetramer, ~465 kDa): density positive relative to ice, the largest
    # extent 170–200 Å (the tetramer is about 175 × 135 × 95 Å; the estimate adds a voxel + threshold)
    volume = map_from_atomic_model(shared_data / "pdb/5a1a.cif", 8.0)
    assert volume.sum() > 0
    assert volume.max() > 3 * (-volume.min())  # measured 4.3× at 8 Å/voxel (ringing of the solvent term)
    assert 170.0 < estimate_diameter_a(volume, 8.0) < 215.0


def test_match3d_cli_writes_voxel_coordinates(tmp_path):
    tomo = torch.randn(24, 48, 48, generator=torch.Generator().manual_seed(0))
    write_mrc(tmp_path / "tomo.mrc", tomo, 10.0)
    write_mrc(tmp_path / "ref.mrc", blob_volume(blob_cluster(), 16, 10.0), 10.0)
    out = tmp_path / "m3"
    result = CliRunner().invoke(
        app,
        [
            "match3d",
            str(tmp_path / "tomo.mrc"),
            "--template",
            str(tmp_path / "ref.mrc"),
            "--tilt-angles",
            "-60:60:6",
            "--defocus",
            "3",
            "--angular-step",
            "60",
            "--diameter",
            "130",
            "-o",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    table = read_star(out / "tomo_matches.star")["particles"]
    assert {"rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"} <= set(table.columns)
    assert table["rlnCoordinateZ"].between(0, 24).all() and table["rlnCoordinateX"].between(0, 48).all()


@pytest.mark.parametrize("spec", ["-60:60", "abc"])
def test_match3d_cli_rejects_bad_tilt_angles(tmp_path, spec):
    write_mrc(tmp_path / "tomo.mrc", torch.zeros(8, 16, 16), 10.0)
    result = CliRunner().invoke(
        app,
        [
            "match3d",
            str(tmp_path / "tomo.mrc"),
            "--template",
            str(tmp_path / "tomo.mrc"),
            "--tilt-angles",
            spec,
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0


def test_load_template_reads_real_emdb_maps(shared_data):
    from cryowarp.cli.match import load_template

    # EMD-3197: 20³ at 11.4 Å; EMD-3001: 25 × 43 × 73 (x, y, z) non-cubic, padded to a 73³ cube
    volume, voxel_a = load_template(shared_data / "mrcfile/EMD-3197.map", 5.0)
    assert volume.shape == (20, 20, 20) and voxel_a == pytest.approx(11.4, abs=0.01)
    volume, voxel_a = load_template(shared_data / "mrcfile/EMD-3001.map", 1.0)
    assert volume.shape == (73, 73, 73)
    assert voxel_a == pytest.approx(0.448, abs=0.01)
