"""`cryowarp process` / `cryowarp settings` from the command line on a tiny real session."""

from __future__ import annotations

import json

from tests.pipeline.sessions import fast_settings, write_session
from typer.testing import CliRunner

from cryowarp.cli.main import app
from cryowarp.io.star import read_star


def test_process_command_with_settings_file_and_overrides(tmp_path):
    movies, coords = write_session(tmp_path, 2)
    settings_file = tmp_path / "s.json"
    settings_file.write_text(json.dumps(fast_settings(coords).to_dict()))
    project = tmp_path / "proj"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "process",
            str(movies),
            "--project",
            str(project),
            "--settings",
            str(settings_file),
            "--box-size",
            "40",
            "--diameter",
            "44",
            "--workers",
            "0",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    tables = read_star(project / "particles.star")
    assert len(tables["particles"]) == 10 and tables["optics"]["rlnImageSize"].iloc[0] == 40
    shown = runner.invoke(app, ["settings", str(project)])
    stored = json.loads(shown.stdout)
    assert stored["export"]["box_size_px"] == 40 and stored["pick"]["particle_diameter_a"] == 44.0


def test_process_reports_failures_with_exit_code_1(tmp_path):
    movies, coords = write_session(tmp_path, 1)
    (movies / "broken.mrc").write_text("not a movie" * 200)
    settings_file = tmp_path / "s.json"
    settings_file.write_text(json.dumps(fast_settings(coords).to_dict()))
    result = CliRunner().invoke(
        app,
        [
            "process",
            str(movies),
            "-p",
            str(tmp_path / "p"),
            "--settings",
            str(settings_file),
            "--workers",
            "0",
            "--quiet",
        ],
    )
    assert result.exit_code == 1
    assert "broken" in result.output and "failed" in result.output


def test_bad_settings_and_missing_folder_exit_2(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["process", str(tmp_path / "none"), "-p", str(tmp_path / "p"), "--quiet"])
    assert result.exit_code == 2 and "input folder does not exist" in " ".join(result.output.split())
    result = runner.invoke(
        app, ["process", str(tmp_path), "-p", str(tmp_path / "p"), "--box-size", "33", "--quiet"]
    )
    assert result.exit_code == 2 and "box_size_px must be even" in " ".join(result.output.split())
