"""``cryowarp boxnet retrain --masks``: a user's full-resolution artefact-mask TIFFs become class-2 labels.

This is the input path of ``benchmarks/bench_boxnet_retrain.py`` (5 corrected micrographs = MRC + picks
STAR + ``<stem>_mask.tif``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch
from typer.testing import CliRunner

from cryowarp.cli.main import app
from cryowarp.io.mrc import write_mrc
from cryowarp.io.star import write_star
from cryowarp.picking import BoxNet, BoxNetConfig, boxnet_to_state

runner = CliRunner()


def test_retrain_paints_full_resolution_masks_as_artefact_class(tmp_path: Path):
    torch.manual_seed(0)
    start = tmp_path / "start.pt"
    torch.save(boxnet_to_state(BoxNet(BoxNetConfig(widths=(4, 8), blocks_per_stage=1, head_blocks=1))), start)
    rng = np.random.default_rng(1)
    px = 4.0  # 512 px at 4 Å -> 256 px at 8 Å/px
    img = rng.normal(100, 3, (512, 512)).astype(np.float32)
    mask = np.zeros((512, 512), np.uint8)
    mask[:, 384:] = 1  # right quarter: carbon
    centres = np.array([[100.0, 100.0], [200.0, 300.0], [300.0, 150.0]])
    yy, xx = np.mgrid[0:512, 0:512]
    for x, y in centres:
        img -= 20 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 8.0**2))
    for sub in ("mics", "picks", "masks"):
        (tmp_path / sub).mkdir()
    write_mrc(tmp_path / "mics/new_1.mrc", img, px)
    write_star(
        tmp_path / "picks/new_1.star",
        {"": pd.DataFrame({"rlnCoordinateX": centres[:, 0], "rlnCoordinateY": centres[:, 1]})},
    )
    # a decoy with a longer stem must not be taken for new_1's picks or mask
    write_star(tmp_path / "picks/new_10.star", {"": pd.DataFrame({"rlnCoordinateX": [5.0], "rlnCoordinateY": [5.0]})})
    tifffile.imwrite(tmp_path / "masks/new_1_mask.tif", mask)
    tifffile.imwrite(tmp_path / "masks/new_10_mask.tif", np.ones_like(mask))
    res = runner.invoke(
        app,
        [
            "boxnet",
            "retrain",
            str(tmp_path / "mics/new_1.mrc"),
            "--picks",
            str(tmp_path / "picks"),
            "--masks",
            str(tmp_path / "masks"),
            "--model",
            str(start),
            "--diameter",
            "120",
            "--epochs",
            "1",
            "--patch",
            "32",
            "--batch",
            "2",
            "--save-examples",
            str(tmp_path / "examples"),
            "--out",
            str(tmp_path / "re.pt"),
            "--sim-general",
            "1",  # default 12: the built-in general corpus, mixed 1:1 (one is enough to test the path)
        ],
    )
    assert res.exit_code == 0, res.output
    assert "3 picks + mask" in res.output
    assert "general corpus: 1 simulated micrographs" in res.output and "old data: old" in res.output
    labels = tifffile.imread(tmp_path / "examples/new_1.tif")[1]
    assert labels.shape == (256, 256)
    # the masked quarter (x >= 192 at 8 Å/px) is artefact, the rest is not
    assert np.all(labels[:, 193:] == 2)
    assert not np.any(labels[:, :190] == 2)
    # one label disc (class 1) per pick at half the coordinates
    for x, y in centres:
        assert labels[int(round(y / 2)), int(round(x / 2))] == 1
    assert (tmp_path / "re.pt").is_file()
