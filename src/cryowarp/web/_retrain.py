"""BoxNet retraining started from the UI: one background thread, progress polled by the page.

The training itself is ``cryowarp.picking.train_boxnet`` (warp-facts.md §3.6). The examples are the
items the user corrected (added or removed picks, or brush strokes on the artefact mask), each with its
effective picks as particle labels, its artefact mask (BoxNet's, with the user's strokes) as label 2 and
the BoxNet picks the user removed as false positives (weighted 4× as background, Warp's certainty layer).
Each retrained model goes to a new ``<project>/boxnet/boxnet_retrained_NNN.pt`` and the examples, as Warp-style
3-layer TIFFs, to ``<project>/boxnet/examples/`` (a corpus for ``cryowarp boxnet retrain --general``).
"""

from __future__ import annotations

import re
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cryowarp.io.boxnet_examples import write_example_tiff
from cryowarp.io.errors import CryowarpIOError
from cryowarp.io.mrc import read_mrc
from cryowarp.picking import (
    BoxNet,
    TrainProgress,
    TrainSettings,
    boxnet_to_state,
    load_pretrained_boxnet,
    make_training_example,
    train_boxnet,
)
from cryowarp.sim.picking_corpus import general_corpus
from cryowarp.web._project import ProjectView

__all__ = ["EXAMPLES_DIR", "RETRAINED_DIR", "RetrainJob", "next_model_path"]

#: Retrained models go here, one new file per retraining (``boxnet_retrained_001.pt``, ``_002``, …):
#: adopting a second one is then a settings change, so every item is re-picked with it.
RETRAINED_DIR = Path("boxnet")
#: The examples of the last retraining, as 3-layer TIFFs (``cryowarp.io.boxnet_examples``).
EXAMPLES_DIR = Path("boxnet") / "examples"


@dataclass
class RetrainJob:
    """State of the (single) retraining job of a server."""

    status: str = "idle"  # idle | running | done | failed
    message: str = ""
    iteration: int = 0
    n_iterations: int = 0
    reports: list[dict[str, Any]] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None
    model_path: str | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _version: int = 0

    def snapshot(self) -> dict[str, Any]:
        """Plain-JSON state for the page."""
        with self._lock:
            return {
                "status": self.status,
                "message": self.message,
                "iteration": self.iteration,
                "n_iterations": self.n_iterations,
                "reports": list(self.reports),
                "examples": list(self.examples),
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "model_path": self.model_path,
                "version": self._version,
            }

    @property
    def version(self) -> int:
        """Grows whenever the state changes (for server-sent events)."""
        return self._version

    def _update(self, **kw: Any) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, v)
            self._version += 1

    def start(
        self,
        view: ProjectView,
        settings: TrainSettings,
        *,
        from_scratch: bool = False,
        seed: int = 0,
        auto_warmup: bool = False,
        n_general: int = 12,
    ) -> None:
        """Start retraining in a background thread (raises ``RuntimeError`` if one is running).

        The corrected items are mixed 1:1 with a general corpus of ``n_general`` simulated
        micrographs (:func:`cryowarp.sim.picking_corpus.general_corpus`; 0 = the corrections alone).

        ``auto_warmup`` sets the warm-up to a tenth of the iterations (at most 100), as
        ``cryowarp boxnet retrain`` does, once the number of corrected items is known.
        """
        with self._lock:
            if self.status == "running":
                raise RuntimeError("retraining is already running; wait for it to finish")
            self.status, self.message, self.reports, self.examples = (
                "running",
                "collecting corrections",
                [],
                [],
            )
            self.iteration, self.n_iterations, self.model_path = 0, 0, None
            self.started_at, self.finished_at = time.time(), None
            self._version += 1
        self._thread = threading.Thread(
            target=self._run,
            args=(view, settings, from_scratch, seed, auto_warmup, n_general),
            name="cryowarp-retrain",
            daemon=True,
        )
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the training thread."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(
        self,
        view: ProjectView,
        settings: TrainSettings,
        from_scratch: bool,
        seed: int,
        auto_warmup: bool,
        n_general: int,
    ) -> None:
        try:
            store = view.store
            diameter_a = store.get_settings().pick.particle_diameter_a
            corrected = corrected_items(view)
            if not corrected:
                raise ValueError("no corrected items: add or remove picks, or edit the mask, on at least one item first")
            examples, n_false_positives, masked_percent, skipped = [], {}, {}, {}
            for name in corrected:
                item = store.get_item(name)
                path = view.artifact_path(item, "average")
                if path is None:
                    skipped[name] = "no aligned average on disk"
                    continue
                try:  # one unreadable file skips its item (named in the message), not the whole retraining
                    image, header_pixel_size_a = read_mrc(path, as_tensor=True)
                    # artefact labels: BoxNet's mask with the user's strokes (Warp trains on the existing mask
                    # too); without it the corrected items would teach the model that their artefacts are
                    # background
                    mask = view.effective_mask(item)
                except CryowarpIOError as exc:
                    skipped[name] = str(exc)
                    continue
                pixel_size_a = item["pixel_size_a"] or header_pixel_size_a or 1.0
                # the user's deletions are the false positives (4× background)
                picks, removed = store.picks_and_removed(name)
                n_false_positives[name] = len(removed)
                if mask is not None:
                    masked_percent[name] = round(100.0 * float(mask.float().mean()), 3)
                examples.append(
                    make_training_example(
                        image,
                        pixel_size_a,
                        _xy(picks),
                        diameter_a,
                        mask=mask,
                        false_positives_px_xy=_xy(removed) if removed else None,
                        name=name,
                    )
                )
            note = "; skipped " + "; ".join(f"{n}: {why}" for n, why in skipped.items()) if skipped else ""
            if not examples:
                raise ValueError(f"no corrected item can be used{note}")
            _save_examples(view.project_dir / EXAMPLES_DIR, examples)
            general = []
            if n_general:
                self._update(message=f"simulating the general corpus ({n_general} micrographs)")
                general = general_corpus(n_general)
            self._update(
                examples=[e.name for e in examples],
                message=f"training on {len(examples)} corrected items "
                f"({sum(n_false_positives.values())} removed picks as false positives, "
                f"{len(masked_percent)} with an artefact mask)"
                + (f" mixed 1:1 with {len(general)} general micrographs" if general else "")
                + note,
            )
            model = BoxNet() if from_scratch else load_pretrained_boxnet()
            if auto_warmup:
                warmup = min(100, max(1, settings.epochs * len(examples) // 10))
                settings = settings.model_copy(update={"warmup_iterations": warmup})

            def progress(p: TrainProgress) -> None:
                kw: dict[str, Any] = {"iteration": p.iteration, "n_iterations": p.n_iterations}
                if p.epoch_report is not None:
                    kw["reports"] = [*self.reports, p.epoch_report.to_dict()]
                self._update(**kw)

            result = train_boxnet(
                model, examples, settings, general_examples=general or None, seed=seed, progress=progress
            )
            out = next_model_path(view.project_dir / RETRAINED_DIR)
            tmp = out.with_name(out.name + ".tmp")
            state = boxnet_to_state(
                result.model,
                retrained_on=[e.name for e in examples],
                false_positives={e.name: n_false_positives[e.name] for e in examples},
                general_corpus=len(general),
                masked_percent=masked_percent,  # label 2 (artefact) share of each example's mask
                skipped=skipped,
            )
            torch.save(state, tmp)
            tmp.replace(out)
            self._update(
                status="done",
                message=f"saved {out.relative_to(view.project_dir)}{note}",
                model_path=str(out),  # absolute, ready for settings.boxnet_model_path
                finished_at=time.time(),
            )
        except Exception as exc:  # reported to the page, never silent
            self._update(status="failed", message=f"{type(exc).__name__}: {exc}", finished_at=time.time())
            traceback.print_exc()


def next_model_path(folder: Path) -> Path:
    """``folder/boxnet_retrained_NNN.pt`` with NNN one above the highest there (the folder is created)."""
    folder.mkdir(parents=True, exist_ok=True)
    matches = (re.fullmatch(r"boxnet_retrained_(\d+)", p.stem) for p in folder.glob("boxnet_retrained_*.pt"))
    numbers = [int(m[1]) for m in matches if m]
    return folder / f"boxnet_retrained_{max(numbers, default=0) + 1:03d}.pt"


def _save_examples(folder: Path, examples: list) -> None:
    """Keep the corrected items as Warp-style training TIFFs (a corpus for ``boxnet retrain --general``);
    a TIFF of an item that is no longer corrected is removed."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {e.name for e in examples}
    for old in folder.glob("*.tif"):
        if old.stem not in names:
            old.unlink(missing_ok=True)
    for ex in examples:
        write_example_tiff(folder / f"{ex.name}.tif", ex)


def _xy(picks: list[dict]) -> torch.Tensor:
    """`(n, 2)` (x, y) in px of store pick rows."""
    return torch.tensor([[p["x_px"], p["y_px"]] for p in picks], dtype=torch.float32).reshape(-1, 2)


def corrected_items(view: ProjectView) -> list[str]:
    """Items with a manual pick, a removed BoxNet pick or a mask stroke (the corrections)."""
    return view.store.corrected_items()
