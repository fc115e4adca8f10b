"""Coordinator on tiny real sessions: one-shot runs, reprocessing only what changed, kill -9 + resume,
bad input reported per item, worker death retried."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.pipeline.sessions import PIXEL_SIZE_A, fast_settings, write_movie, write_session

from cryowarp.io.mrc import write_mrc
from cryowarp.io.star import read_star
from cryowarp.pipeline.schedule import Coordinator, default_pool_size

REPO = Path(__file__).resolve().parents[2]


def _star(project: Path) -> pd.DataFrame:
    return read_star(project / "particles.star")["particles"]


def test_process_once_then_nothing_is_redone(tmp_path):
    movies, coords = write_session(tmp_path, 3)
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=0)
    counts = c.run(movies, stable_s=0.2)
    assert counts["done"] == 3 and counts["failed"] == 0 and counts["particles"] == 15
    particles = _star(tmp_path / "p")
    assert len(particles) == 15 and set(particles["rlnMicrographName"]) == {
        f"items/m{i:02d}/average.mrc" for i in range(3)
    }
    # extracted at the planted blobs: inverted dark blobs are bright in the centre of every box
    with __import__("mrcfile").open(tmp_path / "p" / "particles" / "m00.mrcs") as m:
        stack = np.asarray(m.data, dtype=np.float32)
    centre, corner = stack[:, 14:18, 14:18].mean(), stack[:, :6, :6].mean()
    assert centre > corner + 1.0  # normalised to s.d. 1 outside D/2; the blob is ≈ 2.5 s.d. above
    finished = {it["name"]: it["finished_at"] for it in c.store.list_items()}
    c.close()
    # a second run over the same folder processes nothing
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=0)
    c.run(movies, stable_s=0.2)
    assert {it["name"]: it["finished_at"] for it in c.store.list_items()} == finished
    c.close()


def test_settings_change_reruns_only_downstream_stages(tmp_path):
    movies, coords = write_session(tmp_path, 2)
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=0)
    c.run(movies, stable_s=0.2)
    c.close()
    c = Coordinator(
        tmp_path / "p",
        fast_settings(coords, export={"box_size_px": 48, "particle_diameter_a": 40.0}),
        n_workers=0,
    )
    c.run(movies, stable_s=0.2)
    for item in c.store.list_items():
        assert set(item["timings"]) == {"read", "export"}, item["timings"]  # motion, pick reused from disk
    assert read_star(tmp_path / "p" / "particles.star")["optics"]["rlnImageSize"].iloc[0] == 48
    c.close()


def test_manual_pick_reexports_with_the_new_particle(tmp_path):
    movies, coords = write_session(tmp_path, 1)
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=0)
    c.run(movies, stable_s=0.2)
    c.store.add_pick("m00", 128.0, 128.0)
    c.run(movies, stable_s=0.2)
    p = _star(tmp_path / "p")
    assert len(p) == 6 and ((p["rlnCoordinateX"] == 128.0) & (p["rlnCoordinateY"] == 128.0)).sum() == 1
    assert c.store.get_item("m00")["timings"].keys() == {"read", "export"}
    c.close()


def test_kill_minus_9_then_resume_gives_the_same_star(tmp_path):
    movies, coords = write_session(tmp_path, 6)
    # reference: an uninterrupted run
    ref = Coordinator(tmp_path / "ref", fast_settings(coords), n_workers=0)
    ref.run(movies, stable_s=0.2)
    ref.close()
    project = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tests.pipeline.run_coordinator", str(project), str(movies), str(coords)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done_at_kill = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(project / "cryowarp.sqlite", timeout=1) as db:
                done_at_kill = db.execute("SELECT count(*) FROM items WHERE status = 'done'").fetchone()[0]
        except sqlite3.Error:
            done_at_kill = 0
        if done_at_kill >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert 2 <= done_at_kill < 6
    resumed = Coordinator(project, fast_settings(coords), n_workers=0)
    counts = resumed.run(movies, stable_s=0.2)
    resumed.close()
    assert counts["done"] == 6 and counts["particles"] == 30
    a, b = _star(tmp_path / "ref"), _star(project)
    pd.testing.assert_frame_equal(a, b)
    assert b["rlnImageName"].is_unique
    import mrcfile

    # the stacks hold the same particles (header labels carry a timestamp; float32 sums may differ in the
    # last bit with the thread count, hence 1e-5 on values of s.d. 1)
    for i in range(6):
        with (
            mrcfile.open(tmp_path / "ref" / "particles" / f"m{i:02d}.mrcs") as x,
            mrcfile.open(project / "particles" / f"m{i:02d}.mrcs") as y,
        ):
            np.testing.assert_allclose(x.data, y.data, atol=1e-5, rtol=0)


# mrcfile warns when we write nan.mrc on purpose
@pytest.mark.filterwarnings("ignore:Data array contains NaN values:RuntimeWarning")
def test_bad_input_corpus_is_reported_per_item(tmp_path):
    movies, coords = write_session(tmp_path, 2)  # m00, m01 are good
    f, h, w = 6, 256, 256
    good = (movies / "m00.mrc").read_bytes()
    (movies / "truncated.mrc").write_bytes(good[: len(good) // 2])
    (movies / "empty.mrc").write_bytes(b"")
    write_movie(movies / "wrong_frames.mrc", 7, shape_fyx=(4, h, w))
    write_movie(movies / "wrong_size.mrc", 8, shape_fyx=(f, 256, 320))
    nan = np.full((f, h, w), 5.0, np.float32)
    nan[2, 10, 10] = np.nan
    write_mrc(movies / "nan.mrc", nan, PIXEL_SIZE_A, stack=True)
    (movies / "not_a_movie.mrc").write_text("this is a text file, not an MRC\n" * 20)
    (movies / "notes.txt").write_text("ignored: does not match the patterns")
    os.symlink(tmp_path / "gone.mrc", movies / "unreadable.mrc")
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=0)
    counts = c.run(movies, stable_s=0.2)
    items = {it["name"]: it for it in c.store.list_items()}
    assert "notes" not in items
    assert {n for n, it in items.items() if it["status"] == "done"} == {"m00", "m01"}
    expected = {
        "truncated": r"truncat",
        "empty": r"empty|0 bytes",
        "wrong_frames": r"expected 6 frames of 256×256 like the rest of the session, found 4 frames",
        "wrong_size": r"expected 6 frames of 256×256 like the rest of the session, found 6 frames of 320×256",
        "nan": r"NaN",
        "not_a_movie": r"not_a_movie\.mrc",
        "unreadable": r"unreadable\.mrc",
    }
    import re

    for name, pattern in expected.items():
        assert items[name]["status"] == "failed", (name, items[name])
        assert re.search(pattern, items[name]["error"]), (name, items[name]["error"])
    assert counts["failed"] == 7 and counts["particles"] == 10
    assert len(_star(tmp_path / "p")) == 10
    c.close()


def test_wrong_gain_size_fails_every_item_with_both_sizes(tmp_path):
    movies, coords = write_session(tmp_path, 1)
    gain = tmp_path / "gain.mrc"
    write_mrc(gain, np.ones((200, 200), np.float32), PIXEL_SIZE_A)
    c = Coordinator(
        tmp_path / "p",
        fast_settings(coords, input={"pixel_size_a": PIXEL_SIZE_A, "gain_path": str(gain)}),
        n_workers=0,
    )
    c.run(movies, stable_s=0.2)
    item = c.store.get_item("m00")
    assert item["status"] == "failed"
    assert "200" in item["error"] and "256" in item["error"], item["error"]
    c.close()


def test_default_pool_size():
    assert default_pool_size(2) == (1, 2)
    assert default_pool_size(16) == (8, 2)
    assert default_pool_size(1) == (1, 1)


@pytest.mark.slow
def test_local_pool_retries_an_item_whose_worker_died(tmp_path, monkeypatch):
    movies, coords = write_session(tmp_path, 2)
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=1)
    killed = []

    original_collect = c.collect

    def collect_and_kill():
        # kill the pool's worker process once, while an item is running
        if not killed and c.running:
            pids = list(c.executor._pool._processes)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
        return original_collect()

    monkeypatch.setattr(c, "collect", collect_and_kill)
    counts = c.run(movies, stable_s=0.2)
    assert killed and counts["done"] == 2 and counts["failed"] == 0
    assert any("worker died" in m for m in c.messages)
    c.close()


_ORPHAN_SCRIPT = """
import sys, time
from cryowarp.pipeline.schedule import _LocalExecutor
ex = _LocalExecutor(1, 1)
future = ex.submit(time.sleep, 120)
while not ex._pool._processes:
    time.sleep(0.05)
print(list(ex._pool._processes)[0], flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_pool_workers_end_when_the_coordinator_is_killed(tmp_path):
    """kill -9 of the coordinator must not leave its pool workers running (they would keep computing)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        worker = int(proc.stdout.readline())
        assert _alive(worker)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 10
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.2)
    alive = _alive(worker)
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the pool worker outlived its killed coordinator"


def test_rerun_retries_a_broken_file_once_without_claiming_it_changed(tmp_path):
    """A new coordinator retries every failed item; the watcher's first sighting of the same, unchanged
    file must not queue it a second time (nor say "the file changed")."""
    movies, coords = write_session(tmp_path, 1)
    (movies / "broken.mrc").write_text("not a movie" * 200)
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=0)
    c.run(movies, stable_s=0.2)
    assert c.store.get_item("broken")["attempts"] == 1
    c.close()
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=0)
    counts = c.run(movies, stable_s=0.2)
    item = c.store.get_item("broken")
    assert item["status"] == "failed" and item["attempts"] == 2, item
    assert counts["done"] == 1 and not any("changed" in m for m in c.messages), c.messages
    c.close()


def test_settings_changed_in_the_store_while_watching_are_applied(tmp_path):
    """`watch --ui`: the UI stores new settings and requeues the outdated items; the running coordinator
    must process them with the new settings (not mark them done with the old results)."""
    from cryowarp.pipeline.store import ProjectStore

    movies, coords = write_session(tmp_path, 1)
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=0)
    c.run(movies, stable_s=0.2)
    ui = ProjectStore(tmp_path / "p")  # the web app's own store
    requeued = ui.put_settings(ui.get_settings().updated({"export": {"box_size_px": 48}}))
    assert requeued and ui.counts()["queued"] == 1
    counts = c.run(movies, stable_s=0.2)  # the same coordinator, still running
    assert counts["done"] == 1
    assert read_star(tmp_path / "p" / "particles.star")["optics"]["rlnImageSize"].iloc[0] == 48
    assert set(c.store.get_item("m00")["timings"]) == {"read", "export"}
    ui.close()
    c.close()


def test_settings_changed_while_an_item_runs_redo_its_outdated_stages(tmp_path, monkeypatch):
    """A settings change cannot requeue a running item; when it finishes with the old settings' results
    the coordinator requeues it so that its outdated stages are redone."""
    from cryowarp.pipeline.store import ProjectStore

    movies, coords = write_session(tmp_path, 1)
    c = Coordinator(tmp_path / "p", fast_settings(coords), n_workers=0)
    ui = ProjectStore(tmp_path / "p")
    submit, changed = c.executor.submit, []

    def submit_after_a_ui_change(fn, *args, **kwargs):  # the item is `running` now
        if not changed:
            changed.append(ui.put_settings(ui.get_settings().updated({"export": {"box_size_px": 48}})))
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(c.executor, "submit", submit_after_a_ui_change)
    counts = c.run(movies, stable_s=0.2)
    assert changed and counts["done"] == 1
    assert read_star(tmp_path / "p" / "particles.star")["optics"]["rlnImageSize"].iloc[0] == 48
    ui.close()
    c.close()
