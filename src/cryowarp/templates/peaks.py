"""Peak finding on score maps: local maxima above a floor, thinned to a minimum distance."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["find_peaks", "thin_peaks", "parabolic_offsets", "score_map_peaks"]


def thin_peaks(coords: torch.Tensor, scores: torch.Tensor, min_distance_px: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of peaks kept, best first, none closer than the distance."""
    order = torch.argsort(scores, descending=True)
    coords = coords[order].to(torch.float64)
    kept: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=coords.device)
    d2 = min_distance_px**2
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        close = ((coords[i + 1 :] - coords[i]) ** 2).sum(-1) < d2
        suppressed[i + 1 :] |= close
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]


def find_peaks(
    scores: torch.Tensor, floor: float, min_distance_px: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local maxima of a 2-D or 3-D score map above ``floor``, at least ``min_distance_px`` apart.

    Parameters
    ----------
    scores : torch.Tensor
        `(h, w)` or `(d, h, w)` map.
    floor : float
        Only maxima strictly above this value are returned.
    min_distance_px : float
        Minimum Euclidean distance between returned peaks (greedy, best first).

    Returns
    -------
    index : torch.Tensor
        `(n, ndim)` integer positions in array order (y, x) or (z, y, x), best first.
    values : torch.Tensor
        `(n,)` scores at those positions.
    """
    ndim = scores.ndim
    if ndim not in (2, 3):
        raise ValueError(f"find_peaks: expected a 2-D or 3-D map, found shape {tuple(scores.shape)}")
    radius = max(1, int(math.floor(min_distance_px / math.sqrt(ndim))))  # window inside the exclusion disc
    # the maximum over a (2r+1)^ndim window is separable: one 1-D pass per axis, O(n·r) not O(n·r^ndim)
    local_max = scores[None, None]
    pool = F.max_pool2d if ndim == 2 else F.max_pool3d
    for axis in range(ndim):
        kernel = [1] * ndim
        kernel[axis] = 2 * radius + 1
        padding = [0] * ndim
        padding[axis] = radius
        local_max = pool(local_max, tuple(kernel), stride=1, padding=tuple(padding))
    local_max = local_max[0, 0]
    candidates = (scores >= local_max) & (scores > floor)
    index = torch.nonzero(candidates)
    values = scores[candidates]
    if len(index) == 0:
        return index, values
    keep = thin_peaks(index, values, min_distance_px)
    return index[keep], values[keep]


def parabolic_offsets(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Sub-pixel offsets `(n, ndim)` in [−0.5, 0.5] from a 3-point parabola along each axis."""
    offsets = torch.zeros(index.shape, dtype=torch.float64, device=scores.device)
    for axis in range(scores.ndim):
        size = scores.shape[axis]
        ok = (index[:, axis] > 0) & (index[:, axis] < size - 1)
        lo, hi = index.clone(), index.clone()
        lo[:, axis] -= 1
        hi[:, axis] += 1
        lo = lo.clamp_min(0)
        hi[:, axis] = hi[:, axis].clamp_max(size - 1)
        c = scores[tuple(index.T)].to(torch.float64)
        a = scores[tuple(lo.T)].to(torch.float64)
        b = scores[tuple(hi.T)].to(torch.float64)
        denom = a - 2 * c + b
        off = torch.where(denom < 0, 0.5 * (a - b) / denom.clamp(max=-1e-12), torch.zeros_like(c))
        offsets[:, axis] = torch.where(ok, off.clamp(-0.5, 0.5), torch.zeros_like(off))
    return offsets


def score_map_peaks(
    scores: torch.Tensor, border_px: int, floor_sigma: float, min_distance_px: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The peaks of a 2-D or 3-D matching score map, as both template matchers report them.

    Zeroes ``border_px`` on every side of ``scores`` (in place), sets the floor to mean + ``floor_sigma`` ×
    s.d. of the non-zero scores, and returns the thinned local maxima above it.

    Returns
    -------
    index : torch.Tensor
        `(n, ndim)` integer positions in array order, best first (on the device of ``scores``).
    position : torch.Tensor
        `(n, ndim)` float64 sub-pixel positions (parabolic), on the CPU.
    values : torch.Tensor
        `(n,)` float64 scores, on the CPU.
    floor : float
        The score floor used.
    """
    if border_px > 0:
        for axis in range(scores.ndim):
            scores.narrow(axis, 0, border_px).zero_()
            scores.narrow(axis, scores.shape[axis] - border_px, border_px).zero_()
    nonzero = scores[scores != 0]
    floor = float(nonzero.mean() + floor_sigma * nonzero.std()) if len(nonzero) > 1 else 0.0
    index, values = find_peaks(scores, floor, min_distance_px)
    position = (index.to(torch.float64) + parabolic_offsets(scores, index)).cpu()
    return index, position, values.cpu().to(torch.float64), floor
