"""Helpers for pipeline tests: hand-made ItemResults recorded as a worker would."""

from __future__ import annotations

import numpy as np
import pytest

from cryowarp.io.mrc import write_mrc
from cryowarp.pipeline.results import ItemResult
from cryowarp.pipeline.settings import ProcessingSettings, stage_hashes


def make_result(
    project_dir,
    name,
    *,
    n_particles=3,
    defocus_um=1.5,
    resolution_a=3.5,
    settings=None,
    box_px=32,
    pixel_size_a=1.0,
    write_stack=True,
    seed=0,
    float16=False,
) -> ItemResult:
    """A complete ItemResult for movie ``name`` (stack written when ``write_stack``)."""
    settings = settings or ProcessingSettings()
    rng = np.random.default_rng(seed)
    coords = rng.uniform(100, 900, size=(n_particles, 2))
    stack = f"particles/{name}.mrcs"
    if write_stack and n_particles:
        write_mrc(
            project_dir / stack,
            rng.normal(size=(n_particles, box_px, box_px)).astype(np.float32),
            pixel_size_a,
            float16=float16,
            stack=True,
        )
    average = f"items/{name}/average.mrc"
    if write_stack:
        write_mrc(project_dir / average, np.zeros((64, 64), np.float32), pixel_size_a)
    particles = [
        {
            "x_px": float(x),
            "y_px": float(y),
            "defocus_u_um": defocus_um + 0.05,
            "defocus_v_um": defocus_um - 0.05,
            "astigmatism_angle_deg": 30.0,
            "phase_shift_deg": 0.0,
            "score": 0.9,
            "source": "auto",
        }
        for x, y in coords
    ]
    return ItemResult(
        name=name,
        path=f"/movies/{name}.mrc",
        ok=True,
        stages_run=settings.enabled_stages(),
        stage_hashes=stage_hashes(settings),
        n_frames=10,
        shape_yx=(1024, 1024),
        pixel_size_a=pixel_size_a,
        defocus_um=defocus_um,
        defocus_delta_um=0.1,
        astigmatism_angle_deg=30.0,
        phase_shift_deg=0.0,
        resolution_a=resolution_a,
        mean_motion_a=1.0,
        mask_percentage=0.5,
        n_particles=n_particles,
        picks_px_xy_score=[[float(x), float(y), 0.9] for x, y in coords],
        particles=particles,
        particle_stack=stack if n_particles else None,
        particle_pixel_size_a=pixel_size_a,
        particle_box_px=box_px,
        artifacts={"average": average},
        timings_s={"motion": 1.0},
    )


@pytest.fixture
def result_factory():
    """``make_result`` as a fixture."""
    return make_result
