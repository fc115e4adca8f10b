"""ProjectStore: items, stages, outdated detection, picks with manual corrections, selection."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from cryowarp.pipeline.results import ItemResult
from cryowarp.pipeline.settings import ProcessingSettings
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
