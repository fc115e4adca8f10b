"""The coordinator: discovers movies, hands them to workers, records results, keeps the STAR files.

Only the coordinator writes the database and the STAR files; workers run
:func:`~cryowarp.pipeline.items.process_movie` and return an ``ItemResult``. Executors:

* local (default): a ``concurrent.futures.ProcessPoolExecutor`` sized to the machine (one worker per
  two cores, each with the remaining threads for torch).
* Dask distributed: ``scheduler_address="tcp://host:8786"`` connects to a running scheduler (the
  project folder must be on a file system the workers share); ``dask_workers=N`` starts a
  LocalCluster of N single-threaded worker processes.

Reliability: items left ``running`` by a killed coordinator are re-queued at start; a worker that
dies (pool broken, Dask ``KilledWorker``) gets its item retried up to ``max_attempts`` times, then the
item fails with a message saying so. Every other failure is recorded per item with its message.
Each finished item is recorded in one transaction before the STAR files are rewritten from the store,
so a kill -9 at any moment loses nothing and duplicates nothing.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryowarp.pipeline.items import item_name, process_movie
from cryowarp.pipeline.results import ItemResult
from cryowarp.pipeline.settings import ProcessingSettings
from cryowarp.pipeline.starfiles import write_star_files
from cryowarp.pipeline.store import ProjectStore
from cryowarp.pipeline.watch import FolderWatcher

__all__ = ["Coordinator", "RunStats", "default_pool_size"]


def default_pool_size(n_cpus: int | None = None) -> tuple[int, int]:
    """``(workers, threads per worker)``: one worker per two cores (at least one), threads share the rest."""
    n_cpus = n_cpus or os.cpu_count() or 1
    workers = max(1, n_cpus // 2)
    return workers, max(1, n_cpus // workers)


@dataclass
class RunStats:
    """Live numbers for the display (and the benchmark)."""

    started_at: float = field(default_factory=time.time)
    finished: int = 0
    failed_now: int = 0
    retried: int = 0
    latencies_s: list[float] = field(default_factory=list)
    stage_times_s: dict[str, list[float]] = field(default_factory=dict)

    def throughput_per_hour(self) -> float:
        """Items processed successfully per hour since the start (failed items do not count)."""
        elapsed = max(1e-9, time.time() - self.started_at)
        return self.finished * 3600.0 / elapsed


def _exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Pool worker initializer: end this worker when the coordinator is gone.

    A pool worker blocks on its task queue forever, so a coordinator killed with ``kill -9`` /
    ``SIGTERM`` would leave its workers running (still computing, holding memory) next to the
    restarted coordinator's. A daemon thread checks the parent every ``poll_s`` seconds.
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="cryowarp-parent-watch", daemon=True).start()


class _LocalExecutor:
    def __init__(self, n_workers: int, n_threads: int):
        self.n_workers, self.n_threads = n_workers, n_threads
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        import multiprocessing as mp

        return cf.ProcessPoolExecutor(
            max_workers=self.n_workers,
            mp_context=mp.get_context("spawn"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._pool.submit(fn, *args, **kwargs)

    def is_worker_death(self, exc: BaseException) -> bool:
        from concurrent.futures.process import BrokenProcessPool

        if isinstance(exc, BrokenProcessPool):
            if getattr(
                self._pool, "_broken", False
            ):  # futures of an older, already replaced pool: no new pool
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            return True
        return False

    @property
    def capacity(self) -> int:
        return self.n_workers

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


class _SerialExecutor:
    """Runs each item in the coordinator process itself (``n_workers=0``: debugging, tests, tiny runs)."""

    def __init__(self, n_threads: int):
        self.n_threads = n_threads

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # Ctrl-C (KeyboardInterrupt) propagates: the item stays queued
            future.set_exception(exc)
        return future

    def is_worker_death(self, exc: BaseException) -> bool:
        return False

    @property
    def capacity(self) -> int:
        return 1

    def close(self, wait: bool = True) -> None:
        pass


class _DaskExecutor:
    def __init__(self, scheduler_address: str | None, n_workers: int | None, n_threads: int):
        import dask
        from distributed import Client, LocalCluster

        self.n_threads = n_threads
        self._cluster = None
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            if scheduler_address:
                self._client = Client(scheduler_address)
            else:
                self._cluster = LocalCluster(
                    n_workers=n_workers or 1,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
                self._client = Client(self._cluster)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._client.submit(fn, *args, pure=False, **kwargs)

    def is_worker_death(self, exc: BaseException) -> bool:
        from distributed import KilledWorker

        return isinstance(exc, KilledWorker)

    @property
    def capacity(self) -> int:
        info = self._client.scheduler_info()
        return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    def close(self, wait: bool = True) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


class Coordinator:
    """Runs a project: discovery, dispatch, recording, STAR upkeep.

    Parameters
    ----------
    project_dir : str or Path
        The project folder (created if missing).
    settings : ProcessingSettings, optional
        Settings to apply; None keeps the project's stored settings. A change re-queues exactly the
        outdated stages of processed items.
    n_workers : int, optional
        Local pool size (default: :func:`default_pool_size`); 0 runs items in this process.
    n_threads : int, optional
        torch threads per worker.
    scheduler_address : str, optional
        Dask scheduler ``tcp://host:port``.
    dask_workers : int, optional
        Start a Dask LocalCluster with this many workers.
    device : str
        Passed to workers (``"auto"`` resolves there).
    max_attempts : int
        Attempts per item when workers die (not for ordinary errors, which fail at once).
    star_interval_s : float
        Minimum time between STAR rewrites while items are running (they are always rewritten when
        the queue drains and at the end); bounds the cost of regenerating large STAR files.
    on_update : callable, optional
        ``on_update(coordinator)`` after every change (for a live display).
    """

    def __init__(
        self,
        project_dir: str | Path,
        settings: ProcessingSettings | None = None,
        *,
        n_workers: int | None = None,
        n_threads: int | None = None,
        scheduler_address: str | None = None,
        dask_workers: int | None = None,
        device: str = "auto",
        max_attempts: int = 3,
        star_interval_s: float = 2.0,
        on_update: Callable[[Coordinator], None] | None = None,
    ):
        self.project_dir = Path(project_dir)
        self.store = ProjectStore(self.project_dir)
        if settings is not None and settings != self.store.get_settings():
            self.store.put_settings(settings)
        elif not (self.project_dir / "settings.json").exists():
            self.store.put_settings(self.store.get_settings())
        self.settings = self.store.get_settings()
        workers, threads = default_pool_size()
        self.n_threads = n_threads or threads
        if scheduler_address or dask_workers:
            self.executor: Any = _DaskExecutor(scheduler_address, dask_workers, self.n_threads)
            self.executor_name = f"dask ({scheduler_address or f'LocalCluster × {dask_workers}'})"
        elif n_workers == 0:
            self.executor = _SerialExecutor(self.n_threads)
            self.executor_name = "in-process (serial)"
        else:
            self.executor = _LocalExecutor(n_workers or workers, self.n_threads)
            self.executor_name = f"local pool × {n_workers or workers}"
        self.device = device
        self.max_attempts = max_attempts
        self.star_interval_s = star_interval_s
        self._last_star = 0.0
        self._star_pending: list[float] = []  # readable_at of items recorded but not yet in the STAR
        self.on_update = on_update
        self.stats = RunStats()
        self.running: dict[Any, tuple[str, float]] = {}  # future -> (name, readable_at)
        self.messages: list[str] = []  # the last 20
        self.n_messages = 0  # said so far (a plain log prints the ones it has not printed)
        recovered = self.store.reset_running()
        if recovered:
            self._say(f"resumed: {recovered} item(s) left running by a previous run were re-queued")
        self.store.requeue_outdated(self.settings)

    # ------------------------------------------------------------------ helpers
    def _say(self, message: str) -> None:
        self.messages.append(message)
        self.n_messages += 1
        del self.messages[:-20]

    def _update(self) -> None:
        if self.on_update is not None:
            self.on_update(self)

    def _expected_shape(self) -> tuple[int, int, int] | None:
        for item in self.store.list_items(status="done"):
            if item["n_frames"] and item["height"] and item["width"]:
                return (item["n_frames"], item["height"], item["width"])
        return None

    def add_files(self, ripe: list[Any]) -> int:
        """Register ripe files as items (a changed file of a failed item is retried). Returns new items."""
        new = 0
        for rf in ripe:
            name = item_name(rf.path)
            if self.store.add_item(name, str(rf.path), size_bytes=rf.size_bytes, readable_at=rf.readable_at):
                new += 1
                if rf.problem:
                    self.store.record_failure(name, f"read: {rf.path.name}: {rf.problem}")
                continue
            existing = self.store.get_item(name)
            if Path(existing["path"]) != Path(rf.path):
                self._say(f"{rf.path}: skipped, an item named {name!r} already comes from {existing['path']}")
            elif existing["status"] == "failed" and not rf.problem:
                if rf.size_bytes == existing["size_bytes"] and (existing["started_at"] or 0) >= self.stats.started_at:
                    continue  # first sighting this run of a file already retried at start, unchanged
                self.store.mark_queued(name)
                self._say(f"{name}: the file changed after failing; retrying")
        return new

    # ------------------------------------------------------------------ dispatch
    def dispatch(self) -> None:
        """Submit queued items while workers are free."""
        free = self.executor.capacity - len(self.running)
        if free <= 0:
            return
        # settings changed meanwhile (the UI's settings page, `watch --ui`) apply to the next items
        self.settings = self.store.get_settings()
        expected = self._expected_shape()
        recorded = False
        for row in self.store.queued_items()[:free]:
            name = row["name"]
            stages = self.store.stages_to_run(name, self.settings)
            if not stages:  # nothing outdated (e.g. requeued by a no-op change)
                self.store.record_result(ItemResult(name=name, path=row["path"], ok=True))
                recorded = True
                continue
            corrections = self.store.pick_corrections(name)
            self.store.mark_running(name)
            future = self.executor.submit(
                process_movie,
                row["path"],
                self.settings,
                str(self.project_dir),
                stages=stages,
                pick_corrections=corrections,
                expected_shape_fyx=expected,
                device=self.device,
                n_threads=self.n_threads,
            )
            item = self.store.get_item(name)
            self.running[future] = (name, item["readable_at"] or time.time())
        if recorded:  # they are selected again: the STAR files must list them
            self.write_star()
        self._update()

    def collect(self) -> int:
        """Record finished futures; returns how many finished."""
        finished = [f for f in list(self.running) if f.done()]
        for future in finished:
            name, readable_at = self.running.pop(future)
            try:
                result = future.result()
            except Exception as exc:  # a worker may die in many ways
                if self.executor.is_worker_death(exc):
                    self._worker_died(name, exc)
                    # a broken local pool loses every running future: re-queue the others too
                    for other in [f for f in self.running if f.done()]:
                        other_name, _ = self.running.pop(other)
                        self._worker_died(other_name, exc)
                    continue
                self.store.record_failure(name, f"worker: {type(exc).__name__}: {exc}")
                self.stats.failed_now += 1
                self._say(f"{name}: failed — {type(exc).__name__}: {exc}")
                continue
            self.store.record_result(result)
            if result.ok and self.store.stages_to_run(name, self.store.get_settings()):
                self.store.mark_queued(name)  # settings changed while it was running: redo what is outdated
            if result.ok:
                self.stats.finished += 1
                self._star_pending.append(readable_at)
                for stage, seconds in result.timings_s.items():
                    self.stats.stage_times_s.setdefault(stage, []).append(seconds)
            else:
                self.stats.failed_now += 1
                self._say(f"{name}: failed — {result.error}")
        if finished:
            self._update()
        if self._star_pending and (not self.running or time.time() - self._last_star >= self.star_interval_s):
            self.write_star()
        return len(finished)

    def write_star(self) -> None:
        """Rewrite the STAR files now; items recorded since the last rewrite get their latency."""
        write_star_files(self.store)
        now = time.time()
        self._last_star = now
        self.stats.latencies_s.extend(now - t for t in self._star_pending)
        self._star_pending.clear()
        self._update()

    def _worker_died(self, name: str, exc: BaseException) -> None:
        attempts = self.store.get_item(name)["attempts"]
        if attempts < self.max_attempts:
            self.store.mark_queued(name)
            self.stats.retried += 1
            self._say(
                f"{name}: its worker died ({type(exc).__name__}); retrying ({attempts}/{self.max_attempts})"
            )
        else:
            self.store.record_failure(
                name,
                f"worker: the worker processing it died {attempts} times "
                f"({type(exc).__name__}: {exc}); not retried again",
            )
            self.stats.failed_now += 1

    # ------------------------------------------------------------------ loops
    def run(
        self,
        input_dir: str | Path | None,
        *,
        watch: bool = False,
        use_polling: bool = False,
        stable_s: float = 1.0,
        stop: Callable[[], bool] | None = None,
        stop_when_idle: Callable[[], bool] | None = None,
        idle_sleep_s: float = 0.2,
    ) -> dict[str, int]:
        """Process ``input_dir``: once (until nothing is queued or running) or forever with ``watch``.

        Parameters
        ----------
        input_dir : str or Path or None
            Folder of movies; None processes only what the project already knows.
        watch : bool
            Keep watching for new files until ``stop()`` returns True (or Ctrl-C).
        use_polling : bool
            Poll instead of inotify (network file systems).
        stable_s : float
            Ripeness time (Warp: 1 s).
        stop : callable, optional
            Checked every loop iteration; True ends the run (running items are still collected).
        stop_when_idle : callable, optional
            With ``watch``: end once it returns True and nothing is queued, running or incubating
            (e.g. "the acquisition has finished").

        Returns
        -------
        counts : dict
            ``ProjectStore.counts()`` at the end.
        """
        watcher = None
        if input_dir is not None:
            inp = self.settings.input
            watcher = FolderWatcher(
                input_dir,
                inp.patterns,
                recursive=inp.recursive,
                stable_s=stable_s,
                use_polling=use_polling,
                exclude=[p for p in (inp.gain_path, inp.defects_path) if p],
            )
        write_star_files(self.store)
        try:
            while True:
                if watcher is not None:
                    if self.add_files(watcher.poll()):
                        self._update()
                self.dispatch()
                self.collect()
                idle = not self.running and not self.store.queued_items()
                if not watch and idle:
                    if watcher is not None and watcher.n_incubating:
                        if self.add_files(
                            watcher.poll(flush=time.time() - self.stats.started_at > 5 * stable_s)
                        ):
                            continue
                        time.sleep(idle_sleep_s)
                        continue
                    break
                if stop is not None and stop():
                    break
                if (
                    stop_when_idle is not None
                    and idle
                    and stop_when_idle()
                    and (
                        watcher is None
                        or (
                            not watcher.n_incubating
                            and not self.add_files(watcher.poll(rescan=True))
                            and not watcher.n_incubating
                        )
                    )
                ):
                    break
                if watcher is not None and idle:
                    watcher.wait(idle_sleep_s)
                else:
                    time.sleep(idle_sleep_s if not self.running else 0.05)
            while self.running:  # a stop request still records what the workers are finishing
                self.collect()
                time.sleep(0.05)
        finally:
            if watcher is not None:
                watcher.close()
        self.write_star()
        return self.store.counts()

    def close(self, *, wait: bool = True) -> None:
        """Shut the executor down (``wait=False``: do not wait for running items) and close the store."""
        self.executor.close(wait=wait)
        self.store.close()
