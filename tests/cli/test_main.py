"""The console script lists every job and each subcommand has a help text with an example."""

import subprocess
import sys

from typer.testing import CliRunner

from cryowarp.cli.main import app

EXPECTED = ["simulate", "motion", "ctf", "boxnet", "process", "watch", "serve", "demo", "deconv", "info",
            "gain-check", "match2d", "match3d", "settings"]


def test_help_lists_every_job():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in EXPECTED:
        assert name in result.output, f"`cryowarp {name}` missing from --help"


def test_every_command_has_help():
    runner = CliRunner()
    for name in EXPECTED:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage" in result.output


def test_console_script_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "cryowarp.cli.main", "version"], capture_output=True, text=True)
    assert out.returncode == 0 and "cryowarp 0.1.0" in out.stdout
