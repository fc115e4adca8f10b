"""Local orientation refinement of template-matching peaks (finer than the exhaustive grid).

An exhaustive search on a grid of step s leaves an orientation error of up to about s (the grid's
covering radius plus noise). Around each peak we search again, only in a box around the peak:

* level 1: rotations ΔR·R₀ with ΔR = exp([v]ₓ), v on a cubic lattice of spacing s/3 inside the ball
  |v| ≤ s (123 rotations, the identity included), positions within ±2 px/voxels;
* level 2: the same around the level-1 winner with spacing s/9 inside |v| ≤ s/3, ±1 px.

The score of every candidate is computed exactly as in the exhaustive search (same matched-filtered
data, same per-orientation Parseval normalisation, same local-s.d. factor), so refined scores are
comparable with the coarse ones and never lower (the identity at zero shift is a candidate). The
geodesic distance between ΔR·R₀ and R₀ is |v|, so the lattice samples orientation space uniformly
to first order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["RefinedPeak", "axis_angle_to_matrix", "local_rotation_offsets", "refine_peak", "refine_levels"]

#: kernels(mats (m, 3, 3) float64) -> (real-space templates (m, B, …) centred at B//2, inverse s.d. (m,))
KernelFunction = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: factor(positions (k, ndim) int64, local to the data block) -> (k,) local-normalisation factor
FactorFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RefinedPeak:
    """Result of :func:`refine_peak`: the best rotation, position (local, sub-pixel) and score."""

    rotation: torch.Tensor  # (3, 3) float64
    position: torch.Tensor  # (ndim,) float64, in the block's index space
    score: float


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rotation matrices `(..., 3, 3)` of rotation vectors `(..., 3)` (axis × angle in radians, Rodrigues)."""
    v = v.to(torch.float64)
    angle = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    axis = v / angle.clamp_min(1e-300)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)], -2)
    a = angle[..., None]
    eye = torch.eye(3, dtype=torch.float64, device=v.device).expand(k.shape)
    return eye + torch.sin(a) * k + (1.0 - torch.cos(a)) * (k @ k)


def local_rotation_offsets(radius_deg: float, spacing_deg: float) -> torch.Tensor:
    """`(m, 3, 3)` rotations exp([v]ₓ) for v on a cubic lattice of ``spacing_deg`` with |v| ≤ ``radius_deg``.

    The identity comes first.
    """
    if spacing_deg <= 0 or radius_deg < 0:
        raise ValueError(f"local rotations: need spacing > 0 and radius ≥ 0, got {spacing_deg}, {radius_deg}")
    n = int(math.floor(radius_deg / spacing_deg + 1e-9))
    r = torch.arange(-n, n + 1, dtype=torch.float64)
    lattice = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    norm = torch.linalg.vector_norm(lattice, dim=-1)
    lattice = lattice[norm * spacing_deg <= radius_deg + 1e-9]
    lattice = lattice[torch.argsort(torch.linalg.vector_norm(lattice, dim=-1), stable=True)]
    return axis_angle_to_matrix(torch.deg2rad(lattice * spacing_deg))


def refine_levels(step_deg: float, n_levels: int = 2) -> list[tuple[float, float, int]]:
    """(radius °, spacing °, shift px) per level: (s, s/3, 2), (s/3, s/9, 1), … for a grid step s."""
    levels = []
    radius = float(step_deg)
    for i in range(n_levels):
        levels.append((radius, radius / 3.0, 2 if i == 0 else 1))
        radius /= 3.0
    return levels


def _cyclic_window(data: torch.Tensor, lo: list[int], size: int) -> torch.Tensor:
    """The cube of side ``size`` starting at ``lo`` (may be negative or run past the end), wrapping."""
    index = [torch.arange(start, start + size, device=data.device) % n for start, n in zip(lo, data.shape, strict=True)]
    if data.ndim == 2:
        return data[index[0][:, None], index[1][None, :]]
    return data[index[0][:, None, None], index[1][None, :, None], index[2][None, None, :]]


def refine_peak(
    data: torch.Tensor,
    position: torch.Tensor,
    rotation: torch.Tensor,
    kernels: KernelFunction,
    factor: FactorFunction | None,
    levels: list[tuple[float, float, int]],
) -> RefinedPeak:
    """Refine one peak's orientation (and integer position, then sub-pixel) by local re-correlation.

    Parameters
    ----------
    data : torch.Tensor
        `(h, w)` or `(d, h, w)` matched-filtered data block (the tile or sub-volume the coarse search
        correlated, real space), treated as periodic as the FFT correlation did.
    position : torch.Tensor
        `(ndim,)` integer index of the coarse peak in ``data``.
    rotation : torch.Tensor
        `(3, 3)` coarse best rotation (RELION matrix).
    kernels : callable
        Templates and their normalisation for a set of rotations (see ``KernelFunction``); the score of
        template t at position u is Σ_y data[u + y] · t[B//2 + y] × inv_sd × factor(u).
    factor : callable or None
        Local-normalisation factor at positions (None: 1).
    levels : list of (radius °, spacing °, shift px)
        From :func:`refine_levels`.

    Returns
    -------
    peak : RefinedPeak
    """
    ndim = data.ndim
    pos = position.to(torch.int64).cpu().clone()
    rot = rotation.to(torch.float64).cpu()
    best_score = -math.inf
    best_map = None
    for radius, spacing, r in levels:
        mats = local_rotation_offsets(radius, spacing) @ rot
        templates, inv_sd = kernels(mats)
        box = templates.shape[-1]
        size = box + 2 * r
        window = _cyclic_window(data, [int(p) - box // 2 - r for p in pos], size)
        dims = tuple(range(-ndim, 0))
        padded = templates.new_zeros((len(templates),) + (size,) * ndim)
        padded[(slice(None),) + (slice(0, box),) * ndim] = templates
        # cross-correlation: out[s] = Σ_a window[s + a]·t[a], valid for s ∈ [0, 2r]
        cc = torch.fft.irfftn(
            torch.fft.rfftn(window, dim=dims)[None] * torch.fft.rfftn(padded, dim=dims).conj(),
            s=(size,) * ndim,
            dim=dims,
        )[(slice(None),) + (slice(0, 2 * r + 1),) * ndim]
        cc = cc * inv_sd.reshape((-1,) + (1,) * ndim).to(cc)
        if factor is not None:
            offs = torch.stack(torch.meshgrid(*[torch.arange(-r, r + 1)] * ndim, indexing="ij"), -1).reshape(-1, ndim)
            f = factor(pos[None] + offs).reshape((2 * r + 1,) * ndim).to(cc)
            cc = cc * f
        flat = int(cc.reshape(-1).argmax())
        o, rest = divmod(flat, (2 * r + 1) ** ndim)
        shift = [int(s) for s in torch.unravel_index(torch.tensor(rest), (2 * r + 1,) * ndim)]
        score = float(cc.reshape(-1)[flat])
        if score >= best_score:
            best_score = score
            rot = mats[o]
            pos = pos + torch.tensor([int(s) - r for s in shift], dtype=torch.int64)
            best_map = (cc[o], shift)
    # sub-pixel: 3-point parabola along each axis of the last level's best map
    out = pos.to(torch.float64)
    if best_map is not None:
        values, centre = best_map
        for axis in range(ndim):
            c = centre[axis]
            if 0 < c < values.shape[axis] - 1:
                idx = list(centre)
                a = values[tuple(idx[:axis] + [c - 1] + idx[axis + 1 :])]
                b = values[tuple(idx[:axis] + [c + 1] + idx[axis + 1 :])]
                m = values[tuple(idx)]
                denom = float(a - 2 * m + b)
                if denom < 0:
                    out[axis] += max(-0.5, min(0.5, 0.5 * float(a - b) / denom))
    return RefinedPeak(rot, out, best_score)
