"""STAR upkeep: contents follow filters and exclusions; RELION reads what we write."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import mrcfile
import pandas as pd
import pytest
import starfile
from tests.pipeline.conftest import make_result

from cryowarp.io.star import parse_relion_image_name, read_star
from cryowarp.pipeline.starfiles import write_star_files
from cryowarp.pipeline.store import ProjectStore


def _project(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    for i, (name, n, res) in enumerate([("mic_b", 3, 3.0), ("mic_a", 2, 3.2), ("mic_c", 4, 8.0)]):
        store.add_item(name, f"/movies/{name}.mrc")
        store.record_result(result_factory(tmp_path, name, n_particles=n, resolution_a=res, seed=i))
    return store


def test_star_files_follow_filter_and_selection(tmp_path, result_factory):
    store = _project(tmp_path, result_factory)
    paths = write_star_files(store)
    particles = read_star(paths["particles"])
    assert set(particles) == {"optics", "particles"}
    # mic_c fails the default 5 Å resolution filter: 3 + 2 particles remain, sorted by micrograph name
    p = particles["particles"]
    assert len(p) == 5
    assert list(p["rlnMicrographName"]) == ["items/mic_a/average.mrc"] * 2 + ["items/mic_b/average.mrc"] * 3
    assert list(p["rlnImageName"][:2]) == ["0000001@particles/mic_a.mrcs", "0000002@particles/mic_a.mrcs"]
    # local defocus 1.5 ± 0.05 µm → Å
    assert p["rlnDefocusU"].iloc[0] == pytest.approx(15500.0) and p["rlnDefocusV"].iloc[0] == pytest.approx(
        14500.0
    )
    optics = particles["optics"].iloc[0]
    assert (
        optics["rlnImageSize"] == 32 and optics["rlnImagePixelSize"] == 1.0 and optics["rlnVoltage"] == 300.0
    )
    mics = read_star(paths["micrographs"])["micrographs"]
    assert list(mics["rlnMicrographName"]) == ["items/mic_a/average.mrc", "items/mic_b/average.mrc"]

    store.set_manual("mic_c", "include")
    store.set_manual("mic_b", "exclude")
    paths = write_star_files(store)
    p = read_star(paths["particles"])["particles"]
    assert sorted(set(p["rlnMicrographName"])) == ["items/mic_a/average.mrc", "items/mic_c/average.mrc"]
    assert len(p) == 6
    good = read_star(paths["goodparticles"])["particles"]
    assert sorted(good["rlnImageName"]) == sorted(p["rlnImageName"])
    # every image name points at an existing slice of its stack
    for name in p["rlnImageName"]:
        index, stack = parse_relion_image_name(name)
        with mrcfile.mmap(tmp_path / stack, permissive=False) as m:
            assert index < m.data.shape[0]

    for name in ("mic_a", "mic_b", "mic_c"):
        store.set_manual(name, "exclude")
    assert write_star_files(store) == {}
    assert not (tmp_path / "particles.star").exists()


def test_goodparticles_grows_at_the_end(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    store.add_item("z_first", "/m/z.mrc")
    store.record_result(result_factory(tmp_path, "z_first", n_particles=2))
    before = list(read_star(write_star_files(store)["goodparticles"])["particles"]["rlnImageName"])
    store.add_item("a_second", "/m/a.mrc")
    store.record_result(result_factory(tmp_path, "a_second", n_particles=3, seed=1))
    after = list(read_star(write_star_files(store)["goodparticles"])["particles"]["rlnImageName"])
    assert after[: len(before)] == before and len(after) == 5


@pytest.mark.peers
def test_relion_reads_our_particles(tmp_path, result_factory):
    exe = shutil.which("relion_stack_create")
    if exe is None:
        pytest.skip("RELION not installed (apt-get install relion)")
    store = _project(tmp_path, result_factory)
    write_star_files(store)
    # relion_stack_create opens every image of the STAR: the RELION 3.1 tables, paths and stacks must be right
    run = subprocess.run(
        [exe, "--i", "particles.star", "--o", "relion_check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with mrcfile.open(tmp_path / "relion_check.mrcs") as m:
        assert m.data.shape == (5, 32, 32)


# ---------------------------------------------------------------------- incremental upkeep


def _both_ways(store):
    """Write the STAR files incrementally and from scratch; return both (bytes and starfile tables)."""
    out = {}
    for incremental in (True, False):
        paths = write_star_files(store, incremental=incremental)
        out[incremental] = {
            key: (path.read_bytes(), starfile.read(path, always_dict=True)) for key, path in paths.items()
        }
    return out[True], out[False]


def assert_incremental_matches_scratch(store):
    """The cached-block files equal the from-scratch ones: same bytes, same tables column by column."""
    incremental, scratch = _both_ways(store)
    assert sorted(incremental) == sorted(scratch)
    for key in scratch:
        inc_tables, ref_tables = incremental[key][1], scratch[key][1]
        assert list(inc_tables) == list(ref_tables) == ["optics", key if key == "micrographs" else "particles"]
        for block in ref_tables:
            pd.testing.assert_frame_equal(inc_tables[block], ref_tables[block], check_exact=True)
        assert incremental[key][0] == scratch[key][0], key
    return {key: tables for key, (_, tables) in incremental.items()}


def test_incremental_star_equals_scratch_through_a_session(tmp_path, result_factory):
    """Filter changes, exclusions, new items, reprocessing, pick edits and a lost cache: after each, the
    incrementally kept files equal (parsed with starfile, column by column, and byte for byte) the files
    built from scratch."""
    store = ProjectStore(tmp_path)
    specs = [("mic b", 3, 3.0), ("mic_a", 2, 3.2), ("mic_c", 4, 8.0), ("mic_d", 0, 3.1), ("mic_e", 5, 4.4)]
    for i, (name, n, res) in enumerate(specs):
        store.add_item(name, f"/movies/{name}.mrc")
        store.record_result(result_factory(tmp_path, name, n_particles=n, resolution_a=res, seed=i))
    tables = assert_incremental_matches_scratch(store)
    # a name with a space is quoted, as starfile quotes it
    assert '"0000001@particles/mic b.mrcs"' in (tmp_path / "particles.star").read_text()
    assert len(tables["particles"]["particles"]) == 3 + 2 + 5

    store.set_filters({"resolution_max_a": 4.0})  # drops mic_e
    tables = assert_incremental_matches_scratch(store)
    assert len(tables["particles"]["particles"]) == 5
    store.set_manual("mic_c", "include")
    store.set_manual("mic_a", "exclude")
    assert_incremental_matches_scratch(store)

    # reprocessing gives new particles: the item's cached block is rebuilt, never reused
    store.record_result(result_factory(tmp_path, "mic_c", n_particles=6, resolution_a=8.0, seed=42))
    tables = assert_incremental_matches_scratch(store)
    names = tables["particles"]["particles"]["rlnImageName"]
    assert sum(n.endswith("mic_c.mrcs") for n in names) == 6

    # a pick edit re-queues the item (its rows leave the files until it is exported again)
    pick = store.get_picks("mic b")[0]
    store.remove_pick("mic b", pick["id"])
    tables = assert_incremental_matches_scratch(store)
    assert not any("mic b" in n for n in tables["particles"]["particles"]["rlnImageName"])
    store.record_result(result_factory(tmp_path, "mic b", n_particles=2, resolution_a=3.0, seed=7))

    # a new item arrives: goodparticles grows at the end
    good_before = list(tables["goodparticles"]["particles"]["rlnImageName"])
    store.add_item("mic_0", "/movies/mic_0.mrc")
    store.record_result(result_factory(tmp_path, "mic_0", n_particles=3, resolution_a=3.3, seed=8))
    tables = assert_incremental_matches_scratch(store)
    good = list(tables["goodparticles"]["particles"]["rlnImageName"])
    assert good[-3:] == [f"{i:07d}@particles/mic_0.mrcs" for i in (1, 2, 3)]
    assert set(good_before) - {n for n in good_before if "mic b" in n} <= set(good)

    # cache lost: rebuilt from the store
    with store._write() as c:
        c.execute("DELETE FROM star_cache")
    assert_incremental_matches_scratch(store)
    # settings that change the optics table (not the rows) and a changed block version
    store.put_settings(store.get_settings().updated({"ctf": {"voltage_kv": 200.0}}))
    for name in ("mic_a", "mic_c", "mic_e", "mic_0", "mic_d"):
        store.record_result(result_factory(tmp_path, name, n_particles=2, settings=store.get_settings(), seed=3))
    tables = assert_incremental_matches_scratch(store)
    assert tables["particles"]["optics"]["rlnVoltage"].iloc[0] == 200.0


def test_stale_cached_block_is_never_used(tmp_path, result_factory):
    """A block built from an earlier result (e.g. written by a process that read the old rows, or left
    by a run killed between recording and rewriting) does not match the item's result hash: rebuilt."""
    store = _project(tmp_path, result_factory)
    write_star_files(store)
    with store._write() as c:
        old = dict(c.execute("SELECT * FROM star_cache WHERE kind = 'particles' AND item_id = 1").fetchone())
    store.record_result(result_factory(tmp_path, "mic_b", n_particles=4, seed=99))
    with store._write() as c:  # the racing writer puts the old block back
        c.execute(
            "INSERT OR REPLACE INTO star_cache VALUES (:item_id, :kind, :result_hash, :done_seq, :version, :columns, "
            ":n_rows, :text)",
            old,
        )
    tables = assert_incremental_matches_scratch(store)
    assert sum(n.endswith("mic_b.mrcs") for n in tables["particles"]["particles"]["rlnImageName"]) == 4
    # a cryowarp version that knows nothing of the cache records a result: rows change, the hash does
    # not, but the completion number does
    with store._write() as c:
        c.execute("UPDATE particles SET x_px = x_px + 1 WHERE item_id = 1")
        c.execute("UPDATE items SET done_seq = done_seq + 100 WHERE id = 1")
    tables = assert_incremental_matches_scratch(store)
    x = tables["particles"]["particles"].set_index("rlnImageName")["rlnCoordinateX"]
    assert x["0000001@particles/mic_b.mrcs"] == pytest.approx(store.get_particles("mic_b")[0]["x_px"])


def _record_and_rewrite_forever(project):
    """Reprocess, add and rewrite until killed (runs in a forked child)."""
    store = ProjectStore(project)
    i = 0
    while True:
        name = f"mic_{i % 7}"
        store.add_item(name, f"/movies/{name}.mrc")
        store.record_result(make_result(project, name, n_particles=1 + i % 5, resolution_a=3.0 + i % 3, seed=i))
        if i % 2:
            write_star_files(store)
        i += 1


def test_kill_during_upkeep_never_leaves_stale_rows(tmp_path):
    """kill -9 of a process that records results and rewrites the STAR files, at arbitrary moments:
    a restart's incremental files always equal the from-scratch ones."""
    for delay_s in (0.3, 0.55, 0.8, 1.1):
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            try:
                _record_and_rewrite_forever(tmp_path)
            finally:
                os._exit(1)
        time.sleep(delay_s)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with ProjectStore(tmp_path) as store:
            assert store.counts()["done"] >= 1
            assert_incremental_matches_scratch(store)
