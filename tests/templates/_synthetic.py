"""Test objects with exact projections: a rigid cluster of 3-D Gaussian blobs.

A 3-D Gaussian of s.d. σ projects to a 2-D Gaussian of the same σ and integral √(2π)·σ·(peak), at the
projected centre. So projections of the rotated cluster are known in closed form, independently of
the Fourier projector under test.
"""

from __future__ import annotations

import math

import torch

from cryowarp.base.geometry import euler_zyz_to_matrix
from cryowarp.base.optics import ctf_2d


def blob_cluster(
    n_blobs: int = 14, radius_a: float = 50.0, sigma_a: float = 7.0, seed: int = 7
) -> torch.Tensor:
    """`(n, 4)` blobs (x, y, z, σ) in Å: random, non-overlapping, inside a sphere (no symmetry)."""
    gen = torch.Generator().manual_seed(seed)
    pos: list[torch.Tensor] = []
    while len(pos) < n_blobs:
        q = (torch.rand(3, generator=gen, dtype=torch.float64) * 2 - 1) * radius_a
        if q.norm() < radius_a and all((q - o).norm() > 2 * sigma_a for o in pos):
            pos.append(q)
    return torch.cat([torch.stack(pos), torch.full((n_blobs, 1), sigma_a, dtype=torch.float64)], 1)


def blob_volume(blobs: torch.Tensor, box_px: int, pixel_size_a: float) -> torch.Tensor:
    """The cluster sampled on a `(B, B, B)` grid, centre at voxel B // 2 (peak value 1 per blob)."""
    c = (torch.arange(box_px, dtype=torch.float64) - box_px // 2) * pixel_size_a
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    vol = torch.zeros((box_px,) * 3, dtype=torch.float64)
    for bx, by, bz, s in blobs.tolist():
        vol += torch.exp(-((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2) / (2 * s * s))
    return vol.float()


def blob_projection(
    blobs: torch.Tensor, shape_yx: tuple[int, int], centre_px_xy, rotation: torch.Tensor, pixel_size_a: float
) -> torch.Tensor:
    """Exact line integral (in voxel units) of the rotated cluster, centred at ``centre_px_xy``."""
    h, w = shape_yx
    y, x = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    img = torch.zeros(h, w, dtype=torch.float64)
    for bx, by, bz, s in blobs.tolist():
        r = rotation.to(torch.float64) @ torch.tensor([bx, by, bz], dtype=torch.float64)
        cx = centre_px_xy[0] + float(r[0]) / pixel_size_a
        cy = centre_px_xy[1] + float(r[1]) / pixel_size_a
        sp = s / pixel_size_a
        img += math.sqrt(2 * math.pi) * sp * torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sp * sp))
    return img


def planted_micrograph(
    blobs,
    shape_yx,
    coords_px_xy,
    euler_deg,
    pixel_size_a,
    *,
    defocus_um=1.5,
    defocus_delta_um=0.1,
    astigmatism_angle_deg=20.0,
    noise_to_signal=1.0,
    seed=0,
):
    """Particles (dark, as in cryo-EM: I = −CTF ⊛ projection) plus white noise of the given relative s.d."""
    clean = torch.zeros(shape_yx, dtype=torch.float64)
    for c, e in zip(coords_px_xy, euler_deg, strict=True):
        clean += blob_projection(blobs, shape_yx, c, euler_zyz_to_matrix(*e), pixel_size_a)
    ctf = ctf_2d(
        defocus_um, defocus_delta_um, astigmatism_angle_deg, pixel_size_a=pixel_size_a, shape_yx=shape_yx
    ).double()
    img = -torch.fft.irfft2(torch.fft.rfft2(clean) * ctf, s=shape_yx)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(shape_yx, generator=gen, dtype=torch.float64) * float(img.std()) * noise_to_signal
    return (img + noise).float()
