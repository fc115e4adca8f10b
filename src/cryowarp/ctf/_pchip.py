"""Piecewise cubic Hermite interpolation (PCHIP, Fritsch–Carlson / Matlab style) in torch."""

from __future__ import annotations

import torch


def _end_slope(h0: torch.Tensor, h1: torch.Tensor, d0: torch.Tensor, d1: torch.Tensor) -> torch.Tensor:
    """Shape-preserving three-point end derivative (as Matlab's and scipy's pchip)."""
    slope = ((2.0 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    slope = torch.where(torch.sign(slope) != torch.sign(d0), torch.zeros_like(slope), slope)
    too_steep = (torch.sign(d0) != torch.sign(d1)) & (slope.abs() > 3.0 * d0.abs())
    return torch.where(too_steep, 3.0 * d0, slope)


def pchip_interpolate(x_nodes: torch.Tensor, y_nodes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Evaluate the PCHIP through ``(x_nodes, y_nodes)`` at ``x``; linear extrapolation outside.

    Parameters
    ----------
    x_nodes : torch.Tensor
        `(n,)` strictly increasing abscissae, n ≥ 1.
    y_nodes : torch.Tensor
        `(n,)` values.
    x : torch.Tensor
        `(m,)` where to evaluate.

    Returns
    -------
    y : torch.Tensor
        `(m,)`. One node gives a constant, two a straight line. Outside the nodes the curve continues
        as a straight line with the end derivative (Warp's Cubic1D does the same; warp-facts.md §2.3).
    """
    x_nodes = x_nodes.to(x.dtype)
    y_nodes = y_nodes.to(x.dtype)
    n = x_nodes.numel()
    if n == 1:
        return y_nodes.expand_as(x).clone()
    h = x_nodes[1:] - x_nodes[:-1]
    delta = (y_nodes[1:] - y_nodes[:-1]) / h
    slopes = torch.zeros_like(y_nodes)
    if n == 2:
        slopes[:] = delta[0]
    else:
        w1 = 2.0 * h[1:] + h[:-1]
        w2 = h[1:] + 2.0 * h[:-1]
        same_sign = (delta[:-1] * delta[1:]) > 0
        safe_prev = torch.where(same_sign, delta[:-1], torch.ones_like(delta[:-1]))
        safe_next = torch.where(same_sign, delta[1:], torch.ones_like(delta[1:]))
        harmonic = (w1 + w2) / (w1 / safe_prev + w2 / safe_next)
        slopes[1:-1] = torch.where(same_sign, harmonic, torch.zeros_like(harmonic))
        slopes[0] = _end_slope(h[0], h[1], delta[0], delta[1])
        slopes[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])

    index = torch.searchsorted(x_nodes, x.contiguous(), right=True).sub(1).clamp(0, n - 2)
    x0, x1 = x_nodes[index], x_nodes[index + 1]
    y0, y1 = y_nodes[index], y_nodes[index + 1]
    m0, m1 = slopes[index], slopes[index + 1]
    width = x1 - x0
    t = (x - x0) / width
    t2, t3 = t * t, t * t * t
    inside = (
        (2 * t3 - 3 * t2 + 1) * y0
        + (t3 - 2 * t2 + t) * width * m0
        + (-2 * t3 + 3 * t2) * y1
        + (t3 - t2) * width * m1
    )
    below = y_nodes[0] + slopes[0] * (x - x_nodes[0])
    above = y_nodes[-1] + slopes[-1] * (x - x_nodes[-1])
    return torch.where(x < x_nodes[0], below, torch.where(x > x_nodes[-1], above, inside))
