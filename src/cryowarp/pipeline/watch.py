"""Folder discovery: event-driven (watchdog) with a polling fallback; files are taken once ripe.

Warp's rule (warp-facts.md §8): a new file enters an incubator; it becomes *ripe* when its size has
not changed and it can be opened for reading for more than 1 s. Names starting with "." are ignored
(partial downloads, our own temp files). A file-system event only triggers a rescan, so the same
logic works on network file systems where inotify sees nothing (``use_polling=True``, or automatic
when the observer cannot start).

A taken file whose size or modification time changes later (a copy that was resumed after a stall)
is reported again, so the coordinator can retry an item that failed as truncated.
"""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FolderWatcher", "RipeFile"]


@dataclass(frozen=True)
class RipeFile:
    """A file ready to process.

    Attributes
    ----------
    path : Path
    size_bytes : int or None
        None when the file could not be stat'ed (reported so the failure is visible).
    readable_at : float
        Unix time at which it was found ripe.
    problem : str or None
        Set when the file is handed over *without* being ripe (it never became readable within
        ``give_up_s``): the processing will fail and report why.
    """

    path: Path
    size_bytes: int | None
    readable_at: float
    problem: str | None = None


class FolderWatcher:
    """Finds movie files in a folder and hands each over once it is complete.

    Parameters
    ----------
    folder : str or Path
        Folder to watch (must exist).
    patterns : sequence of str
        fnmatch patterns of movie names, e.g. ``("*.tif", "*.eer")``.
    recursive : bool
        Include sub-folders.
    stable_s : float
        How long size and mtime must stay unchanged while the file can be read (Warp: 1 s).
    use_polling : bool
        Do not use inotify; rescan every ``poll_interval_s``.
    poll_interval_s : float
        Rescan period without events (also a safety net with events).
    give_up_s : float
        A file that exists but never becomes readable for this long is handed over with a
        ``problem`` so that it is reported instead of waiting forever.
    exclude : sequence of path
        Files never taken (e.g. the gain reference if it sits in the folder).
    """

    def __init__(
        self,
        folder: str | Path,
        patterns: tuple[str, ...] | list[str],
        *,
        recursive: bool = False,
        stable_s: float = 1.0,
        use_polling: bool = False,
        poll_interval_s: float = 2.0,
        give_up_s: float = 60.0,
        exclude: tuple[str | Path, ...] | list[str | Path] = (),
    ):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: input folder does not exist")
        self.patterns = tuple(patterns)
        self.recursive = recursive
        self.stable_s = stable_s
        self.poll_interval_s = poll_interval_s
        self.give_up_s = give_up_s
        # real paths on both sides: the folder or the gain may be reached through a symlink
        self.exclude = {os.path.realpath(p) for p in exclude if p}
        self._incubator: dict[
            Path, tuple[tuple[int, float] | None, float, float]
        ] = {}  # sig, since, first seen
        self._taken: dict[Path, tuple[int, float] | None] = {}
        self._wake = threading.Event()
        self._last_scan = 0.0
        self._observer = None
        self.mode = "polling"
        if not use_polling:
            self._start_observer()

    # ------------------------------------------------------------------ events
    def _start_observer(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            return
        wake = self._wake

        class _Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # created, modified, closed, moved: all mean "look again"
                wake.set()

        try:
            observer = Observer()
            observer.schedule(_Handler(), str(self.folder), recursive=self.recursive)
            observer.daemon = True
            observer.start()
        except OSError:  # inotify limits, network file systems: fall back to polling
            return
        self._observer = observer
        self.mode = "events"

    def close(self) -> None:
        """Stop the observer thread."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None

    def __enter__(self) -> FolderWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self, timeout_s: float) -> None:
        """Sleep until a file-system event or ``timeout_s``."""
        self._wake.wait(timeout_s)

    # ------------------------------------------------------------------ scanning
    def _matches(self, path: Path) -> bool:
        return (
            not path.name.startswith(".")
            and any(fnmatch.fnmatch(path.name, p) for p in self.patterns)
            and os.path.realpath(path) not in self.exclude
        )

    def _candidates(self) -> list[Path]:
        walker = self.folder.rglob("*") if self.recursive else self.folder.iterdir()
        out = []
        for path in walker:
            if self._matches(path) and (path.is_file() or path.is_symlink()):
                out.append(path)
        return sorted(out)

    @staticmethod
    def _signature(path: Path) -> tuple[int, float] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_size, st.st_mtime)

    @staticmethod
    def _readable(path: Path) -> bool:
        try:
            with open(path, "rb") as handle:
                handle.read(1)
            return True
        except OSError:
            return False

    def poll(self, *, flush: bool = False, rescan: bool = False) -> list[RipeFile]:
        """Rescan (when woken or every ``poll_interval_s``) and return the files that became ripe.

        Parameters
        ----------
        flush : bool
            Hand over everything still incubating (one-shot ``process`` at the end): files that are
            not ripe come with a ``problem``.
        rescan : bool
            Rescan the folder now even without an event (e.g. before deciding that nothing is left).
        """
        now = time.time()
        if (
            flush
            or rescan
            or self._wake.is_set()
            or now - self._last_scan >= self.poll_interval_s
            or self._incubator
        ):
            self._wake.clear()
            self._last_scan = now
            for path in self._candidates():
                sig = self._signature(path)
                if path in self._taken:
                    if sig is not None and sig != self._taken[path]:
                        del self._taken[path]  # changed after being taken: incubate again
                    else:
                        continue
                previous = self._incubator.get(path)
                if previous is None or previous[0] != sig:
                    first_seen = previous[2] if previous else now
                    self._incubator[path] = (sig, now, first_seen)
        ripe: list[RipeFile] = []
        for path, (sig, since, first_seen) in list(self._incubator.items()):
            stable = now - since > self.stable_s
            ok = sig is not None and sig[0] > 0 and stable and self._readable(path)
            if sig is not None and sig[0] == 0 and stable and now - first_seen > self.give_up_s:
                ok = True  # an empty file that stays empty: hand it over so it is reported
            problem = None
            if not ok and (flush or now - first_seen > self.give_up_s):
                problem = (
                    "cannot be opened for reading"
                    if sig is not None
                    else "cannot be stat'ed (dangling link or no permission)"
                )
                if sig is not None and sig[0] == 0:
                    problem = None  # empty: the reader names it
                ok = True
            if ok:
                del self._incubator[path]
                self._taken[path] = sig
                ripe.append(
                    RipeFile(path=path, size_bytes=sig[0] if sig else None, readable_at=now, problem=problem)
                )
        return ripe

    @property
    def n_incubating(self) -> int:
        """Files seen but not yet ripe."""
        return len(self._incubator)
