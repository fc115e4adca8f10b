"""The cryowarp web UI: a FastAPI app over one project folder.

It reads the project store (``cryowarp.pipeline.store.ProjectStore``) and the artifacts the pipeline
wrote, and writes only what a user decides: filters, include/exclude, pick corrections, settings.
It never computes physics (the deconvolution preview calls ``cryowarp.deconv``; retraining calls
``cryowarp.picking.train_boxnet``). JavaScript is served from ``web/static``: Plotly's partial
"cartesian" bundle that ``scripts/install.sh`` fetches from npm into ``web/static/vendor``, or, without
it, the full bundle of the installed ``plotly`` package; nothing is fetched from the internet.

Security: :func:`serve` binds 127.0.0.1 unless told otherwise, and any other address requires a
token; every file the app serves is resolved inside the project folder.

Example::

    from cryowarp.web.app import serve
    serve("session1")                                  # http://127.0.0.1:8000/
    serve("session1", host="0.0.0.0", token="s3cret")  # http://HOST:8000/?token=s3cret
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import plotly
from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError

from cryowarp.io.errors import CryowarpIOError
from cryowarp.picking import TrainSettings
from cryowarp.picking.mask_edits import MaskStroke
from cryowarp.pipeline.store import ItemNotFoundError
from cryowarp.web._project import ProjectView, ui_status
from cryowarp.web._render import DisplayCache, mask_rgba_png
from cryowarp.web._retrain import RetrainJob
from cryowarp.web._security import (
    TOKEN_COOKIE,
    TOKEN_HEADER,
    TOKEN_QUERY,
    check_bind,
    safe_path,
    token_matches,
)
from cryowarp.web._stars import StarWriter

__all__ = ["create_app", "serve", "plotly_bundle", "PLOTLY_JS", "PLOTLY_FULL_JS", "PLOTLY_PARTIAL_JS"]

STATIC_DIR = Path(__file__).parent / "static"
#: Plotly's full bundle (4.8 MB, every trace type) as installed with the ``plotly`` Python package.
PLOTLY_FULL_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
#: Plotly's partial bundle (npm ``plotly.js-cartesian-dist-min``, 1.5 MB: scatter, histogram, heatmap, …,
#: all the UI draws), fetched by ``scripts/install.sh`` into this git-ignored folder.
PLOTLY_PARTIAL_JS = STATIC_DIR / "vendor" / "plotly-cartesian.min.js"


def plotly_bundle(choice: str | Path | None = None) -> Path:
    """The Plotly bundle the page loads (served at ``/static/plotly.min.js``).

    ``choice`` (default: the environment variable ``CRYOWARP_PLOTLY_JS``, else ``"auto"``):
    ``"auto"`` = the partial bundle when installed, else the full one; ``"partial"``; ``"full"``; or
    the path of any other Plotly bundle.
    """
    choice = choice or os.environ.get("CRYOWARP_PLOTLY_JS") or "auto"
    if choice == "auto":
        return PLOTLY_PARTIAL_JS if PLOTLY_PARTIAL_JS.is_file() else PLOTLY_FULL_JS
    if choice == "full":
        return PLOTLY_FULL_JS
    if choice == "partial":
        return PLOTLY_PARTIAL_JS
    return Path(choice)


#: The bundle served by default (see :func:`plotly_bundle`).
PLOTLY_JS = plotly_bundle()
#: The bundle changes only with an install: browsers may keep it a day (then revalidate with the ETag).
_STATIC_CACHE = "max-age=86400"
_NO_CACHE = {"Cache-Control": "no-store"}
#: Retraining defaults of the UI button, as ``cryowarp boxnet retrain``.
RETRAIN_DEFAULTS = {"epochs": 20, "patch_px": 128, "batch_size": 8, "lr_start": 3e-4, "lr_end": 3e-5}


class SelectionBody(BaseModel):
    """Manual selection: true = include, false = exclude, null = follow the filters."""

    included: bool | None


class PickEdit(BaseModel):
    """Add a pick at (x, y), or remove the pick nearest to it; px of the full micrograph."""

    action: str
    x: float
    y: float


class MaskStrokeBody(BaseModel):
    """A brush stroke on the artefact mask: ``paint`` or ``erase`` discs of ``radius_px`` along ``points``
    ([[x, y], ...], px of the full micrograph)."""

    action: str
    radius_px: float
    points: list[tuple[float, float]]


NO_MASK = "no BoxNet mask (not picked yet, or picks read from STAR files)"
#: Most points one stroke may carry (a drag across a 4k micrograph sends a few hundred).
MAX_STROKE_POINTS = 20_000


def create_app(
    project_dir: str | Path,
    *,
    token: str | None = None,
    poll_interval_s: float = 0.5,
    display_max_px: int = 1024,
    plotly_js: str | Path | None = None,
) -> FastAPI:
    """Build the web app for one project folder.

    Parameters
    ----------
    project_dir : str or Path
        A cryowarp project (holds ``cryowarp.sqlite``).
    token : str, optional
        When set, every request must carry it: ``?token=T`` once (sets a cookie), the
        ``X-Cryowarp-Token`` header, or ``Authorization: Bearer T``.
    poll_interval_s : float
        How often the live-update stream checks the store for changes.
    display_max_px : int
        Longest side of averages sent to the browser.
    plotly_js : str or Path, optional
        Which Plotly bundle to serve: ``"auto"`` (default), ``"partial"``, ``"full"`` or a path; see
        :func:`plotly_bundle`.

    Returns
    -------
    app : FastAPI
    """
    view = ProjectView(project_dir)
    cache = DisplayCache(max_px=display_max_px)
    job = RetrainJob()
    stars = StarWriter(view.store)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        app.state.stopping = True  # ends the event streams so the server can stop

    app = FastAPI(title="cryowarp", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.view = view
    app.state.retrain = job
    app.state.stars = stars
    app.state.stopping = False

    if token:

        @app.middleware("http")
        async def require_token(request: Request, call_next):  # noqa: ANN202
            auth = request.headers.get("authorization", "")
            found = (
                request.query_params.get(TOKEN_QUERY)
                or request.headers.get(TOKEN_HEADER)
                or (auth[7:] if auth.lower().startswith("bearer ") else None)
                or request.cookies.get(TOKEN_COOKIE)
            )
            if not token_matches(token, found):
                return JSONResponse({"detail": "this cryowarp server needs its token: open /?token=TOKEN"}, status_code=401)
            response = await call_next(request)
            if request.query_params.get(TOKEN_QUERY):
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return response

    @app.exception_handler(ValidationError)
    async def invalid_stored_data(request: Request, exc: ValidationError) -> JSONResponse:
        # request bodies are validated by FastAPI (422); this is data read from the project itself
        return JSONResponse(
            {"detail": f"{view.project_dir}: stored settings do not match this cryowarp version — {exc}"},
            status_code=500,
        )

    # ------------------------------------------------------------------ pages and scripts
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=_NO_CACHE)

    bundle = plotly_bundle(plotly_js)
    app.state.plotly_js = bundle
    gz_cache: dict[str, bytes] = {}  # ETag -> the gzipped bundle

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_script(request: Request) -> Response:
        try:
            st = bundle.stat()
        except OSError as exc:
            raise HTTPException(500, f"{bundle}: missing; run scripts/install.sh or reinstall plotly") from exc
        etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
        headers = {"Cache-Control": _STATIC_CACHE, "ETag": etag, "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        if "gzip" not in request.headers.get("accept-encoding", ""):
            return FileResponse(bundle, media_type="application/javascript", headers=headers)
        if etag not in gz_cache:  # compressed once: a third of the bytes to send
            gz_cache.clear()
            gz_cache[etag] = gzip.compress(bundle.read_bytes(), compresslevel=6, mtime=0)
        headers["Content-Encoding"] = "gzip"
        return Response(gz_cache[etag], media_type="application/javascript", headers=headers)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # ------------------------------------------------------------------ project and items
    def _item_or_404(name: str) -> dict[str, Any]:
        try:
            return view.item(name)
        except ItemNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc

    def _write_stars(wait: bool) -> dict[str, Any]:
        # the rewrite runs in the background (it takes seconds on a big session); wait=true blocks
        stars.request()
        if wait and not stars.wait(timeout_s=600):
            raise HTTPException(504, "the STAR files are still being rewritten after 600 s")
        return stars.status()

    def _summary() -> dict[str, Any]:
        return {**view.summary(), "star_writer": stars.status()}

    @app.get("/api/project")
    def project() -> dict[str, Any]:
        """Counts per status, selected items and particles, STAR files (and whether being rewritten)."""
        return _summary()

    @app.get("/api/items")
    def items() -> dict[str, Any]:
        """All items (columnar): names, UI status, errors, metrics, filter verdicts."""
        return view.items_table()

    @app.get("/api/items/{name}")
    def item(name: str) -> dict[str, Any]:
        """Everything the item view shows."""
        return _item_detail(view, _item_or_404(name))

    @app.get("/api/items/{name}/average.png")
    def average_png(
        name: str,
        deconv: bool = False,
        strength: float = Query(1.0, ge=0, le=5),
        falloff: float = Query(1.0, ge=0, le=5),
    ) -> Response:
        """The aligned average for display; ``deconv=1`` applies Warp's deconvolution filter (§5)."""
        it = _item_or_404(name)
        path = view.artifact_path(it, "average")
        if path is None:
            raise HTTPException(404, f"{name}: no aligned average yet (status {it['status']})")
        ctf = None
        if deconv:
            ctf = _ctf_params(view, it)
            if ctf is None:
                raise HTTPException(409, f"{name}: no CTF fit yet, cannot deconvolve")
        data = cache.average_png(path, it["pixel_size_a"], ctf=ctf, strength=strength, falloff=falloff)
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/items/{name}/ps2d.png")
    def ps2d_png(name: str) -> FileResponse:
        """2D power spectrum with the fitted CTF on one half, as written by the pipeline."""
        it = _item_or_404(name)
        path = view.artifact_path(it, "spectrum_png")
        if path is None:
            raise HTTPException(404, f"{name}: no power spectrum yet (status {it['status']})")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/items/{name}/thumbnail.png")
    def thumbnail_png(name: str) -> FileResponse:
        """The pipeline's thumbnail of the average."""
        it = _item_or_404(name)
        path = view.artifact_path(it, "thumbnail")
        if path is None:
            raise HTTPException(404, f"{name}: no thumbnail yet (status {it['status']})")
        return FileResponse(path, media_type="image/png")

    @app.put("/api/items/{name}/selection")
    def set_selection(name: str, body: SelectionBody, wait: bool = False) -> dict[str, Any]:
        """Manual include (true), exclude (false) or back to the filters (null); rewrites the STARs.

        ``?wait=true`` returns only when the STAR files are rewritten (else they follow in the background).
        """
        _item_or_404(name)
        view.set_selection(name, body.included)
        star = _write_stars(wait)
        return {"item": ui_status(view.item(name)), "project": _summary(), "star": star}

    @app.get("/api/items/{name}/picks")
    def get_picks(name: str) -> dict[str, Any]:
        """Effective picks (BoxNet's minus removals plus manual ones)."""
        _item_or_404(name)
        return _picks_payload(view, name)

    @app.post("/api/items/{name}/picks")
    def edit_picks(name: str, body: PickEdit, wait: bool = False) -> dict[str, Any]:
        """Add a pick at (x, y) or remove the pick nearest to (x, y) (px of the full micrograph).

        Corrections are kept in the store (for BoxNet retraining) and re-queue the item's export.
        """
        it = _item_or_404(name)
        h, w = it["height"], it["width"]
        if not (math.isfinite(body.x) and math.isfinite(body.y)):
            raise HTTPException(422, f"{name}: pick coordinates must be finite, got ({body.x}, {body.y})")
        if h and w and not (0 <= body.x < w and 0 <= body.y < h):
            raise HTTPException(422, f"{name}: ({body.x:.1f}, {body.y:.1f}) lies outside the {w}×{h} micrograph")
        if body.action == "add":
            view.store.add_pick(name, body.x, body.y)
        elif body.action == "remove":
            picks = view.store.get_picks(name)
            radius_px = _particle_radius_px(view, it)
            best = min(picks, key=lambda p: math.hypot(p["x_px"] - body.x, p["y_px"] - body.y), default=None)
            if best is None or math.hypot(best["x_px"] - body.x, best["y_px"] - body.y) > radius_px:
                raise HTTPException(404, f"{name}: no pick within {radius_px:.0f} px of ({body.x:.0f}, {body.y:.0f})")
            view.store.remove_pick(name, best["id"], radius_px=max(2.0, 0.25 * radius_px))
        else:
            raise HTTPException(422, f"action must be 'add' or 'remove', got {body.action!r}")
        _write_stars(wait)
        return _picks_payload(view, name)

    # ------------------------------------------------------------------ artefact mask (training labels)
    @app.get("/api/items/{name}/mask.png")
    def mask_png(name: str) -> Response:
        """BoxNet's artefact mask with the user's strokes, as a translucent red RGBA PNG on the 8 Å grid."""
        it = _item_or_404(name)
        try:
            mask = view.effective_mask(it)
        except CryowarpIOError as exc:
            raise HTTPException(409, str(exc)) from exc
        if mask is None:
            raise HTTPException(404, f"{name}: {NO_MASK}")
        return Response(mask_rgba_png(mask.numpy()), media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/items/{name}/mask")
    def edit_mask(name: str, body: MaskStrokeBody) -> dict[str, Any]:
        """Paint or erase artefact on the item's mask. The strokes are training labels for BoxNet
        retraining (the item becomes a corrected one); picks and particles do not change."""
        it = _item_or_404(name)
        if view.artifact_path(it, "mask") is None:
            raise HTTPException(409, f"{name}: {NO_MASK}, nothing to edit")
        if body.action not in ("paint", "erase"):
            raise HTTPException(422, f"action must be 'paint' or 'erase', got {body.action!r}")
        if not body.points or len(body.points) > MAX_STROKE_POINTS:
            raise HTTPException(422, f"a stroke needs 1 to {MAX_STROKE_POINTS} points, got {len(body.points)}")
        h, w = it["height"] or 0, it["width"] or 0
        if body.radius_px > max(h, w, 1):
            raise HTTPException(422, f"{name}: brush radius must be ≤ {max(h, w)} px, got {body.radius_px}")
        points = tuple((min(max(x, 0.0), w), min(max(y, 0.0), h)) for x, y in body.points)  # a brush may run off the edge
        try:  # MaskStroke checks the radius (> 0) and that every point is finite
            stroke = MaskStroke(body.action == "paint", body.radius_px, points)
        except ValueError as exc:
            raise HTTPException(422, f"{name}: {exc}") from exc
        n = view.store.add_mask_stroke(name, stroke)
        return {"n_mask_strokes": n, "version": view.revision()}

    @app.delete("/api/items/{name}/mask")
    def reset_mask(name: str) -> dict[str, Any]:
        """Forget the user's strokes: the mask is BoxNet's own again."""
        _item_or_404(name)
        n = view.store.clear_mask_strokes(name)
        return {"removed_strokes": n, "n_mask_strokes": 0, "version": view.revision()}

    # ------------------------------------------------------------------ filters
    @app.get("/api/filters")
    def get_filters() -> dict[str, Any]:
        """Filter range per metric, and how many items each range rejects."""
        return view.filters_view()

    @app.put("/api/filters")
    def put_filters(body: dict[str, Any] = Body(...), wait: bool = False) -> dict[str, Any]:  # noqa: B008
        """Change ranges ``{"ranges": {metric: {"min": v|null, "max": v|null}}}``; rewrites the STARs.

        ``?wait=true`` returns only when the STAR files are rewritten (else they follow in the background).
        """
        ranges = body.get("ranges")
        if not isinstance(ranges, dict) or not all(isinstance(v, dict) for v in ranges.values()):
            raise HTTPException(422, 'expected {"ranges": {"<metric>": {"min": number|null, "max": number|null}}}')
        t0 = time.perf_counter()
        try:
            view.update_filters(ranges)
        except (ValueError, ValidationError) as exc:
            raise HTTPException(422, str(exc)) from exc
        star = _write_stars(wait)
        return {
            "filters": view.filters_view(),
            "project": _summary(),
            "star": star,
            "elapsed_s": time.perf_counter() - t0,
        }

    # ------------------------------------------------------------------ settings
    @app.get("/api/settings")
    def get_settings() -> dict[str, Any]:
        """Current processing settings: values, and one form field per setting."""
        s = view.settings()
        return {"values": s.to_dict(), "fields": _settings_fields(s)}

    @app.put("/api/settings")
    def put_settings(body: dict[str, Any] = Body(...), wait: bool = False) -> dict[str, Any]:  # noqa: B008
        """Apply ``{"changes": {"section.field": value}}``; items with outdated stages are requeued."""
        changes = body.get("changes")
        if not isinstance(changes, dict) or not changes:
            raise HTTPException(422, 'expected {"changes": {"<section>.<field>": value, ...}}')
        try:
            new, stages, requeued = view.change_settings(changes)
        except (ValueError, ValidationError) as exc:
            raise HTTPException(422, f"settings not changed: {exc}") from exc
        star = _write_stars(wait)
        return {
            "values": new.to_dict(),
            "outdated_stages": stages,
            "requeued": requeued,
            "n_requeued": len(requeued),
            "project": _summary(),
            "star": star,
        }

    # ------------------------------------------------------------------ files
    @app.get("/api/files/{path:path}")
    def project_file(path: str) -> FileResponse:
        """Any file inside the project folder (STAR files, stacks, artifacts); nothing outside it."""
        return FileResponse(safe_path(view.project_dir, path))

    # ------------------------------------------------------------------ BoxNet retraining
    @app.get("/api/boxnet/retrain")
    def retrain_status() -> dict[str, Any]:
        """State of the retraining job, with one accuracy report per finished epoch."""
        return job.snapshot()

    @app.post("/api/boxnet/retrain")
    def retrain_start(body: dict[str, Any] = Body(default={})) -> dict[str, Any]:  # noqa: B008
        """Start retraining BoxNet on the corrected items.

        The body may hold ``TrainSettings`` fields (defaults as ``cryowarp boxnet retrain``: 20 epochs,
        128 px patches, batch 8, lr 3e-4 → 3e-5, warm-up a tenth of the iterations), ``from_scratch``
        (a fresh BoxNet instead of the shipped one), ``seed`` and ``n_general`` (simulated general-corpus
        micrographs mixed in 1:1, default 12, 0 = none).
        """
        body = dict(body or {})
        from_scratch = bool(body.pop("from_scratch", False))
        seed = int(body.pop("seed", 0))
        try:
            n_general = int(body.pop("n_general", 12))
        except (TypeError, ValueError) as exc:
            raise HTTPException(422, f"n_general: expected an integer ≥ 0 ({exc})") from exc
        if n_general < 0:
            raise HTTPException(422, f"n_general: expected an integer ≥ 0, found {n_general}")
        auto_warmup = "warmup_iterations" not in body
        try:
            settings = TrainSettings(**{**RETRAIN_DEFAULTS, **body})
        except ValidationError as exc:
            raise HTTPException(422, f"training settings: {exc}") from exc
        try:
            job.start(
                view, settings, from_scratch=from_scratch, seed=seed, auto_warmup=auto_warmup, n_general=n_general
            )
        except RuntimeError as exc:
            raise HTTPException(409, str(exc)) from exc
        return job.snapshot()

    # ------------------------------------------------------------------ live updates
    @app.get("/api/events")
    async def events(request: Request) -> StreamingResponse:
        """Server-sent events: ``update`` when the store changes, ``retrain`` on training progress."""

        async def stream():  # noqa: ANN202
            last_rev, last_job, last_sent = None, None, 0.0
            yield "retry: 2000\n\n"
            while not app.state.stopping:
                if await request.is_disconnected():
                    break
                star = stars.status()
                rev = (
                    await run_in_threadpool(view.revision),
                    star["version"],
                    star["writing"] or star["pending"],
                )
                if rev != last_rev:
                    last_rev, last_sent = rev, time.monotonic()
                    data = {"revision": rev[0], "star_version": rev[1], "star_busy": rev[2]}
                    yield f"event: update\ndata: {json.dumps(data)}\n\n"
                if job.version != last_job:
                    last_job, last_sent = job.version, time.monotonic()
                    yield f"event: retrain\ndata: {json.dumps(job.snapshot())}\n\n"
                if time.monotonic() - last_sent > 15:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(poll_interval_s)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


# ---------------------------------------------------------------------- item detail helpers
def _particle_radius_px(view: ProjectView, item: dict[str, Any]) -> float:
    diameter_a = view.settings().pick.particle_diameter_a
    return 0.5 * diameter_a / (item["pixel_size_a"] or 1.0)


def _picks_payload(view: ProjectView, name: str) -> dict[str, Any]:
    picks = view.store.get_picks(name)
    out = [
        {
            "id": p["id"],
            "x": p["x_px"],
            "y": p["y_px"],
            "score": p["score"],
            "source": "user" if p["source"] == "manual" else "boxnet",
        }
        for p in picks
    ]
    n_removed = view.n_pick_removals(name)
    return {
        "picks": out,
        "n_user_added": sum(p["source"] == "user" for p in out),
        "n_user_removed": n_removed,
    }


def _ctf_params(view: ProjectView, item: dict[str, Any]) -> dict[str, float] | None:
    if item["defocus_um"] is None:
        return None
    optics = view.settings().ctf
    return {
        "defocus_um": float(item["defocus_um"]),
        "defocus_delta_um": float(item["defocus_delta_um"] or 0.0),
        "astigmatism_angle_deg": float(item["astigmatism_angle_deg"] or 0.0),
        "phase_shift_deg": float(item["phase_shift_deg"] or 0.0),
        "voltage_kv": float(getattr(optics, "voltage_kv", 300.0)),
        "cs_mm": float(getattr(optics, "cs_mm", 2.7)),
        "amplitude_contrast": float(getattr(optics, "amplitude_contrast", 0.07)),
    }


def _spectrum_1d(view: ProjectView, item: dict[str, Any]) -> dict[str, Any] | None:
    d = view.read_json_artifact(item, "spectrum_json")
    if not d or "freq_per_a" not in d:
        return None
    ps = d.get("ps_1d", d.get("ps"))
    if ps is None:
        return None
    return {
        "freq_per_a": d["freq_per_a"],
        "fit_range_a": d.get("fit_range_a"),
        "ps": ps,
        "fit": d.get("ctf_fit_1d", d.get("fit")),
        "background": d.get("background_1d", d.get("background")),
    }


def _motion_tracks(view: ProjectView, item: dict[str, Any]) -> dict[str, Any] | None:
    d = view.read_json_artifact(item, "motion_json")
    if not d:
        return None
    pixel_size_a = item["pixel_size_a"] or d.get("pixel_size_a") or 1.0
    tracks: list[dict[str, Any]] = []
    try:
        from cryowarp.motion.model import MotionModel

        model = MotionModel.from_dict(d)
        if model.patch_centers_px_yx.shape[0] > 0:
            values = model.patch_tracks_a_yx()  # (n_patches, n_frames, 2) Å
            centers = model.patch_centers_px_yx
        else:
            h, w = model.shape_yx
            values = model.global_displacement_a_yx()[None]
            centers = [[(h - 1) / 2, (w - 1) / 2]]
        for c, v in zip(centers, values, strict=True):
            rel = (v - v[0]) / pixel_size_a
            tracks.append(
                {
                    "x_px": float(c[1]),
                    "y_px": float(c[0]),
                    "dx_px": rel[:, 1].tolist(),
                    "dy_px": rel[:, 0].tolist(),
                }
            )
    except Exception:  # an unreadable model just hides the overlay
        return None
    if not tracks:
        return None
    extent = max(max(max(abs(x) for x in t["dx_px"]), max(abs(y) for y in t["dy_px"])) for t in tracks) or 1.0
    w = item["width"] or d.get("shape_yx", [1, 1])[1]
    spacing = w / max(2.0, math.sqrt(len(tracks)) + 1)
    exaggeration = max(1, int(0.4 * spacing / extent))
    return {"exaggeration": exaggeration, "tracks": tracks}


def _local_defocus(view: ProjectView, item: dict[str, Any], n: int = 12) -> dict[str, Any] | None:
    d = view.read_json_artifact(item, "ctf_json")
    h, w = item["height"], item["width"]
    if not d or not h or not w:
        return None
    try:
        import torch

        from cryowarp import ctf as ctf_pkg

        model = ctf_pkg.CTFModel.from_dict(d)
        xs = [(i + 0.5) * w / n for i in range(n)]
        ys = [(j + 0.5) * h / n for j in range(n)]
        coords = torch.tensor([[x, y] for y in ys for x in xs], dtype=torch.float32)
        z = model.local_defocus_um(coords).reshape(n, n).tolist()
    except Exception:  # no CTF model class yet, or a model without a grid
        return None
    return {"x_px": xs, "y_px": ys, "defocus_um": z}


def _item_detail(view: ProjectView, it: dict[str, Any]) -> dict[str, Any]:
    name = it["name"]
    from cryowarp.web._project import METRICS, astigmatism_sigmas

    metrics = {m.key: it.get(m.key) for m in METRICS if m.key in it}
    if it["status"] == "done":
        all_items = view.list_items()
        sig = astigmatism_sigmas(all_items)
        metrics["astigmatism_sigma"] = next((s for x, s in zip(all_items, sig, strict=True) if x["name"] == name), None)
    shape = [it["height"] or 0, it["width"] or 0]
    images = {
        "average": f"/api/items/{name}/average.png" if view.artifact_path(it, "average") else None,
        "ps2d": f"/api/items/{name}/ps2d.png" if view.artifact_path(it, "spectrum_png") else None,
        "thumbnail": f"/api/items/{name}/thumbnail.png" if view.artifact_path(it, "thumbnail") else None,
        "mask": f"/api/items/{name}/mask.png" if view.artifact_path(it, "mask") else None,
    }
    return {
        "name": name,
        "status": ui_status(it),
        "store_status": it["status"],
        "error": it["error"],
        "manual": it["manual"],
        "filter_passes": it["filter_passes"],
        "filter_reasons": it["filter_reasons"],
        "metrics": metrics,
        "pixel_size_a": it["pixel_size_a"],
        "n_frames": it["n_frames"],
        "shape_yx": shape,
        "ctf": _ctf_params(view, it),
        "ps1d": _spectrum_1d(view, it),
        "motion_tracks": _motion_tracks(view, it),
        "local_defocus": _local_defocus(view, it),
        "particle_radius_px": _particle_radius_px(view, it),
        "display_scale": 720.0 / max(shape) if max(shape) > 0 else 1.0,
        "images": images,
        "n_mask_strokes": view.store.count_mask_strokes(name),
        "stages": it.get("stages", {}),
        "timings": it["timings"],
        "version": view.revision(),
        **_picks_payload(view, name),
    }


def _settings_fields(settings: BaseModel, prefix: str = "") -> list[dict[str, Any]]:
    """Flatten nested settings into form fields: path, type, value, description, enum."""
    out: list[dict[str, Any]] = []
    for name, info in type(settings).model_fields.items():
        value = getattr(settings, name)
        path = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out.extend(_settings_fields(value, f"{path}."))
            continue
        if path == "version":
            continue
        if isinstance(value, bool):
            kind = "boolean"
        elif isinstance(value, int):
            kind = "integer"
        elif isinstance(value, float):
            kind = "number"
        elif isinstance(value, list | tuple):
            kind, value = "array", list(value)
        elif value is None:
            ann = str(info.annotation)
            kind = "number" if ("float" in ann or "int" in ann) else "string"
        else:
            kind = "string"
        enum = None
        args = getattr(info.annotation, "__args__", None)
        if args and getattr(info.annotation, "__origin__", None) is not None and "Literal" in str(info.annotation):
            enum = list(args)
        out.append({"path": path, "type": kind, "value": value, "description": info.description or "", "enum": enum})
    return out


def bind_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, for :func:`serve` (bind first, then tell the user the URL).

    Raises ``ValueError`` with a one-line message if the port is in use or the address cannot be bound.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is not "in use"
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port {port} is in use (another program listens on {host}:{port}; choose another with --port)"
            ) from exc
        raise ValueError(f"cannot serve on {host}:{port} ({exc.strerror or exc})") from exc
    return sock


def serve(
    project_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    *,
    log_level: str = "warning",
    sock: socket.socket | None = None,
) -> None:
    """Serve the UI for ``project_dir`` until interrupted.

    Parameters
    ----------
    project_dir : str or Path
        The project folder.
    host : str
        Bind address; anything but a loopback address requires ``token``.
    port : int
        TCP port.
    token : str, optional
        Shared secret required by every request (see :func:`create_app`).
    sock : socket.socket, optional
        A socket from :func:`bind_port` (``host`` and ``port`` are then only for messages); bound
        here if not given (``ValueError`` if the port is in use).
    """
    import uvicorn

    check_bind(host, token)
    if sock is None:
        sock = bind_port(host, port)
    app = create_app(project_dir, token=token)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
