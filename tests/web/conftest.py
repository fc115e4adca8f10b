"""Fixtures for the web tests: a small project (built once, copied per test), a client, a live server."""

from __future__ import annotations

import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from project_factory import build_project, fake_items  # noqa: E402

ARTIFACTS = Path(__file__).parent / "artifacts"
N_ITEMS = 8  # 6 processed, 1 failed, 1 queued


@pytest.fixture(scope="session")
def project_template(tmp_path_factory) -> tuple[Path, list]:
    """A processed project of N_ITEMS made-up items, and their ground truth."""
    items = fake_items(N_ITEMS, seed=3)
    path = build_project(tmp_path_factory.mktemp("template") / "session", items)
    return path, items


@pytest.fixture()
def project(project_template, tmp_path) -> Path:
    """A fresh copy of the template project (tests may change it)."""
    src, _ = project_template
    dst = tmp_path / "session"
    shutil.copytree(src, dst)
    return dst


@pytest.fixture()
def truth(project_template) -> dict:
    """Ground truth of the template's items by name."""
    return {it.name: it for it in project_template[1]}


@pytest.fixture()
def client(project):
    """A TestClient on a fresh project."""
    from fastapi.testclient import TestClient

    from cryowarp.web.app import create_app

    app = create_app(project, poll_interval_s=0.1)
    with TestClient(app) as c:
        yield c
    app.state.stars.wait(60)
    app.state.retrain.join(60)
    app.state.view.close()


class LiveServer:
    """uvicorn in a thread, serving ``app`` on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.app = app
        self.url = f"http://127.0.0.1:{self.port}/"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 15 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.app.state.stopping = True  # ends open event streams
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture()
def live_server(project):
    """A live server on a fresh project: yields (base url, project path, app)."""
    from cryowarp.web.app import create_app

    app = create_app(project, poll_interval_s=0.2)
    with LiveServer(app) as server:
        yield server.url, project, app
    app.state.stars.wait(60)
    app.state.retrain.join(60)
    app.state.view.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where browser tests save their screenshots (tests/web/artifacts)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
