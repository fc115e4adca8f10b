"""`cryowarp simulate ...`: options reach the settings, files are valid, previews are written."""

from __future__ import annotations

import json

import mrcfile
import starfile
from typer.testing import CliRunner

from cryowarp.cli.main import app


def test_simulate_movie_command_writes_valid_files(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "movie",
            "-o",
            str(tmp_path),
            "--shape-yx",
            "128",
            "160",
            "--n-frames",
            "3",
            "--particle-models",
            "none",
            "--protein-kinds",
            "ring",
            "--protein-masses-kda",
            "120",
            "--exposure-per-frame-e-per-a2",
            "1.5",
            "--pixel-size-a",
            "1.3",
            "--seed",
            "4",
            "--device",
            "cpu",
            "--stem",
            "m",
            "--formats",
            "mrc",
        ],
    )
    assert result.exit_code == 0, result.output
    with mrcfile.open(tmp_path / "m.mrc") as mrc:
        assert mrc.data.shape == (3, 128, 160)
        assert abs(float(mrc.voxel_size.x) - 1.3) < 1e-4
    assert mrcfile.validate(str(tmp_path / "m.mrc"))
    truth = json.loads((tmp_path / "m_truth.json").read_text())
    assert truth["settings"]["exposure_per_frame_e_per_a2"] == 1.5
    assert truth["settings"]["particle_models"] == [] and truth["settings"]["protein_kinds"] == ["ring"]
    assert truth["seed"] == 4
    motion = starfile.read(tmp_path / "m_motion.star")
    assert len(motion["global_shift"]) == 3
    for png in ("m_sum.png", "m_clean.png", "m_motion.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "m.tif").exists()


def test_simulate_micrograph_and_bad_option(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "simulate",
            "micrograph",
            "-o",
            str(tmp_path),
            "--shape-yx",
            "192",
            "192",
            "--particle-models",
            "none",
            "--protein-kinds",
            "rod",
            "--carbon-edge",
            "--no-plots",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    particles = starfile.read(tmp_path / "micrograph_particles.star")
    assert set(particles) == {"optics", "particles"}
    with mrcfile.open(tmp_path / "micrograph_mask.mrc") as mrc:
        assert mrc.data.max() == 1  # the carbon edge is masked
    bad = runner.invoke(app, ["simulate", "micrograph", "-o", str(tmp_path), "--amplitude-contrast", "1.5"])
    assert bad.exit_code != 0
    assert "amplitude_contrast" in bad.output


def test_simulate_tilt_series_and_session_commands(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "simulate",
            "tilt-series",
            "-o",
            str(tmp_path / "ts"),
            "--shape-yx",
            "96",
            "96",
            "--pixel-size-a",
            "5",
            "--tilt-min-deg",
            "-20",
            "--tilt-max-deg",
            "20",
            "--tilt-step-deg",
            "10",
            "--particle-models",
            "none",
            "--protein-kinds",
            "globule",
            "--protein-masses-kda",
            "300",
            "--ice-thickness-a",
            "400",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ts" / "tilt_series.tlt").read_text().split() == [
        "-20.00",
        "-10.00",
        "0.00",
        "10.00",
        "20.00",
    ]
    with mrcfile.open(tmp_path / "ts" / "tilt_series.mrc") as mrc:
        assert mrc.data.shape == (5, 96, 96)
    assert (tmp_path / "ts" / "tilt_series_0deg.png").exists()
    result = runner.invoke(
        app,
        [
            "simulate",
            "session",
            "-o",
            str(tmp_path / "s"),
            "--n-movies",
            "2",
            "--shape-yx",
            "64",
            "64",
            "--n-frames",
            "2",
            "--particle-models",
            "none",
            "--protein-kinds",
            "rod",
            "--protein-masses-kda",
            "60",
            "--defocus-min-um",
            "1.0",
            "--defocus-max-um",
            "1.2",
            "--movie-format",
            "mrc",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "s" / "session.json").read_text())
    assert [m["path"] for m in record["movies"]] == ["movie_0000.mrc", "movie_0001.mrc"]
    assert all(1.0 <= m["defocus_um"] <= 1.2 for m in record["movies"])
