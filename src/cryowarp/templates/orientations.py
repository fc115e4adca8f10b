"""Orientation grids for exhaustive searches: HEALPix directions × in-plane angles (RELION ZYZ).

RELION and Warp sample the sphere of projection directions with HEALPix (Górski et al. 2005): order n
gives N_side = 2ⁿ and 12·N_side² equal-area pixels, with an angular step of 60°/N_side; psi is
sampled with the same step (warp-facts.md §4.1). We evaluate the HEALPix ring-scheme pixel centres
for *any* N_side = ⌈60°/step⌉, so a step of 10° (N_side 6) is as available as 7.5° (order 3).
"""

from __future__ import annotations

import math

import torch

from cryowarp.base.geometry import euler_zyz_to_matrix

__all__ = ["healpix_nside_for_step", "healpix_directions", "orientation_grid", "orientation_matrices"]


def healpix_nside_for_step(angular_step_deg: float) -> int:
    """Smallest N_side whose HEALPix step 60°/N_side is at most ``angular_step_deg``."""
    if not 0.0 < angular_step_deg <= 60.0:
        raise ValueError(f"angular step must be in (0, 60] degrees, got {angular_step_deg}")
    return max(1, math.ceil(60.0 / angular_step_deg - 1e-9))


def healpix_directions(nside: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Centres of the 12·N_side² HEALPix pixels (ring scheme) as `(n, 2)` (theta, phi) in degrees.

    theta is the polar angle from +z (= RELION tilt), phi the azimuth from +x (= RELION rot).
    """
    if nside < 1:
        raise ValueError(f"nside must be ≥ 1, got {nside}")
    npix = 12 * nside * nside
    ncap = 2 * nside * (nside - 1)
    p = torch.arange(npix, dtype=torch.int64)
    z = torch.empty(npix, dtype=dtype)
    phi = torch.empty(npix, dtype=dtype)
    # north polar cap
    north = p < ncap
    pn = p[north]
    ring = (1 + torch.sqrt(1 + 2 * pn.to(dtype)).floor().long()) // 2
    # guard the integer square root against rounding
    ring = torch.where(2 * ring * (ring - 1) > pn, ring - 1, ring)
    ring = torch.where(2 * (ring + 1) * ring <= pn, ring + 1, ring)
    iphi = pn + 1 - 2 * ring * (ring - 1)
    z[north] = 1.0 - ring.to(dtype) ** 2 * 4.0 / npix
    phi[north] = (iphi.to(dtype) - 0.5) * (math.pi / 2) / ring.to(dtype)
    # equatorial belt
    belt = (p >= ncap) & (p < npix - ncap)
    pe = p[belt] - ncap
    ring = pe // (4 * nside) + nside
    iphi = pe % (4 * nside) + 1
    fodd = torch.where((ring + nside) % 2 == 1, 1.0, 0.5).to(dtype)
    z[belt] = (2 * nside - ring).to(dtype) * 2.0 / (3.0 * nside)
    phi[belt] = (iphi.to(dtype) - fodd) * math.pi / (2 * nside)
    # south polar cap: mirror of the north
    south = p >= npix - ncap
    ps = npix - p[south]
    ring = (1 + torch.sqrt(2 * ps.to(dtype) - 1).floor().long()) // 2
    ring = torch.where(2 * ring * (ring - 1) >= ps, ring - 1, ring)
    ring = torch.where(2 * (ring + 1) * ring < ps, ring + 1, ring)
    iphi = 4 * ring + 1 - (ps - 2 * ring * (ring - 1))
    z[south] = -1.0 + ring.to(dtype) ** 2 * 4.0 / npix
    phi[south] = (iphi.to(dtype) - 0.5) * (math.pi / 2) / ring.to(dtype)
    theta = torch.acos(z.clamp(-1.0, 1.0))
    return torch.rad2deg(torch.stack([theta, phi], -1))


def orientation_grid(
    angular_step_deg: float,
    *,
    psi_step_deg: float | None = None,
    tilt_range_deg: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """All orientations of an exhaustive search as `(m, 3)` RELION (rot, tilt, psi) in degrees.

    Parameters
    ----------
    angular_step_deg : float
        Step between neighbouring projection directions; HEALPix N_side = ⌈60/step⌉.
    psi_step_deg : float, optional
        In-plane step; defaults to the HEALPix step 60/N_side (as RELION and Warp).
    tilt_range_deg : float, optional
        Keep only directions whose z component satisfies |cos(tilt)| ≤ sin(range) (Warp's
        ``--tilt_range``: e.g. membrane proteins lying roughly flat in the membrane).
    dtype : torch.dtype
        Floating type of the result.

    Returns
    -------
    euler_deg : torch.Tensor
        `(m, 3)`; directions vary slowest, psi fastest.
    """
    nside = healpix_nside_for_step(angular_step_deg)
    directions = healpix_directions(nside, dtype=dtype)
    if tilt_range_deg is not None:
        keep = (
            torch.cos(torch.deg2rad(directions[:, 0])).abs() <= math.sin(math.radians(tilt_range_deg)) + 1e-9
        )
        directions = directions[keep]
    psi_step = psi_step_deg if psi_step_deg is not None else 60.0 / nside
    n_psi = max(1, round(360.0 / psi_step))
    psi = torch.arange(n_psi, dtype=dtype) * (360.0 / n_psi)
    rot = directions[:, 1, None].expand(-1, n_psi)
    tilt = directions[:, 0, None].expand(-1, n_psi)
    return torch.stack([rot, tilt, psi[None, :].expand(len(directions), -1)], -1).reshape(-1, 3)


def orientation_matrices(euler_deg: torch.Tensor) -> torch.Tensor:
    """RELION ZYZ matrices `(m, 3, 3)` for `(m, 3)` Euler angles in degrees."""
    return euler_zyz_to_matrix(euler_deg[..., 0], euler_deg[..., 1], euler_deg[..., 2])
