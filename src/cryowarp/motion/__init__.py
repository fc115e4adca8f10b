"""Motion correction as Warp: global + local motion on cubic-spline grids, aligned dose-weighted averages.

``fit_motion(frames, pixel_size_a, exposure_per_frame_e_per_a2, settings) -> MotionModel`` and
``average_frames(frames, model, ...) -> AlignedAverage`` (docs/api-contracts.md, warp-facts.md §1).
"""

from cryowarp.motion.average import AlignedAverage, average_frames
from cryowarp.motion.fit import fit_motion
from cryowarp.motion.model import MotionModel, patch_centers_1d
from cryowarp.motion.settings import FitLayout, MotionSettings, auto_grid_xyt, fit_layout

__all__ = [
    "AlignedAverage",
    "FitLayout",
    "MotionModel",
    "MotionSettings",
    "auto_grid_xyt",
    "average_frames",
    "fit_layout",
    "fit_motion",
    "patch_centers_1d",
]
