"""`cryowarp info` and `cryowarp gain-check` on real and planted files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cryowarp.cli.main import app
from cryowarp.io.mrc import write_mrc

runner = CliRunner()


def test_info_json_of_real_epu_micrograph(shared_data):
    result = runner.invoke(app, ["info", str(shared_data / "mrcfile/epu2.9_example.mrc"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["kind"], summary["width"], summary["height"], summary["dtype"]) == (
        "mrc",
        4096,
        4096,
        "uint16",
    )
    assert summary["header"]["fei"]["voltage_kv"] == 300.0
    assert summary["pixel_size_a"] == pytest.approx(0.66655, abs=1e-4)


@pytest.mark.parametrize(
    "rel, kind",
    [
        ("cryodrgn/relion5.star", "star"),
        ("cryodrgn/empiar_10076_7.cs", "cryosparc"),
        ("mdocfile/tilt_series.mdoc", "mdoc"),
    ],
)
def test_info_of_metadata_files(shared_data, rel, kind):
    result = runner.invoke(app, ["info", str(shared_data / rel), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["kind"] == kind
    table = runner.invoke(app, ["info", str(shared_data / rel)])
    assert table.exit_code == 0 and kind in table.output


def test_info_layout_of_a_micrograph_a_stack_and_a_volume(tmp_path):
    """A 2-D micrograph is one image, not a stack, even though its header says ispg 0 ("image or stack")."""
    cases = [
        (write_mrc(tmp_path / "mic.mrc", np.zeros((32, 32), np.float32), 1.0), "single image"),
        (write_mrc(tmp_path / "parts.mrcs", np.zeros((3, 32, 32), np.float32), 1.0, stack=True), "stack of 3 images"),
        (write_mrc(tmp_path / "vol.mrc", np.zeros((4, 32, 32), np.float32), 1.0), "volume of 4 sections"),
    ]
    for path, layout in cases:
        result = runner.invoke(app, ["info", str(path)])
        assert result.exit_code == 0, result.output
        assert layout in result.output and "is_stack" not in result.output, result.output


def test_info_names_a_truncated_file(tmp_path):
    path = write_mrc(tmp_path / "movie_9.mrc", np.zeros((8, 32, 32), np.float32), 1.0, stack=True)
    path.write_bytes(path.read_bytes()[:5000])
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 2
    assert "movie_9.mrc: expected 8 sections of 32×32 float32" in result.output


def _planted_movie(tmp_path):
    g = torch.Generator().manual_seed(0)
    gain_true = (1 + 0.1 * torch.randn(128, 128, generator=g)).clamp(min=0.5)
    frames = torch.poisson((20.0 / gain_true).expand(10, 128, 128).contiguous(), generator=g)  # 200 e/px
    movie = write_mrc(tmp_path / "movie.mrcs", frames.numpy(), 1.0, stack=True, dtype="uint16")
    gain_file = write_mrc(tmp_path / "gain.mrc", gain_true.flip(-1).numpy(), 1.0)  # stored mirrored in x
    return movie, gain_file


def test_gain_check_finds_the_flip(tmp_path):
    movie, gain_file = _planted_movie(tmp_path)
    png = tmp_path / "check.png"
    result = runner.invoke(
        app, ["gain-check", str(movie), "--gain", str(gain_file), "--png", str(png), "--fail-if-wrong"]
    )
    assert result.exit_code == 1, result.output
    assert "looks WRONG" in result.output and "apply flip_x (--gain-flip-x)" in result.output
    with Image.open(png) as image:
        assert image.size == (1500, 480)
    fixed = runner.invoke(
        app,
        ["gain-check", str(movie), "--gain", str(gain_file), "--gain-flip-x", "--json", "--fail-if-wrong"],
    )
    assert fixed.exit_code == 0, fixed.output
    report = json.loads(fixed.output)
    assert report["looks_wrong"] is False and report["n_frames_summed"] == 10


def test_gain_check_shape_mismatch(tmp_path):
    movie, _ = _planted_movie(tmp_path)
    small = write_mrc(tmp_path / "small_gain.mrc", np.ones((64, 64), np.float32), 1.0)
    result = runner.invoke(app, ["gain-check", str(movie), "--gain", str(small)])
    assert result.exit_code == 2
    assert "small_gain.mrc: expected a gain reference of the movie's frame size 128×128" in result.output
