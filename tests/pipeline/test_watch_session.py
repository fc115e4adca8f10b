"""Watch mode on a growing folder: movies copied in slowly are never taken half-written; Dask executor."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from tests.pipeline.sessions import fast_settings, write_session

from cryowarp.pipeline.schedule import Coordinator


def _slow_copy(src, dst, chunks=5, pause_s=0.3):
    data = src.read_bytes()
    step = len(data) // chunks + 1
    with open(dst, "wb") as handle:
        for i in range(0, len(data), step):
            handle.write(data[i : i + step])
            handle.flush()
            time.sleep(pause_s)


def test_watch_takes_slowly_copied_movies_only_when_complete(tmp_path):
    staged, coords = write_session(tmp_path / "staged", 3)
    live = tmp_path / "live"
    live.mkdir()
    done = threading.Event()

    def acquire():
        for path in sorted(staged.glob("*.mrc")):
            _slow_copy(path, live / path.name)  # 0.3 s between chunks < the 0.6 s ripeness time
        done.set()

    writer = threading.Thread(target=acquire)
    writer.start()
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=0)
    counts = c.run(live, watch=True, stable_s=0.6, stop_when_idle=done.is_set)
    writer.join()
    assert counts["done"] == 3 and counts["failed"] == 0, c.store.list_items()
    assert counts["particles"] == 15
    for item in c.store.list_items():
        assert item["attempts"] == 1  # taken once, complete
        assert item["readable_at"] >= item["discovered_at"] - 1
    c.close()


@pytest.mark.slow
def test_dask_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    movies, coords = write_session(tmp_path, 2)
    c = Coordinator(tmp_path / "p", fast_settings(coords), dask_workers=1)
    try:
        counts = c.run(movies, stable_s=0.2)
    finally:
        c.close()
    assert counts["done"] == 2 and counts["particles"] == 10
    assert c.executor_name.startswith("dask")


def test_changed_file_after_failure_is_retried(tmp_path):
    movies, coords = write_session(tmp_path, 1)
    good = movies / "m00.mrc"
    backup = tmp_path / "m00.bak"
    shutil.copy(good, backup)
    good.write_bytes(backup.read_bytes()[:5000])  # a stalled copy: stable long enough, but truncated
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=0)
    c.run(movies, stable_s=0.2)
    assert c.store.get_item("m00")["status"] == "failed"
    shutil.copy(backup, good)  # the copy resumes and completes
    counts = c.run(movies, stable_s=0.2)
    assert counts["done"] == 1 and counts["failed"] == 0
    c.close()
