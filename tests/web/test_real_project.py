"""The UI on a project the real pipeline produced (simulated movie → motion → CTF → BoxNet → export)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # simulates and processes a 1024² × 8 movie (~1 min on 2 cores)


@pytest.fixture(scope="module")
def real_project(tmp_path_factory):
    from cryowarp.cli.process import run_pipeline
    from cryowarp.sim import MovieSimSettings
    from cryowarp.sim.session import simulate_session

    root = tmp_path_factory.mktemp("real")
    session, project = root / "session", root / "project"
    settings = MovieSimSettings(
        shape_yx=(1024, 1024), n_frames=8, pixel_size_a=1.5, exposure_per_frame_e_per_a2=5.0
    )
    simulate_session(session, 1, settings, seed=2)
    options = {
        "pixel_size": 1.5,
        "exposure": 5.0,
        "gain": session / "gain.mrc",
        "diameter": 180.0,
        "box_size": 128,
        "pattern": ["*.tif"],
        "workers": 0,
        "quiet": True,
        "device": "cpu",
    }
    run_pipeline(session, project, options, watch=False, settings_file=None)
    return project


@pytest.fixture()
def real_client(real_project):
    from fastapi.testclient import TestClient

    from cryowarp.web.app import create_app

    app = create_app(real_project)
    with TestClient(app) as c:
        yield c
    app.state.stars.wait(60)
    app.state.view.close()


def test_real_item_has_everything_the_item_view_shows(real_client):
    table = real_client.get("/api/items").json()
    assert table["names"] == ["movie_0000"]
    assert table["status"][0] in ("processed", "filtered_out"), table["error"][0]
    d = real_client.get("/api/items/movie_0000").json()
    assert d["shape_yx"] == [1024, 1024] and d["pixel_size_a"] == pytest.approx(1.5)
    # the CTF fit, its 1D curves and the local defocus grid come from the pipeline's ctf.json/spectrum.json
    s = d["ps1d"]
    assert len(s["ps"]) == len(s["fit"]) == len(s["background"]) == len(s["freq_per_a"])
    z = np.array(d["local_defocus"]["defocus_um"])
    assert np.all(np.abs(z - d["ctf"]["defocus_um"]) < 0.5)  # local values scatter around the mean
    assert len(d["motion_tracks"]["tracks"]) >= 1
    assert all(len(t["dx_px"]) == 8 for t in d["motion_tracks"]["tracks"])


def test_real_item_images_render(real_client):
    avg = Image.open(io.BytesIO(real_client.get("/api/items/movie_0000/average.png").content))
    assert avg.size == (1024, 1024)
    dec = real_client.get("/api/items/movie_0000/average.png?deconv=1&strength=1&falloff=1")
    assert dec.status_code == 200
    ps = Image.open(io.BytesIO(real_client.get("/api/items/movie_0000/ps2d.png").content))
    assert min(ps.size) >= 128
