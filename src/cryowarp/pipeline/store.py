"""The project store: one SQLite database (WAL) per project, ``<project>/cryowarp.sqlite``.

It holds the items (movies), their processing status, per-stage settings hash and error, scalar
results, picks (BoxNet's plus manual corrections), exported particles, manual include/exclude,
the quality-filter verdicts and the project settings.

Concurrency: SQLite in WAL mode; readers never block. Writes are short ``BEGIN IMMEDIATE``
transactions with a generous busy timeout, so the processing coordinator and the web UI (which writes
selections, picks, filters and settings) can share the database. Workers never open it: they hand an
``ItemResult`` back to the coordinator, which records it in one transaction (so a kill -9 at any moment
leaves each item either fully recorded or not at all).

Every write bumps :meth:`ProjectStore.revision`, which a UI can poll to see whether anything changed.

Example::

    store = ProjectStore("session1")           # creates session1/cryowarp.sqlite if needed
    for item in store.list_items():            # dicts with name, status, scalars, selected, ...
        print(item["name"], item["status"], item["defocus_um"])
    store.set_manual("movie_0003", "exclude")
    store.add_pick("movie_0001", x_px=812.0, y_px=95.5)
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryowarp.pipeline.filters import evaluate_filters, is_selected
from cryowarp.pipeline.results import SCALAR_FIELDS, ItemResult
from cryowarp.pipeline.settings import (
    STAGES,
    FilterSettings,
    ProcessingSettings,
    outdated_stages,
    save_settings,
    split_unknown_settings,
    stage_hashes,
    warn_unknown_settings,
)

if TYPE_CHECKING:
    from cryowarp.picking.mask_edits import MaskStroke

__all__ = ["ProjectStore", "ItemNotFoundError", "DB_NAME", "SETTINGS_NAME", "ITEM_STATUSES"]

DB_NAME = "cryowarp.sqlite"
SETTINGS_NAME = "settings.json"
SCHEMA_VERSION = 1

#: Processing status of an item: waiting, being processed, finished (all enabled stages current), failed.
ITEM_STATUSES = ("queued", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, json TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    size_bytes INTEGER,
    status TEXT NOT NULL DEFAULT 'queued',
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    discovered_at REAL NOT NULL,
    readable_at REAL,
    started_at REAL,
    finished_at REAL,
    done_seq INTEGER,
    manual TEXT,
    filter_passes INTEGER NOT NULL DEFAULT 1,
    filter_reasons TEXT NOT NULL DEFAULT '[]',
    n_frames INTEGER, height INTEGER, width INTEGER, pixel_size_a REAL,
    defocus_um REAL, defocus_delta_um REAL, astigmatism_angle_deg REAL, phase_shift_deg REAL,
    resolution_a REAL, mean_motion_a REAL, mask_percentage REAL, n_particles INTEGER,
    particle_stack TEXT, particle_pixel_size_a REAL, particle_box_px INTEGER,
    artifacts TEXT NOT NULL DEFAULT '{}',
    timings TEXT NOT NULL DEFAULT '{}',
    result_hash TEXT
);
CREATE INDEX IF NOT EXISTS items_status ON items(status);
CREATE TABLE IF NOT EXISTS stages (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    settings_hash TEXT,
    error TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (item_id, stage)
);
CREATE TABLE IF NOT EXISTS picks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    x_px REAL NOT NULL, y_px REAL NOT NULL, score REAL,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS picks_item ON picks(item_id);
CREATE TABLE IF NOT EXISTS pick_removals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    x_px REAL NOT NULL, y_px REAL NOT NULL, radius_px REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mask_strokes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    paint INTEGER NOT NULL, radius_px REAL NOT NULL, points TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS particles (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    x_px REAL NOT NULL, y_px REAL NOT NULL,
    defocus_u_um REAL, defocus_v_um REAL, astigmatism_angle_deg REAL, phase_shift_deg REAL,
    score REAL, source TEXT,
    PRIMARY KEY (item_id, idx)
);
CREATE TABLE IF NOT EXISTS star_cache (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    result_hash TEXT NOT NULL,
    done_seq INTEGER,
    version INTEGER NOT NULL,
    columns TEXT NOT NULL,
    n_rows INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (item_id, kind)
);
"""

#: A cached block (``b``) is current for its item (``i``) when built from the same result: the same
#: result hash and completion number (renewed by every recorded result, also by a cryowarp version that
#: does not know the hash) and block layout version (the ``?`` parameter).
_BLOCK_CURRENT_SQL = "b.result_hash = i.result_hash AND b.done_seq IS i.done_seq AND b.version = ?"

#: SQL condition (items aliased ``i``) equal to ``status == "done" and is_selected(filter_passes, manual)``.
_SELECTED_SQL = "i.status = 'done' AND (i.manual = 'include' OR (i.manual IS NULL AND i.filter_passes = 1))"

_PARTICLE_COLUMNS = (
    "idx",
    "x_px",
    "y_px",
    "defocus_u_um",
    "defocus_v_um",
    "astigmatism_angle_deg",
    "phase_shift_deg",
    "score",
    "source",
)

_ITEM_COLUMNS = (
    "id",
    "name",
    "path",
    "size_bytes",
    "status",
    "error",
    "attempts",
    "discovered_at",
    "readable_at",
    "started_at",
    "finished_at",
    "done_seq",
    "manual",
    "filter_passes",
    "filter_reasons",
    "n_frames",
    "height",
    "width",
    "pixel_size_a",
    *SCALAR_FIELDS,
    "particle_stack",
    "particle_pixel_size_a",
    "particle_box_px",
    "artifacts",
    "timings",
)


class ItemNotFoundError(KeyError):
    """No item of that name (or id) in the project."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "item not found"


class ProjectStore:
    """SQLite store of one project folder (created if missing).

    Parameters
    ----------
    project_dir : str or Path
        The project folder; the database is ``project_dir/cryowarp.sqlite``.
    timeout_s : float
        How long a write waits for another writer before ``sqlite3.OperationalError``.
    read_only : bool
        Open without creating or migrating anything (the database must exist).

    Notes
    -----
    One instance may be shared between threads (calls are serialised by a lock). Item arguments
    accept the item name (movie stem) or its integer id.
    """

    def __init__(self, project_dir: str | Path, *, timeout_s: float = 30.0, read_only: bool = False):
        self.project_dir = Path(project_dir)
        self.db_path = self.project_dir / DB_NAME
        if read_only:
            if not self.db_path.is_file():
                raise FileNotFoundError(f"{self.db_path}: no cryowarp project database here")
        else:
            self.project_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._settings_cache: tuple[str, ProcessingSettings] | None = None
        #: Keys of the stored settings this version does not know (dropped with a warning on load).
        self.dropped_settings: list[str] = []
        self._conn = sqlite3.connect(
            self.db_path, timeout=timeout_s, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA foreign_keys=ON")
        if not read_only:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            with self._write() as c:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                # additive migration of projects made before the STAR row cache existed
                if "result_hash" not in {r[1] for r in c.execute("PRAGMA table_info(items)")}:
                    c.execute("ALTER TABLE items ADD COLUMN result_hash TEXT")
                for (item_id,) in c.execute(
                    "SELECT id FROM items WHERE status = 'done' AND result_hash IS NULL"
                ).fetchall():
                    _update_result_hash(c, item_id)
                c.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('revision', '0')")
                c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('done_seq', '0')")
            found = int(self._meta("schema_version"))
            if found != SCHEMA_VERSION:
                raise ValueError(
                    f"{self.db_path}: database schema {found}, this cryowarp expects {SCHEMA_VERSION}"
                )

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ProjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self, *, bump: bool = True) -> Iterator[Any]:
        """One short write transaction (BEGIN IMMEDIATE); bumps the revision unless ``bump`` is False
        (derived data such as the STAR row cache, which no reader needs to be told about)."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Cursor(conn)
                if bump:
                    conn.execute(
                        "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'"
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _meta(self, key: str) -> str:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else "0"

    def _item_id(self, item: str | int, conn: Any = None) -> int:
        if isinstance(item, int):
            rows = (conn or self._conn).execute("SELECT id FROM items WHERE id = ?", (item,)).fetchall()
        else:
            rows = (
                (conn or self._conn).execute("SELECT id FROM items WHERE name = ?", (str(item),)).fetchall()
            )
        if not rows:
            raise ItemNotFoundError(f"{self.db_path.parent.name}: no item {item!r} in the project")
        return int(rows[0][0])

    def revision(self) -> int:
        """A counter that grows with every write (poll it to see whether anything changed)."""
        return int(self._meta("revision"))

    # ------------------------------------------------------------------ settings
    def get_settings(self) -> ProcessingSettings:
        """The current settings (defaults if none were ever stored).

        Keys this cryowarp version does not know (settings saved by a newer version) are dropped with
        an ``UnknownSettingsWarning`` naming them, once per stored settings record: the project stays
        usable.
        """
        rows = self._query("SELECT json FROM settings ORDER BY id DESC LIMIT 1")
        if not rows:
            return ProcessingSettings()
        text = rows[0]["json"]
        cached = self._settings_cache
        if cached is not None and cached[0] == text:
            return cached[1]
        known, dropped = split_unknown_settings(json.loads(text))
        if dropped:
            warn_unknown_settings(dropped, f"{self.db_path} (project settings)")
        settings = ProcessingSettings.from_dict(known)
        self._settings_cache = (text, settings)
        self.dropped_settings = dropped
        return settings

    def put_settings(self, settings: ProcessingSettings | dict[str, Any]) -> list[str]:
        """Store new settings (and ``settings.json``); re-evaluate filters; requeue outdated items.

        Parameters
        ----------
        settings : ProcessingSettings or dict
            The complete new settings (a dict is validated; use ``get_settings().updated(changes)``
            for a partial change).

        Returns
        -------
        outdated : list of str
            Stages made outdated by the change (changed stages and everything downstream); ``done``
            items whose stored hashes no longer match are set back to ``queued``, and so are
            ``failed`` items whose failing stage is among them (see :meth:`requeue_outdated`).
        """
        if not isinstance(settings, ProcessingSettings):
            settings = ProcessingSettings.from_dict(dict(settings))
        old = self.get_settings()
        with self._write() as c:
            c.execute(
                "INSERT INTO settings(json, created_at) VALUES (?, ?)",
                (json.dumps(settings.to_dict(), sort_keys=True), time.time()),
            )
        save_settings(self.project_dir / SETTINGS_NAME, settings)
        changed = outdated_stages(old, settings)
        self.requeue_outdated(settings, changed_stages=changed)
        self.apply_filters(settings.filter)
        return changed

    def set_filters(self, filters: FilterSettings | dict[str, Any]) -> None:
        """Change only the quality filter (never reprocesses; re-evaluates every item)."""
        if not isinstance(filters, FilterSettings):
            filters = FilterSettings.model_validate(dict(filters))
        self.put_settings(self.get_settings().model_copy(update={"filter": filters}))

    # ------------------------------------------------------------------ items: coordinator side
    def add_item(
        self, name: str, path: str | Path, *, size_bytes: int | None = None, readable_at: float | None = None
    ) -> bool:
        """Register a movie (idempotent). Returns True if it was new."""
        with self._write() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO items(name, path, size_bytes, discovered_at, readable_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, str(path), size_bytes, time.time(), readable_at),
            )
            return cur.rowcount == 1

    def reset_running(self) -> int:
        """After a crash: items left ``running`` go back to ``queued``. Returns how many."""
        with self._write() as c:
            return c.execute("UPDATE items SET status = 'queued' WHERE status = 'running'").rowcount

    def mark_running(self, item: str | int) -> None:
        """The coordinator handed the item to a worker."""
        with self._write() as c:
            item_id = self._item_id(item, c)
            c.execute(
                "UPDATE items SET status = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?",
                (time.time(), item_id),
            )

    def mark_queued(self, item: str | int) -> None:
        """Put an item (back) into the queue, e.g. to retry after a worker died."""
        with self._write() as c:
            c.execute(
                "UPDATE items SET status = 'queued', error = NULL WHERE id = ?", (self._item_id(item, c),)
            )

    def record_failure(self, item: str | int, message: str, *, stage: str | None = None) -> None:
        """Mark an item failed with a readable message (never silent)."""
        with self._write() as c:
            item_id = self._item_id(item, c)
            c.execute(
                "UPDATE items SET status = 'failed', error = ?, finished_at = ? WHERE id = ?",
                (message, time.time(), item_id),
            )
            if stage is not None:
                c.execute(
                    "INSERT OR REPLACE INTO stages(item_id, stage, status, settings_hash, error, updated_at) "
                    "VALUES (?, ?, 'failed', NULL, ?, ?)",
                    (item_id, stage, message, time.time()),
                )

    def record_result(self, result: ItemResult) -> None:
        """Record a worker's :class:`ItemResult` in one transaction.

        Status, stage hashes, scalars, picks and particles are written together, with the item's
        ``result_hash`` (a hash of everything its STAR rows are made of): cached STAR row blocks built
        from an earlier result no longer match it, so they are never used again.

        A failed result (``ok`` False) records its error and keeps earlier successful stages.
        """
        now = time.time()
        with self._write() as c:
            item_id = self._item_id(result.name, c)
            for stage in result.stages_run:
                if stage in result.stage_hashes:
                    c.execute(
                        "INSERT OR REPLACE INTO stages(item_id, stage, status, settings_hash, error, "
                        "updated_at) VALUES (?, ?, 'done', ?, NULL, ?)",
                        (item_id, stage, result.stage_hashes[stage], now),
                    )
            if not result.ok:
                failed_stage = (result.error or "").split(":", 1)[0]
                if failed_stage in STAGES:
                    c.execute(
                        "INSERT OR REPLACE INTO stages(item_id, stage, status, settings_hash, error, "
                        "updated_at) VALUES (?, ?, 'failed', NULL, ?, ?)",
                        (item_id, failed_stage, result.error, now),
                    )
                old = c.execute("SELECT artifacts FROM items WHERE id = ?", (item_id,)).fetchone()[0]
                partial = {k: v for k, v in result.scalars().items() if v is not None and k != "n_particles"}
                assignments = {
                    "status": "failed",
                    "error": result.error or "failed without a message",
                    "finished_at": now,
                    "timings": json.dumps(result.timings_s),
                    "artifacts": json.dumps({**json.loads(old or "{}"), **result.artifacts}),
                    **partial,
                }
                if result.shape_yx:
                    assignments.update(
                        n_frames=result.n_frames,
                        height=result.shape_yx[0],
                        width=result.shape_yx[1],
                        pixel_size_a=result.pixel_size_a,
                    )
                sets = ", ".join(f"{k} = ?" for k in assignments)
                c.execute(f"UPDATE items SET {sets} WHERE id = ?", (*assignments.values(), item_id))
                _update_result_hash(c, item_id)
                return
            seq = int(c.execute("SELECT value FROM meta WHERE key = 'done_seq'").fetchone()[0]) + 1
            c.execute("UPDATE meta SET value = ? WHERE key = 'done_seq'", (str(seq),))
            scalars = result.scalars()
            old = c.execute("SELECT artifacts FROM items WHERE id = ?", (item_id,)).fetchone()[0]
            artifacts = {**json.loads(old or "{}"), **result.artifacts}
            assignments = {
                "status": "done",
                "error": None,
                "finished_at": now,
                "done_seq": seq,
                "n_frames": result.n_frames,
                "pixel_size_a": result.pixel_size_a,
                "height": result.shape_yx[0] if result.shape_yx else None,
                "width": result.shape_yx[1] if result.shape_yx else None,
                "artifacts": json.dumps(artifacts),
                "timings": json.dumps(result.timings_s),
                **{k: v for k, v in scalars.items() if v is not None},
            }
            if "export" in result.stages_run or result.particle_stack is not None:
                assignments.update(
                    particle_stack=result.particle_stack,
                    particle_pixel_size_a=result.particle_pixel_size_a,
                    particle_box_px=result.particle_box_px,
                )
            sets = ", ".join(f"{k} = ?" for k in assignments)
            c.execute(f"UPDATE items SET {sets} WHERE id = ?", (*assignments.values(), item_id))
            if "pick" in result.stages_run:
                c.execute("DELETE FROM picks WHERE item_id = ? AND source = 'auto'", (item_id,))
                c.executemany(
                    "INSERT INTO picks(item_id, x_px, y_px, score, source) VALUES (?, ?, ?, ?, 'auto')",
                    [(item_id, float(x), float(y), float(s)) for x, y, s in result.picks_px_xy_score],
                )
            if "export" in result.stages_run:
                c.execute("DELETE FROM particles WHERE item_id = ?", (item_id,))
                c.executemany(
                    "INSERT INTO particles(item_id, idx, x_px, y_px, defocus_u_um, defocus_v_um, "
                    "astigmatism_angle_deg, phase_shift_deg, score, source) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            item_id,
                            i + 1,
                            p["x_px"],
                            p["y_px"],
                            p.get("defocus_u_um"),
                            p.get("defocus_v_um"),
                            p.get("astigmatism_angle_deg"),
                            p.get("phase_shift_deg"),
                            p.get("score"),
                            p.get("source"),
                        )
                        for i, p in enumerate(result.particles)
                    ],
                )
                c.execute("UPDATE items SET n_particles = ? WHERE id = ?", (len(result.particles), item_id))
            _update_result_hash(c, item_id)
        self.apply_filters()

    def stages_to_run(self, item: str | int, settings: ProcessingSettings | None = None) -> list[str]:
        """Enabled stages of an item whose stored hash differs from the current one (in run order)."""
        settings = settings or self.get_settings()
        current = stage_hashes(settings)
        item_id = self._item_id(item)
        stored = {
            r["stage"]: (r["status"], r["settings_hash"])
            for r in self._query(
                "SELECT stage, status, settings_hash FROM stages WHERE item_id = ?", (item_id,)
            )
        }
        return [
            s
            for s in settings.enabled_stages()
            if stored.get(s, (None, None))[0] != "done" or stored[s][1] != current[s]
        ]

    def requeue_outdated(
        self, settings: ProcessingSettings | None = None, *, changed_stages: Sequence[str] | None = None
    ) -> list[str]:
        """Set items whose results are outdated back to ``queued``; returns their names.

        Parameters
        ----------
        settings : ProcessingSettings, optional
            The settings to compare with (default: the stored ones).
        changed_stages : sequence of str, optional
            The stages a settings change made outdated (:func:`~cryowarp.pipeline.settings.outdated_stages`).
            Given (as by :meth:`put_settings`), a ``failed`` item is requeued only if that change
            touches its failing stage or switches that stage off (or, when the failing stage is
            unknown, changes any stage): retrying an
            item whose failing stage is unchanged would only fail again, and a filter change never
            requeues anything. Not given (a coordinator starting), every ``failed`` item is retried.
            ``done`` items are requeued whenever an enabled stage's stored hash differs from the
            current one.
        """
        settings = settings or self.get_settings()
        current = stage_hashes(settings)
        enabled = settings.enabled_stages()
        items = {
            r["id"]: (r["name"], r["status"], r["error"])
            for r in self._query("SELECT id, name, status, error FROM items WHERE status IN ('done', 'failed')")
        }
        stored: dict[int, dict[str, tuple[str, str | None]]] = {}
        for r in self._query(
            "SELECT s.item_id, s.stage, s.status, s.settings_hash FROM stages s JOIN items i ON i.id = s.item_id "
            "WHERE i.status IN ('done', 'failed')"
        ):
            stored.setdefault(r["item_id"], {})[r["stage"]] = (r["status"], r["settings_hash"])
        changed = None if changed_stages is None else set(changed_stages)
        outdated = []
        for item_id, (name, status, error) in items.items():
            stages = stored.get(item_id, {})
            if status == "done":
                if any(stages.get(s, (None, None)) != ("done", current[s]) for s in enabled):
                    outdated.append(name)
            elif changed is None:
                outdated.append(name)
            else:
                failing = _failing_stage(stages, error)
                if failing is None:
                    retry = bool(changed)
                else:  # its stage changed, or no longer runs (e.g. picking switched off)
                    retry = failing in changed or failing not in enabled
                if retry:
                    outdated.append(name)
        if outdated:
            with self._write() as c:
                c.executemany(
                    "UPDATE items SET status = 'queued', error = NULL WHERE name = ? "
                    "AND status IN ('done', 'failed')",
                    [(n,) for n in outdated],
                )
        return outdated

    def queued_items(self) -> list[dict[str, Any]]:
        """Items with status ``queued`` in discovery order (``name``, ``path``)."""
        return [
            dict(r)
            for r in self._query("SELECT id, name, path FROM items WHERE status = 'queued' ORDER BY id")
        ]

    def stored_picks_for_export(self, item: str | int) -> list[tuple[float, float, float, str]]:
        """The effective picks ``(x_px, y_px, score, source)`` that export should extract."""
        return [
            (p["x_px"], p["y_px"], p["score"] if p["score"] is not None else math.nan, p["source"])
            for p in self.get_picks(item)
        ]

    def pick_corrections(self, item: str | int) -> dict[str, list[list[float]]]:
        """Manual corrections to hand to a worker that re-picks: ``{"added": [[x, y], ...],
        "removed": [[x, y, radius_px], ...]}`` in px of the full micrograph."""
        item_id = self._item_id(item)
        added = [
            [r["x_px"], r["y_px"]]
            for r in self._query(
                "SELECT x_px, y_px FROM picks WHERE item_id = ? AND source = 'manual' ORDER BY id", (item_id,)
            )
        ]
        removed = [
            [r["x_px"], r["y_px"], r["radius_px"]]
            for r in self._query(
                "SELECT x_px, y_px, radius_px FROM pick_removals WHERE item_id = ? ORDER BY id", (item_id,)
            )
        ]
        return {"added": added, "removed": removed}

    def apply_filters(self, filters: FilterSettings | None = None) -> None:
        """Re-evaluate the quality filter over all done items (astigmatism is relative to the dataset)."""
        filters = filters or self.get_settings().filter
        rows = [
            dict(r)
            for r in self._query(
                f"SELECT id, {', '.join(SCALAR_FIELDS)} FROM items WHERE status = 'done' ORDER BY id"
            )
        ]
        verdicts = evaluate_filters(rows, filters)
        current = {
            r["id"]: (r["filter_passes"], r["filter_reasons"])
            for r in self._query("SELECT id, filter_passes, filter_reasons FROM items WHERE status = 'done'")
        }
        updates = [
            (int(v.passes), json.dumps(list(v.reasons)), r["id"])
            for r, v in zip(rows, verdicts, strict=True)
            if current.get(r["id"]) != (int(v.passes), json.dumps(list(v.reasons)))
        ]
        if updates:
            with self._write() as c:
                c.executemany("UPDATE items SET filter_passes = ?, filter_reasons = ? WHERE id = ?", updates)

    # ------------------------------------------------------------------ items: UI side (reads)
    def _item_dict(self, row: sqlite3.Row) -> dict[str, Any]:
        d = {k: row[k] for k in row.keys()}
        d["filter_passes"] = bool(d["filter_passes"])
        d["filter_reasons"] = json.loads(d["filter_reasons"] or "[]")
        d["artifacts"] = json.loads(d["artifacts"] or "{}")
        d["timings"] = json.loads(d["timings"] or "{}")
        d["selected"] = d["status"] == "done" and is_selected(d["filter_passes"], d["manual"])
        return d

    def list_items(self, *, status: str | None = None) -> list[dict[str, Any]]:
        """All items (discovery order) as dicts.

        Keys: ``id, name, path, status`` (queued/running/done/failed), ``error, attempts, manual``
        (None/"include"/"exclude"), ``filter_passes, filter_reasons, selected`` (in the STAR files),
        the scalars ``defocus_um, defocus_delta_um, astigmatism_angle_deg, phase_shift_deg,
        resolution_a, mean_motion_a, mask_percentage, n_particles``, ``n_frames, height, width,
        pixel_size_a``, ``artifacts`` (name → path relative to the project: ``average``, ``thumbnail``,
        ``spectrum_png``, ``spectrum_json``, ``motion_json``, ...), ``timings`` (stage → s) and times
        ``discovered_at, started_at, finished_at`` (Unix seconds).
        """
        sql = f"SELECT {', '.join(_ITEM_COLUMNS)} FROM items"
        params: tuple[Any, ...] = ()
        if status is not None:
            if status not in ITEM_STATUSES:
                raise ValueError(f"status must be one of {ITEM_STATUSES}, got {status!r}")
            sql, params = sql + " WHERE status = ?", (status,)
        return [self._item_dict(r) for r in self._query(sql + " ORDER BY id", params)]

    def get_item(self, item: str | int) -> dict[str, Any]:
        """One item as in :meth:`list_items`, plus ``stages``: stage → {status, settings_hash, error,
        is_outdated}."""
        item_id = self._item_id(item)
        row = self._query(f"SELECT {', '.join(_ITEM_COLUMNS)} FROM items WHERE id = ?", (item_id,))[0]
        d = self._item_dict(row)
        current = stage_hashes(self.get_settings())
        d["stages"] = {
            r["stage"]: {
                "status": r["status"],
                "settings_hash": r["settings_hash"],
                "error": r["error"],
                "is_outdated": r["settings_hash"] != current.get(r["stage"]),
            }
            for r in self._query(
                "SELECT stage, status, settings_hash, error FROM stages WHERE item_id = ?", (item_id,)
            )
        }
        return d

    def get_picks(self, item: str | int) -> list[dict[str, Any]]:
        """Effective picks of an item: BoxNet's minus manual removals, plus manual additions.

        Returns
        -------
        picks : list of dict
            ``{"id", "x_px", "y_px", "score", "source"}`` with ``source`` "auto" or "manual"; x, y in px
            of the full-size micrograph.
        """
        return self.picks_and_removed(item)[0]

    def removed_picks(self, item: str | int) -> list[dict[str, Any]]:
        """BoxNet picks the user removed (the false positives for retraining), same keys as :meth:`get_picks`."""
        return self.picks_and_removed(item)[1]

    def picks_and_removed(self, item: str | int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """:meth:`get_picks` and :meth:`removed_picks` from one read (a retraining example needs both)."""
        rows = self._picks_with_removal(item)
        return [p for p, removed in rows if not removed], [p for p, removed in rows if removed]

    def _picks_with_removal(self, item: str | int) -> list[tuple[dict[str, Any], bool]]:
        """Every stored pick with whether a manual removal covers it (manual picks are never removed)."""
        item_id = self._item_id(item)
        picks = [
            dict(r)
            for r in self._query(
                "SELECT id, x_px, y_px, score, source FROM picks WHERE item_id = ? ORDER BY id", (item_id,)
            )
        ]
        removals = self._query(
            "SELECT x_px, y_px, radius_px FROM pick_removals WHERE item_id = ?", (item_id,)
        )
        return [
            (
                p,
                p["source"] != "manual"
                and any(
                    math.hypot(p["x_px"] - r["x_px"], p["y_px"] - r["y_px"]) <= r["radius_px"] for r in removals
                ),
            )
            for p in picks
        ]

    def count_pick_removals(self, item: str | int) -> int:
        """How many BoxNet picks the user removed on an item (manual corrections)."""
        item_id = self._item_id(item)
        return int(self._query("SELECT COUNT(*) FROM pick_removals WHERE item_id = ?", (item_id,))[0][0])

    def corrected_items(self) -> list[str]:
        """Names (discovery order) of items with at least one manual pick, removed BoxNet pick or mask
        stroke — the examples for retraining BoxNet."""
        rows = self._query(
            "SELECT name FROM items WHERE id IN (SELECT item_id FROM picks WHERE source = 'manual') "
            "OR id IN (SELECT item_id FROM pick_removals) OR id IN (SELECT item_id FROM mask_strokes) ORDER BY id"
        )
        return [r["name"] for r in rows]

    def count_mask_strokes(self, item: str | int) -> int:
        """How many brush strokes the user made on an item's mask."""
        item_id = self._item_id(item)
        return int(self._query("SELECT COUNT(*) FROM mask_strokes WHERE item_id = ?", (item_id,))[0][0])

    def mask_strokes(self, item: str | int) -> list[MaskStroke]:
        """The user's brush strokes on an item's artefact mask, oldest first (see ``cryowarp.picking.mask_edits``)."""
        from cryowarp.picking.mask_edits import MaskStroke

        rows = self._query(
            "SELECT paint, radius_px, points FROM mask_strokes WHERE item_id = ? ORDER BY id", (self._item_id(item),)
        )
        return [
            MaskStroke(bool(r["paint"]), r["radius_px"], tuple(tuple(p) for p in json.loads(r["points"])))
            for r in rows
        ]

    def get_particles(
        self, item: str | int | None = None, *, selected_only: bool = False
    ) -> list[dict[str, Any]]:
        """Exported particle rows (stack order), with ``name`` and ``particle_stack`` of their item.

        Rows come in completion order of their items (``done_seq``), then stack index ``idx`` (from 1).
        Keys: ``name, particle_stack, manual, filter_passes, status, item_id, idx, x_px, y_px,
        defocus_u_um, defocus_v_um, astigmatism_angle_deg, phase_shift_deg, score, source``.
        ``selected_only`` keeps the rows of done, selected items (filtered in SQL).
        """
        where, params = [], []
        if item is not None:
            where.append("i.id = ?")
            params.append(self._item_id(item))
        if selected_only:
            where.append(_SELECTED_SQL)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            # the item columns once per item, not once per particle: most of the time goes into
            # making Python objects of what SQLite returns
            heads = [
                (r[0], {"name": r[1], "particle_stack": r[2], "manual": r[3], "filter_passes": r[4], "status": r[5]})
                for r in self._conn.execute(
                    "SELECT i.id, i.name, i.particle_stack, i.manual, i.filter_passes, i.status FROM items i"
                    + condition
                    + " ORDER BY i.done_seq, i.id",
                    params,
                )
            ]
            cursor = self._conn.execute(
                f"SELECT p.item_id, {', '.join(f'p.{c}' for c in _PARTICLE_COLUMNS)} FROM particles p "
                "JOIN items i ON i.id = p.item_id" + condition + " ORDER BY p.item_id, p.idx",
                params,
            )
            cursor.row_factory = None
            by_item: dict[int, list[tuple[Any, ...]]] = {}
            for r in cursor.fetchall():
                by_item.setdefault(r[0], []).append(r)
        columns = ("item_id", *_PARTICLE_COLUMNS)
        out = []
        for item_id, head in heads:
            for r in by_item.get(item_id, ()):
                d = head.copy()
                d.update(zip(columns, r, strict=True))
                out.append(d)
        return out

    def counts(self) -> dict[str, int]:
        """Totals for a dashboard: ``total, queued, running, done, failed, selected, excluded,
        filtered_out, particles, particles_selected``."""
        items = self.list_items()
        out = {"total": len(items), **{s: 0 for s in ITEM_STATUSES}}
        for it in items:
            out[it["status"]] += 1
        done = [it for it in items if it["status"] == "done"]
        out["selected"] = sum(it["selected"] for it in done)
        out["excluded"] = sum(it["manual"] == "exclude" for it in items)
        out["filtered_out"] = sum((not it["filter_passes"]) and it["manual"] is None for it in done)
        out["particles"] = sum(it["n_particles"] or 0 for it in done)
        out["particles_selected"] = sum(it["n_particles"] or 0 for it in done if it["selected"])
        return out

    # ------------------------------------------------------------------ STAR row cache (pipeline.starfiles)
    def star_blocks_to_build(self, kind: str, version: int) -> list[int]:
        """Ids of done items whose cached STAR row block of ``kind`` is missing, was built from another
        result (``result_hash``, ``done_seq``) or by another block ``version``."""
        rows = self._query(
            "SELECT i.id FROM items i LEFT JOIN star_cache b ON b.item_id = i.id AND b.kind = ? "
            "WHERE i.status = 'done' AND i.result_hash IS NOT NULL "
            f"AND (b.item_id IS NULL OR NOT ({_BLOCK_CURRENT_SQL})) ORDER BY i.id",
            (kind, int(version)),
        )
        return [int(r[0]) for r in rows]

    def star_block_sources(self, item_ids: Sequence[int]) -> list[dict[str, Any]]:
        """What STAR rows are made of, read in one snapshot: per item (in ``item_ids`` order, missing
        ones left out) its :meth:`list_items` dict plus ``result_hash`` and ``particles`` (rows as in
        :meth:`get_particles`, stack order)."""
        out: dict[int, dict[str, Any]] = {}
        with self._lock:
            self._conn.execute("BEGIN")  # one read transaction: the hash matches the rows read
            try:
                for start in range(0, len(item_ids), 500):
                    chunk = [int(i) for i in item_ids[start : start + 500]]
                    marks = ", ".join("?" * len(chunk))
                    for r in self._conn.execute(
                        f"SELECT {', '.join(_ITEM_COLUMNS)}, result_hash FROM items WHERE id IN ({marks})", chunk
                    ):
                        d = self._item_dict(r)
                        d["particles"] = []
                        out[d["id"]] = d
                    cursor = self._conn.execute(
                        f"SELECT item_id, {', '.join(_PARTICLE_COLUMNS)} FROM particles "
                        f"WHERE item_id IN ({marks}) ORDER BY item_id, idx",
                        chunk,
                    )
                    cursor.row_factory = None
                    for r in cursor:
                        out[r[0]]["particles"].append(dict(zip(_PARTICLE_COLUMNS, r[1:], strict=True)))
            finally:
                self._conn.execute("COMMIT")
        return [out[i] for i in item_ids if i in out]

    def put_star_blocks(self, blocks: Sequence[dict[str, Any]]) -> int:
        """Cache STAR row blocks: dicts with ``item_id, kind, result_hash, done_seq, version, columns``
        (list of labels), ``n_rows, text``. A block whose ``result_hash`` or ``done_seq`` is no longer
        the item's (a result was recorded meanwhile) is not stored.
        Derived data: does not bump the revision. Returns how many were stored."""
        stored = 0
        with self._write(bump=False) as c:
            for b in blocks:
                stored += c.execute(
                    "INSERT OR REPLACE INTO star_cache(item_id, kind, result_hash, done_seq, version, columns, "
                    "n_rows, text) SELECT ?, ?, ?, ?, ?, ?, ?, ? "
                    "WHERE EXISTS (SELECT 1 FROM items WHERE id = ? AND result_hash = ? AND done_seq IS ?)",
                    (
                        int(b["item_id"]),
                        b["kind"],
                        b["result_hash"],
                        b["done_seq"],
                        int(b["version"]),
                        "\t".join(b["columns"]),
                        int(b["n_rows"]),
                        b["text"],
                        int(b["item_id"]),
                        b["result_hash"],
                        b["done_seq"],
                    ),
                ).rowcount
        return stored

    def selected_star_blocks(self, kind: str, version: int) -> list[dict[str, Any]]:
        """The selected items (done, passing the filter or included by hand) with their cached block of
        ``kind``, read in one snapshot.

        Returns
        -------
        rows : list of dict
            ``id, name, done_seq, pixel_size_a, particle_pixel_size_a, particle_box_px`` and ``text``,
            ``columns`` (list), ``n_rows`` of the block — ``text`` None when the block is missing or
            stale (not built from the item's current result), in discovery order.
        """
        with self._lock:
            cursor = self._conn.execute(
                "SELECT i.id, i.name, i.done_seq, i.pixel_size_a, i.particle_pixel_size_a, i.particle_box_px, "
                f"CASE WHEN {_BLOCK_CURRENT_SQL} THEN b.text END, b.columns, b.n_rows "
                "FROM items i LEFT JOIN star_cache b ON b.item_id = i.id AND b.kind = ? "
                f"WHERE {_SELECTED_SQL} ORDER BY i.id",
                (int(version), kind),
            )
            cursor.row_factory = None
            rows = cursor.fetchall()
        keys = ("id", "name", "done_seq", "pixel_size_a", "particle_pixel_size_a", "particle_box_px", "text")
        return [
            {
                **dict(zip(keys, r[:7], strict=True)),
                "columns": r[7].split("\t") if r[7] else [],
                "n_rows": r[8] or 0,
            }
            for r in rows
        ]

    # ------------------------------------------------------------------ UI side (writes)
    def set_manual(self, item: str | int, selection: str | None) -> None:
        """Manual include/exclude (``"include"``, ``"exclude"``) or back to the filter (None)."""
        if selection not in (None, "include", "exclude"):
            raise ValueError(f"selection must be 'include', 'exclude' or None, got {selection!r}")
        with self._write() as c:
            c.execute("UPDATE items SET manual = ? WHERE id = ?", (selection, self._item_id(item, c)))

    def add_pick(self, item: str | int, x_px: float, y_px: float) -> int:
        """Add a manual pick (px of the full micrograph); re-queues the item's export. Returns the pick id."""
        if not (math.isfinite(x_px) and math.isfinite(y_px)):
            raise ValueError(f"pick coordinates must be finite, got ({x_px}, {y_px})")
        with self._write() as c:
            item_id = self._item_id(item, c)
            pick_id = c.execute(
                "INSERT INTO picks(item_id, x_px, y_px, score, source) VALUES (?, ?, ?, NULL, 'manual')",
                (item_id, float(x_px), float(y_px)),
            ).lastrowid
            self._invalidate_export(c, item_id)
        return int(pick_id)

    def remove_pick(self, item: str | int, pick_id: int, *, radius_px: float = 2.0) -> None:
        """Remove a pick: a manual one is deleted; an automatic one is hidden by a removal that also
        survives re-picking (any BoxNet pick within ``radius_px`` of it stays hidden). Re-queues export."""
        with self._write() as c:
            item_id = self._item_id(item, c)
            row = c.execute(
                "SELECT x_px, y_px, source FROM picks WHERE id = ? AND item_id = ?", (int(pick_id), item_id)
            ).fetchone()
            if row is None:
                raise ItemNotFoundError(f"item {item!r} has no pick with id {pick_id}")
            if row["source"] == "manual":
                c.execute("DELETE FROM picks WHERE id = ?", (int(pick_id),))
            else:
                c.execute(
                    "INSERT INTO pick_removals(item_id, x_px, y_px, radius_px) VALUES (?, ?, ?, ?)",
                    (item_id, row["x_px"], row["y_px"], float(radius_px)),
                )
            self._invalidate_export(c, item_id)

    def add_mask_stroke(self, item: str | int, stroke: MaskStroke) -> int:
        """Store a brush stroke on the item's artefact mask (a training label; picks and particles are
        unchanged, so nothing is re-queued). Returns the number of strokes the item now has."""
        with self._write() as c:
            item_id = self._item_id(item, c)
            c.execute(
                "INSERT INTO mask_strokes(item_id, paint, radius_px, points) VALUES (?, ?, ?, ?)",
                (item_id, int(stroke.paint), float(stroke.radius_px), json.dumps([list(p) for p in stroke.points_px_xy])),
            )
            return int(c.execute("SELECT COUNT(*) FROM mask_strokes WHERE item_id = ?", (item_id,)).fetchone()[0])

    def clear_mask_strokes(self, item: str | int) -> int:
        """Forget the user's strokes on an item's mask (back to BoxNet's own); returns how many there were."""
        with self._write() as c:
            return c.execute("DELETE FROM mask_strokes WHERE item_id = ?", (self._item_id(item, c),)).rowcount

    def _invalidate_export(self, c: Any, item_id: int) -> None:
        c.execute("UPDATE stages SET settings_hash = NULL WHERE item_id = ? AND stage = 'export'", (item_id,))
        c.execute("DELETE FROM star_cache WHERE item_id = ?", (item_id,))
        c.execute(
            "UPDATE items SET status = 'queued' WHERE id = ? AND status IN ('done', 'failed')", (item_id,)
        )


#: Item columns that say nothing about the result itself (selection, bookkeeping).
_NOT_IN_RESULT_HASH = frozenset(
    ("status", "error", "attempts", "discovered_at", "readable_at", "started_at", "finished_at", "done_seq")
    + ("manual", "filter_passes", "filter_reasons", "timings")
)


def _update_result_hash(c: Any, item_id: int) -> None:
    """Store the hash of everything an item's STAR rows are made of (its record and its particles)."""
    row = c.execute(f"SELECT {', '.join(_ITEM_COLUMNS)} FROM items WHERE id = ?", (item_id,)).fetchone()
    particles = c.execute(
        f"SELECT {', '.join(_PARTICLE_COLUMNS)} FROM particles WHERE item_id = ? ORDER BY idx", (item_id,)
    ).fetchall()
    record = [row[k] for k in row.keys() if k not in _NOT_IN_RESULT_HASH]
    text = json.dumps([record, [list(p) for p in particles]], separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    c.execute("UPDATE items SET result_hash = ? WHERE id = ?", (digest, item_id))
    c.execute("DELETE FROM star_cache WHERE item_id = ? AND result_hash != ?", (item_id, digest))


def _failing_stage(stages: dict[str, tuple[str, str | None]], error: str | None) -> str | None:
    """The stage a failed item failed in: from its error (``"ctf: ..."``; a read error is the motion
    stage's input), else its earliest stage recorded as failed; None when unknown (e.g. a worker died)."""
    prefix = (error or "").split(":", 1)[0].strip()
    if prefix in STAGES:
        return prefix
    if prefix == "read":
        return "motion"
    failed = [s for s in STAGES if stages.get(s, ("", None))[0] == "failed"]
    return failed[0] if failed else None


class _Cursor:
    """Thin wrapper so that rows come back as ``sqlite3.Row`` inside write transactions."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> sqlite3.Cursor:
        return self._conn.executemany(sql, rows)
