"""Settings of motion estimation, with Warp's defaults (warp-facts.md §1)."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from cryowarp.motion.model import patch_centers_1d


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
    small_field_patches: int = Field(
        7,
        ge=0,
        description="small fields (not in Warp): when fewer than this many patches of patch_size_px fit "
        "across the short side at 50 % overlap, shrink the patches so that this many fit (not below "
        "small_field_min_patch_px), give the automatic local grid one node per patch on each axis, and fit "
        "with frequencies up to small_field_range_high_a and B-factor small_field_bfactor_a2; 0 = never",
    )
    small_field_min_patch_px: int = Field(256, ge=32, description="smallest patch of the small-field layout, px")
    small_field_range_high_a: float = Field(
        6.0, gt=0, description="highest resolution of a small-field fit, Å (the finer of this and range_high_a)"
    )
    small_field_bfactor_a2: float = Field(-150.0, description="B-factor weighting of a small-field fit, Å²")
    prealign: bool = Field(
        True,
        description="initialise the global track by iterative cross-correlation of whole (binned) frames; "
        "widens the capture range for large drift and jumps (not in Warp)",
    )


class FitLayout(BaseModel):
    """Patch size, frequency range, B-factor and local-grid override the fit actually uses."""

    model_config = ConfigDict(frozen=True)

    patch_size_px: int
    range_high_a: float
    bfactor_a2: float
    local_grid_xy: tuple[int, int] | None = None

    @property
    def small_field(self) -> bool:
        """Whether this is the small-field layout (the only one that sets its own local grid)."""
        return self.local_grid_xy is not None


def fit_layout(shape_yx: tuple[int, int], settings: MotionSettings) -> FitLayout:
    """The layout of a fit: Warp's, or the small-field one (see ``MotionSettings.small_field_patches``).

    With Warp's 768-px patches a 1536-px frame holds only 3 × 3 patches (centres at ¼, ½, ¾ of the
    frame) and the automatic local grid is 2 × 2, a plane through those centres extrapolated to the
    frame edges; on the end-to-end benchmark's movies that is *worse* than no local model at all
    (docs/benchmarks/motion.md, "Local motion on small fields"). The small-field layout uses patches of
    ⌊2·short/(n + 1)⌋ px (n of them across the short side at 50 % overlap) and one local node per patch.
    """
    h, w = shape_yx
    short = min(h, w)
    n_min = settings.small_field_patches
    warp = FitLayout(
        patch_size_px=settings.patch_size_px,
        range_high_a=settings.range_high_a,
        bfactor_a2=settings.bfactor_a2,
    )
    patch = min(settings.patch_size_px, short)
    if n_min <= 1 or len(patch_centers_1d(short, patch - patch % 2)) >= n_min:
        return warp
    small = 2 * short // (n_min + 1)
    small -= small % 2
    if small < settings.small_field_min_patch_px:
        return warp
    return FitLayout(
        patch_size_px=small,
        range_high_a=min(settings.range_high_a, settings.small_field_range_high_a),
        bfactor_a2=settings.small_field_bfactor_a2,
        local_grid_xy=(len(patch_centers_1d(w, small)), len(patch_centers_1d(h, small))),
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
