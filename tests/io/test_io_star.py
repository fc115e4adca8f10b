"""STAR files: every real STAR under ../shared/data round-trips; RELION 3.0/3.1/5 and cryoSPARC particles;
our-name ↔ RELION-name conversions (CTF, motion); bad files; RELION itself reads what we write."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.conftest import SHARED_DATA

from cryowarp.io.errors import CorruptFileError, TruncatedFileError
from cryowarp.io.star import (
    ctf_to_star_row,
    micrographs_star_tables,
    motion_to_star_tables,
    parse_relion_image_name,
    particles_star_tables,
    read_cryosparc_cs,
    read_particles,
    read_star,
    relion_image_name,
    star_flavour,
    star_row_to_ctf,
    star_tables_to_motion,
    write_star,
)

ALL_STAR = sorted(SHARED_DATA.rglob("*.star")) if SHARED_DATA.is_dir() else []


def test_the_shared_data_has_the_star_files_we_expect():
    # 54 STAR files in ../shared/data (MANIFEST.md); a smaller number means the glob broke
    assert len(ALL_STAR) >= 50


@pytest.mark.parametrize("path", ALL_STAR, ids=lambda p: str(p.relative_to(SHARED_DATA)))
def test_every_real_star_file_round_trips(path, tmp_path):
    tables = read_star(path)
    assert tables, f"{path} gave no blocks"
    out = write_star(tmp_path / "copy.star", tables)
    back = read_star(out)
    assert list(back) == list(tables)
    for name in tables:
        assert back[name].attrs.get("star_pairs", False) == tables[name].attrs.get("star_pairs", False), name
        pd.testing.assert_frame_equal(back[name], tables[name], check_dtype=False)


def test_key_value_blocks_stay_key_value(shared_data, tmp_path):
    # RELION's per-movie motion STAR: data_general is a key-value block, global_shift a loop
    tables = read_star(shared_data / "em-testdata/metadata/movie_frameImage.star")
    assert tables["general"].attrs["star_pairs"] and len(tables["general"]) == 1
    text = write_star(tmp_path / "m.star", tables).read_text()
    general = text.split("data_general", 1)[1].split("data_", 1)[0]
    assert "loop_" not in general and "_rlnImageSizeX" in general
    assert text.lstrip().startswith("# version 30001")


@pytest.mark.parametrize(
    "rel, flavour",
    [
        ("cryodrgn/relion5.star", "relion5"),
        ("cryodrgn/relion31.star", "relion3.1"),
        ("cryodrgn/FinalRefinement-OriginalParticles-PfCRT.star", "relion3.0"),
        ("starfile/postprocess.star", "other"),
    ],
)
def test_flavour(shared_data, rel, flavour):
    assert star_flavour(shared_data / rel) == flavour


def test_relion30_and_cryosparc_give_the_same_particles(shared_data):
    # ../shared/data/cryodrgn/empiar_10076_7.{star,cs}: the same 7 particles in two formats
    star = read_particles(shared_data / "cryodrgn/empiar_10076_7.star")
    cs = read_particles(shared_data / "cryodrgn/empiar_10076_7.cs")
    # RELION 3.0: pixel = 5 µm detector pixel / 38168 magnification = 1.30999 Å
    assert star.optics["rlnImagePixelSize"].item() == pytest.approx(5 / 38168 * 1e4, rel=1e-9)
    assert cs.optics["rlnImagePixelSize"].item() == pytest.approx(1.31, abs=1e-5)
    assert cs.optics["rlnImageSize"].item() == 320
    for col in ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"):
        assert star.optics[col].item() == pytest.approx(cs.optics[col].item(), rel=1e-6)
    # float32 in the .cs file: ~1e-3 Å on 15000 Å
    np.testing.assert_allclose(cs.particles["rlnDefocusU"], star.particles["rlnDefocusU"], atol=5e-3)
    np.testing.assert_allclose(cs.particles["rlnDefocusV"], star.particles["rlnDefocusV"], atol=5e-3)
    np.testing.assert_allclose(cs.particles["rlnDefocusAngle"], star.particles["rlnDefocusAngle"], atol=1e-4)
    star_idx = [parse_relion_image_name(n)[0] for n in star.particles["rlnImageName"]]
    cs_idx = [parse_relion_image_name(n)[0] for n in cs.particles["rlnImageName"]]
    assert star_idx == cs_idx == list(range(7))


def test_cryosparc_export_with_3d_alignments(shared_data):
    tables = read_cryosparc_cs(shared_data / "cryodrgn/cryosparc_P12_J24_001_particles.cs")
    assert len(tables.particles) == 2019
    optics = tables.optics.iloc[0]
    assert (optics["rlnVoltage"], optics["rlnSphericalAberration"], optics["rlnImageSize"]) == (
        200.0,
        2.0,
        180,
    )
    assert optics["rlnImagePixelSize"] == pytest.approx(2.95, rel=1e-6)
    first = tables.particles.iloc[0]
    # first record: df1 45591.37 Å, angle −1.3636 rad, shift (11.334, −1.828) px at 2.95 Å
    assert first["rlnDefocusU"] == pytest.approx(45591.37, abs=0.01)
    assert first["rlnDefocusAngle"] == pytest.approx(np.degrees(-1.3636448), abs=1e-4)
    assert first["rlnOriginXAngst"] == pytest.approx(11.334375 * 2.95, rel=1e-5)
    assert first["rlnImageName"].startswith("0000001@J19/extract/")


def test_relion30_with_several_columns_gives_one_optics_group(shared_data):
    # ../shared/data/topaz/EMPIAR-10025/particles.star: 1500 particles, detector 3.7333 µm / mag 38023
    tables = read_particles(shared_data / "topaz/EMPIAR-10025/particles.star")
    assert len(tables.optics) == 1 and len(tables.particles) == 1500
    assert tables.optics["rlnImagePixelSize"].item() == pytest.approx(3.733333 / 38023 * 1e4, rel=1e-6)
    assert (tables.particles["rlnOpticsGroup"] == 1).all()
    assert "rlnVoltage" not in tables.particles.columns


def test_two_optics_groups_are_kept(shared_data):
    # ../shared/data/aspire/sample_particles_relion31.star: hand-edited second group at 200 kV
    tables = read_particles(shared_data / "aspire/sample_particles_relion31.star")
    assert list(tables.optics["rlnVoltage"]) == [300.0, 200.0]
    assert set(tables.particles["rlnOpticsGroup"]) == {1, 2}


def test_ctf_row_conversion():
    # D = 1.5 µm, Δ = 0.2 µm → U = 1.6 µm = 16000 Å, V = 14000 Å (warp-facts §0)
    row = ctf_to_star_row(
        {
            "defocus_um": 1.5,
            "defocus_delta_um": 0.2,
            "astigmatism_angle_deg": 30.0,
            "phase_shift_deg": 45.0,
            "resolution_a": 3.2,
            "voltage_kv": 300.0,
        }
    )
    assert row["rlnDefocusU"] == pytest.approx(16000.0)
    assert row["rlnDefocusV"] == pytest.approx(14000.0)
    assert row["rlnDefocusAngle"] == 30.0 and row["rlnPhaseShift"] == 45.0
    assert row["rlnCtfMaxResolution"] == 3.2 and row["rlnVoltage"] == 300.0
    back = star_row_to_ctf(row)
    assert back["defocus_um"] == pytest.approx(1.5) and back["defocus_delta_um"] == pytest.approx(0.2)
    # a negative delta means V > U: swap, so that U ≥ V, and turn the angle by 90°
    row = ctf_to_star_row({"defocus_um": 1.5, "defocus_delta_um": -0.2, "astigmatism_angle_deg": 30.0})
    assert row["rlnDefocusU"] == pytest.approx(16000.0) and row["rlnDefocusAngle"] == pytest.approx(120.0)


def test_particles_tables_have_relion31_columns_and_units(tmp_path):
    coords = np.array([[100.0, 200.0], [300.5, 50.25]])
    tables = particles_star_tables(
        image_names=[relion_image_name(i, "particles/m1.mrcs") for i in range(2)],
        micrograph_names="m1.mrc",
        coords_px_xy=coords,
        pixel_size_a=1.2,
        box_size_px=128,
        voltage_kv=300.0,
        cs_mm=2.7,
        amplitude_contrast=0.07,
        defocus_u_um=[1.6, 2.0],
        defocus_v_um=[1.4, 1.9],
        astigmatism_angle_deg=12.0,
        scores=[0.9, 0.5],
    )
    assert list(tables["optics"].columns) == [
        "rlnOpticsGroupName",
        "rlnOpticsGroup",
        "rlnVoltage",
        "rlnSphericalAberration",
        "rlnAmplitudeContrast",
        "rlnImagePixelSize",
        "rlnImageSize",
        "rlnImageDimensionality",
    ]
    path = write_star(tmp_path / "particles.star", tables)
    back = read_particles(path)
    assert back.particles["rlnImageName"].tolist() == [
        "0000001@particles/m1.mrcs",
        "0000002@particles/m1.mrcs",
    ]
    np.testing.assert_allclose(back.particles[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(), coords)
    np.testing.assert_allclose(back.particles["rlnDefocusU"], [16000.0, 20000.0])
    np.testing.assert_allclose(back.particles["rlnDefocusV"], [14000.0, 19000.0])
    assert back.optics["rlnImageSize"].item() == 128


def test_micrographs_tables_with_ctf():
    tables = micrographs_star_tables(
        ["a.mrc", "b.mrc"],
        pixel_size_a=0.885,
        voltage_kv=200.0,
        cs_mm=1.4,
        amplitude_contrast=0.1,
        ctf=[{"defocus_um": 1.0, "defocus_delta_um": 0.1, "astigmatism_angle_deg": 5.0, "resolution_a": 4.0}]
        * 2,
        metadata_names=["a.star", "b.star"],
    )
    mics = tables["micrographs"]
    assert mics["rlnDefocusU"].tolist() == pytest.approx([10500.0] * 2)
    assert mics["rlnCtfAstigmatism"].tolist() == pytest.approx([1000.0] * 2)
    assert tables["optics"]["rlnMicrographPixelSize"].item() == 0.885
    with pytest.raises(ValueError, match="expected 2 models"):
        micrographs_star_tables(
            ["a.mrc", "b.mrc"],
            pixel_size_a=1,
            voltage_kv=300,
            cs_mm=2.7,
            amplitude_contrast=0.1,
            ctf=[{"defocus_um": 1.0}],
        )


def test_motion_shift_sign_and_round_trip(tmp_path):
    # displacement d = (y 0.5, x −1.0) Å at 0.5 Å/px → RELION shift = −d/px = (x +2, y −1) px
    disp = np.array([[0.5, -1.0], [0.0, 0.0], [-0.5, 1.0]])
    coords = np.array([[10.0, 20.0], [30.0, 40.0]])
    local = disp[:, None, :] + np.array([[0.1, 0.2], [0.0, -0.1]])[None]
    tables = motion_to_star_tables(
        disp,
        pixel_size_a=0.5,
        movie_name="m.tif",
        image_size_xyz=(64, 48, 3),
        exposure_per_frame_e_per_a2=1.2,
        voltage_kv=300.0,
        local_coords_px_xy=coords,
        local_displacement_a_yx=local,
    )
    shifts = tables["global_shift"]
    assert shifts.loc[0, "rlnMicrographShiftX"] == pytest.approx(2.0)
    assert shifts.loc[0, "rlnMicrographShiftY"] == pytest.approx(-1.0)
    assert len(tables["local_shift"]) == 6
    # local_shift holds the total shift: −(−1.0 + 0.2) Å / 0.5 Å/px at patch 0 of frame 1
    assert tables["local_shift"].loc[0, "rlnMicrographShiftX"] == pytest.approx(1.6)
    assert tables["local_shift"].loc[0, "rlnMicrographShiftY"] == pytest.approx(-1.2)
    back = star_tables_to_motion(read_star(write_star(tmp_path / "m.star", tables)))
    np.testing.assert_allclose(back["global_displacement_a_yx"], disp, atol=1e-12)
    assert back["image_size_xyz"] == (64, 48, 3)


def test_real_relion_motion_star_converts(shared_data):
    # RELION MotionCorr: frame 2 shift (0.712807, 0.261125) px at 0.885 Å → d = −shift·px
    motion = star_tables_to_motion(read_star(shared_data / "em-testdata/metadata/movie_frameImage.star"))
    assert motion["pixel_size_a"] == 0.885
    np.testing.assert_allclose(motion["global_displacement_a_yx"][1], [-0.261125 * 0.885, -0.712807 * 0.885])
    assert motion["image_size_xyz"] == (3710, 3838, 24)


def test_image_name_parse_errors():
    assert parse_relion_image_name("12@a/b.mrcs") == (11, "a/b.mrcs")
    with pytest.raises(ValueError, match="expected a RELION image name"):
        parse_relion_image_name("a/b.mrcs")


def test_truncated_and_empty_star(tmp_path):
    (tmp_path / "empty.star").write_text("")
    with pytest.raises(TruncatedFileError, match="empty.star: expected a STAR file .* file is empty"):
        read_star(tmp_path / "empty.star")
    (tmp_path / "half.star").write_text(
        "data_particles\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n"
        "_rlnAutopickFigureOfMerit #3\n1 2 0.5\n3 4 0.7\n5 6"
    )
    with pytest.raises(TruncatedFileError, match=r"half.star: expected 3 values .* last row \(row 3\) has 2"):
        read_star(tmp_path / "half.star")
    (tmp_path / "text.star").write_text("hello world\n")
    with pytest.raises(CorruptFileError, match="text.star: expected a STAR file with 'data_' blocks"):
        read_star(tmp_path / "text.star")
    with pytest.raises(CorruptFileError, match="expected a cryoSPARC .cs file"):
        (tmp_path / "bad.cs").write_bytes(b"nope")
        read_cryosparc_cs(tmp_path / "bad.cs")


@pytest.mark.peers
@pytest.mark.skipif(shutil.which("relion_star_printtable") is None, reason="RELION not installed")
def test_relion_reads_our_particles_star(tmp_path):
    tables = particles_star_tables(
        image_names=[relion_image_name(i, "p.mrcs") for i in range(3)],
        micrograph_names="m.mrc",
        coords_px_xy=[[1, 2], [3, 4], [5, 6]],
        pixel_size_a=1.5,
        box_size_px=64,
        voltage_kv=300,
        cs_mm=2.7,
        amplitude_contrast=0.1,
        defocus_u_um=[1.0, 1.1, 1.2],
        defocus_v_um=[0.9, 1.0, 1.1],
    )
    path = write_star(Path(tmp_path) / "particles.star", tables)
    out = subprocess.run(
        [
            "relion_star_printtable",
            str(path),
            "data_particles",
            "rlnImageName",
            "rlnDefocusU",
            "rlnCoordinateX",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0::3] == ["0000001@p.mrcs", "0000002@p.mrcs", "0000003@p.mrcs"]
    assert [float(v) for v in out[1::3]] == pytest.approx([10000.0, 11000.0, 12000.0])
    assert [float(v) for v in out[2::3]] == [1.0, 3.0, 5.0]
    optics = subprocess.run(
        ["relion_star_printtable", str(path), "data_optics", "rlnImagePixelSize", "rlnImageSize"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [float(v) for v in optics] == [1.5, 64.0]


def test_relion5_version_header(shared_data, tmp_path):
    tables = read_star(shared_data / "cryodrgn/relion5.star")
    path = write_star(tmp_path / "r5.star", tables, relion_version=50001)
    assert path.read_text().lstrip().startswith("# version 50001")
    assert star_flavour(path) == "relion5"
    assert star_flavour(write_star(tmp_path / "r31.star", tables)) == "relion3.1"
