"""One test (at least) per endpoint of the web app, against a small project built like the pipeline's."""

from __future__ import annotations

import io
import json
import os
import re
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from cryowarp.io.star import read_star
from cryowarp.pipeline.settings import UnknownSettingsWarning
from cryowarp.pipeline.store import ProjectStore
from cryowarp.web.app import create_app

# ---------------------------------------------------------------------- helpers


def star_rows_by_micrograph(project) -> dict[str, int]:
    """rlnMicrographName → particle rows in particles.star (the file RELION reads)."""
    path = project / "particles.star"
    if not path.exists():
        return {}
    table = read_star(path)["particles"]
    counts = table["rlnMicrographName"].value_counts().to_dict()
    return {os.path.basename(os.path.dirname(k)): v for k, v in counts.items()}


def png_array(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


# ---------------------------------------------------------------------- page and scripts


def test_index_page_loads_plotly_locally_and_nothing_from_the_internet(client):
    r = client.get("/")
    assert r.status_code == 200
    assert '<script src="/static/plotly.min.js">' in r.text
    sources = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert sources and not [s for s in sources if s.startswith(("http:", "https:", "//"))]


def test_plotly_bundle_is_the_installed_file(client):
    # the partial bundle from npm when scripts/install.sh fetched it, else the plotly package's
    # (tests/web/test_plotly_bundle.py covers both)
    r = client.get("/static/plotly.min.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    assert r.content == client.app.state.plotly_js.read_bytes()


@pytest.mark.parametrize("name", ["app.js", "style.css"])
def test_static_files_are_served(client, name):
    r = client.get(f"/static/{name}")
    assert r.status_code == 200
    assert "cdn" not in r.text.lower() and "https://" not in r.text


# ---------------------------------------------------------------------- project and items


def test_project_counts_match_the_store_and_the_star_file(client, project, truth):
    p = client.get("/api/project").json()
    assert p["n_items"] == len(truth)
    assert p["counts"]["failed"] == 1 and p["counts"]["queued"] == 1
    assert p["counts"]["processed"] + p["counts"]["filtered_out"] == 6
    # the particle count shown is exactly what RELION will read
    assert p["n_particles"] == sum(star_rows_by_micrograph(project).values())
    assert p["star"]["particles"]["n_rows"] == p["n_particles"]


def test_items_table_holds_planted_values_in_acquisition_order(client, truth):
    t = client.get("/api/items").json()
    assert t["names"] == sorted(truth)
    for i, name in enumerate(t["names"]):
        it = truth[name]
        if it.status == "done":
            assert t["metrics"]["defocus_um"][i] == pytest.approx(it.defocus_um)
            assert t["metrics"]["resolution_a"][i] == pytest.approx(it.resolution_a)
            assert t["metrics"]["n_particles"][i] == len(it.picks_px_xy)
        else:
            assert t["metrics"]["defocus_um"][i] is None
    failed = t["status"].index("failed")
    assert "truncated" in t["error"][failed]
    assert t["status"][-1] == "queued"
    # filtered out ⇔ the store's verdict, with its readable reasons
    for status, passes, reasons in zip(t["status"], t["passes"], t["reasons"], strict=True):
        assert (status == "filtered_out") == (not passes)
        assert bool(reasons) == (not passes)


def test_astigmatism_spread_matches_the_pipeline_filter(client, project):
    """Items over the astigmatism limit (in s.d.) are exactly those the store's filter rejects for it."""
    t = client.get("/api/items").json()
    sig = [s for s in t["metrics"]["astigmatism_sigma"] if s is not None]
    limit = float(np.median(sig))
    client.put("/api/filters", json={"ranges": {"astigmatism_sigma": {"max": limit}}})
    t = client.get("/api/items").json()
    for s, reasons in zip(t["metrics"]["astigmatism_sigma"], t["reasons"], strict=True):
        if s is not None:
            assert (s > limit) == any(r.startswith("astigmatism") for r in reasons)


def test_item_detail_has_picks_spectrum_tracks(client, truth):
    name = "movie_0000"
    d = client.get(f"/api/items/{name}").json()
    assert d["status"] in ("processed", "filtered_out")
    assert d["shape_yx"] == [512, 512]
    got = sorted((p["x"], p["y"]) for p in d["picks"])
    want = sorted(map(tuple, truth[name].picks_px_xy.tolist()))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert d["ps1d"]["freq_per_a"] and len(d["ps1d"]["fit"]) == len(d["ps1d"]["freq_per_a"])
    assert len(d["motion_tracks"]["tracks"]) == 9  # 3×3 patches in the fixture's motion model
    for tr in d["motion_tracks"]["tracks"]:
        assert tr["dx_px"][0] == 0 and tr["dy_px"][0] == 0  # tracks start at the patch centre
        assert len(tr["dx_px"]) == 10
    # the CTF handed to the deconvolution preview is the stored fit
    assert d["ctf"]["defocus_um"] == pytest.approx(truth[name].defocus_um)
    assert d["particle_radius_px"] == pytest.approx(0.5 * 120.0 / 2.0)


def test_unknown_item_is_404_naming_it(client):
    r = client.get("/api/items/no_such_movie")
    assert r.status_code == 404
    assert "no_such_movie" in r.json()["detail"]


def test_average_png_is_binned_for_display_and_deconvolution_changes_it(client, project):
    app_small = create_app(project, display_max_px=256)
    from fastapi.testclient import TestClient

    with TestClient(app_small) as small:
        plain = png_array(small.get("/api/items/movie_0000/average.png").content)
        assert plain.shape == (256, 256) and plain.dtype == np.uint8
    app_small.state.view.close()
    full = client.get("/api/items/movie_0000/average.png")
    assert full.headers["content-type"] == "image/png"
    full_img = png_array(full.content)
    assert full_img.shape == (512, 512)
    # the planted particles are dark blobs: their centres are darker than the image median
    d = client.get("/api/items/movie_0000").json()
    xs = np.array([p["x"] for p in d["picks"]]).round().astype(int)
    ys = np.array([p["y"] for p in d["picks"]]).round().astype(int)
    assert np.median(full_img[ys, xs]) < np.median(full_img)
    deconv = png_array(client.get("/api/items/movie_0000/average.png?deconv=1&strength=1&falloff=1").content)
    weak = png_array(client.get("/api/items/movie_0000/average.png?deconv=1&strength=0.2&falloff=1").content)
    assert deconv.shape == full_img.shape
    assert np.abs(deconv.astype(int) - full_img).mean() > 5
    assert np.abs(deconv.astype(int) - weak).mean() > 1


def test_average_png_bad_requests(client):
    assert client.get("/api/items/movie_0007/average.png").status_code == 404  # queued: nothing yet
    r = client.get("/api/items/movie_0000/average.png?deconv=1&strength=-1")
    assert r.status_code == 422


@pytest.mark.parametrize(("endpoint", "artifact"), [("ps2d.png", "ps.png"), ("thumbnail.png", "thumb.png")])
def test_spectrum_and_thumbnail_are_the_pipelines_files(client, project, endpoint, artifact):
    r = client.get(f"/api/items/movie_0001/{endpoint}")
    assert r.status_code == 200
    assert r.content == (project / "items" / "movie_0001" / artifact).read_bytes()
    assert client.get(f"/api/items/movie_0007/{endpoint}").status_code == 404


# ---------------------------------------------------------------------- selection, picks


def test_exclude_and_include_rewrite_particles_star(client, project):
    items = client.get("/api/items").json()
    selected = [n for n, s in zip(items["names"], items["status"], strict=True) if s == "processed"][0]
    rejected = [n for n, s in zip(items["names"], items["status"], strict=True) if s == "filtered_out"][0]
    before = star_rows_by_micrograph(project)
    assert selected in before and rejected not in before

    r = client.put(f"/api/items/{selected}/selection?wait=true", json={"included": False})
    assert r.status_code == 200 and r.json()["item"] == "excluded"
    assert selected not in star_rows_by_micrograph(project)

    client.put(f"/api/items/{rejected}/selection?wait=true", json={"included": True})
    rows = star_rows_by_micrograph(project)
    assert rows[rejected] == client.get(f"/api/items/{rejected}").json()["metrics"]["n_particles"]

    client.put(f"/api/items/{selected}/selection", json={"included": None})
    client.put(f"/api/items/{rejected}/selection?wait=true", json={"included": None})
    assert star_rows_by_micrograph(project) == before


def test_selection_rejects_bad_body_and_unknown_item(client):
    assert client.put("/api/items/movie_0000/selection", json={"included": "maybe"}).status_code == 422
    assert client.put("/api/items/nope/selection", json={"included": True}).status_code == 404


def test_add_and_remove_picks_are_stored_as_corrections(client, project):
    name = "movie_0001"
    before = client.get(f"/api/items/{name}/picks").json()
    r = client.post(f"/api/items/{name}/picks", json={"action": "add", "x": 250.5, "y": 100.25})
    assert r.status_code == 200
    after = r.json()
    assert len(after["picks"]) == len(before["picks"]) + 1 and after["n_user_added"] == 1
    with ProjectStore(project) as store:
        manual = [p for p in store.get_picks(name) if p["source"] == "manual"]
        assert [(p["x_px"], p["y_px"]) for p in manual] == [(250.5, 100.25)]
        assert store.get_item(name)["status"] == "queued"  # export reruns with the new picks
    # remove the user's pick (click within a particle radius of it)
    r = client.post(f"/api/items/{name}/picks", json={"action": "remove", "x": 255.0, "y": 95.0})
    assert r.json()["n_user_added"] == 0 and len(r.json()["picks"]) == len(before["picks"])
    # remove a BoxNet pick: hidden, and counted as a removal
    victim = before["picks"][0]
    r = client.post(f"/api/items/{name}/picks", json={"action": "remove", "x": victim["x"], "y": victim["y"]})
    ids = [p["id"] for p in r.json()["picks"]]
    assert victim["id"] not in ids and r.json()["n_user_removed"] == 1


def test_pick_edits_reject_bad_input(client):
    r = client.post("/api/items/movie_0001/picks", json={"action": "remove", "x": 5.0, "y": 5.0})
    assert r.status_code == 404 and "no pick within" in r.json()["detail"]
    r = client.post("/api/items/movie_0001/picks", json={"action": "add", "x": 600.0, "y": 5.0})
    assert r.status_code == 422 and "outside" in r.json()["detail"]
    r = client.post("/api/items/movie_0001/picks", json={"action": "move", "x": 5.0, "y": 5.0})
    assert r.status_code == 422 and "action" in r.json()["detail"]


# ---------------------------------------------------------------------- filters


def test_filter_change_updates_counts_and_particles_star(client, project, truth):
    limit_a = 4.2
    r = client.put("/api/filters?wait=true", json={"ranges": {"resolution_a": {"max": limit_a}}})
    assert r.status_code == 200
    body = r.json()
    assert body["filters"]["ranges"]["resolution_a"]["max"] == limit_a
    rows = star_rows_by_micrograph(project)
    with ProjectStore(project) as store:
        f = store.get_settings().filter
        assert f.resolution_max_a == limit_a
        expected = {it["name"]: it["n_particles"] for it in store.list_items(status="done") if it["selected"]}
    assert rows == expected
    assert body["project"]["n_particles"] == sum(expected.values())
    assert all(truth[n].resolution_a <= limit_a for n in rows)
    # back to Warp's default when the limit is cleared
    client.put("/api/filters", json={"ranges": {"resolution_a": {"max": None}}})
    assert client.get("/api/filters").json()["ranges"]["resolution_a"]["max"] == 5.0


def test_phase_range_switches_phase_filtering_on_and_off(client, project):
    client.put("/api/filters", json={"ranges": {"phase_shift_deg": {"min": 10.0}}})
    with ProjectStore(project) as store:
        assert store.get_settings().filter.filter_phase
        assert not any(it["selected"] for it in store.list_items(status="done"))  # all have 0°
    client.put("/api/filters", json={"ranges": {"phase_shift_deg": {"min": None, "max": None}}})
    with ProjectStore(project) as store:
        assert not store.get_settings().filter.filter_phase


def test_particle_minimum_is_an_integer(client, project):
    client.put("/api/filters", json={"ranges": {"n_particles": {"min": 7.2}}})
    with ProjectStore(project) as store:
        assert store.get_settings().filter.particles_min == 8


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ({"ranges": {"colour": {"max": 1}}}, "no filter on 'colour'"),
        ({"ranges": {"resolution_a": {"min": 1}}}, "no minimum"),
        ({"ranges": {"resolution_a": {"max": "five"}}}, "finite number"),
        ({"ranges": {"mean_motion_a": {"max": -1}}}, "greater than or equal"),
        ({"limits": {}}, "expected"),
    ],
)
def test_bad_filter_changes_are_refused_with_a_reason(client, body, match):
    r = client.put("/api/filters", json=body)
    assert r.status_code == 422
    assert re.search(match, r.json()["detail"])


# ---------------------------------------------------------------------- settings


def test_settings_form_lists_every_setting_with_its_value(client):
    s = client.get("/api/settings").json()
    paths = {f["path"]: f for f in s["fields"]}
    assert paths["pick.threshold"]["value"] == s["values"]["pick"]["threshold"]
    assert paths["pick.threshold"]["type"] == "number"
    assert paths["do_pick"]["type"] == "boolean"
    assert "Warp" in paths["filter.resolution_max_a"]["description"]


def test_changing_a_stage_setting_requeues_outdated_items(client, project):
    r = client.put("/api/settings", json={"changes": {"pick.threshold": 0.7}})
    assert r.status_code == 200
    body = r.json()
    assert body["outdated_stages"] == ["pick", "export"]
    # every processed item goes back to the queue; the failed one failed in motion, which a pick
    # change does not touch (it would only fail again), so it stays failed
    assert body["n_requeued"] == 6
    with ProjectStore(project) as store:
        assert store.get_settings().pick.threshold == 0.7
        statuses = {it["name"]: it["status"] for it in store.list_items()}
        assert statuses.pop("movie_0006") == "failed" and set(statuses.values()) == {"queued"}
        assert json.loads((project / "settings.json").read_text())["pick"]["threshold"] == 0.7
    # a change to the input (motion's settings) also retries the item that failed in motion
    body = client.put("/api/settings", json={"changes": {"input.exposure_per_frame_e_per_a2": 1.5}}).json()
    assert body["outdated_stages"] == ["motion", "ctf", "pick", "export"]
    assert body["requeued"] == ["movie_0006"]


def test_changing_a_filter_setting_requeues_nothing(client):
    body = client.put("/api/settings", json={"changes": {"filter.motion_max_a": 2.0}}).json()
    assert body["outdated_stages"] == []
    # nothing is reprocessed, failed items included
    assert body["requeued"] == []


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"export.box_size_px": 33}, "even"),
        ({"pick.colour": 1}, "colour"),
        ({}, "expected"),
    ],
)
def test_invalid_settings_are_refused(client, changes, match):
    r = client.put("/api/settings", json={"changes": changes})
    assert r.status_code == 422
    assert match in r.json()["detail"]


# ---------------------------------------------------------------------- files: never outside the project


def test_files_inside_the_project_are_served(client, project):
    r = client.get("/api/files/particles.star")
    assert r.status_code == 200 and r.content == (project / "particles.star").read_bytes()
    assert client.get("/api/files/items/movie_0000/spectrum.json").json()["freq_per_a"]


@pytest.mark.parametrize(
    "path",
    [
        "../outside.txt",
        "..%2Foutside.txt",
        "%2E%2E/outside.txt",
        "items/../../outside.txt",
        "%2Fetc%2Fpasswd",
        "//etc/passwd",
        "items/movie_0000/link_out",
        "items/%00",
    ],
)
def test_files_outside_the_project_are_never_served(client, project, path):
    (project.parent / "outside.txt").write_text("SECRET")
    os.symlink(project.parent / "outside.txt", project / "items" / "movie_0000" / "link_out")
    # send the path exactly as written (no client-side normalisation of ../)
    raw = client.base_url.copy_with(raw_path=f"/api/files/{path}".encode())
    r = client.get(raw)
    assert r.status_code == 404
    assert "SECRET" not in r.text and "root:" not in r.text


def test_artifact_paths_in_the_store_cannot_point_outside(client, project):
    """A crafted artifact path in the database does not turn the image endpoints into a file reader."""
    (project.parent / "outside.png").write_bytes(b"SECRET")
    with ProjectStore(project) as store:
        with store._write() as c:
            c.execute(
                "UPDATE items SET artifacts = ? WHERE name = 'movie_0000'",
                (json.dumps({"spectrum_png": "../outside.png", "thumbnail": "/etc/passwd"}),),
            )
    assert client.get("/api/items/movie_0000/ps2d.png").status_code == 404
    assert client.get("/api/items/movie_0000/thumbnail.png").status_code == 404


# ---------------------------------------------------------------------- token


@pytest.fixture()
def token_client(project):
    from fastapi.testclient import TestClient

    app = create_app(project, token="s3cret")
    with TestClient(app) as c:
        yield c
    app.state.view.close()


def test_token_is_required_when_set(token_client):
    assert token_client.get("/api/project").status_code == 401
    assert token_client.get("/").status_code == 401
    assert token_client.get("/api/project?token=wrong").status_code == 401
    assert token_client.get("/api/project", headers={"X-Cryowarp-Token": "s3cret"}).status_code == 200
    assert token_client.get("/api/project", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    # the browser sends it once in the URL and then carries a cookie
    r = token_client.get("/?token=s3cret")
    assert r.status_code == 200 and "cryowarp_token" in r.headers["set-cookie"]
    assert "httponly" in r.headers["set-cookie"].lower()
    assert token_client.get("/api/project").status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])
def test_serving_beyond_loopback_needs_a_token(project, host):
    from cryowarp.web.app import serve

    with pytest.raises(ValueError, match="give a token"):
        serve(project, host=host, port=1)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_binds_need_no_token(host):
    from cryowarp.web._security import check_bind, is_loopback

    assert is_loopback(host)
    check_bind(host, None)


def test_create_app_refuses_a_folder_without_a_project(tmp_path):
    with pytest.raises(FileNotFoundError, match="no cryowarp.sqlite"):
        create_app(tmp_path)


# ---------------------------------------------------------------------- live updates (real server)


def _next_event(lines, kind: str, timeout_s: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout_s
    event = None
    for line in lines:
        if time.monotonic() > deadline:
            break
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == kind:
            return json.loads(line[6:])
    raise AssertionError(f"no {kind!r} event within {timeout_s} s")


def test_events_stream_reports_store_changes(live_server):
    url, project, _ = live_server
    with httpx.stream("GET", url + "api/events", timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        first = _next_event(lines, "update")
        with ProjectStore(project) as store:
            store.set_manual("movie_0000", "exclude")
            expected = store.revision()
        second = _next_event(lines, "update")
        assert second["revision"] == expected > first["revision"]


# ---------------------------------------------------------------------- BoxNet retraining


def _wait_for_job(client, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = client.get("/api/boxnet/retrain").json()
        if st["status"] in ("done", "failed"):
            return st
        time.sleep(0.2)
    raise AssertionError("retraining did not finish")


def test_retraining_without_corrections_fails_with_a_message(client):
    assert client.get("/api/boxnet/retrain").json()["status"] == "idle"
    client.post("/api/boxnet/retrain", json={"from_scratch": True})
    st = _wait_for_job(client)
    assert st["status"] == "failed" and "no corrected items" in st["message"]


def test_retraining_on_corrections_reports_four_figures_and_saves_a_model(client, project):
    from cryowarp.picking import boxnet_from_state

    client.post("/api/items/movie_0002/picks", json={"action": "add", "x": 200.0, "y": 200.0})
    with ProjectStore(project) as store:  # and one BoxNet pick removed: a false positive for training
        auto = [p for p in store.get_picks("movie_0002") if p["source"] != "manual"]
        store.remove_pick("movie_0002", auto[0]["id"])
    settings = {
        "epochs": 2,
        "batch_size": 1,
        "patch_px": 32,
        "eval_crop_px": 32,
        "warmup_iterations": 0,
        "from_scratch": True,
        "n_general": 1,  # one simulated general micrograph mixed in 1:1 (UI default 12)
    }
    r = client.post("/api/boxnet/retrain", json=settings)
    assert r.status_code == 200
    st = _wait_for_job(client)
    assert st["status"] == "done", st["message"]
    assert st["examples"] == ["movie_0002"]
    assert [rep["epoch"] for rep in st["reports"]] == [1, 2]
    for rep in st["reports"]:
        for key in (
            "accuracy_old_model_new_data",
            "accuracy_new_model_new_data",
            "accuracy_old_model_old_data",
            "accuracy_new_model_old_data",
        ):
            assert 0.0 <= rep[key] <= 1.0
    state = torch.load(project / st["model_path"], weights_only=True)
    model = boxnet_from_state(state)
    assert state["metadata"]["retrained_on"] == ["movie_0002"]
    assert state["metadata"]["false_positives"] == {"movie_0002": 1}
    from cryowarp.io.boxnet_examples import read_example_tiff

    (kept,) = (project / "boxnet/examples").iterdir()  # the corrected item, reusable with --general
    assert kept.name == "movie_0002.tif" and float(read_example_tiff(kept).certainty.max()) == 4.0
    assert state["metadata"]["general_corpus"] == 1
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)


# ---------------------------------------------------------------------- artefact mask (training labels)


def _mask_png(client, name: str) -> np.ndarray:
    """Masked pixels of the overlay PNG (8 Å grid)."""
    r = client.get(f"/api/items/{name}/mask.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    rgba = png_array(r.content)
    assert rgba.shape[2] == 4 and set(np.unique(rgba[..., 3])) <= {0, 110}
    return rgba[..., 3] > 0


def test_mask_overlay_is_boxnets_mask_on_the_8_angstrom_grid(client, truth):
    for name, fake in truth.items():
        detail = client.get(f"/api/items/{name}").json()
        if fake.status != "done":
            assert detail["images"]["mask"] is None
            assert client.get(f"/api/items/{name}/mask.png").status_code == 404
            continue
        assert detail["images"]["mask"] == f"/api/items/{name}/mask.png" and detail["n_mask_strokes"] == 0
        masked = _mask_png(client, name)
        assert masked.shape == (128, 128)  # 512 px at 2 Å/px
        assert 100 * masked.mean() == pytest.approx(fake.mask_percentage, abs=0.01)


def test_mask_strokes_paint_and_erase_where_the_user_drags_and_reset_restores_boxnets(client, project):
    name = "movie_0001"
    before = _mask_png(client, name)
    # paint a 40-px-radius disc at (100, 300) px of the 512² micrograph (2 Å/px): mask pixels within
    # 10 of (25, 75) on the 4× coarser 8 Å grid
    r = client.post(f"/api/items/{name}/mask", json={"action": "paint", "radius_px": 40.0, "points": [[100, 300]]})
    assert r.status_code == 200 and r.json()["n_mask_strokes"] == 1
    painted = _mask_png(client, name)
    yy, xx = np.mgrid[0:128, 0:128]
    disc = (xx - 25) ** 2 + (yy - 75) ** 2 <= 100
    assert painted[disc].all()
    assert np.array_equal(painted[~disc], before[~disc])
    # a horizontal erase stroke along y = 300 from x = 60 to 140, radius 8 px (2 mask px)
    client.post(f"/api/items/{name}/mask", json={"action": "erase", "radius_px": 8.0, "points": [[60, 300], [140, 300]]})
    erased = _mask_png(client, name)
    assert not erased[75, 15:36].any() and erased[70, 25] and erased[80, 25]
    detail = client.get(f"/api/items/{name}").json()
    assert detail["n_mask_strokes"] == 2
    assert detail["store_status"] == "done"  # a training label: nothing is re-processed
    with ProjectStore(project) as store:
        assert name in store.corrected_items()
    r = client.delete(f"/api/items/{name}/mask")
    assert r.json() == {"removed_strokes": 2, "n_mask_strokes": 0, "version": r.json()["version"]}
    assert np.array_equal(_mask_png(client, name), before)


@pytest.mark.parametrize(
    ("body", "status", "match"),
    [
        ({"action": "smudge", "radius_px": 5, "points": [[1, 1]]}, 422, "paint' or 'erase"),
        ({"action": "paint", "radius_px": 0, "points": [[1, 1]]}, 422, "radius"),
        ({"action": "paint", "radius_px": 5000, "points": [[1, 1]]}, 422, "radius"),
        ({"action": "paint", "radius_px": 5, "points": []}, 422, "1 to"),
        ({"action": "paint", "radius_px": 5}, 422, "points"),
    ],
)
def test_mask_strokes_reject_bad_input(client, body, status, match):
    r = client.post("/api/items/movie_0001/mask", json=body)
    assert r.status_code == status and re.search(match, r.text), r.text


def test_mask_strokes_need_a_mask_and_a_known_item(client, truth):
    failed = next(n for n, f in truth.items() if f.status == "failed")
    r = client.post(f"/api/items/{failed}/mask", json={"action": "paint", "radius_px": 5, "points": [[1, 1]]})
    assert r.status_code == 409 and "no BoxNet mask" in r.json()["detail"]
    assert client.post("/api/items/nope/mask", json={"action": "paint", "radius_px": 5, "points": [[1, 1]]}).status_code == 404


def test_a_broken_mask_file_is_named_in_the_error(client, project):
    (project / "items/movie_0001/mask.tif").write_bytes(b"II*\x00half")
    r = client.get("/api/items/movie_0001/mask.png")
    assert r.status_code == 409 and "mask.tif" in r.json()["detail"]


def test_retraining_learns_the_painted_mask_as_artefact(client, project):
    """An item whose only correction is a mask stroke is a training example; its artefact labels are
    BoxNet's mask plus the stroke (recorded in the model's metadata)."""
    name = "movie_0001"
    own = 100 * _mask_png(client, name).mean()
    client.post(f"/api/items/{name}/mask", json={"action": "paint", "radius_px": 60.0, "points": [[100, 100], [200, 100]]})
    painted = 100 * _mask_png(client, name).mean()
    assert painted > own + 3
    settings = {"epochs": 1, "batch_size": 1, "patch_px": 32, "eval_crop_px": 32, "warmup_iterations": 0,
                "from_scratch": True, "n_general": 0}
    assert client.post("/api/boxnet/retrain", json=settings).status_code == 200
    st = _wait_for_job(client)
    assert st["status"] == "done", st["message"]
    assert st["examples"] == [name]
    metadata = torch.load(project / st["model_path"], weights_only=True)["metadata"]
    assert metadata["masked_percent"][name] == pytest.approx(painted, abs=1e-3)
    # the example is kept as a Warp-style TIFF whose label 2 is the painted mask
    from cryowarp.io.boxnet_examples import read_example_tiff

    example = read_example_tiff(project / "boxnet/examples" / f"{name}.tif")
    assert 100 * float((example.labels == 2).float().mean()) == pytest.approx(painted, abs=0.5)


def test_retraining_skips_an_item_with_an_unreadable_mask_and_names_it(client, project):
    settings = {"epochs": 1, "batch_size": 1, "patch_px": 32, "eval_crop_px": 32, "warmup_iterations": 0,
                "from_scratch": True, "n_general": 0}
    for name in ("movie_0001", "movie_0002"):
        client.post(f"/api/items/{name}/picks", json={"action": "add", "x": 100.0, "y": 100.0})
    (project / "items/movie_0002/mask.tif").write_bytes(b"II*\x00half-written")
    client.post("/api/boxnet/retrain", json=settings)
    st = _wait_for_job(client)
    assert st["status"] == "done", st["message"]
    assert st["examples"] == ["movie_0001"]
    assert "skipped movie_0002: mask.tif" in st["message"]
    metadata = torch.load(project / st["model_path"], weights_only=True)["metadata"]
    assert list(metadata["skipped"]) == ["movie_0002"]
    # with every corrected item unusable the job fails and says why
    (project / "items/movie_0001/average.mrc").write_bytes(b"\x00" * 100)
    client.post("/api/boxnet/retrain", json=settings)
    st = _wait_for_job(client)
    assert st["status"] == "failed"
    assert "no corrected item can be used" in st["message"] and "average.mrc" in st["message"]


def test_each_retraining_is_a_new_model_file_and_adopting_it_repicks(client, project):
    """A second retraining must not overwrite the first: adopting it is then a settings change and
    re-queues picking (with one file name, 'use the retrained model' again changed nothing)."""
    settings = {"epochs": 1, "batch_size": 1, "patch_px": 32, "eval_crop_px": 32, "warmup_iterations": 0,
                "from_scratch": True, "n_general": 0}
    client.post("/api/items/movie_0001/picks", json={"action": "add", "x": 100.0, "y": 100.0})
    paths = []
    for _ in range(2):
        client.post("/api/boxnet/retrain", json=settings)
        st = _wait_for_job(client)
        assert st["status"] == "done", st["message"]
        paths.append(st["model_path"])
        r = client.put("/api/settings", json={"changes": {"boxnet_model_path": st["model_path"]}})
        assert r.status_code == 200 and "pick" in r.json()["outdated_stages"], r.json()
    assert [os.path.basename(p) for p in paths] == ["boxnet_retrained_001.pt", "boxnet_retrained_002.pt"]
    assert all(os.path.isfile(p) for p in paths)


def test_retraining_rejects_bad_settings(client):
    r = client.post("/api/boxnet/retrain", json={"epochs": 0})
    assert r.status_code == 422 and "epochs" in r.json()["detail"]
    r = client.post("/api/boxnet/retrain", json={"n_general": -1})
    assert r.status_code == 422 and "n_general" in r.json()["detail"]


def test_local_defocus_overlay_recovers_the_planted_tilt(client, truth):
    """The fixture's CTF grid rises by DEFOCUS_GRADIENT_X_UM from left to right and is flat along y."""
    from project_factory import DEFOCUS_GRADIENT_X_UM, SHAPE_YX

    name = "movie_0002"
    d = client.get(f"/api/items/{name}").json()["local_defocus"]
    z = np.array(d["defocus_um"])
    assert z.shape == (len(d["y_px"]), len(d["x_px"]))
    np.testing.assert_allclose(z, np.broadcast_to(z[:1], z.shape), atol=1e-5)  # no change along y
    # a linear grid is reproduced exactly by the cubic interpolation: slope and centre as planted
    x = np.array(d["x_px"]) / (SHAPE_YX[1] - 1)
    slope, intercept = np.polyfit(x, z[0], 1)
    assert slope == pytest.approx(DEFOCUS_GRADIENT_X_UM, abs=2e-3)
    assert intercept + 0.5 * slope == pytest.approx(truth[name].defocus_um, abs=1e-3)


def test_stored_settings_with_unknown_keys_still_open(client, project):
    """A project written by a newer version (unknown settings key) stays usable: the key is dropped
    with a warning naming it, and the project summary lists it."""
    with ProjectStore(project) as store:
        with store._write() as c:
            row = c.execute("SELECT id, json FROM settings ORDER BY id DESC LIMIT 1").fetchone()
            data = json.loads(row["json"])
            data["input"]["from_the_future"] = 1
            c.execute("UPDATE settings SET json = ? WHERE id = ?", (json.dumps(data), row["id"]))
    with pytest.warns(UnknownSettingsWarning, match=r"input\.from_the_future"):
        r = client.get("/api/filters")
        assert r.status_code == 200 and r.json()["settings"]["resolution_max_a"] > 0
        assert client.get("/api/project").json()["settings_dropped"] == ["input.from_the_future"]


def test_unreadable_stored_settings_give_a_clear_error(client, project):
    """Stored settings with a known key of the wrong type are reported, not a bare 500."""
    with ProjectStore(project) as store:
        with store._write() as c:
            row = c.execute("SELECT id, json FROM settings ORDER BY id DESC LIMIT 1").fetchone()
            data = json.loads(row["json"])
            data["input"]["exposure_per_frame_e_per_a2"] = "lots"
            c.execute("UPDATE settings SET json = ? WHERE id = ?", (json.dumps(data), row["id"]))
    r = client.get("/api/filters")
    assert r.status_code == 500
    detail = r.json()["detail"]
    assert "stored settings do not match" in detail and "exposure_per_frame_e_per_a2" in detail


def test_star_files_follow_in_the_background_without_wait(client, project):
    """Without ?wait the request returns at once and the rewrite follows; the project reports it."""
    before = star_rows_by_micrograph(project)
    victim = sorted(before)[0]
    r = client.put(f"/api/items/{victim}/selection", json={"included": False})
    star = r.json()["star"]
    assert star["pending"] or star["writing"] or star["version"] >= 1
    deadline = time.monotonic() + 30
    while True:
        w = client.get("/api/project").json()["star_writer"]
        if not (w["pending"] or w["writing"]):
            break
        assert time.monotonic() < deadline, "STAR rewrite did not finish in 30 s"
        time.sleep(0.05)
    assert w["last"]["error"] is None and "particles" in w["last"]["files"]
    expected = {k: v for k, v in before.items() if k != victim}
    assert star_rows_by_micrograph(project) == expected


def test_web_layer_uses_public_store_methods_only():
    """The web layer reads the store through its public API (no private ``_query`` SQL)."""
    from pathlib import Path

    import cryowarp.web

    for path in Path(cryowarp.web.__file__).parent.glob("*.py"):
        assert "._query(" not in path.read_text() and "._conn" not in path.read_text(), path.name
