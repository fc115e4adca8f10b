"""`cryowarp motion`: files written, readable by their consumers, and RELION's sign in the STAR file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
from tests.motion._synthetic import make_movie
from typer.testing import CliRunner

from cryowarp.cli.main import app
from cryowarp.io.mrc import write_mrc
from cryowarp.motion import MotionModel

runner = CliRunner()
PEERS = Path(__file__).resolve().parents[3] / "shared" / "peers"


@pytest.fixture(scope="module")
def movie_file(tmp_path_factory):
    movie = make_movie(shape_yx=(512, 512), n_frames=10, pixel_size_a=2.0, drift_step_a=3.0, seed=3)
    path = tmp_path_factory.mktemp("movie") / "mov_0001.mrc"
    write_mrc(path, movie.frames, 2.0, stack=True, dtype="uint16")
    return path, movie


def test_cli_writes_averages_model_plot_and_relion_star(movie_file, tmp_path):
    path, movie = movie_file
    out = tmp_path / "motion"
    result = runner.invoke(
        app,
        [
            "motion",
            str(path),
            "--pixel-size",
            "2.0",
            "--exposure",
            "1.0",
            "--halves",
            "--grid",
            "1x1x10",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("mov_0001.mrc", "mov_0001_noDW.mrc", "mov_0001_odd.mrc", "mov_0001_even.mrc"):
        assert mrcfile.validate(str(out / name), print_file=open(os.devnull, "w")), name
        with mrcfile.open(out / name) as m:
            assert m.header.mode == 2  # float32 by default: RELION 3.1 cannot read Warp's float16
            assert m.data.shape == (512, 512)
            assert np.isfinite(m.data).all()
            # an average of ~4 counts/px/frame (2 Å px, 1 e/Å²): the mean survives alignment exactly
            assert float(m.data.astype(np.float64).mean()) == pytest.approx(4.0, rel=0.02)
            assert float(m.voxel_size.x) == pytest.approx(2.0)
    record = json.loads((out / "mov_0001_motion.json").read_text())
    model = MotionModel.from_dict(record["model"])
    assert model.n_frames == 10 and record["settings"]["grid_xyt"] == [1, 1, 10]
    png = (out / "mov_0001_motion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000

    tables = starfile.read(out / "mov_0001.star", always_dict=True)
    assert list(tables) == ["general", "global_shift", "local_shift"]
    general = tables["general"]
    general = general.iloc[0] if hasattr(general, "iloc") else general
    assert int(general["rlnImageSizeX"]) == 512 and int(general["rlnImageSizeZ"]) == 10
    assert float(general["rlnMicrographOriginalPixelSize"]) == pytest.approx(2.0)
    shifts = tables["global_shift"]
    assert list(shifts.columns) == ["rlnMicrographFrameNumber", "rlnMicrographShiftX", "rlnMicrographShiftY"]
    assert shifts["rlnMicrographFrameNumber"].tolist() == list(range(1, 11))
    # RELION's sign: the shift that aligns the frame = −displacement / pixel size (docs/api-contracts.md)
    truth_px = movie.global_a_yx.numpy() / 2.0
    relion_xy = shifts[["rlnMicrographShiftX", "rlnMicrographShiftY"]].to_numpy()
    # 0.1 px = 0.2 Å: global accuracy on this 512² movie is ≈ 0.05 Å
    np.testing.assert_allclose(relion_xy, -truth_px[:, ::-1], atol=0.1)
    local = tables["local_shift"]
    assert list(local.columns) == [
        "rlnMicrographFrameNumber",
        "rlnCoordinateX",
        "rlnCoordinateY",
        "rlnMicrographShiftX",
        "rlnMicrographShiftY",
    ]


def test_cli_float16_and_bad_grid(movie_file, tmp_path):
    path, _ = movie_file
    out = tmp_path / "m16"
    result = runner.invoke(
        app, ["motion", str(path), "--pixel-size", "2.0", "--exposure", "1.0", "--float16", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    for name in ("mov_0001.mrc", "mov_0001_noDW.mrc"):
        # (mrcfile.validate sums float16 data in float16 and overflows on real-size images: not used here)
        with mrcfile.open(out / name) as m:
            assert m.header.mode == 12  # Warp's half-size output on request
            assert float(m.data.astype(np.float64).mean()) == pytest.approx(4.0, rel=0.02)
    bad = runner.invoke(
        app,
        ["motion", str(path), "--pixel-size", "2.0", "--exposure", "1.0", "--grid", "5x5", "-o", str(out)],
    )
    assert bad.exit_code != 0
    assert "expected XxYxZ" in bad.output


@pytest.mark.peers
def test_star_sign_agrees_with_relion_own_motioncorr(tmp_path):
    relion = shutil.which("relion_run_motioncorr")
    wrapper = PEERS / "run_relion_motioncorr.py"
    if relion is None or not wrapper.exists():
        pytest.skip("RELION 3.1 (relion_run_motioncorr) or ../shared/peers wrapper not installed")
    movie = make_movie(
        shape_yx=(1024, 1024),
        n_frames=8,
        pixel_size_a=2.0,
        drift_step_a=6.0,
        exposure_per_frame_e_per_a2=2.0,
        seed=5,
    )
    path = tmp_path / "sign.mrc"
    write_mrc(path, movie.frames, 2.0, stack=True, dtype="uint16")
    out = tmp_path / "ours"
    result = runner.invoke(
        app, ["motion", str(path), "--pixel-size", "2.0", "--exposure", "2.0", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    ours = starfile.read(out / "sign.star", always_dict=True)["global_shift"]
    subprocess.run(
        [
            sys.executable,
            str(wrapper),
            str(path),
            "--apix",
            "2.0",
            "--dose-per-frame",
            "2.0",
            "--workdir",
            str(tmp_path / "relion"),
            "--out",
            str(tmp_path / "relion.json"),
        ],
        check=True,
        capture_output=True,
    )
    relion_xy = np.asarray(json.loads((tmp_path / "relion.json").read_text())["result"]["shifts_px"])
    ours_xy = ours[["rlnMicrographShiftX", "rlnMicrographShiftY"]].to_numpy()
    # RELION references frame 1 (shift 0), we reference the mean: compare after removing frame 1
    ours_rel = ours_xy - ours_xy[:1]
    assert np.abs(relion_xy).max() > 5.0  # ≥ 5 px of drift, so a sign error could not hide
    # both recover the same track: 0.5 px (1 Å) allows for RELION's integer-ish CC peak refinement
    np.testing.assert_allclose(ours_rel, relion_xy, atol=0.5)
