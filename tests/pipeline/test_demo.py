"""`cryowarp demo` end to end on a tiny simulated session (slow: simulates and fully processes a movie)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cryowarp.cli.main import app
from cryowarp.io.star import read_star


@pytest.mark.slow
def test_demo_simulates_processes_and_writes_star(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--n-movies",
            "2",
            "--size",
            "512",
            "--frames",
            "6",
            "--interval",
            "0.5",
            "--no-serve",
            "--true-picks",
            "--workers",
            "0",
            "--dir",
            str(tmp_path),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    session = json.loads((tmp_path / "session" / "session.json").read_text())
    particles = (
        read_star(tmp_path / "project" / "particles.star")["particles"]
        if (tmp_path / "project" / "particles.star").exists()
        else None
    )
    from cryowarp.pipeline.store import ProjectStore

    store = ProjectStore(tmp_path / "project", read_only=True)
    items = store.list_items()
    assert [it["status"] for it in items] == ["done", "done"], [it["error"] for it in items]
    # true picks: every simulated particle is exported; the CTF fit finds the simulated defocus
    assert sum(it["n_particles"] for it in items) == sum(m["n_particles"] for m in session["movies"])
    for item, truth in zip(items, session["movies"], strict=True):
        assert item["defocus_um"] == pytest.approx(truth["defocus_um"], abs=0.1)
    if particles is not None:
        assert set(particles["rlnMicrographName"]) <= {it["artifacts"]["average"] for it in items}
