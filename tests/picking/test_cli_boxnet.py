"""``cryowarp boxnet pick|train|retrain`` on small files: STAR columns, mask TIFF, PNG, model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from cryowarp.cli.main import app
from cryowarp.io.mrc import write_mrc
from cryowarp.io.star import read_star, write_star
from cryowarp.picking import (
    BoxNet,
    BoxNetConfig,
    PickSettings,
    boxnet_from_state,
    boxnet_to_state,
    pick_particles,
)

runner = CliRunner()


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.save(boxnet_to_state(BoxNet(BoxNetConfig(widths=(4, 8), blocks_per_stage=1, head_blocks=1))), path)
    return path


def _micrograph(tmp_path: Path, name: str, seed: int) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 3, (256, 256)).astype(np.float32)
    yy, xx = np.mgrid[0:256, 0:256]
    centres = rng.uniform(40, 216, (6, 2))
    for x, y in centres:
        img -= 20 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 8.0**2))
    path = tmp_path / f"{name}.mrc"
    write_mrc(path, img, 4.0)
    return path, centres


def test_pick_writes_relion_star_mask_and_png(tmp_path, tiny_model):
    mic, _ = _micrograph(tmp_path, "mic_a", 0)
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "boxnet",
            "pick",
            str(mic),
            "-o",
            str(out),
            "--diameter",
            "120",
            "--threshold",
            "0.0",
            "--model",
            str(tiny_model),
        ],
    )
    assert res.exit_code == 0, res.output
    table = read_star(out / "mic_a_boxnet.star")[""]
    assert list(table.columns) == [
        "rlnCoordinateX",
        "rlnCoordinateY",
        "rlnMicrographName",
        "rlnAutopickFigureOfMerit",
    ]
    # the command gives exactly what the core gives for the same model and settings
    # (pixel size from the MRC header)
    model = boxnet_from_state(torch.load(tiny_model, weights_only=True))
    image = torch.from_numpy(np.asarray(__import__("mrcfile").read(mic), dtype=np.float32))
    settings = PickSettings(particle_diameter_a=120.0, threshold=0.0, relative_threshold=None)
    picks = pick_particles(image, 4.0, model, settings)
    np.testing.assert_allclose(
        table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(), picks.coords_px_xy.numpy(), atol=1e-4
    )
    assert (table["rlnMicrographName"] == "mic_a.mrc").all()
    mask = tifffile.imread(out / "mic_a_mask.tif")
    assert mask.shape == (128, 128) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert (out / "mic_a_boxnet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pick_names_the_file_without_pixel_size(tmp_path, tiny_model):
    png = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(png)
    res = runner.invoke(app, ["boxnet", "pick", str(png), "-o", str(tmp_path), "--model", str(tiny_model)])
    assert res.exit_code != 0
    assert "x.png: no usable pixel size" in " ".join(res.output.replace("│", " ").split())


def test_train_then_retrain_writes_models_and_examples(tmp_path):
    picks_dir = tmp_path / "picks"
    picks_dir.mkdir()
    mics = []
    for i in range(2):
        mic, centres = _micrograph(tmp_path, f"m{i}", i)
        import pandas as pd

        write_star(
            picks_dir / f"m{i}.star",
            {"": pd.DataFrame({"rlnCoordinateX": centres[:, 0], "rlnCoordinateY": centres[:, 1]})},
        )
        mics.append(str(mic))
    model = tmp_path / "trained.pt"
    examples = tmp_path / "examples"
    res = runner.invoke(
        app,
        [
            "boxnet",
            "train",
            *mics,
            "--picks",
            str(picks_dir),
            "--diameter",
            "120",
            "--out",
            str(model),
            "--epochs",
            "2",
            "--patch",
            "32",
            "--batch",
            "2",
            "--save-examples",
            str(examples),
            "--checkpoint-every",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "epoch 2/2" in res.output
    state = torch.load(model, weights_only=True)
    assert state["metadata"]["trained_on"] == ["m0.mrc", "m1.mrc"]
    assert (tmp_path / "trained_epoch1.pt").is_file()
    stack = tifffile.imread(examples / "m0.tif")
    assert stack.shape == (3, 128, 128) and set(np.unique(stack[1])) <= {0.0, 1.0}
    # retrain from it, mixing 1:1 with the saved examples as the "general corpus"
    res = runner.invoke(
        app,
        [
            "boxnet",
            "retrain",
            mics[0],
            "--picks",
            str(picks_dir),
            "--diameter",
            "120",
            "--out",
            str(tmp_path / "re.pt"),
            "--model",
            str(model),
            "--general",
            str(examples),
            "--epochs",
            "1",
            "--patch",
            "32",
            "--batch",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "old data: old" in res.output and (tmp_path / "re.pt").is_file()


def test_train_reports_missing_picks(tmp_path):
    mic, _ = _micrograph(tmp_path, "lonely", 3)
    res = runner.invoke(
        app,
        [
            "boxnet",
            "train",
            str(mic),
            "--picks",
            str(tmp_path),
            "--diameter",
            "120",
            "--out",
            str(tmp_path / "m.pt"),
        ],
    )
    assert res.exit_code != 0
    assert "lonely.mrc: no picks STAR" in res.output


def test_false_positives_and_uncertain_picks_enter_the_certainty_layer(tmp_path):
    """``--false-positives`` / ``--uncertain`` (one STAR of several micrographs) paint Warp's certainty
    layer: 4 on a false positive's disc of radius D/2, 0 on an uncertain one, 1 elsewhere; the saved
    TIFF reads back with it."""
    import pandas as pd

    from cryowarp.io.boxnet_examples import read_example_tiff

    mic, centres = _micrograph(tmp_path, "m0", 0)
    write_star(tmp_path / "m0.star", {"": pd.DataFrame({"rlnCoordinateX": centres[:, 0], "rlnCoordinateY": centres[:, 1]})})

    def one_star(name: str, xy: tuple[float, float]) -> Path:  # rows of two micrographs; m0 has one
        table = pd.DataFrame(
            {"rlnCoordinateX": [xy[0], 5.0], "rlnCoordinateY": [xy[1], 5.0], "rlnMicrographName": ["m0.mrc", "other.mrc"]}
        )
        return write_star(tmp_path / name, {"": table})

    fp, unsure = one_star("fp.star", (64.0, 64.0)), one_star("unsure.star", (192.0, 192.0))
    examples = tmp_path / "ex"
    args = ["boxnet", "train", str(mic), "--picks", str(tmp_path / "m0.star"), "--diameter", "120"]
    args += ["--false-positives", str(fp), "--uncertain", str(unsure), "--out", str(tmp_path / "t.pt")]
    args += ["--epochs", "1", "--patch", "32", "--batch", "2", "--save-examples", str(examples)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "6 picks, 1 false positives, 1 uncertain" in res.output
    cert = tifffile.imread(examples / "m0.tif")[2]  # 4 Å/px → 8 Å/px: (64, 64) → (32, 32); D/2 = 7.5 px
    yy, xx = np.mgrid[0 : cert.shape[0], 0 : cert.shape[1]]
    r_fp, r_unsure = np.hypot(xx - 32, yy - 32), np.hypot(xx - 96, yy - 96)
    assert np.all(cert[r_fp <= 7.0] == 4.0) and np.all(cert[r_unsure <= 7.0] == 0.0)
    assert np.all(cert[(r_fp > 8.5) & (r_unsure > 8.5)] == 1.0)
    assert cert[2, 2] == 1.0  # the other micrograph's row at (5, 5) px is not painted here
    ex = read_example_tiff(examples / "m0.tif")
    np.testing.assert_array_equal(ex.certainty.numpy(), cert)


def test_read_picks_star_takes_only_the_named_micrographs_rows(tmp_path):
    import pandas as pd

    from cryowarp.cli.boxnet import read_picks_star

    names = ["a.mrc", "b.mrc"]
    several = pd.DataFrame({"rlnCoordinateX": [1.0, 2.0], "rlnCoordinateY": [3.0, 4.0], "rlnMicrographName": names})
    path = write_star(tmp_path / "all.star", {"": several})
    np.testing.assert_array_equal(read_picks_star(path, "b.mrc"), [[2.0, 4.0]])
    assert read_picks_star(path, "c.mrc").shape == (0, 2)  # not in the file: no rows, not everybody's
    # a one-micrograph coordinate file often names the movie, not the average: taken as it is
    single = several.assign(rlnMicrographName=["movie.tif", "movie.tif"])
    path = write_star(tmp_path / "one.star", {"": single})
    assert read_picks_star(path, "movie_DW.mrc").shape == (2, 2)


def test_a_false_positive_on_a_pick_is_left_out_with_a_warning(tmp_path):
    import pandas as pd

    mic, centres = _micrograph(tmp_path, "m0", 0)
    write_star(tmp_path / "m0.star", {"": pd.DataFrame({"rlnCoordinateX": centres[:, 0], "rlnCoordinateY": centres[:, 1]})})
    fp_dir = tmp_path / "deleted"
    fp_dir.mkdir()
    # one genuine false positive, one 3 px from a pick (D/4 = 7.5 px at 4 Å/px): contradictory input
    xy = np.array([[20.0, 20.0], [centres[0, 0] + 3.0, centres[0, 1]]])
    write_star(fp_dir / "m0.star", {"": pd.DataFrame({"rlnCoordinateX": xy[:, 0], "rlnCoordinateY": xy[:, 1]})})
    args = ["boxnet", "train", str(mic), "--picks", str(tmp_path / "m0.star"), "--false-positives", str(fp_dir)]
    args += ["--diameter", "120", "--out", str(tmp_path / "t.pt"), "--epochs", "1", "--patch", "32", "--batch", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())  # rich wraps long lines
    assert "warning: m0.mrc: 1 of the false positives in" in out and "lie within D/4 of a pick" in out
    assert "6 picks, 1 false positives" in res.output


def test_pick_skips_a_movie_stack_and_a_truncated_file_and_picks_the_rest(tmp_path, tiny_model):
    good, _ = _micrograph(tmp_path, "good", 1)
    write_mrc(tmp_path / "movie.mrc", np.zeros((3, 64, 64), np.float32), 4.0)
    (tmp_path / "half.mrc").write_bytes(good.read_bytes()[:3000])
    out = tmp_path / "out"
    files = [str(tmp_path / "movie.mrc"), str(good), str(tmp_path / "half.mrc")]
    res = runner.invoke(app, ["boxnet", "pick", *files, "-o", str(out), "--diameter", "120", "--model", str(tiny_model)])
    text = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert "2 micrograph(s) could not be picked" in text
    assert "movie.mrc: holds 3 sections (a movie or a stack)" in text and "half.mrc:" in text
    assert (out / "good_boxnet.star").is_file()
    assert not (out / "movie_boxnet.star").exists() and not (out / "half_boxnet.star").exists()
