"""STAR upkeep: ``micrographs.star``, ``particles.star`` and ``goodparticles_cryowarp.star``.

All three always match the current quality filter and manual selection, and each is replaced
atomically (temp file + rename) under a project lock: a reader (RELION, cryoSPARC Live, the UI) sees
the old or the new file, never a partial one.

* ``micrographs.star`` — RELION 3.1 ``optics`` + ``micrographs`` (rlnMicrographName = the aligned
  average, CTF columns) of the selected items, sorted by item name.
* ``particles.star`` — RELION 3.1 ``optics`` + ``particles`` of the selected items: rlnImageName
  ``NNNNNNN@particles/<name>.mrcs``, rlnMicrographName, rlnCoordinateX/Y (px of the micrograph),
  local rlnDefocusU/V (Å), rlnDefocusAngle, rlnPhaseShift, rlnCtfMaxResolution,
  rlnAutopickFigureOfMerit (warp-facts.md §7.5).
  Rows are sorted by item name, then stack index, so the same data give the same file.
* ``goodparticles_cryowarp.star`` — the same rows in the order items finished, so while the filter is
  unchanged it only ever grows at the end (what cryoSPARC Live's re-import expects).

Paths inside the STAR files are relative to the project folder (run RELION from there).

**Incremental upkeep.** Formatting 10⁵ rows takes seconds, so each done item's rows are formatted once
into a text block (one per file kind) cached in the store (:meth:`ProjectStore.put_star_blocks`),
keyed by the item's ``result_hash`` — the hash of everything its rows are made of, renewed whenever a
result is recorded — its completion number ``done_seq`` and :data:`STAR_BLOCK_VERSION`. A rewrite (a
filter change, an include or exclude, new items) builds only the missing or stale blocks, then writes
header + optics table + the selected items' blocks. A cache that is lost or stale (a kill between recording and rewriting, a
reprocessed item, another cryowarp version) is rebuilt, never used: a block counts only when its hash
equals the item's current one. The text equals, byte for byte, what :func:`cryowarp.io.star.write_star`
writes for the same tables (``write_star_files(store, incremental=False)``, tested).
"""

from __future__ import annotations

import fcntl
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from cryowarp.io.mrc import atomic_path
from cryowarp.io.star import (
    micrographs_star_tables,
    optics_table,
    particles_star_tables,
    relion_image_name,
    write_star,
)
from cryowarp.pipeline.settings import ProcessingSettings
from cryowarp.pipeline.store import ProjectStore

__all__ = [
    "MICROGRAPHS_STAR",
    "PARTICLES_STAR",
    "GOODPARTICLES_STAR",
    "STAR_BLOCK_VERSION",
    "write_star_files",
    "update_star_blocks",
]

MICROGRAPHS_STAR = "micrographs.star"
PARTICLES_STAR = "particles.star"
GOODPARTICLES_STAR = "goodparticles_cryowarp.star"

#: Version of the cached row blocks' layout: bump it when the columns or their formatting change, and
#: every cached block is rebuilt.
STAR_BLOCK_VERSION = 1

_FLOAT_FORMAT = "%.12g"  # io.star.write_star's default
_NA = "<NA>"  # starfile's na_rep
_PREAMBLE = "\n# version 30001\n# Written by cryowarp (io/star.py)\n"  # what write_star puts on top
_BUILD_CHUNK = 200  # items read and formatted per batch


@contextmanager
def _project_lock(project_dir: Path) -> Iterator[None]:
    """Serialise STAR rewrites between processes (coordinator and UI) with an flock."""
    with open(project_dir / ".star.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_star_files(store: ProjectStore, *, incremental: bool = True) -> dict[str, Path]:
    """Rewrite the project's STAR files from the store (atomically, under a project lock).

    Parameters
    ----------
    store : ProjectStore
        The project; files go to ``store.project_dir``.
    incremental : bool
        Concatenate the cached per-item row blocks (building only missing or stale ones); False
        formats every row again through pandas/starfile (the reference the cache is tested against).
        Both give the same bytes.

    Returns
    -------
    paths : dict of str to Path
        ``{"micrographs": ..., "particles": ..., "goodparticles": ...}``; a file is removed when no
        item is selected (RELION cannot read an empty table), and absent from the dict.
    """
    project_dir = store.project_dir
    settings = store.get_settings()
    with _project_lock(project_dir):
        texts = _incremental_texts(store, settings) if incremental else None
        if texts is None:
            return _write_from_scratch(store, settings)
        out: dict[str, Path] = {}
        for key, name in (
            ("micrographs", MICROGRAPHS_STAR),
            ("particles", PARTICLES_STAR),
            ("goodparticles", GOODPARTICLES_STAR),
        ):
            path = project_dir / name
            text = texts[key]
            if text is None:
                path.unlink(missing_ok=True)
                continue
            with atomic_path(path, suffix=".star") as tmp:
                tmp.write_text(text)
            out[key] = path
    return out


# ----------------------------------------------------------------------------------------------
# per-item row blocks
# ----------------------------------------------------------------------------------------------
def update_star_blocks(store: ProjectStore) -> int:
    """Format and cache the row blocks of every done item whose cached blocks are missing or stale.

    Called by :func:`write_star_files`; the coordinator's rewrite after recording results builds the
    new items' blocks once, so a later filter change only concatenates. Returns how many items were
    (re)built.
    """
    ids = sorted(
        set(store.star_blocks_to_build("particles", STAR_BLOCK_VERSION))
        | set(store.star_blocks_to_build("micrographs", STAR_BLOCK_VERSION))
    )
    for start in range(0, len(ids), _BUILD_CHUNK):
        blocks = []
        for item in store.star_block_sources(ids[start : start + _BUILD_CHUNK]):
            blocks.extend(_item_blocks(item))
        store.put_star_blocks(blocks)
    return len(ids)


def _item_blocks(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``particles`` and ``micrographs`` blocks of one item (empty text when it has none)."""
    common = {
        "item_id": item["id"],
        "result_hash": item["result_hash"],
        "done_seq": item["done_seq"],
        "version": STAR_BLOCK_VERSION,
    }
    blocks = []
    rows = item["particles"] if item["particle_stack"] else []
    if rows:
        table = _particle_tables(rows, [item] * len(rows), optics=None)["particles"]
        blocks.append(
            {**common, "kind": "particles", "columns": list(table.columns), "n_rows": len(rows), "text": _format_rows(table)}
        )
    else:
        blocks.append({**common, "kind": "particles", "columns": [], "n_rows": 0, "text": ""})
    average = item["artifacts"].get("average")
    if average:
        table = _micrograph_tables([item], pixel_size_a=1.0, optics=None)["micrographs"]
        blocks.append(
            {**common, "kind": "micrographs", "columns": list(table.columns), "n_rows": 1, "text": _format_rows(table)}
        )
    else:
        blocks.append({**common, "kind": "micrographs", "columns": [], "n_rows": 0, "text": ""})
    return blocks


def _incremental_texts(store: ProjectStore, settings: ProcessingSettings) -> dict[str, str | None] | None:
    """File texts from the cached blocks (None per file when nothing is selected); None overall when the
    blocks are not consistent (then the caller builds from scratch)."""
    for _attempt in range(3):  # a result recorded between building and reading makes a block stale
        update_star_blocks(store)
        mics = store.selected_star_blocks("micrographs", STAR_BLOCK_VERSION)
        parts = store.selected_star_blocks("particles", STAR_BLOCK_VERSION)
        if all(r["text"] is not None for r in mics + parts):
            break
    else:
        return None
    optics = settings.ctf
    texts: dict[str, str | None] = {}

    mics = sorted((r for r in mics if r["n_rows"]), key=lambda r: r["name"])
    if not mics:
        texts["micrographs"] = None
    else:
        if any(r["columns"] != mics[0]["columns"] for r in mics):
            return None  # e.g. some items without CTF: the table drops those columns for all
        optics_df = optics_table(
            pixel_size_a=mics[0]["pixel_size_a"] or settings.input.pixel_size_a or 1.0,
            voltage_kv=optics.voltage_kv,
            cs_mm=optics.cs_mm,
            amplitude_contrast=optics.amplitude_contrast,
            kind="micrographs",
        )
        texts["micrographs"] = _file_text(optics_df, "micrographs", mics[0]["columns"], [r["text"] for r in mics])

    parts = [r for r in parts if r["n_rows"]]
    if parts and any(r["columns"] != parts[0]["columns"] for r in parts):
        return None
    for key, order in (
        ("particles", lambda r: r["name"]),  # deterministic: by item name, then stack index
        ("goodparticles", lambda r: (r["done_seq"] or 0, r["name"])),  # completion order: grows at the end
    ):
        blocks = sorted(parts, key=order)
        if not blocks:
            texts[key] = None
            continue
        first = blocks[0]
        optics_df = optics_table(
            pixel_size_a=first["particle_pixel_size_a"] or settings.input.pixel_size_a or 1.0,
            voltage_kv=optics.voltage_kv,
            cs_mm=optics.cs_mm,
            amplitude_contrast=optics.amplitude_contrast,
            kind="particles",
            box_size_px=int(first["particle_box_px"] or settings.export.box_size_px),
        )
        texts[key] = _file_text(optics_df, "particles", first["columns"], [r["text"] for r in blocks])
    return texts


def _cell(value: Any) -> str:
    """One non-float cell as starfile writes it: strings with a space (or empty) in double quotes,
    missing values as ``<NA>``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _NA
    if isinstance(value, str):
        return f'"{value}"' if (" " in value or not value) else value
    return str(value)


def _format_rows(table: pd.DataFrame) -> str:
    """The data lines of a loop table exactly as ``starfile`` (pandas ``to_csv``, tab-separated, floats
    ``%.12g``, ``<NA>`` for missing values) writes them, but about ten times faster."""
    columns = []
    for name in table.columns:
        values = table[name].tolist()
        if pd.api.types.is_float_dtype(table[name].dtype):
            columns.append([_NA if math.isnan(v) else _FLOAT_FORMAT % v for v in values])
        else:
            columns.append([_cell(v) for v in values])
    return "".join("\t".join(row) + "\n" for row in zip(*columns, strict=True))


def _loop_header(block: str, columns: Sequence[str]) -> str:
    return f"data_{block}\n\nloop_\n" + "".join(f"_{c} #{i}\n" for i, c in enumerate(columns, 1))


def _file_text(optics_df: pd.DataFrame, block: str, columns: Sequence[str], row_blocks: list[str]) -> str:
    """A RELION 3.1 file: preamble, optics loop, then the ``block`` loop made of ``row_blocks``."""
    head = _PREAMBLE + _loop_header("optics", list(optics_df.columns)) + _format_rows(optics_df) + "\n\n"
    return head + _loop_header(block, columns) + "".join(row_blocks) + "\n\n"


# ----------------------------------------------------------------------------------------------
# tables (shared by the blocks and the from-scratch path)
# ----------------------------------------------------------------------------------------------
_DUMMY_OPTICS = {"pixel_size_a": 1.0, "box_size_px": 1, "voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1}


def _particle_tables(
    rows: list[dict[str, Any]], items: list[dict[str, Any]], *, optics: dict[str, Any] | None
) -> dict[str, pd.DataFrame]:
    """``particles_star_tables`` for particle ``rows`` of ``items`` (one item per row); ``optics``
    None for row blocks (their optics table is not used)."""
    optics = optics or _DUMMY_OPTICS
    return particles_star_tables(
        image_names=[relion_image_name(r["idx"] - 1, it["particle_stack"]) for r, it in zip(rows, items, strict=True)],
        micrograph_names=[it["artifacts"].get("average", it["name"]) for it in items],
        coords_px_xy=[[r["x_px"], r["y_px"]] for r in rows],
        pixel_size_a=optics["pixel_size_a"],
        box_size_px=int(optics["box_size_px"]),
        voltage_kv=optics["voltage_kv"],
        cs_mm=optics["cs_mm"],
        amplitude_contrast=optics["amplitude_contrast"],
        defocus_u_um=[r["defocus_u_um"] or 0.0 for r in rows],
        defocus_v_um=[r["defocus_v_um"] or 0.0 for r in rows],
        astigmatism_angle_deg=[r["astigmatism_angle_deg"] or 0.0 for r in rows],
        phase_shift_deg=[r["phase_shift_deg"] or 0.0 for r in rows],
        resolution_a=[it["resolution_a"] if it["resolution_a"] is not None else 0.0 for it in items],
        scores=[r["score"] if r["score"] is not None else 1.0 for r in rows],
    )


def _micrograph_tables(
    mics: list[dict[str, Any]], *, pixel_size_a: float, optics: dict[str, Any] | None
) -> dict[str, pd.DataFrame]:
    ctf = [
        {
            "defocus_um": it["defocus_um"] or 0.0,
            "defocus_delta_um": it["defocus_delta_um"] or 0.0,
            "astigmatism_angle_deg": it["astigmatism_angle_deg"] or 0.0,
            "phase_shift_deg": it["phase_shift_deg"] or 0.0,
            **({"resolution_a": it["resolution_a"]} if it["resolution_a"] is not None else {}),
        }
        for it in mics
    ]
    optics = optics or _DUMMY_OPTICS
    return micrographs_star_tables(
        [it["artifacts"]["average"] for it in mics],
        pixel_size_a=pixel_size_a,
        voltage_kv=optics["voltage_kv"],
        cs_mm=optics["cs_mm"],
        amplitude_contrast=optics["amplitude_contrast"],
        ctf=ctf if all(it["defocus_um"] is not None for it in mics) else None,
    )


def _write_from_scratch(store: ProjectStore, settings: ProcessingSettings) -> dict[str, Path]:
    """Every row formatted again (pandas + starfile through ``io.star.write_star``)."""
    project_dir = store.project_dir
    ctf = settings.ctf
    optics = {"voltage_kv": ctf.voltage_kv, "cs_mm": ctf.cs_mm, "amplitude_contrast": ctf.amplitude_contrast}
    out: dict[str, Path] = {}
    items = [it for it in store.list_items(status="done") if it["selected"]]
    items.sort(key=lambda it: (it["done_seq"] or 0, it["id"]))
    mics = sorted((it for it in items if it["artifacts"].get("average")), key=lambda it: it["name"])
    path = project_dir / MICROGRAPHS_STAR
    if mics:
        pixel_size_a = mics[0]["pixel_size_a"] or settings.input.pixel_size_a or 1.0
        out["micrographs"] = write_star(path, _micrograph_tables(mics, pixel_size_a=pixel_size_a, optics=optics))
    else:
        path.unlink(missing_ok=True)

    rows = [r for r in store.get_particles(selected_only=True) if r["particle_stack"]]
    by_name = {it["name"]: it for it in items}
    for name in (PARTICLES_STAR, GOODPARTICLES_STAR):
        path = project_dir / name
        if name == PARTICLES_STAR:  # deterministic: by item name, then stack index
            rows = sorted(rows, key=lambda r: (r["name"], r["idx"]))
        else:  # completion order, so it grows at the end
            rows = sorted(rows, key=lambda r: (by_name[r["name"]]["done_seq"] or 0, r["name"], r["idx"]))
        if not rows:
            path.unlink(missing_ok=True)
            continue
        first = by_name[rows[0]["name"]]
        file_optics = {
            **optics,
            "pixel_size_a": first["particle_pixel_size_a"] or settings.input.pixel_size_a or 1.0,
            "box_size_px": int(first["particle_box_px"] or settings.export.box_size_px),
        }
        tables = _particle_tables(rows, [by_name[r["name"]] for r in rows], optics=file_optics)
        out["particles" if name == PARTICLES_STAR else "goodparticles"] = write_star(path, tables)
    return out

