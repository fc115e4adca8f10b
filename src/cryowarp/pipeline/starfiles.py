"""STAR upkeep: ``micrographs.star``, ``particles.star`` and ``goodparticles_cryowarp.star``.

All three are regenerated from the store (never appended in place), so they always match the current
quality filter and manual selection, and each is replaced atomically (temp file + rename): a reader
(RELION, cryoSPARC Live, the UI) sees the old or the new file, never a partial one.

* ``micrographs.star`` — RELION 3.1 ``optics`` + ``micrographs`` (rlnMicrographName = the aligned
  average, CTF columns) of the selected items.
* ``particles.star`` — RELION 3.1 ``optics`` + ``particles`` of the selected items: rlnImageName
  ``NNNNNNN@particles/<name>.mrcs``, rlnMicrographName, rlnCoordinateX/Y (px of the micrograph),
  local rlnDefocusU/V (Å), rlnDefocusAngle, rlnPhaseShift, rlnCtfMaxResolution,
  rlnAutopickFigureOfMerit (warp-facts.md §7.5).
  Rows are sorted by item name, then stack index, so the same data give the same file.
* ``goodparticles_cryowarp.star`` — the same rows in the order items finished, so while the filter is
  unchanged it only ever grows at the end (what cryoSPARC Live's re-import expects).

Paths inside the STAR files are relative to the project folder (run RELION from there).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryowarp.io.star import micrographs_star_tables, particles_star_tables, relion_image_name, write_star
from cryowarp.pipeline.store import ProjectStore

__all__ = ["MICROGRAPHS_STAR", "PARTICLES_STAR", "GOODPARTICLES_STAR", "write_star_files"]

MICROGRAPHS_STAR = "micrographs.star"
PARTICLES_STAR = "particles.star"
GOODPARTICLES_STAR = "goodparticles_cryowarp.star"


@contextmanager
def _project_lock(project_dir: Path) -> Iterator[None]:
    """Serialise STAR rewrites between processes (coordinator and UI) with an flock."""
    with open(project_dir / ".star.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_star_files(store: ProjectStore) -> dict[str, Path]:
    """Rewrite the project's STAR files from the store (atomically, under a project lock).

    Parameters
    ----------
    store : ProjectStore
        The project; files go to ``store.project_dir``.

    Returns
    -------
    paths : dict of str to Path
        ``{"micrographs": ..., "particles": ..., "goodparticles": ...}``; a file is removed when no
        item is selected (RELION cannot read an empty table), and absent from the dict.
    """
    project_dir = store.project_dir
    settings = store.get_settings()
    optics = settings.ctf  # voltage_kv, cs_mm, amplitude_contrast
    out: dict[str, Path] = {}
    with _project_lock(project_dir):
        items = [it for it in store.list_items(status="done") if it["selected"]]
        items.sort(key=lambda it: (it["done_seq"] or 0, it["id"]))
        mics = sorted((it for it in items if it["artifacts"].get("average")), key=lambda it: it["name"])
        path = project_dir / MICROGRAPHS_STAR
        if mics:
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
            pixel_size_a = mics[0]["pixel_size_a"] or settings.input.pixel_size_a or 1.0
            tables = micrographs_star_tables(
                [it["artifacts"]["average"] for it in mics],
                pixel_size_a=pixel_size_a,
                voltage_kv=optics.voltage_kv,
                cs_mm=optics.cs_mm,
                amplitude_contrast=optics.amplitude_contrast,
                ctf=ctf if all(it["defocus_um"] is not None for it in mics) else None,
            )
            out["micrographs"] = write_star(path, tables)
        else:
            path.unlink(missing_ok=True)

        rows = store.get_particles(selected_only=True)
        rows = [r for r in rows if r["particle_stack"]]
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
            first = by_name.get(rows[0]["name"])
            pixel_size_a = (first or {}).get("particle_pixel_size_a") or settings.input.pixel_size_a or 1.0
            box_px = (first or {}).get("particle_box_px") or settings.export.box_size_px
            resolution = [by_name[r["name"]]["resolution_a"] for r in rows]
            tables = particles_star_tables(
                image_names=[relion_image_name(r["idx"] - 1, r["particle_stack"]) for r in rows],
                micrograph_names=[by_name[r["name"]]["artifacts"].get("average", r["name"]) for r in rows],
                coords_px_xy=[[r["x_px"], r["y_px"]] for r in rows],
                pixel_size_a=pixel_size_a,
                box_size_px=int(box_px),
                voltage_kv=optics.voltage_kv,
                cs_mm=optics.cs_mm,
                amplitude_contrast=optics.amplitude_contrast,
                defocus_u_um=[r["defocus_u_um"] or 0.0 for r in rows],
                defocus_v_um=[r["defocus_v_um"] or 0.0 for r in rows],
                astigmatism_angle_deg=[r["astigmatism_angle_deg"] or 0.0 for r in rows],
                phase_shift_deg=[r["phase_shift_deg"] or 0.0 for r in rows],
                resolution_a=[v if v is not None else 0.0 for v in resolution],
                scores=[r["score"] if r["score"] is not None else 1.0 for r in rows],
            )
            out["particles" if name == PARTICLES_STAR else "goodparticles"] = write_star(path, tables)
    return out
