"""Settings of motion estimation, with Warp's defaults (warp-facts.md §1)."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class MotionSettings(BaseModel):
    """How to fit the motion model of a movie.

    Defaults are WarpTools' ``fs_motion`` (warp-facts.md §1.1–1.4): 768-px patches with 50 % overlap,
    frequencies 500–10 Å, B-factor −500 Å², automatic grid sizing from the exposure and the field of
    view, 10 L-BFGS iterations per coarse-to-fine stage.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    patch_size_px: int = Field(768, ge=32, description="patch (region) size in movie pixels, Warp: 768")
    range_low_a: float = Field(500.0, gt=0, description="lowest resolution used, Å (Warp: 500)")
    range_high_a: float = Field(10.0, gt=0, description="highest resolution used, Å (WarpTools: 10)")
    bfactor_a2: float = Field(-500.0, description="B-factor weighting of the cost, Å² (Warp: −500)")
    grid_xyt: tuple[int, int, int] | None = Field(
        None, description="local grid X×Y and global temporal nodes Z; None = WarpTools' automatic sizing"
    )
    local_temporal_nodes: int = Field(4, ge=1, description="temporal nodes of the local grid (Warp: 4)")
    max_iterations: int = Field(10, ge=1, description="L-BFGS iterations per stage (Warp: 10)")
    prealign: bool = Field(
        True,
        description="initialise the global track by iterative cross-correlation of whole (binned) frames; "
        "widens the capture range for large drift and jumps (not in Warp)",
    )


def auto_grid_xyt(
    shape_yx: tuple[int, int], pixel_size_a: float, n_frames: int, exposure_per_frame_e_per_a2: float
) -> tuple[int, int, int]:
    """WarpTools' automatic grid: Z = ceil(max(1, total exposure)) capped at the frame count, the short
    side's XY = max(1, round(5·min(1, exposure/30)·(short side in Å / 4000))), the long side scaled by
    the aspect ratio (warp-facts.md §1.2). Returns ``(x, y, z)``."""
    total = n_frames * exposure_per_frame_e_per_a2
    z = min(n_frames, math.ceil(max(1.0, total)))
    h, w = shape_yx
    short_a = min(h, w) * pixel_size_a
    short = max(1, round(5 * min(1.0, total / 30.0) * (short_a / 4000.0)))
    if w >= h:
        y, x = short, max(1, round(short * w / h))
    else:
        x, y = short, max(1, round(short * h / w))
    return x, y, z
