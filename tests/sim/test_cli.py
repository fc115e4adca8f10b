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
