"""ProjectStore: items, stages, outdated detection, picks with manual corrections, selection."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import warnings

import pytest

from cryowarp.pipeline.results import ItemResult
from cryowarp.pipeline.settings import ProcessingSettings, UnknownSettingsWarning, stage_hashes
from cryowarp.pipeline.store import ItemNotFoundError, ProjectStore


def test_new_project_and_idempotent_add(tmp_path):
    store = ProjectStore(tmp_path / "p")
    assert store.add_item("m1", "/x/m1.mrc") is True
    assert store.add_item("m1", "/x/m1.mrc") is False
    assert [it["name"] for it in store.list_items()] == ["m1"]
    assert store.counts()["queued"] == 1
    assert store.stages_to_run("m1") == ["motion", "ctf", "pick", "export"]
    mode = sqlite3.connect(tmp_path / "p" / "cryowarp.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_record_result_then_nothing_to_rerun(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    store.add_item("m1", "/movies/m1.mrc")
    rev = store.revision()
    store.record_result(result_factory(tmp_path, "m1", n_particles=4))
    assert store.revision() > rev
    item = store.get_item("m1")
    assert item["status"] == "done" and item["n_particles"] == 4 and item["defocus_um"] == 1.5
    assert item["selected"] and item["stages"]["export"]["is_outdated"] is False
    assert store.stages_to_run("m1") == []
    assert len(store.get_picks("m1")) == 4 and len(store.get_particles("m1")) == 4
    assert store.requeue_outdated() == []


def test_settings_change_requeues_exactly_the_outdated_stages(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    for name in ("a", "b"):
        store.add_item(name, f"/movies/{name}.mrc")
        store.record_result(result_factory(tmp_path, name))
    changed = store.put_settings(store.get_settings().updated({"pick": {"threshold": 0.9}}))
    assert changed == ["pick", "export"]
    assert store.stages_to_run("a") == ["pick", "export"]
    assert store.counts()["queued"] == 2
    assert (tmp_path / "settings.json").is_file()
    # filters never requeue
    for name in ("a", "b"):
        store.record_result(result_factory(tmp_path, name, settings=store.get_settings()))
    store.set_filters({"resolution_max_a": 3.0})
    assert store.counts()["queued"] == 0
    assert store.counts()["filtered_out"] == 2
    assert store.get_item("a")["filter_reasons"] == ["resolution 3.5 Å > 3 Å"]


def test_failure_is_recorded_with_its_message(tmp_path):
    store = ProjectStore(tmp_path)
    store.add_item("bad", "/movies/bad.mrc")
    store.mark_running("bad")
    store.record_result(
        ItemResult(
            name="bad",
            path="/movies/bad.mrc",
            ok=False,
            error="motion: bad.mrc: expected 40 frames, found 12",
        )
    )
    item = store.get_item("bad")
    assert item["status"] == "failed" and item["attempts"] == 1
    assert item["error"] == "motion: bad.mrc: expected 40 frames, found 12"
    assert item["stages"]["motion"]["status"] == "failed"
    assert not item["selected"]


def test_reset_running_after_crash(tmp_path):
    store = ProjectStore(tmp_path)
    store.add_item("m", "/m.mrc")
    store.mark_running("m")
    store.close()
    store = ProjectStore(tmp_path)
    assert store.reset_running() == 1
    assert store.queued_items()[0]["name"] == "m"


def test_manual_picks_and_removals_survive_repicking(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    store.add_item("m", "/movies/m.mrc")
    first = result_factory(tmp_path, "m", n_particles=3)
    store.record_result(first)
    auto = store.get_picks("m")
    new_id = store.add_pick("m", 500.0, 600.0)
    store.remove_pick("m", auto[0]["id"], radius_px=5.0)
    picks = store.get_picks("m")
    assert len(picks) == 3 and {p["source"] for p in picks} == {"auto", "manual"}
    assert store.stages_to_run("m") == ["export"]  # corrections only re-export
    assert store.get_item("m")["status"] == "queued"
    assert store.pick_corrections("m") == {
        "added": [[500.0, 600.0]],
        "removed": [[auto[0]["x_px"], auto[0]["y_px"], 5.0]],
    }
    # BoxNet re-picks the same spots (1 px off): the removal still hides that pick
    shifted = [[x + 1.0, y, s] for x, y, s in first.picks_px_xy_score]
    store.record_result(ItemResult(**{**first.__dict__, "picks_px_xy_score": shifted}))
    assert len(store.get_picks("m")) == 3
    store.remove_pick("m", new_id)
    assert [p["source"] for p in store.get_picks("m")] == ["auto", "auto"]
    with pytest.raises(ItemNotFoundError, match="no pick with id 9999"):
        store.remove_pick("m", 9999)


def test_manual_selection_and_unknown_item(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    store.add_item("m", "/movies/m.mrc")
    store.record_result(result_factory(tmp_path, "m", resolution_a=9.0))
    assert not store.get_item("m")["selected"]
    store.set_manual("m", "include")
    assert store.get_item("m")["selected"]
    store.set_manual("m", "exclude")
    assert not store.get_item("m")["selected"] and store.counts()["excluded"] == 1
    with pytest.raises(ValueError, match="selection must be"):
        store.set_manual("m", "yes")
    with pytest.raises(ItemNotFoundError, match="no item 'nope'"):
        store.get_item("nope")


def test_reader_in_another_process_sees_commits(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    store.add_item("m", "/movies/m.mrc")
    store.record_result(result_factory(tmp_path, "m", n_particles=5))
    code = (
        "from cryowarp.pipeline.store import ProjectStore; import sys; "
        "s = ProjectStore(sys.argv[1], read_only=True); print(s.counts()['particles'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "5"


def test_read_only_needs_an_existing_project(tmp_path):
    with pytest.raises(FileNotFoundError, match="no cryowarp project database"):
        ProjectStore(tmp_path / "none", read_only=True)


def test_put_settings_validates_dicts(tmp_path):
    store = ProjectStore(tmp_path)
    with pytest.raises(ValueError, match="box_size_px must be even"):
        store.put_settings({"export": {"box_size_px": 33}})
    assert store.get_settings() == ProcessingSettings()


def _fail(store, name, error, stages_run=(), settings=None):
    settings = settings or store.get_settings()
    hashes = stage_hashes(settings)
    store.add_item(name, f"/movies/{name}.mrc")
    store.mark_running(name)
    store.record_result(
        ItemResult(
            name=name,
            path=f"/movies/{name}.mrc",
            ok=False,
            error=error,
            stages_run=tuple(stages_run),
            stage_hashes={s: hashes[s] for s in stages_run},
        )
    )


def test_settings_change_requeues_failed_items_whose_failing_stage_it_touches(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    store.add_item("ok", "/movies/ok.mrc")
    store.record_result(result_factory(tmp_path, "ok"))
    _fail(store, "bad_motion", "motion: bad_motion.mrc: expected 40 frames, found 12")
    _fail(store, "bad_read", "read: bad_read.mrc: truncated")
    _fail(store, "bad_pick", "pick: bad_pick.mrc: no particles", stages_run=("motion", "ctf"))
    store.add_item("worker_died", "/movies/worker_died.mrc")
    store.record_failure("worker_died", "worker: the worker processing it died 3 times")

    def statuses():
        return {it["name"]: it["status"] for it in store.list_items()}

    # a filter change never requeues, failed items included (they would only fail again)
    store.set_filters({"resolution_max_a": 4.0})
    assert set(statuses().values()) == {"done", "failed"}
    # a pick change: the items failing in pick (or somewhere unknown) are retried, not the motion ones
    store.put_settings(store.get_settings().updated({"pick": {"threshold": 0.9}}))
    s = statuses()
    assert (s["bad_pick"], s["worker_died"], s["ok"]) == ("queued", "queued", "queued")
    assert (s["bad_motion"], s["bad_read"]) == ("failed", "failed")
    assert store.get_item("bad_motion")["error"].startswith("motion:")
    # an input change outdates motion and everything after it: all are retried
    store.put_settings(store.get_settings().updated({"input": {"exposure_per_frame_e_per_a2": 1.5}}))
    assert set(statuses().values()) == {"queued"}
    # a coordinator starting (no settings change given) retries every failed item, as before
    _fail(store, "bad_motion", "motion: bad_motion.mrc: still 12 frames")
    assert store.requeue_outdated() == ["bad_motion"]
    # switching the failing stage off retries the item (it can now finish without it)
    _fail(store, "bad_pick", "pick: bad_pick.mrc: no particles", stages_run=("motion", "ctf"))
    _fail(store, "bad_motion", "motion: bad_motion.mrc: still 12 frames")
    store.put_settings(store.get_settings().updated({"do_pick": False}))
    assert (store.get_item("bad_pick")["status"], store.get_item("bad_motion")["status"]) == ("queued", "failed")


def test_public_queries_for_the_ui(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    for name in ("a", "b", "c"):
        store.add_item(name, f"/movies/{name}.mrc")
        store.record_result(result_factory(tmp_path, name, n_particles=3))
    assert store.corrected_items() == [] and store.count_pick_removals("a") == 0
    store.add_pick("c", 10.0, 20.0)
    auto = store.get_picks("a")
    store.remove_pick("a", auto[0]["id"])
    store.remove_pick("a", auto[1]["id"])
    assert store.corrected_items() == ["a", "c"]
    assert store.count_pick_removals("a") == 2 and store.count_pick_removals("c") == 0
    # the removed BoxNet picks are the false positives for retraining; together with the effective
    # picks they are every BoxNet pick, and a manual pick is never among them
    removed = store.removed_picks("a")
    assert [p["id"] for p in removed] == [auto[0]["id"], auto[1]["id"]]
    assert sorted(p["id"] for p in removed + store.get_picks("a")) == sorted(p["id"] for p in auto)
    assert store.removed_picks("c") == []
    assert store.picks_and_removed("a") == (store.get_picks("a"), removed)
    with pytest.raises(ItemNotFoundError):
        store.count_pick_removals("nope")


def test_get_particles_selected_only_matches_the_selection(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    for i, (name, res) in enumerate([("a", 3.0), ("b", 9.0), ("c", 3.0), ("d", 9.0), ("e", 3.0)]):
        store.add_item(name, f"/movies/{name}.mrc")
        store.record_result(result_factory(tmp_path, name, n_particles=2 + i, resolution_a=res, seed=i))
    store.set_manual("b", "include")
    store.set_manual("c", "exclude")
    store.add_pick("e", 1.0, 1.0)  # queued again: not selected
    everything = store.get_particles()
    assert len(everything) == sum(2 + i for i in range(5))
    selected = {it["name"] for it in store.list_items() if it["selected"]}
    assert selected == {"a", "b"}
    rows = store.get_particles(selected_only=True)
    assert rows == [r for r in everything if r["name"] in selected]
    assert [(r["name"], r["idx"]) for r in rows] == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3)]
    assert set(rows[0]) >= {"name", "particle_stack", "idx", "x_px", "y_px", "defocus_u_um", "score", "source"}
    assert store.get_particles("b") == [r for r in everything if r["name"] == "b"]


def test_stored_settings_with_unknown_keys_are_dropped_with_a_warning(tmp_path):
    store = ProjectStore(tmp_path)
    store.put_settings(ProcessingSettings().updated({"pick": {"threshold": 0.8}}))
    with store._write() as c:  # as a newer cryowarp would have saved them
        row = c.execute("SELECT id, json FROM settings ORDER BY id DESC LIMIT 1").fetchone()
        data = json.loads(row["json"])
        data["pick"]["new_option"] = 3
        data["from_the_future"] = {"x": 1}
        c.execute("UPDATE settings SET json = ? WHERE id = ?", (json.dumps(data), row["id"]))
    store.close()
    store = ProjectStore(tmp_path)
    with pytest.warns(UnknownSettingsWarning, match=r"pick\.new_option, from_the_future"):
        settings = store.get_settings()
    assert settings.pick.threshold == 0.8
    assert store.dropped_settings == ["pick.new_option", "from_the_future"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.get_settings() == settings  # warned once per stored record


def test_project_from_before_the_star_cache_is_migrated(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    store.add_item("m", "/movies/m.mrc")
    store.record_result(result_factory(tmp_path, "m", n_particles=2))
    digest = store.get_item("m")
    store.close()
    conn = sqlite3.connect(tmp_path / "cryowarp.sqlite")  # undo the additions, as an old project
    conn.execute("DROP TABLE star_cache")
    conn.execute("ALTER TABLE items DROP COLUMN result_hash")
    conn.commit()
    conn.close()
    store = ProjectStore(tmp_path)
    rows = store._query("SELECT result_hash FROM items")
    assert rows[0][0] and len(rows[0][0]) == 32
    assert store.get_item("m") == digest


def test_mask_strokes_are_kept_in_order_make_the_item_corrected_and_requeue_nothing(tmp_path, result_factory):
    from cryowarp.picking.mask_edits import MaskStroke

    store = ProjectStore(tmp_path)
    for name in ("a", "b"):
        store.add_item(name, f"/movies/{name}.mrc")
        store.record_result(result_factory(tmp_path, name, n_particles=3))
    revision = store.revision()
    strokes = [MaskStroke(True, 40.0, ((10.0, 20.0), (30.5, 40.0))), MaskStroke(False, 12.5, ((11.0, 21.0),))]
    assert [store.add_mask_stroke("b", s) for s in strokes] == [1, 2]
    assert store.revision() > revision  # the UI re-reads the mask
    assert store.mask_strokes("b") == strokes and store.mask_strokes("a") == []
    assert store.count_mask_strokes("b") == 2 and store.count_mask_strokes("a") == 0
    assert store.corrected_items() == ["b"]
    assert store.get_item("b")["status"] == "done" and store.stages_to_run("b") == []  # a training label only
    # a re-pick keeps the strokes (they are applied to whatever mask the current model predicts)
    store.record_result(result_factory(tmp_path, "b", n_particles=2))
    assert store.mask_strokes("b") == strokes
    assert store.clear_mask_strokes("b") == 2 and store.mask_strokes("b") == []
    assert store.corrected_items() == []
    with pytest.raises(ItemNotFoundError):
        store.add_mask_stroke("nope", strokes[0])


def test_project_from_before_mask_strokes_opens_with_the_table_added(tmp_path, result_factory):
    store = ProjectStore(tmp_path)
    store.add_item("m", "/movies/m.mrc")
    store.record_result(result_factory(tmp_path, "m", n_particles=2))
    store.close()
    conn = sqlite3.connect(tmp_path / "cryowarp.sqlite")
    conn.execute("DROP TABLE mask_strokes")
    conn.commit()
    conn.close()
    store = ProjectStore(tmp_path)
    assert store.mask_strokes("m") == [] and store.corrected_items() == []
