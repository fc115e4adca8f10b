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


def test_bad_input_file_is_one_error_line_not_a_traceback(tmp_path):
    """A truncated movie given to a single-file command: `error: <file>: <problem>`, exit code 2."""
    import mrcfile
    import numpy as np

    full = tmp_path / "full.mrc"
    with mrcfile.new(full) as m:
        m.set_data(np.ones((4, 64, 64), np.float32))
    bad = tmp_path / "cut.mrc"
    bad.write_bytes(full.read_bytes()[: 1024 + 64 * 64 * 4 * 2])
    runner = CliRunner()
    for args in (
        ["motion", str(bad), "--pixel-size", "1", "--exposure", "1", "-o", str(tmp_path / "m")],
        ["ctf", str(bad), "--pixel-size", "1", "-o", str(tmp_path / "c")],
        ["settings", str(tmp_path / "no_project")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and "error: " in result.output, result.output
    assert "cut.mrc" in runner.invoke(app, ["ctf", str(bad), "-o", str(tmp_path / "c")]).output


def test_boxnet_pick_skips_an_unreadable_micrograph_and_picks_the_rest(tmp_path):
    """`boxnet pick *.mrc` over a session: one broken file is reported (exit 1), the others are picked."""
    import numpy as np

    from cryowarp.io.mrc import write_mrc

    good = tmp_path / "good.mrc"
    write_mrc(good, np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32), 4.0)
    empty = tmp_path / "empty.mrc"
    empty.write_bytes(b"")
    out = tmp_path / "picks"
    result = CliRunner().invoke(app, ["boxnet", "pick", str(empty), str(good), "--diameter", "80", "-o", str(out)])
    assert result.exit_code == 1, (result.output, result.exception)
    assert (out / "good_boxnet.star").is_file()
    assert "empty.mrc: file is empty" in result.output and "Traceback" not in result.output
