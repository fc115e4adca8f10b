"""What the web UI reads from and writes to a project: a thin view over the pipeline's ``ProjectStore``.

Nothing here computes physics: values come from the store and the artifacts the pipeline wrote;
model evaluations (motion tracks, local defocus) call the models' own methods.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any

from cryowarp.pipeline.filters import astigmatism_vector_um
from cryowarp.pipeline.settings import FilterSettings, ProcessingSettings
from cryowarp.pipeline.store import DB_NAME, ItemNotFoundError, ProjectStore

if TYPE_CHECKING:
    import torch

__all__ = ["MetricInfo", "METRICS", "UI_STATUSES", "ProjectView", "ui_status"]

#: Status of an item as the UI colours it.
UI_STATUSES = ("processed", "filtered_out", "excluded", "failed", "queued", "processing")


@dataclass(frozen=True)
class MetricInfo:
    """One overview plot: the item value it shows and the filter fields its range edits."""

    key: str
    label: str
    unit: str
    min_filter: str | None = None
    max_filter: str | None = None
    digits: int = 2
    integer: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("defocus_um", "Defocus", "µm", "defocus_min_um", "defocus_max_um", digits=3),
    MetricInfo("defocus_delta_um", "Astigmatism ΔD", "µm", digits=3),
    MetricInfo("astigmatism_sigma", "Astigmatism spread", "s.d. from mean", None, "astigmatism_max_sigma"),
    MetricInfo("phase_shift_deg", "Phase shift", "°", "phase_min_deg", "phase_max_deg", digits=1),
    MetricInfo("resolution_a", "Resolution", "Å", None, "resolution_max_a", digits=2),
    MetricInfo("mean_motion_a", "Mean motion", "Å", None, "motion_max_a", digits=2),
    MetricInfo("n_particles", "Particles", "", "particles_min", None, digits=0, integer=True),
    MetricInfo("mask_percentage", "Masked", "%", None, "mask_percentage_max", digits=1),
)
_BY_KEY = {m.key: m for m in METRICS}


def ui_status(item: dict[str, Any]) -> str:
    """Map the store's status/manual/filter verdict to one of :data:`UI_STATUSES`."""
    status = item["status"]
    if status == "failed":
        return "failed"
    if status == "running":
        return "processing"
    if status == "queued":
        return "queued"
    if item.get("manual") == "exclude":
        return "excluded"
    if item.get("manual") == "include" or item.get("filter_passes", True):
        return "processed"
    return "filtered_out"


def _finite(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def astigmatism_sigmas(items: list[dict[str, Any]]) -> list[float | None]:
    """Each item's distance from the mean astigmatism vector in units of the spread (Warp's filter §7.4).

    Computed over the processed items exactly as ``pipeline.filters.evaluate_filters`` does.
    """
    vectors: list[tuple[float, float] | None] = []
    for it in items:
        delta = it.get("defocus_delta_um")
        if it["status"] != "done" or delta is None:
            vectors.append(None)
            continue
        vectors.append(astigmatism_vector_um(float(delta), float(it.get("astigmatism_angle_deg") or 0.0)))
    known = [v for v in vectors if v is not None]
    if not known:
        return [None] * len(items)
    mx = sum(v[0] for v in known) / len(known)
    my = sum(v[1] for v in known) / len(known)
    sigma = max(math.sqrt(sum((v[0] - mx) ** 2 + (v[1] - my) ** 2 for v in known) / len(known)), 1e-4)
    return [None if v is None else math.hypot(v[0] - mx, v[1] - my) / sigma for v in vectors]


class ProjectView:
    """The web layer's handle on one project folder.

    Parameters
    ----------
    project_dir : str or Path
        A folder holding ``cryowarp.sqlite`` (made by ``cryowarp watch``/``process``).
    """

    def __init__(self, project_dir: str | Path):
        self.project_dir = Path(project_dir).resolve()
        if not (self.project_dir / DB_NAME).is_file():
            raise FileNotFoundError(
                f"{self.project_dir}: no {DB_NAME} here; expected a cryowarp project folder "
                "(create one with `cryowarp watch INPUT --project P` or `cryowarp process`)"
            )
        self.store = ProjectStore(self.project_dir)
        self._items_cache: tuple[int, list[dict[str, Any]]] | None = None
        self._cache_lock = threading.Lock()

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    # ------------------------------------------------------------------ reads
    def list_items(self) -> list[dict[str, Any]]:
        """``store.list_items()``, cached until the store's revision changes (do not modify the dicts)."""
        revision = self.store.revision()  # read first: a write in between only makes the cache refresh later
        with self._cache_lock:
            if self._items_cache is not None and self._items_cache[0] == revision:
                return self._items_cache[1]
        items = self.store.list_items()
        with self._cache_lock:
            self._items_cache = (revision, items)
        return items

    def revision(self) -> int:
        """Store revision (grows with every write)."""
        return self.store.revision()

    def summary(self) -> dict[str, Any]:
        """Counts for the header bar, and the STAR files' state."""
        items = self.list_items()
        counts = {s: 0 for s in UI_STATUSES}
        for it in items:
            counts[ui_status(it)] += 1
        selected = [it for it in items if it["selected"]]
        star = {}
        for key, name in (("particles", "particles.star"), ("micrographs", "micrographs.star")):
            try:  # the STAR writer may remove the file at any moment (e.g. when nothing is selected)
                st = (self.project_dir / name).stat()
            except FileNotFoundError:
                continue
            if not S_ISREG(st.st_mode):
                continue
            star[key] = {
                "path": name,
                "mtime": st.st_mtime,
                "size_bytes": st.st_size,
                "n_rows": (
                    sum(it["n_particles"] or 0 for it in selected) if key == "particles" else len(selected)
                ),
            }
        return {
            "name": self.project_dir.name,
            "n_items": len(items),
            "counts": counts,
            "n_selected": len(selected),
            "n_particles": sum(it["n_particles"] or 0 for it in selected),
            "revision": self.store.revision(),
            "star": star,
            # keys of the stored settings this version does not know (dropped, with a warning)
            "settings_dropped": list(self.store.dropped_settings),
        }

    def items_table(self) -> dict[str, Any]:
        """All items, columnar (compact JSON for thousands of items), in acquisition order."""
        items = self.list_items()
        sig = astigmatism_sigmas(items)
        metrics: dict[str, list[Any]] = {m.key: [] for m in METRICS}
        for it, s in zip(items, sig, strict=True):
            done = it["status"] == "done"
            for m in METRICS:
                value = s if m.key == "astigmatism_sigma" else it.get(m.key)
                metrics[m.key].append(_finite(value) if done else None)
        return {
            "revision": self.store.revision(),
            "names": [it["name"] for it in items],
            "status": [ui_status(it) for it in items],
            "error": [it["error"] for it in items],
            "manual": [{"include": True, "exclude": False}.get(it["manual"]) for it in items],
            "passes": [bool(it["filter_passes"]) for it in items],
            "reasons": [it["filter_reasons"] for it in items],
            "metrics": metrics,
            "metric_info": [m.to_dict() for m in METRICS],
        }

    def filters_view(self) -> dict[str, Any]:
        """Filter ranges per metric (None = no limit on that side) and how many items each rejects."""
        f = self.store.get_settings().filter
        ranges: dict[str, dict[str, float | None]] = {}
        for m in METRICS:
            lo = getattr(f, m.min_filter) if m.min_filter else None
            hi = getattr(f, m.max_filter) if m.max_filter else None
            if m.key == "phase_shift_deg" and not f.filter_phase:
                lo = hi = None
            if m.min_filter or m.max_filter:
                ranges[m.key] = {"min": lo, "max": hi}
        table = self.items_table()
        n_failing = {}
        for key, r in ranges.items():
            values = table["metrics"][key]
            n_failing[key] = sum(
                1
                for v in values
                if v is not None
                and ((r["min"] is not None and v < r["min"]) or (r["max"] is not None and v > r["max"]))
            )
        return {"ranges": ranges, "n_failing": n_failing, "settings": f.model_dump(mode="json")}

    def item(self, name: str) -> dict[str, Any]:
        """One item with its store record (raises ``ItemNotFoundError``)."""
        return self.store.get_item(name)

    def names(self) -> list[str]:
        """Item names in acquisition order."""
        return [it["name"] for it in self.list_items()]

    def n_pick_removals(self, name: str) -> int:
        """How many BoxNet picks the user removed on an item."""
        return self.store.count_pick_removals(name)

    # ------------------------------------------------------------------ writes
    def update_filters(self, ranges: dict[str, dict[str, float | None]]) -> FilterSettings:
        """Apply range edits ``{metric: {"min": v|None, "max": v|None}}`` to the project's filter.

        A side set to None goes back to the default of ``FilterSettings`` (the phase range instead
        switches phase filtering off when both sides are None).
        """
        current = self.store.get_settings().filter
        values = current.model_dump()
        defaults = FilterSettings().model_dump()
        for key, patch in ranges.items():
            m = _BY_KEY.get(key)
            if m is None or not (m.min_filter or m.max_filter):
                filterable = ", ".join(x.key for x in METRICS if x.min_filter or x.max_filter)
                raise ValueError(f"no filter on {key!r}; filterable metrics: {filterable}")
            for side, field in (("min", m.min_filter), ("max", m.max_filter)):
                if side not in patch:
                    continue
                if field is None:
                    raise ValueError(f"{key}: the filter has no {side}imum")
                v = patch[side]
                if v is not None and not (isinstance(v, int | float) and math.isfinite(v)):
                    raise ValueError(f"{key}.{side}: expected a finite number or null, found {v!r}")
                if m.integer and v is not None:
                    v = int(math.ceil(v))
                values[field] = defaults[field] if v is None else v
            if key == "phase_shift_deg":
                lo_f, hi_f = m.min_filter, m.max_filter
                values["filter_phase"] = any(v is not None for v in patch.values()) or (
                    current.filter_phase and (values[lo_f], values[hi_f]) != (defaults[lo_f], defaults[hi_f])
                )
        new = FilterSettings.model_validate(values)
        if new != current:
            self.store.set_filters(new)
        return new

    def set_selection(self, name: str, included: bool | None) -> None:
        """Manual include (True), exclude (False) or back to the filter (None)."""
        self.store.set_manual(name, {True: "include", False: "exclude", None: None}[included])

    def settings(self) -> ProcessingSettings:
        """Current processing settings."""
        return self.store.get_settings()

    def change_settings(self, changes: dict[str, Any]) -> tuple[ProcessingSettings, list[str], list[str]]:
        """Apply dotted-path changes ``{"ctf.window": 256}``; returns (settings, stages, requeued items)."""
        nested: dict[str, Any] = {}
        for path, value in changes.items():
            node = nested
            parts = path.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
        old = self.store.get_settings()
        new = old.updated(nested)
        before = {it["name"]: it["status"] for it in self.store.list_items()}
        stages = self.store.put_settings(new)
        after = {it["name"]: it["status"] for it in self.store.list_items()}
        requeued = [n for n, s in after.items() if s == "queued" and before.get(n) in ("done", "failed")]
        return new, stages, requeued

    # ------------------------------------------------------------------ artifacts
    def artifact_path(self, item: dict[str, Any], key: str) -> Path | None:
        """Absolute path of an item's artifact if recorded and present (inside the project), else None."""
        rel = item.get("artifacts", {}).get(key)
        if not rel:
            return None
        p = (self.project_dir / rel).resolve()
        if not p.is_relative_to(self.project_dir) or not p.is_file():
            return None
        return p

    def effective_mask(self, item: dict[str, Any]) -> torch.Tensor | None:
        """BoxNet's artefact mask of an item (8 Å grid, bool) with the user's brush strokes applied,
        or None if the pipeline wrote no mask (picks from STAR files, or not picked yet).

        Raises ``CorruptFileError`` (naming the file) if the mask file cannot be read.
        """
        from cryowarp.io.masks import read_mask_tif
        from cryowarp.picking.mask_edits import apply_mask_strokes

        path = self.artifact_path(item, "mask")
        if path is None:
            return None
        mask = read_mask_tif(path)
        strokes = self.store.mask_strokes(item["name"])
        if not strokes or not item.get("height") or not item.get("width"):
            return mask
        scale_xy = (item["width"] / mask.shape[1], item["height"] / mask.shape[0])
        return apply_mask_strokes(mask, strokes, scale_xy)

    def read_json_artifact(self, item: dict[str, Any], *keys: str) -> dict[str, Any] | None:
        """The first of ``keys`` that names a readable JSON artifact, parsed."""
        for key in keys:
            p = self.artifact_path(item, key)
            if p is not None:
                try:
                    return json.loads(p.read_text())
                except (OSError, json.JSONDecodeError):
                    return None
        return None


def item_not_found_message(exc: ItemNotFoundError) -> str:
    """The store's message for a missing item."""
    return str(exc)
