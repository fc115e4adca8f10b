"""Build small cryowarp projects for the web tests and benchmarks, the way the pipeline lays them out.

Each processed item gets what ``docs/pipeline.md`` lists: ``items/<name>/average.mrc`` (a noisy
micrograph with dark blobs at the particle positions), ``thumb.png``, ``ps.png`` (data left, CTF²
right), ``spectrum.json``, ``motion.json`` (a ``MotionModel.to_dict()``), ``particles/<name>.mrcs``,
and a store record through ``ProjectStore.record_result`` — the same call the coordinator makes.
Values are plausible but made up: this is a UI fixture, not a simulation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cryowarp.base.optics import ctf_1d, ctf_2d
from cryowarp.ctf.model import CTFModel, SpecimenPlane
from cryowarp.io.masks import write_mask_tif
from cryowarp.io.mrc import write_mrc
from cryowarp.motion.model import MotionModel
from cryowarp.pipeline.results import ItemResult
from cryowarp.pipeline.settings import ProcessingSettings, stage_hashes
from cryowarp.pipeline.store import ProjectStore

PIXEL_SIZE_A = 2.0
SHAPE_YX = (512, 512)
DIAMETER_A = 120.0


@dataclass(frozen=True)
class FakeItem:
    """Ground truth of one made-up item."""

    name: str
    defocus_um: float
    defocus_delta_um: float
    astigmatism_angle_deg: float
    resolution_a: float
    mean_motion_a: float
    mask_percentage: float
    picks_px_xy: np.ndarray
    status: str = "done"  # done | failed | queued


def fake_items(
    n: int, seed: int = 0, *, n_failed: int = 1, n_queued: int = 1, n_picks_range: tuple[int, int] = (3, 14)
) -> list[FakeItem]:
    """``n`` made-up items; the last ``n_queued`` are unprocessed and the ``n_failed`` before them fail."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        status = "done"
        if i >= n - n_queued:
            status = "queued"
        elif i >= n - n_queued - n_failed:
            status = "failed"
        n_picks = int(rng.integers(*n_picks_range))
        margin = DIAMETER_A / PIXEL_SIZE_A
        picks = np.stack(
            [
                rng.uniform(margin, SHAPE_YX[1] - margin, n_picks),
                rng.uniform(margin, SHAPE_YX[0] - margin, n_picks),
            ],
            axis=1,
        )
        out.append(
            FakeItem(
                name=f"movie_{i:04d}",
                defocus_um=float(np.clip(rng.normal(1.8, 0.5), 0.4, 4.0)),
                defocus_delta_um=float(abs(rng.normal(0.05, 0.03))),
                astigmatism_angle_deg=float(rng.uniform(-90, 90)),
                resolution_a=float(np.clip(rng.normal(3.9, 0.7), 2.8, 12.0)),
                mean_motion_a=float(np.clip(rng.gamma(3.0, 0.8), 0.3, 9.0)),
                mask_percentage=float(np.clip(rng.exponential(3.0), 0.0, 40.0)),
                picks_px_xy=picks,
                status=status,
            )
        )
    return out


def _average(item: FakeItem, rng: np.random.Generator) -> np.ndarray:
    h, w = SHAPE_YX
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = rng.normal(0.0, 1.0, SHAPE_YX).astype(np.float32)
    sigma_px = 0.3 * DIAMETER_A / PIXEL_SIZE_A
    for x, y in item.picks_px_xy:
        image -= 2.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma_px**2)).astype(np.float32)
    return image


def _png(path: Path, grey: np.ndarray) -> None:
    lo, hi = np.percentile(grey, [1, 99])
    u8 = (np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    Image.fromarray(u8, mode="L").save(path)


def _spectra(
    item: FakeItem, settings: ProcessingSettings, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    size = 256
    optics = dict(
        voltage_kv=settings.ctf.voltage_kv,
        cs_mm=settings.ctf.cs_mm,
        amplitude_contrast=settings.ctf.amplitude_contrast,
    )
    ctf = ctf_2d(
        item.defocus_um,
        item.defocus_delta_um,
        item.astigmatism_angle_deg,
        pixel_size_a=PIXEL_SIZE_A,
        shape_yx=(size, size),
        rfft=False,
        **optics,
    )
    ctf2 = torch.fft.fftshift(ctf**2).numpy()
    data = ctf2 * np.exp(-np.hypot(*np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]) * 2) + rng.normal(
        0, 0.15, ctf2.shape
    )
    ps = np.concatenate([data[:, : size // 2], ctf2[:, size // 2 :]], axis=1)
    freq = np.linspace(1 / 60, 1 / (2 * PIXEL_SIZE_A), 120)
    fit = ctf_1d(torch.tensor(freq, dtype=torch.float32), item.defocus_um, **optics).numpy() ** 2
    ps1d = fit * np.exp(-freq * 20) + rng.normal(0, 0.05, freq.shape)
    spectrum = {
        "freq_per_a": freq.tolist(),
        "ps_1d": ps1d.tolist(),
        "ctf_fit_1d": fit.tolist(),
        "background_1d": (0.1 + 0.2 * np.exp(-freq * 30)).tolist(),
        "resolution_a": item.resolution_a,
    }
    return ps, spectrum


def _motion(item: FakeItem, rng: np.random.Generator, n_frames: int = 10) -> MotionModel:
    glob = np.cumsum(rng.normal(0, item.mean_motion_a, (2, 5)), axis=1)
    glob -= glob.mean(axis=1, keepdims=True)
    local = rng.normal(0, 0.3 * item.mean_motion_a, (2, 3, 3, 3))
    centers = [[y, x] for y in (96.0, 256.0, 416.0) for x in (96.0, 256.0, 416.0)]
    return MotionModel(
        shape_yx=SHAPE_YX,
        pixel_size_a=PIXEL_SIZE_A,
        n_frames=n_frames,
        global_values_a_yx=torch.tensor(glob, dtype=torch.float32),
        local_values_a_yx=torch.tensor(local, dtype=torch.float32),
        patch_centers_px_yx=torch.tensor(centers, dtype=torch.float32),
    )


#: Defocus rises by this much (µm) from the left to the right edge in every item's CTF grid.
DEFOCUS_GRADIENT_X_UM = 0.2


def _ctf_model(item: FakeItem, settings: ProcessingSettings) -> CTFModel:
    """A CTFModel whose 3×3 defocus grid tilts along x by DEFOCUS_GRADIENT_X_UM (truth for the overlay)."""
    row = [item.defocus_um + DEFOCUS_GRADIENT_X_UM * f for f in (-0.5, 0.0, 0.5)]
    return CTFModel(
        defocus_um=item.defocus_um,
        defocus_delta_um=item.defocus_delta_um,
        astigmatism_angle_deg=item.astigmatism_angle_deg % 180,
        phase_shift_deg=0.0,
        resolution_a=item.resolution_a,
        figure_of_merit=0.5,
        voltage_kv=settings.ctf.voltage_kv,
        cs_mm=settings.ctf.cs_mm,
        amplitude_contrast=settings.ctf.amplitude_contrast,
        pixel_size_a=PIXEL_SIZE_A,
        image_shape_yx=SHAPE_YX,
        defocus_grid_um=[[row, row, row]],
        phase_grid_deg=[0.0],
        fit_range_a=(30.0, 4.0),
        window=256,
        plane=SpecimenPlane(0.0, 90.0, 0.0, (0.0, 0.0)),
    )


def _mask_8a(item: FakeItem) -> np.ndarray:
    """BoxNet's mask on the 8 Å grid: ``mask_percentage`` % of it, filled column by column from the right."""
    h, w = (round(n * PIXEL_SIZE_A / 8.0) for n in SHAPE_YX)
    flat = np.zeros(h * w, dtype=bool)
    flat[: round(item.mask_percentage / 100.0 * h * w)] = True
    return flat.reshape(w, h).T[:, ::-1]


def build_project(
    project_dir: Path, items: list[FakeItem], *, with_files: bool = True, seed: int = 0
) -> Path:
    """Write a project folder with a store holding ``items`` (and their artifacts if ``with_files``)."""
    rng = np.random.default_rng(seed)
    project_dir = Path(project_dir)
    settings = ProcessingSettings().updated(
        {
            "input": {"pixel_size_a": PIXEL_SIZE_A},
            "pick": {"particle_diameter_a": DIAMETER_A},
            "export": {"particle_diameter_a": DIAMETER_A, "box_size_px": 32},
        }
    )
    with ProjectStore(project_dir) as store:
        store.put_settings(settings)
        hashes = stage_hashes(settings)
        for item in items:
            store.add_item(item.name, f"/data/movies/{item.name}.tif", size_bytes=123456)
        for item in items:
            if item.status == "queued":
                continue
            if item.status == "failed":
                store.mark_running(item.name)
                store.record_result(
                    ItemResult(
                        name=item.name,
                        path=f"/data/movies/{item.name}.tif",
                        ok=False,
                        stages_run=(),
                        error="motion: movie_read: expected 10 frames of 512×512, file holds 3 — truncated",
                    )
                )
                continue
            rel = Path("items") / item.name
            artifacts = {}
            motion = _motion(item, rng)
            if with_files:
                folder = project_dir / rel
                folder.mkdir(parents=True, exist_ok=True)
                average = _average(item, rng)
                write_mrc(folder / "average.mrc", average, PIXEL_SIZE_A)
                _png(folder / "thumb.png", average[::2, ::2])
                ps, spectrum = _spectra(item, settings, rng)
                _png(folder / "ps.png", ps)
                (folder / "spectrum.json").write_text(json.dumps(spectrum))
                (folder / "motion.json").write_text(json.dumps(motion.to_dict()))
                (folder / "ctf.json").write_text(json.dumps(_ctf_model(item, settings).to_dict()))
                stack = project_dir / "particles" / f"{item.name}.mrcs"
                stack.parent.mkdir(exist_ok=True)
                write_mrc(
                    stack,
                    rng.normal(0, 1, (len(item.picks_px_xy), 32, 32)).astype(np.float32),
                    PIXEL_SIZE_A,
                    stack=True,
                )
                write_mask_tif(folder / "mask.tif", _mask_8a(item))
                artifacts = {
                    "mask": str(rel / "mask.tif"),
                    "average": str(rel / "average.mrc"),
                    "thumbnail": str(rel / "thumb.png"),
                    "spectrum_png": str(rel / "ps.png"),
                    "spectrum_json": str(rel / "spectrum.json"),
                    "motion_json": str(rel / "motion.json"),
                    "ctf_json": str(rel / "ctf.json"),
                    "particles": f"particles/{item.name}.mrcs",
                }
            u = item.defocus_um + item.defocus_delta_um / 2
            v = item.defocus_um - item.defocus_delta_um / 2
            particles = [
                {
                    "x_px": float(x),
                    "y_px": float(y),
                    "defocus_u_um": u,
                    "defocus_v_um": v,
                    "astigmatism_angle_deg": item.astigmatism_angle_deg,
                    "phase_shift_deg": 0.0,
                    "score": 0.9,
                    "source": "auto",
                }
                for x, y in item.picks_px_xy
            ]
            store.mark_running(item.name)
            store.record_result(
                ItemResult(
                    name=item.name,
                    path=f"/data/movies/{item.name}.tif",
                    ok=True,
                    stages_run=("motion", "ctf", "pick", "export"),
                    stage_hashes=hashes,
                    n_frames=10,
                    shape_yx=SHAPE_YX,
                    pixel_size_a=PIXEL_SIZE_A,
                    defocus_um=item.defocus_um,
                    defocus_delta_um=item.defocus_delta_um,
                    astigmatism_angle_deg=item.astigmatism_angle_deg,
                    phase_shift_deg=0.0,
                    resolution_a=item.resolution_a,
                    mean_motion_a=item.mean_motion_a,
                    mask_percentage=item.mask_percentage,
                    n_particles=len(particles),
                    picks_px_xy_score=[[float(x), float(y), 0.9] for x, y in item.picks_px_xy],
                    particles=particles,
                    particle_stack=f"particles/{item.name}.mrcs",
                    particle_pixel_size_a=PIXEL_SIZE_A,
                    particle_box_px=32,
                    artifacts=artifacts,
                    timings_s={"motion": 1.0, "ctf": 0.5},
                )
            )
        from cryowarp.pipeline.starfiles import write_star_files

        write_star_files(store)
    return project_dir
