"""The UI in a real browser (Debian's chromium via Playwright) against a live server on a small project.

Screenshots of every page go to tests/web/artifacts/ (look at them when the UI changes).
"""

from __future__ import annotations

import re
import time

import pytest
import torch
from playwright.sync_api import expect

from cryowarp.io.star import read_star
from cryowarp.picking import boxnet_from_state, model_blob_weight
from cryowarp.pipeline.starfiles import write_star_files
from cryowarp.pipeline.store import ProjectStore

pytestmark = pytest.mark.browser


def open_page(page, url: str) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=20_000)
    page._cw_errors = errors  # checked at the end of each test


def star_particle_rows(project) -> int:
    path = project / "particles.star"
    return len(read_star(path)["particles"]) if path.exists() else 0


def selected_particles(project) -> int:
    with ProjectStore(project) as store:
        return sum(it["n_particles"] for it in store.list_items(status="done") if it["selected"])


def wait_until(predicate, timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` (the STAR files are rewritten in the background)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def data_to_page_xy(page, div: str, x: float, y: float, axes=("xaxis", "yaxis")) -> tuple[float, float]:
    """Page coordinates of data point (x, y) of a Plotly plot (on the given pair of axes)."""
    return tuple(
        page.evaluate(
            """([id, x, y, xa, ya]) => { const gd = document.getElementById(id), fl = gd._fullLayout;
           const bb = gd.getBoundingClientRect();
           return [bb.left + fl[xa]._offset + fl[xa].d2p(x), bb.top + fl[ya]._offset + fl[ya].d2p(y)]; }""",
            [div, x, y, *axes],
        )
    )


def trace_names(page, div: str) -> list[str]:
    return page.evaluate(f"document.getElementById('{div}').data.map(t => t.name)")


def test_overview_filter_range_updates_count_and_particles_star(page, live_server, artifacts_dir):
    url, project, _ = live_server
    open_page(page, url)
    expect(page.locator("#plot-resolution_a .main-svg").first).to_be_visible()
    expect(page.locator("#count-particles")).to_have_text(str(star_particle_rows(project)))
    page.screenshot(path=artifacts_dir / "overview.png", full_page=True)

    # type a range that drops the selected item with the worst resolution
    before = star_particle_rows(project)
    with ProjectStore(project) as store:
        res = sorted(it["resolution_a"] for it in store.list_items(status="done") if it["selected"])
    limit = round((res[-1] + res[-2]) / 2, 3)
    page.fill("#fmax-resolution_a", str(limit))
    page.press("#fmax-resolution_a", "Tab")
    expect(page.locator("#count-particles")).not_to_have_text(str(before))
    with ProjectStore(project) as store:
        assert store.get_settings().filter.resolution_max_a == limit
    after = selected_particles(project)
    assert after < before
    expect(page.locator("#count-particles")).to_have_text(str(after))
    expect(page.locator("#star-info")).to_have_text(f"particles.star: {after} rows", timeout=30_000)
    assert star_particle_rows(project) == after

    # drag a range: box-select on the motion histogram from the left edge to 1.5 Å
    page.evaluate("document.getElementById('card-mean_motion_a').scrollIntoView({block: 'center'})")
    page.wait_for_selector("#plot-mean_motion_a .main-svg")
    x0, y0 = page.evaluate("""() => { const gd = document.getElementById('plot-mean_motion_a');
        const fl = gd._fullLayout, bb = gd.getBoundingClientRect();
        return [bb.left + fl.xaxis2._offset + 2, bb.top + fl.yaxis2._offset + fl.yaxis2._length / 2]; }""")
    x1, _ = data_to_page_xy(page, "plot-mean_motion_a", 1.5, 0.5, axes=("xaxis2", "yaxis2"))
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, y0, steps=4)
    page.mouse.move(x1, y0, steps=4)
    page.mouse.up()
    page.wait_for_function(
        "() => { const v = document.getElementById('fmax-mean_motion_a').value;"
        " return v !== '' && Number(v) < 2.0; }",
        timeout=10_000,
    )
    with ProjectStore(project) as store:
        limit = store.get_settings().filter.motion_max_a
        assert limit == pytest.approx(1.5, abs=0.1)  # a few screen pixels of the histogram axis
        assert all(it["mean_motion_a"] <= limit for it in store.list_items(status="done") if it["selected"])
    expect(page.locator("#count-particles")).to_have_text(str(selected_particles(project)))
    wait_until(lambda: star_particle_rows(project) == selected_particles(project), what="particles.star")
    # drag the dashed resolution limit on the scatter plot down to 3.5 Å
    page.evaluate("document.getElementById('card-resolution_a').scrollIntoView({block: 'center'})")
    current = float(page.input_value("#fmax-resolution_a"))
    x, y_from = data_to_page_xy(page, "plot-resolution_a", 500.0, current)
    x = page.evaluate("""() => { const gd = document.getElementById('plot-resolution_a'), fl = gd._fullLayout;
        return gd.getBoundingClientRect().left + fl.xaxis._offset + fl.xaxis._length / 2; }""")
    _, y_to = data_to_page_xy(page, "plot-resolution_a", 0.0, 3.5)
    page.mouse.move(x, y_from)
    page.mouse.down()
    page.mouse.move(x, (y_from + y_to) / 2, steps=4)
    page.mouse.move(x, y_to, steps=4)
    page.mouse.up()
    page.wait_for_function(
        "() => Math.abs(Number(document.getElementById('fmax-resolution_a').value) - 3.5) < 0.1"
    )
    with ProjectStore(project) as store:
        # one screen pixel is ~0.03 Å on this axis; allow a few
        assert store.get_settings().filter.resolution_max_a == pytest.approx(3.5, abs=0.1)
    expect(page.locator("#count-particles")).to_have_text(str(selected_particles(project)))
    wait_until(lambda: star_particle_rows(project) == selected_particles(project), what="particles.star")
    page.screenshot(path=artifacts_dir / "overview_filtered.png", full_page=True)

    # a click on a point of the defocus scatter opens that item
    page.evaluate("document.getElementById('card-defocus_um').scrollIntoView({block: 'center'})")
    t = page.evaluate(
        "(() => { const d = document.getElementById('plot-defocus_um').data[0];"
        " return [d.x[0], d.y[0], d.text[0]]; })()"
    )
    px, py = data_to_page_xy(page, "plot-defocus_um", t[0], t[1])
    page.mouse.click(px, py)
    expect(page.locator("#item-name")).to_have_text(t[2])
    assert page._cw_errors == []


def test_overview_updates_live_without_reloading(page, live_server):
    url, project, _ = live_server
    open_page(page, url)
    page.evaluate("window.__notReloaded = true")
    n = int(page.locator("#count-selected").inner_text())
    with ProjectStore(project) as store:
        name = next(it["name"] for it in store.list_items(status="done") if it["selected"])
        store.set_manual(name, "exclude")
        write_star_files(store)
    expect(page.locator("#count-selected")).to_have_text(str(n - 1), timeout=10_000)
    expect(page.locator(f"#navbar .cell[data-name='{name}']")).to_have_class(re.compile("st-excluded"))
    assert page.evaluate("window.__notReloaded") is True
    assert page._cw_errors == []


def test_item_view_overlays_deconvolution_and_pick_editing(page, live_server, artifacts_dir):
    url, project, _ = live_server
    open_page(page, url + "#/item/movie_0001")
    expect(page.locator("#item-name")).to_have_text("movie_0001")
    page.wait_for_function(
        "() => { const d = document.getElementById('average').data;"
        " return d && d.some(t => t.name === 'boxnet picks'); }"
    )
    expect(page.locator("#ps2d")).to_have_js_property("complete", True)
    assert page.evaluate("document.getElementById('ps2d').naturalWidth") == 256
    expect(page.locator("#ps1d .main-svg").first).to_be_visible()
    page.screenshot(path=artifacts_dir / "item.png", full_page=True)

    # overlays
    page.uncheck("#show-particles")
    assert "boxnet picks" not in trace_names(page, "average")
    page.check("#show-particles")
    page.check("#show-tracks")
    assert any(n.startswith("motion ×") for n in trace_names(page, "average"))
    page.uncheck("#show-tracks")
    assert not any(n.startswith("motion ×") for n in trace_names(page, "average"))
    page.check("#show-defocus")
    assert "local defocus" in trace_names(page, "average")
    page.screenshot(path=artifacts_dir / "item_overlays.png", full_page=True)
    page.uncheck("#show-defocus")
    assert "local defocus" not in trace_names(page, "average")

    # deconvolution with sliders
    page.check("#deconv")
    src = page.evaluate("document.getElementById('average').layout.images[0].source")
    assert "deconv=1" in src and "strength=1" in src
    page.locator("#deconv-strength").fill("0.5")
    page.wait_for_function(
        "() => document.getElementById('average').layout.images[0].source.includes('strength=0.5')"
    )
    page.wait_for_timeout(500)
    page.screenshot(path=artifacts_dir / "item_deconvolved.png", full_page=True)
    page.uncheck("#deconv")

    # add a pick by clicking an empty spot, then remove it by clicking it
    with ProjectStore(project) as store:
        n_before = len(store.get_picks("movie_0001"))
    page.check("#edit-picks")
    page.evaluate("document.getElementById('average').scrollIntoView({block: 'center'})")
    target = (300.0, 470.0)
    px, py = data_to_page_xy(page, "average", *target)
    page.mouse.click(px, py)
    expect(page.locator("#pick-count")).to_contain_text("1 added")
    with ProjectStore(project) as store:
        manual = [p for p in store.get_picks("movie_0001") if p["source"] == "manual"]
    assert len(manual) == 1
    # one screen pixel is < 1 micrograph pixel here; allow 2 px for rounding of the click position
    assert abs(manual[0]["x_px"] - target[0]) < 2 and abs(manual[0]["y_px"] - target[1]) < 2
    page.screenshot(path=artifacts_dir / "item_pick_added.png", full_page=True)
    page.mouse.click(px, py)
    expect(page.locator("#pick-count")).to_contain_text("0 added")
    with ProjectStore(project) as store:
        assert len(store.get_picks("movie_0001")) == n_before

    # arrow keys move between items
    page.keyboard.press("ArrowRight")
    expect(page.locator("#item-name")).to_have_text("movie_0002")
    expect(page.locator("#navbar .cell.current")).to_have_attribute("data-name", "movie_0002")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#item-name")).to_have_text("movie_0001")
    assert page._cw_errors == []


def test_mask_overlay_and_painting_a_stroke_for_retraining(page, live_server, artifacts_dir):
    url, project, _ = live_server
    open_page(page, url + "#/item/movie_0001")
    expect(page.locator("#item-name")).to_have_text("movie_0001")
    expect(page.locator("#mask-info")).to_have_text("0 mask strokes by you")
    n_images = "document.getElementById('average').layout.images.length"
    assert page.evaluate(n_images) == 1
    page.check("#show-mask")
    page.wait_for_function(f"() => {n_images} === 2")
    assert "/api/items/movie_0001/mask.png" in page.evaluate("document.getElementById('average').layout.images[1].source")

    # edit mode: a drag paints one stroke (no pan), sent in micrograph pixels with the brush radius in px
    page.check("#edit-mask")
    assert not page.is_checked("#edit-picks")
    page.locator("#mask-brush").fill("200")  # Å; 100 px at 2 Å/px
    page.evaluate("document.getElementById('average').scrollIntoView({block: 'center'})")
    ranges = "[document.getElementById('average').layout.xaxis.range, document.getElementById('average').layout.yaxis.range]"
    ranges_before = page.evaluate(ranges)
    (x0, y0), (x1, y1) = data_to_page_xy(page, "average", 100.0, 150.0), data_to_page_xy(page, "average", 300.0, 150.0)
    page.mouse.move(x0, y0)
    # the brush cursor follows the mouse with the brush's size at this zoom (100 micrograph px)
    assert page.evaluate("getComputedStyle(document.getElementById('brush-layer')).display") == "block"
    r_screen = float(page.get_attribute("#brush-cursor", "r"))
    assert r_screen == pytest.approx(abs(data_to_page_xy(page, "average", 200.0, 0)[0]
                                         - data_to_page_xy(page, "average", 100.0, 0)[0]), rel=0.02)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, y0, steps=5)
    page.mouse.move(x1, y1, steps=5)
    # while drawing, the stroke shows before it is sent
    assert len(page.get_attribute("#brush-path", "points").split()) >= 5
    page.screenshot(path=artifacts_dir / "item_mask_drawing.png", full_page=False)
    page.mouse.up()
    expect(page.locator("#mask-info")).to_have_text("1 mask stroke by you")
    expect(page.locator("#brush-path")).to_have_attribute("points", "")
    assert page.evaluate(ranges) == ranges_before  # the drag did not pan
    with ProjectStore(project) as store:
        (stroke,) = store.mask_strokes("movie_0001")
        assert "movie_0001" in store.corrected_items()
    assert stroke.paint and stroke.radius_px == pytest.approx(100.0)
    xs, ys = zip(*stroke.points_px_xy, strict=True)
    assert abs(xs[0] - 100) < 3 and abs(xs[-1] - 300) < 3 and max(abs(y - 150) for y in ys) < 3
    assert len(xs) >= 3  # the path, not only its ends
    page.wait_for_timeout(300)
    page.screenshot(path=artifacts_dir / "item_mask_painted.png", full_page=True)

    # shift-drag erases; "Reset mask edits" forgets both strokes
    page.keyboard.down("Shift")
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    expect(page.locator("#mask-info")).to_have_text("2 mask strokes by you")
    with ProjectStore(project) as store:
        assert [s.paint for s in store.mask_strokes("movie_0001")] == [True, False]
    page.click("#mask-reset")
    expect(page.locator("#mask-info")).to_have_text("0 mask strokes by you")
    page.check("#edit-picks")
    assert not page.is_checked("#edit-mask")
    assert page._cw_errors == []


def test_failed_item_shows_its_message_and_exclude_button_works(page, live_server):
    url, project, _ = live_server
    open_page(page, url + "#/item/movie_0006")
    expect(page.locator("#item-status")).to_have_text("failed")
    expect(page.locator("#item-error")).to_contain_text("truncated")
    page.goto(url + "#/item/movie_0000")
    expect(page.locator("#item-name")).to_have_text("movie_0000")
    page.click("#item-exclude")
    expect(page.locator("#item-status")).to_have_text("excluded")
    with ProjectStore(project) as store:
        assert store.get_item("movie_0000")["manual"] == "exclude"
    wait_until(
        lambda: (
            not read_star(project / "particles.star")["particles"]["rlnMicrographName"]
            .str.contains("movie_0000")
            .any()
        ),
        what="movie_0000 to leave particles.star",
    )
    assert page._cw_errors == []


def test_settings_change_requeues_items(page, live_server, artifacts_dir):
    url, project, _ = live_server
    open_page(page, url + "#/settings")
    page.wait_for_selector("#set-pick-threshold")
    page.screenshot(path=artifacts_dir / "settings.png", full_page=True)
    page.fill("#set-pick-threshold", "0.7")
    page.press("#set-pick-threshold", "Tab")
    page.click("#settings-save")
    # the 6 processed items; the failed one failed in motion, which a pick change leaves as it was
    # generous timeouts: the save rewrites the project and the navbar follows over SSE (slow on a busy box)
    expect(page.locator("#settings-msg")).to_have_text("saved; 6 items requeued", timeout=30_000)
    expect(page.locator("#navbar .cell.st-queued")).to_have_count(7, timeout=30_000)
    expect(page.locator("#navbar .cell.st-failed")).to_have_count(1, timeout=30_000)
    with ProjectStore(project) as store:
        assert store.get_settings().pick.threshold == 0.7
    page.screenshot(path=artifacts_dir / "settings_saved.png", full_page=True)
    assert page._cw_errors == []


@pytest.mark.slow  # trains BoxNet for 2 iterations; the API test covers the job itself
def test_retrain_button_shows_the_accuracy_figures(page, live_server, artifacts_dir):
    url, project, _ = live_server
    with ProjectStore(project) as store:
        store.add_pick("movie_0003", 100.0, 100.0)  # one correction to train on
    open_page(page, url + "#/item/movie_0003")
    page.fill("#retrain-epochs", "2")
    page.click("#retrain-start")
    expect(page.locator("#retrain-status")).to_contain_text("done", timeout=120_000)
    # one point per epoch for each of the four figures (the general corpus is simulated, 12 micrographs)
    ys = page.evaluate("document.getElementById('retrain-plot').data.map(t => t.y)")
    assert [len(y) for y in ys] == [2, 2, 2, 2]
    assert all(0 <= v <= 1 for y in ys for v in y)
    assert (project / "boxnet" / "boxnet_retrained_001.pt").is_file()
    page.screenshot(path=artifacts_dir / "item_retrained.png", full_page=True)
    # adopting the model re-picks every processed item with it
    page.click("#retrain-use")
    expect(page.locator("#retrain-status")).to_contain_text("items requeued")
    with ProjectStore(project) as store:
        assert store.get_settings().boxnet_model_path == str(project / "boxnet" / "boxnet_retrained_001.pt")
        # the model's own blob weight (None): 0 for a retrained model, so no generic dark-blob prior
        assert store.get_settings().pick.blob_weight is None
        assert all(it["status"] == "queued" for it in store.list_items() if it["name"] != "movie_0006")
    state = torch.load(project / "boxnet" / "boxnet_retrained_001.pt", weights_only=True)
    assert model_blob_weight(boxnet_from_state(state)) == 0.0
    assert page._cw_errors == []
