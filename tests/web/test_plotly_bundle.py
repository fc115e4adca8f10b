"""Plotly's bundle: the partial npm bundle (when installed) and the full fallback both draw every figure.

``scripts/install.sh`` fetches npm's ``plotly.js-cartesian-dist-min`` into ``web/static/vendor`` (1.5 MB
instead of 4.8 MB, for a faster first load); without npm the app serves the ``plotly`` package's full
bundle. The UI uses scatter, histogram and heatmap traces, layout images, shapes and box selections.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import httpx
import pytest
from tests.web.conftest import LiveServer

from cryowarp.web.app import PLOTLY_FULL_JS, PLOTLY_PARTIAL_JS, create_app, plotly_bundle

APP_JS = Path(__file__).parents[2] / "src" / "cryowarp" / "web" / "static" / "app.js"
BUNDLES = [
    "full",
    pytest.param(
        "partial",
        marks=pytest.mark.skipif(
            not PLOTLY_PARTIAL_JS.is_file(), reason="partial bundle not installed (scripts/install.sh, npm)"
        ),
    ),
]


def test_bundle_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("CRYOWARP_PLOTLY_JS", raising=False)
    assert plotly_bundle("full") == PLOTLY_FULL_JS and PLOTLY_FULL_JS.is_file()
    assert plotly_bundle("partial") == PLOTLY_PARTIAL_JS
    assert plotly_bundle() == (PLOTLY_PARTIAL_JS if PLOTLY_PARTIAL_JS.is_file() else PLOTLY_FULL_JS)
    assert plotly_bundle(tmp_path / "x.js") == tmp_path / "x.js"
    monkeypatch.setenv("CRYOWARP_PLOTLY_JS", "full")
    assert plotly_bundle() == PLOTLY_FULL_JS


@pytest.mark.skipif(not PLOTLY_PARTIAL_JS.is_file(), reason="partial bundle not installed")
def test_partial_bundle_has_every_trace_type_the_ui_uses():
    # trace types named in app.js (traces without a type are scatter; "line" is a shape)
    used = set(re.findall(r'type: "(\w+)"', APP_JS.read_text())) - {"line", "rect"}
    assert {"scatter", "histogram", "heatmap"} <= used
    text = PLOTLY_PARTIAL_JS.read_text()
    assert "cartesian" in text[:300]
    registered = set(re.findall(r'moduleType:\s*"trace",\s*name:\s*"(\w+)"', text))
    assert used <= registered, used - registered
    assert PLOTLY_PARTIAL_JS.stat().st_size < PLOTLY_FULL_JS.stat().st_size / 2


@pytest.mark.parametrize("choice", BUNDLES)
def test_bundle_is_served_gzipped_cached_and_revalidated(project, choice):
    app = create_app(project, plotly_js=choice)
    raw = plotly_bundle(choice).read_bytes()
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
            r = c.get("static/plotly.min.js", headers={"Accept-Encoding": "identity"})
            assert r.status_code == 200 and r.content == raw and "content-encoding" not in r.headers
            assert "max-age" in r.headers["cache-control"]
            r = c.get("static/plotly.min.js", headers={"Accept-Encoding": "gzip, deflate"})
            assert r.headers["content-encoding"] == "gzip"
            assert r.content == raw  # httpx decodes it
            assert int(r.headers["content-length"]) < len(raw) / 2
            assert gzip.decompress(gzip.compress(raw)) == raw
            r304 = c.get("static/plotly.min.js", headers={"If-None-Match": r.headers["etag"]})
            assert r304.status_code == 304 and not r304.content
    finally:
        app.state.view.close()


@pytest.mark.browser
@pytest.mark.parametrize("choice", BUNDLES)
def test_every_figure_draws_with_the_bundle(page, project, choice):
    app = create_app(project, plotly_js=choice, poll_interval_s=0.2)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1400, "height": 1000})
    try:
        with LiveServer(app) as server:
            page.goto(server.url)
            page.wait_for_selector("body[data-all-drawn-ms]", timeout=30_000)
            head = page.evaluate("fetch('/static/plotly.min.js').then(r => r.text()).then(t => t.slice(0, 200))")
            assert ("cartesian" in head) == (choice == "partial")
            # every overview figure: scatter points and histogram bars actually drawn
            per_plot = page.evaluate(
                """[...document.querySelectorAll('#metric-cards .plot')].map(d => [d.id,
                     d.querySelectorAll('.scatterlayer .points path').length,
                     d.querySelectorAll('.barlayer .bars path').length])"""
            )
            assert len(per_plot) >= 8
            for div, n_points, n_bars in per_plot:
                assert n_points > 0 and n_bars > 0, (div, n_points, n_bars)
            # item view: 1D spectrum lines, the average as a layout image, picks, the local defocus heat map
            page.goto(server.url + "#/item/movie_0001")
            page.wait_for_function(
                "() => { const d = document.getElementById('average').data;"
                " return d && d.some(t => t.name === 'boxnet picks'); }"
            )
            assert page.locator("#ps1d .scatterlayer .trace").count() >= 2
            assert page.locator("#average .imagelayer image").count() >= 1
            page.check("#show-defocus")
            page.wait_for_function(
                "() => document.getElementById('average')._fullData.some(t => t.type === 'heatmap' && t.visible === true)"
            )
            assert page.locator("#average .heatmaplayer image").count() >= 1
    finally:
        app.state.stars.wait(60)
        app.state.view.close()
    assert not errors, errors
