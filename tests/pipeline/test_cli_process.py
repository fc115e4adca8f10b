"""`cryowarp process` / `cryowarp settings` from the command line on a tiny real session."""

from __future__ import annotations

import json

from tests.pipeline.sessions import fast_settings, write_session
from typer.testing import CliRunner

from cryowarp.cli.main import app
from cryowarp.io.star import read_star


def session_and_settings(tmp_path, n_movies: int, broken_name: str | None = None):
    """A session of ``n_movies`` (plus an unreadable ``broken_name`` if given) and a fast settings file."""
    movies, coords = write_session(tmp_path, n_movies)
    if broken_name is not None:
        (movies / broken_name).write_text("not a movie" * 200)
    settings_file = tmp_path / "s.json"
    settings_file.write_text(json.dumps(fast_settings(coords).to_dict()))
    return movies, settings_file


def test_process_command_with_settings_file_and_overrides(tmp_path):
    movies, settings_file = session_and_settings(tmp_path, 2)
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
    movies, settings_file = session_and_settings(tmp_path, 1, "broken.mrc")
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


def test_throughput_counts_only_processed_movies(tmp_path):
    """A session where every file fails at read has no throughput ("—"), not thousands of movies/h."""
    movies = tmp_path / "movies"
    movies.mkdir()
    for i in range(3):
        (movies / f"broken_{i}.mrc").write_text("not a movie" * 200)
    result = CliRunner().invoke(
        app, ["process", str(movies), "-p", str(tmp_path / "p"), "--pixel-size", "2", "--workers", "0", "-q"]
    )
    assert result.exit_code == 1, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("throughput"))
    assert row.split() == ["throughput", "—"], row


def test_bad_settings_and_missing_folder_exit_2(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["process", str(tmp_path / "none"), "-p", str(tmp_path / "p"), "--quiet"])
    assert result.exit_code == 2 and "input folder does not exist" in " ".join(result.output.split())
    result = runner.invoke(
        app, ["process", str(tmp_path), "-p", str(tmp_path / "p"), "--box-size", "33", "--quiet"]
    )
    assert result.exit_code == 2 and "box_size_px must be even" in " ".join(result.output.split())
    missing = tmp_path / "sttings.json"
    result = runner.invoke(app, ["process", str(tmp_path), "-p", str(tmp_path / "p"), "--settings", str(missing), "-q"])
    text = "".join(result.output.split())  # rich may wrap the long path
    assert result.exit_code == 2 and "".join(f"error: {missing}: settings file not found".split()) in text, text
    assert "Errno" not in text


def test_missing_gain_reference_is_an_error_before_any_movie_is_processed(tmp_path):
    """A mistyped --gain must stop at once (exit 2, naming the file), not fail every movie of the session."""
    movies, _ = write_session(tmp_path, 1)
    missing = tmp_path / "gian.mrc"
    result = CliRunner().invoke(
        app, ["process", str(movies), "-p", str(tmp_path / "p"), "--gain", str(missing), "--workers", "0", "-q"]
    )
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "gian.mrc" in text and "gain reference" in text
    assert not (tmp_path / "p").exists()


def test_progress_lines_when_the_output_is_not_a_terminal(tmp_path):
    """`cryowarp watch ... > log`: no live panel can be drawn, so each finished item gets one log line."""
    import re

    movies, settings_file = session_and_settings(tmp_path, 1, "broken.mrc")
    args = ["process", str(movies), "-p", str(tmp_path / "p"), "--settings", str(settings_file), "--workers", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    progress = [line for line in lines if re.match(r"\d\d:\d\d:\d\d done \d+, failed \d+", line)]
    assert len(progress) == 2, result.output  # one line per finished item
    assert "done 1, failed 1, running 0, queued 0" in progress[-1]
    assert any(re.match(r"\d\d:\d\d:\d\d broken: failed — read: broken.mrc", line) for line in lines)
    quiet = CliRunner().invoke(app, [*args[:3], "-p", str(tmp_path / "q"), *args[5:], "-q"])
    assert not re.search(r"\d\d:\d\d:\d\d done", quiet.output)


def test_threshold_option_is_a_fixed_threshold_as_in_boxnet_pick(tmp_path):
    """`process --threshold 0.9` must change the picks: with the default relative threshold the per-micrograph
    threshold is min(0.9, 0.3·q), so only setting it fixed (as `boxnet pick --threshold` does) honours it."""
    from cryowarp.cli.process import settings_from_options

    settings = settings_from_options(tmp_path / "p", None, {"threshold": 0.9})
    assert settings.pick.threshold == 0.9 and settings.pick.relative_threshold is None
    default = settings_from_options(tmp_path / "p", None, {})
    assert default.pick.relative_threshold is not None  # the calibrated default is kept without the option


def test_particle_larger_than_the_box_is_an_error_before_any_movie_is_processed(tmp_path):
    """Defaults (D = 200 Å, box 128 px) at 1 Å/px cannot be exported: say so at once, not after motion,
    CTF and picking of every movie failed at export."""
    movies, _ = write_session(tmp_path, 1)
    args = ["process", str(movies), "-p", str(tmp_path / "p"), "--pixel-size", "1.0", "--workers", "0", "-q"]
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "200 px" in text and "128-px box" in text and "--box-size" in text
    assert not (tmp_path / "p").exists()


def test_failure_list_survives_file_names_that_look_like_rich_markup(tmp_path):
    """The summary prints each failure; a name such as `grid[bold]1` must be shown as it is (not as markup)."""
    movies, settings_file = session_and_settings(tmp_path, 1, "grid[bold]1.mrc")
    args = ["process", str(movies), "-p", str(tmp_path / "p"), "--settings", str(settings_file), "--workers", "0", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, (result.output, result.exception)
    assert "failed grid[bold]1: read: grid[bold]1.mrc" in result.output
