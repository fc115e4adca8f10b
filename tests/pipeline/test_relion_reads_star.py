"""RELION 3.1 reads every STAR file we write (issue 6): the pipeline's particles.star, micrographs.star and
goodparticles_cryowarp.star, the per-movie motion STAR of `cryowarp motion` and the CTF STAR of `cryowarp ctf`.

"Reads" is checked with RELION's own parser and consumers: ``relion_star_printtable`` must print, for every
block and every column we wrote, the values we wrote (an unknown label prints nothing), and the files are fed
to the programs that use them: ``relion_preprocess`` re-extracts our particles from our micrographs with our
CTF (micrographs.star + particles.star), ``relion_stack_create`` opens every image of goodparticles, and
``relion_reconstruct --ctf`` backprojects particles.star.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
from tests.pipeline.sessions import PIXEL_SIZE_A, fast_settings, write_session
from typer.testing import CliRunner

from cryowarp.cli.main import app
from cryowarp.io.star import read_star, write_star

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(shutil.which("relion_star_printtable") is None, reason="RELION not installed (apt-get install relion)"),
]


def _relion_table(path: Path, block: str, labels: list[str]) -> list[list[str]]:
    """Rows of ``labels`` in ``data_<block>`` as RELION's parser sees them."""
    out = subprocess.run(
        ["relion_star_printtable", str(path), f"data_{block}", *labels],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    n = len(labels)
    assert len(out) % n == 0, f"{path.name} data_{block}: RELION printed {len(out)} values for {n} labels"
    return [out[i : i + n] for i in range(0, len(out), n)]


def _assert_relion_sees_what_we_wrote(path: Path) -> None:
    """Every block and column of ``path``: RELION prints our values (numbers to 1e-6 relative)."""
    tables = read_star(path)
    assert tables, f"{path}: no blocks"
    for block, df in tables.items():
        labels = [str(c) for c in df.columns]
        rows = _relion_table(path, block, labels)
        assert len(rows) == len(df), (
            f"{path.name} data_{block}: RELION read {len(rows)} rows of {labels}, we wrote {len(df)} "
            "(an unknown label or a broken table reads as nothing)"
        )
        for label, column in zip(labels, zip(*rows, strict=True), strict=True):
            ours = df[label].tolist()
            if pd.api.types.is_numeric_dtype(df[label]):
                np.testing.assert_allclose(
                    [float(v) for v in column], np.asarray(ours, float), rtol=1e-6, atol=1e-9, err_msg=label
                )
            else:
                assert list(column) == [str(v) for v in ours], label


def _as_loop_copy(path: Path, block: str, out: Path) -> Path:
    """A one-row loop copy of a list block: relion_star_printtable only prints loops."""
    df = read_star(path)[block]
    return write_star(out, {block: pd.DataFrame(df.to_dict("list"))})


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """One real movie through the pipeline with motion and CTF on (filters open: it is about the files)."""
    tmp = tmp_path_factory.mktemp("relion_star")
    movies, coords = write_session(tmp, 1)
    settings = fast_settings(
        coords,
        do_motion=True,
        do_ctf=True,
        ctf={"window": 128, "grid_xyt": (1, 1, 1)},
        filter={"resolution_max_a": 100.0, "astigmatism_max_sigma": 100.0, "defocus_max_um": 20.0, "motion_max_a": 100.0},
    )
    settings_file = tmp / "settings.json"
    settings_file.write_text(json.dumps(settings.to_dict()))
    proj = tmp / "proj"
    result = CliRunner().invoke(
        app,
        ["process", str(movies), "-p", str(proj), "--settings", str(settings_file), "--workers", "0", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    return proj


def test_relion_parses_every_pipeline_star(project):
    for name in ("particles.star", "micrographs.star", "goodparticles_cryowarp.star"):
        _assert_relion_sees_what_we_wrote(project / name)
    mics = read_star(project / "micrographs.star")["micrographs"]
    assert {"rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnCtfMaxResolution"} <= set(mics.columns)
    # particle rows (export/extract) and micrograph rows (io.star.ctf_to_star_row) agree: angle in [0, 180), U ≥ V
    parts = read_star(project / "particles.star")["particles"].merge(
        mics[["rlnMicrographName", "rlnDefocusAngle"]], on="rlnMicrographName", suffixes=("", "_mic")
    )
    assert len(parts) == 5
    np.testing.assert_allclose(parts["rlnDefocusAngle"], parts["rlnDefocusAngle_mic"], atol=1e-4)
    assert ((mics["rlnDefocusAngle"] >= 0) & (mics["rlnDefocusAngle"] < 180)).all()
    assert (parts["rlnDefocusU"] >= parts["rlnDefocusV"]).all()


def test_relion_reextracts_our_particles_from_our_micrographs(project):
    # micrographs.star (optics, averages, CTF) + particles.star (coordinates) → RELION's own extraction
    run = subprocess.run(
        [
            "relion_preprocess",
            "--i",
            "micrographs.star",
            "--reextract_data_star",
            "particles.star",
            "--part_star",
            "reextracted.star",
            "--part_dir",
            "Extract/",
            "--extract",
            "--extract_size",
            "32",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-1500:] + run.stderr[-1500:]
    ours = read_star(project / "particles.star")["particles"]
    theirs = read_star(project / "reextracted.star")["particles"]
    assert len(theirs) == len(ours) == 5
    np.testing.assert_allclose(theirs["rlnCoordinateX"], ours["rlnCoordinateX"], atol=1e-3)
    np.testing.assert_allclose(theirs["rlnDefocusU"], ours["rlnDefocusU"], rtol=1e-6)
    optics = read_star(project / "reextracted.star")["optics"]
    assert float(optics["rlnImagePixelSize"].iloc[0]) == pytest.approx(PIXEL_SIZE_A)


def test_relion_opens_goodparticles_and_reconstructs_particles(project):
    run = subprocess.run(
        ["relion_stack_create", "--i", "goodparticles_cryowarp.star", "--o", "good_check"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with mrcfile.open(project / "good_check.mrcs") as m:
        assert m.data.shape == (5, 32, 32)
    # backprojection reads every image, the optics table and the per-particle CTF (angles default to 0)
    run = subprocess.run(
        ["relion_reconstruct", "--i", "particles.star", "--o", "rec.mrc", "--ctf"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-1500:] + run.stderr[-1500:]
    with mrcfile.open(project / "rec.mrc") as m:
        assert m.data.shape == (32, 32, 32) and np.isfinite(m.data).all()
        assert float(m.voxel_size.x) == pytest.approx(PIXEL_SIZE_A)


def test_relion_parses_motion_and_ctf_star(tmp_path):
    movies, _ = write_session(tmp_path, 1)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "motion",
            str(movies / "m00.mrc"),
            "--pixel-size",
            str(PIXEL_SIZE_A),
            "--exposure",
            "1.0",
            "-o",
            str(tmp_path / "mot"),
        ],
    )
    assert result.exit_code == 0, result.output
    motion_star = tmp_path / "mot" / "m00.star"
    blocks = read_star(motion_star)
    assert {"general", "global_shift"} <= set(blocks)
    # the loops (global_shift, local shifts) straight from our file
    for block, df in blocks.items():
        if block != "general":
            rows = _relion_table(motion_star, block, [str(c) for c in df.columns])
            assert len(rows) == len(df) > 0
            np.testing.assert_allclose(np.asarray(rows, float), df.to_numpy(float), rtol=1e-6, atol=1e-9)
    # data_general is a list block (RELION's own motion STAR layout); printtable shows loops only, so every
    # one of its labels is checked as a one-row loop: RELION must know each label and parse each value
    _assert_relion_sees_what_we_wrote(_as_loop_copy(motion_star, "general", tmp_path / "general_loop.star"))

    average = tmp_path / "mot" / "m00.mrc"
    result = runner.invoke(app, ["ctf", str(average), "--window", "128", "--grid", "1", "1", "1", "-o", str(tmp_path / "ctf")])
    assert result.exit_code == 0, result.output
    ctf_star = tmp_path / "ctf" / "m00_ctf.star"
    _assert_relion_sees_what_we_wrote(ctf_star)
    fitted = json.loads((tmp_path / "ctf" / "m00_ctf.json").read_text())["model"]
    mics = read_star(ctf_star)["micrographs"]
    u = float(mics["rlnDefocusU"].iloc[0])
    assert u == pytest.approx(1e4 * (fitted["defocus_um"] + 0.5 * fitted["defocus_delta_um"]), rel=1e-4)
