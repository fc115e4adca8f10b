"""Tilt-series geometry (warp-facts.md §6.1): per-tilt rotation matrices in RELION's ZYZ convention.

A tomogram point c (Å or voxels, relative to the volume centre, (x, y, z)) appears in tilt t at
q = R_t·c, with R_t = Euler(0, θ_t, −ψ_t) (θ the tilt angle, ψ the tilt-axis angle from +x towards +y,
LevelX/LevelY = 0); the image position is q_xy and q_z is the height along the beam (+z towards the
source, i.e. more underfocus). With ψ = 0 the tilt axis is the y axis.
"""

from __future__ import annotations

import torch

from cryowarp.base.geometry import euler_zyz_to_matrix

__all__ = ["tilt_matrices"]


def tilt_matrices(
    tilt_angles_deg: torch.Tensor, tilt_axis_angle_deg: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """`(T, 3, 3)` matrices R_t = Euler(0, θ_t, −ψ_t) acting on (x, y, z) (warp-facts.md §6.1)."""
    tilt = torch.as_tensor(tilt_angles_deg, dtype=torch.float64)
    axis = torch.as_tensor(tilt_axis_angle_deg, dtype=torch.float64).expand_as(tilt)
    return euler_zyz_to_matrix(torch.zeros_like(tilt), tilt, -axis)
