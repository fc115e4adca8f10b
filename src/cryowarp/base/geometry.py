"""Rotations in RELION's ZYZ Euler convention (rot, tilt, psi), in degrees at the interface.

The matrix (warp-facts.md §6.1; RELION `Euler_angles2matrix`) with φ = rot, θ = tilt, ψ = psi::

    [[ cψcθcφ − sψsφ,   cψcθsφ + sψcφ,  −cψsθ],
     [−sψcθcφ − cψsφ,  −sψcθsφ + cψcφ,   sψsθ],
     [ sθcφ,            sθsφ,             cθ ]]

It maps coordinates of the reference (map) frame to the particle's image frame: a map voxel at
position r (x, y, z) appears at A·r, and the projection integrates along the resulting z. Vectors are
``(x, y, z)`` here (not yx), as in RELION.
"""

from __future__ import annotations

import math

import torch


def euler_zyz_to_matrix(rot_deg: torch.Tensor | float, tilt_deg: torch.Tensor | float,
                        psi_deg: torch.Tensor | float) -> torch.Tensor:
    """RELION ZYZ Euler angles (degrees) to rotation matrices `(..., 3, 3)` acting on (x, y, z)."""
    tensors = [a for a in (rot_deg, tilt_deg, psi_deg) if isinstance(a, torch.Tensor)]
    device = tensors[0].device if tensors else None
    dtype = tensors[0].dtype if tensors and tensors[0].is_floating_point() else torch.float64
    rot, tilt, psi = (torch.deg2rad(torch.as_tensor(a, dtype=dtype, device=device))
                      for a in (rot_deg, tilt_deg, psi_deg))
    rot, tilt, psi = torch.broadcast_tensors(rot, tilt, psi)
    ca, sa = torch.cos(rot), torch.sin(rot)
    cb, sb = torch.cos(tilt), torch.sin(tilt)
    cg, sg = torch.cos(psi), torch.sin(psi)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = [
        torch.stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb], -1),
        torch.stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb], -1),
        torch.stack([sc, ss, cb], -1),
    ]
    return torch.stack(rows, -2)


def matrix_to_euler_zyz(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_zyz_to_matrix`: `(..., 3, 3)` → `(..., 3)` (rot, tilt, psi) in degrees.

    Tilt is in [0, 180]; at the gimbal lock (tilt 0 or 180) psi is set to 0 and rot carries the angle.
    """
    m = matrix
    tilt = torch.acos(m[..., 2, 2].clamp(-1.0, 1.0))
    sin_tilt = torch.sin(tilt)
    regular = sin_tilt.abs() > 1e-6
    rot = torch.where(regular, torch.atan2(m[..., 2, 1], m[..., 2, 0]), torch.atan2(-m[..., 1, 0], m[..., 0, 0]))
    psi = torch.where(regular, torch.atan2(m[..., 1, 2], -m[..., 0, 2]), torch.zeros_like(tilt))
    # at tilt = 180° the (0,0)/(1,0) entries flip sign with cos(tilt) = −1
    flipped = (~regular) & (m[..., 2, 2] < 0)
    rot = torch.where(flipped, torch.atan2(-m[..., 1, 0], -m[..., 0, 0]), rot)
    return torch.rad2deg(torch.stack([rot, tilt, psi], -1))


def random_rotations(n: int, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> torch.Tensor:
    """``n`` rotation matrices uniformly distributed on SO(3) (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return quaternion_to_matrix(q).to(device)


def quaternion_to_matrix(q_wxyz: torch.Tensor) -> torch.Tensor:
    """Unit quaternions `(..., 4)` (w, x, y, z) to rotation matrices `(..., 3, 3)`."""
    w, x, y, z = q_wxyz.unbind(-1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def angular_distance_deg(matrix_a: torch.Tensor, matrix_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between rotations `(..., 3, 3)`, degrees in [0, 180]."""
    relative = matrix_a @ matrix_b.transpose(-1, -2)
    trace = relative.diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.rad2deg(torch.acos(((trace - 1.0) / 2.0).clamp(-1.0, 1.0)))


def rotation_about_axis(axis_xyz: tuple[float, float, float], angle_deg: float,
                        dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Active right-handed rotation by ``angle_deg`` about a unit ``axis_xyz`` (Rodrigues)."""
    axis = torch.tensor(axis_xyz, dtype=dtype)
    axis = axis / torch.linalg.vector_norm(axis)
    half = math.radians(angle_deg) / 2.0
    q = torch.cat([torch.tensor([math.cos(half)], dtype=dtype), axis * math.sin(half)])
    return quaternion_to_matrix(q)
