"""FolderWatcher: files are taken once stable and readable > 1 s; half-written files wait."""

from __future__ import annotations

import os
import time

import pytest

from cryowarp.pipeline.watch import FolderWatcher


def _poll_until(watcher, seconds, **kw):
    found = []
    end = time.time() + seconds
    while time.time() < end:
        found += watcher.poll(**kw)
        time.sleep(0.05)
    return found


@pytest.mark.parametrize("use_polling", [False, True])
def test_growing_file_is_taken_only_when_stable(tmp_path, use_polling):
    with FolderWatcher(tmp_path, ("*.mrc",), stable_s=0.5, use_polling=use_polling, poll_interval_s=0.1) as w:
        path = tmp_path / "movie_001.mrc"
        with open(path, "wb") as handle:
            for _ in range(4):  # written in chunks 0.3 s apart: never stable for 0.5 s while growing
                handle.write(b"x" * 1024)
                handle.flush()
                assert _poll_until(w, 0.3) == []
        ripe = _poll_until(w, 1.2)
        assert [r.path for r in ripe] == [path]
        assert ripe[0].size_bytes == 4096 and ripe[0].problem is None
        assert _poll_until(w, 0.7) == []  # taken once


def test_patterns_hidden_files_and_excluded_gain(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"1")
    (tmp_path / ".partial.tif").write_bytes(b"1")
    (tmp_path / "notes.txt").write_bytes(b"1")
    (tmp_path / "gain.tif").write_bytes(b"1")
    with FolderWatcher(
        tmp_path,
        ("*.tif",),
        stable_s=0.2,
        use_polling=True,
        poll_interval_s=0.05,
        exclude=[tmp_path / "gain.tif"],
    ) as w:
        assert [r.path.name for r in _poll_until(w, 0.8)] == ["a.tif"]


def test_gain_is_excluded_when_the_folder_is_reached_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.mrc").write_bytes(b"1")
    (real / "gain.mrc").write_bytes(b"1")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    for folder, gain in ((tmp_path / "link", real / "gain.mrc"), (real, tmp_path / "link" / "gain.mrc")):
        with FolderWatcher(
            folder, ("*.mrc",), stable_s=0.2, use_polling=True, poll_interval_s=0.05, exclude=[gain]
        ) as w:
            assert [r.path.name for r in _poll_until(w, 0.8)] == ["a.mrc"]


def test_changed_file_is_offered_again(tmp_path):
    path = tmp_path / "m.mrc"
    path.write_bytes(b"half")
    with FolderWatcher(tmp_path, ("*.mrc",), stable_s=0.2, use_polling=True, poll_interval_s=0.05) as w:
        assert len(_poll_until(w, 0.6)) == 1
        with open(path, "ab") as handle:
            handle.write(b" and the rest")
        again = _poll_until(w, 0.8)
        assert [r.size_bytes for r in again] == [17]


def test_unreadable_and_empty_files_are_handed_over_with_flush(tmp_path):
    os.symlink(tmp_path / "missing_target.mrc", tmp_path / "dangling.mrc")
    (tmp_path / "empty.mrc").write_bytes(b"")
    with FolderWatcher(tmp_path, ("*.mrc",), stable_s=0.1, use_polling=True, poll_interval_s=0.05) as w:
        assert _poll_until(w, 0.4) == []  # never ripe on their own (until give_up_s)
        flushed = {r.path.name: r for r in w.poll(flush=True)}
    assert set(flushed) == {"dangling.mrc", "empty.mrc"}
    assert "cannot be stat'ed" in flushed["dangling.mrc"].problem
    assert flushed["empty.mrc"].problem is None and flushed["empty.mrc"].size_bytes == 0


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: input folder does not exist"):
        FolderWatcher(tmp_path / "nowhere", ("*.mrc",))
