"""``cryowarp serve``: refuses unsafe binds and non-projects; serves a project over HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from cryowarp.cli.main import app


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--host", "0.0.0.0"], "give a token"),
        (["--host", "10.1.2.3", "--port", "9"], "give a token"),
    ],
)
def test_serve_refuses_a_public_bind_without_token(project, args, match):
    result = CliRunner().invoke(app, ["serve", str(project), *args])
    assert result.exit_code == 2
    assert match in " ".join(result.output.split())


def test_serve_refuses_a_folder_that_is_not_a_project(tmp_path):
    result = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert result.exit_code == 2
    assert "no cryowarp.sqlite" in " ".join(result.output.split())


def test_serve_on_a_port_in_use_is_one_error_line_without_a_url(project):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", str(project), "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"error: port {port} is in use" in " ".join(result.output.split())
    assert "http://" not in result.output and "Traceback" not in result.output


@pytest.mark.slow  # a fresh interpreter importing torch: ~5-10 s
def test_serve_serves_the_project_with_its_token(project):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "cryowarp.cli.main",
        "serve",
        str(project),
        "--port",
        str(port),
        "--token",
        "tok",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/api/project"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(url, headers={"X-Cryowarp-Token": "tok"}, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"server did not come up: {proc.stdout.read().decode()}") from None
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["n_items"] == 8
        assert httpx.get(url, timeout=2).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("command", ["demo", "watch"])
def test_demo_and_watch_ui_refuse_a_public_bind_without_token_before_running(tmp_path, command):
    """The three commands that serve the UI bind it the same way (``cli.serve.bind_ui_or_exit``)."""
    (tmp_path / "movies").mkdir()
    args = {
        "demo": ["demo", "--dir", str(tmp_path), "--host", "0.0.0.0", "--n-movies", "1", "--quiet"],
        "watch": ["watch", str(tmp_path / "movies"), "--project", str(tmp_path / "p"), "--ui",
                    "--host", "0.0.0.0", "--pixel-size", "4", "--quiet"],
    }[command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "give a token" in " ".join(result.output.split())
    assert "UI" not in result.output and "Traceback" not in result.output  # no URL of a server that is not there
    assert not (tmp_path / "session").exists()  # the demo simulated nothing
