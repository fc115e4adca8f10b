"""STAR upkeep off the request path: changes ask for a rewrite, one background thread does it.

``cryowarp.pipeline.starfiles.write_star_files`` rewrites every STAR file from the store (concatenating
cached per-item row blocks: ~0.2 s for 10⁵ particles, longer when many items' blocks must first be
built), so a request that changes the selection (filters, include/exclude, picks, settings) only *asks*
for a rewrite and returns; requests arriving while a rewrite runs are coalesced into one more rewrite
afterwards, so the files always end up matching the latest state.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any

from cryowarp.pipeline.starfiles import write_star_files
from cryowarp.pipeline.store import ProjectStore

__all__ = ["StarWriter"]


class StarWriter:
    """Coalescing background writer of a project's STAR files."""

    def __init__(self, store: ProjectStore):
        self.store = store
        self._cond = threading.Condition()
        self._dirty = False
        self._writing = False
        self._thread: threading.Thread | None = None
        self.version = 0  # grows when a rewrite finishes (for server-sent events)
        self.last: dict[str, Any] = {}

    def request(self) -> None:
        """Ask for a rewrite reflecting the store as it is now (returns at once)."""
        with self._cond:
            self._dirty = True
            self._cond.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="cryowarp-star-writer", daemon=True)
                self._thread.start()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until no rewrite is pending or running; False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._dirty or self._writing:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def status(self) -> dict[str, Any]:
        """``{"writing", "pending", "version", "last": {"elapsed_s", "finished_at", "error", "files"}}``."""
        with self._cond:
            return {
                "writing": self._writing,
                "pending": self._dirty,
                "version": self.version,
                "last": dict(self.last),
            }

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._dirty:
                    self._thread = None
                    self._cond.notify_all()
                    return
                self._dirty, self._writing = False, True
            t0 = time.perf_counter()
            error, files = None, []
            try:
                files = sorted(write_star_files(self.store))
            except Exception as exc:  # shown in the UI; the next change retries
                error = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            with self._cond:
                self._writing = False
                self.version += 1
                self.last = {
                    "elapsed_s": time.perf_counter() - t0,
                    "finished_at": time.time(),
                    "error": error,
                    "files": files,
                }
                self._cond.notify_all()
