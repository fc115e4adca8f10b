"""`cryowarp ctf` end to end on a small synthetic micrograph: JSON, RELION STAR, PNGs, --at."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tests.ctf.ctf_synth import synth_micrograph
from typer.testing import CliRunner

from cryowarp.cli.main import app
from cryowarp.ctf import CTFModel
from cryowarp.io.mrc import write_mrc
from cryowarp.io.star import read_star, write_star


@pytest.fixture(scope="module")
def ctf_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ctf_cli")
    tilt_deg, axis_deg, center_um = 30.0, 90.0, 2.0
    image = synth_micrograph(
        defocus_um=center_um,
        defocus_delta_um=0.2,
        astigmatism_angle_deg=20.0,
        tilt_deg=tilt_deg,
        tilt_axis_deg=axis_deg,
        seed=11,
    )
    write_mrc(tmp / "mic.mrc", image, 2.0)
    coords = np.array([[100.0, 500.0], [500.0, 500.0], [900.0, 120.0]])
    write_star(
        tmp / "picks.star",
        {
            "": pd.DataFrame(
                {
                    "rlnCoordinateX": coords[:, 0],
                    "rlnCoordinateY": coords[:, 1],
                    "rlnAutopickFigureOfMerit": [1.0, 2.0, 3.0],
                }
            )
        },
    )
    result = CliRunner().invoke(
        app,
        [
            "ctf",
            str(tmp / "mic.mrc"),
            "--pixel-size",
            "2.0",
            "--window",
            "256",
            "--range-high",
            "5",
            "--grid",
            "3",
            "3",
            "1",
            "--at",
            str(tmp / "picks.star"),
            "-o",
            str(tmp / "out"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    # synth: underfocus grows towards axis − 90° = +x
    truth_um = center_um + math.tan(math.radians(tilt_deg)) * (coords[:, 0] - 512) * 2.0 / 1e4
    return tmp / "out", coords, truth_um


def test_json_holds_the_model(ctf_run):
    out, _, _ = ctf_run
    record = json.loads((out / "mic_ctf.json").read_text())
    model = CTFModel.from_dict(record["model"])
    assert model.defocus_um == pytest.approx(2.0, abs=0.015)
    assert model.defocus_delta_um == pytest.approx(0.2, abs=0.02)
    assert record["settings"]["window"] == 256


def test_star_row_has_relions_columns_in_angstrom(ctf_run):
    out, _, _ = ctf_run
    tables = read_star(out / "mic_ctf.star")
    row = tables["micrographs"].iloc[0]
    for label in (
        "rlnMicrographName",
        "rlnDefocusU",
        "rlnDefocusV",
        "rlnDefocusAngle",
        "rlnCtfAstigmatism",
        "rlnPhaseShift",
        "rlnCtfMaxResolution",
        "rlnCtfFigureOfMerit",
    ):
        assert label in tables["micrographs"].columns
    assert row["rlnDefocusU"] == pytest.approx(21000, abs=150)
    assert row["rlnDefocusV"] == pytest.approx(19000, abs=150)
    assert row["rlnCtfAstigmatism"] == pytest.approx(row["rlnDefocusU"] - row["rlnDefocusV"])
    assert row["rlnDefocusAngle"] == pytest.approx(20.0, abs=2.0)
    assert tables["optics"].iloc[0]["rlnMicrographPixelSize"] == 2.0


def test_local_ctf_at_coordinates(ctf_run):
    out, coords, truth_um = ctf_run
    table = read_star(out / "picks_ctf.star")[""]
    np.testing.assert_allclose(table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(), coords)
    assert list(table["rlnAutopickFigureOfMerit"]) == [1.0, 2.0, 3.0]
    mean_a = (table["rlnDefocusU"] + table["rlnDefocusV"]).to_numpy() / 2
    # local defocus within 100 Å of the planted plane (the target at 40° tilt)
    np.testing.assert_allclose(mean_a, truth_um * 1e4, atol=100)
    np.testing.assert_allclose((table["rlnDefocusU"] - table["rlnDefocusV"]).to_numpy(), 2000, atol=200)


def test_pngs_show_a_spectrum_and_a_curve(ctf_run):
    out, _, _ = ctf_run
    for name in ("mic_ps.png", "mic_ps1d.png"):
        image = np.asarray(Image.open(out / name).convert("L"), dtype=np.float32)
        assert image.shape[0] > 400 and image.shape[1] > 400
        assert image.std() > 10  # not a blank canvas


def test_bad_input_names_the_file(tmp_path):
    write_mrc(tmp_path / "tiny.mrc", torch.zeros(100, 100), 1.0)
    result = CliRunner().invoke(app, ["ctf", str(tmp_path / "tiny.mrc"), "-o", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "tiny.mrc" in result.output and "too small" in result.output


def test_movie_input_uses_per_frame_spectra(tmp_path):
    frames = synth_micrograph(defocus_um=1.7, n_frames=4, seed=13)
    write_mrc(tmp_path / "movie.mrcs", frames, 2.0, stack=True)
    result = CliRunner().invoke(
        app,
        [
            "ctf",
            str(tmp_path / "movie.mrcs"),
            "--pixel-size",
            "2.0",
            "--window",
            "256",
            "--range-high",
            "5",
            "-o",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "movie_ctf.json").read_text())
    assert record["n_frames"] == 4
    assert record["model"]["defocus_um"] == pytest.approx(1.7, abs=0.015)
