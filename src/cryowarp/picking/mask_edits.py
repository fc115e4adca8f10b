"""A user's brush strokes on BoxNet's artefact mask (training labels for retraining, warp-facts.md §3.6).

Warp's retraining workflow lets the user paint the mask of a corrected micrograph before it becomes a
training example (label 2 = artefact). We keep the strokes, not the painted raster, in the micrograph's
own pixels, like pick removals: they apply to whatever mask the current model predicts, so a re-pick
with another model keeps the user's edits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["MaskStroke", "apply_mask_strokes"]


@dataclass(frozen=True)
class MaskStroke:
    """One brush stroke: discs of ``radius_px`` along the polyline ``points_px_xy``.

    Attributes
    ----------
    paint : bool
        True marks artefact, False erases.
    radius_px : float
        Brush radius in pixels of the full micrograph.
    points_px_xy : tuple of (float, float)
        The stroke's path in pixels of the full micrograph (one point = a single dab).
    """

    paint: bool
    radius_px: float
    points_px_xy: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.radius_px) and self.radius_px > 0):
            raise ValueError(f"brush radius must be a positive number of pixels, got {self.radius_px}")
        if not self.points_px_xy:
            raise ValueError("a stroke needs at least one point")
        if not all(len(p) == 2 and all(math.isfinite(float(v)) for v in p) for p in self.points_px_xy):
            raise ValueError("stroke points must be finite (x, y) pairs")


def apply_mask_strokes(
    mask: torch.Tensor,
    strokes: Sequence[MaskStroke],
    scale_xy: tuple[float, float],
) -> torch.Tensor:
    """The mask after the strokes, in order (later strokes win).

    Parameters
    ----------
    mask : torch.Tensor
        `(h, w)` artefact mask on BoxNet's 8 Å grid (bool, or > 0.5 = artefact).
    strokes : sequence of MaskStroke
        In pixels of the full micrograph.
    scale_xy : (float, float)
        Micrograph pixels per mask pixel along x and y (``prepare_boxnet_input``'s ``scale_xy``, or the
        ratio of the micrograph's and the mask's sizes).

    Returns
    -------
    mask : torch.Tensor
        `(h, w)` bool. A disc covers the mask pixels whose centres lie within the radius of the path
        (mask pixel i sits at micrograph pixel i·scale, the sampling of the Fourier rescale that made
        the mask grid, as for the picks).
    """
    out = (mask > 0.5) if mask.dtype != torch.bool else mask.clone()
    h, w = out.shape
    sx, sy = float(scale_xy[0]), float(scale_xy[1])
    # mask pixel positions in micrograph pixels
    xs = torch.arange(w, dtype=torch.float32, device=out.device) * sx
    ys = torch.arange(h, dtype=torch.float32, device=out.device) * sy
    for stroke in strokes:
        covered = _stroke_cover(stroke, xs, ys)
        out[covered] = stroke.paint
    return out


def _stroke_cover(stroke: MaskStroke, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Pixels within ``radius`` of the stroke's polyline (distance to each segment, not just the points).

    Each segment is evaluated only on the pixels of its bounding box (± radius), so the cost grows with
    the painted area, not with the mask size × the number of segments.
    """
    pts = stroke.points_px_xy if len(stroke.points_px_xy) > 1 else stroke.points_px_xy * 2
    covered = torch.zeros(len(ys), len(xs), dtype=torch.bool, device=xs.device)
    r = float(stroke.radius_px)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
        ix = torch.nonzero((xs >= min(x0, x1) - r) & (xs <= max(x0, x1) + r)).flatten()
        iy = torch.nonzero((ys >= min(y0, y1) - r) & (ys <= max(y0, y1) + r)).flatten()
        if len(ix) == 0 or len(iy) == 0:
            continue
        px, py = xs[ix[0] : ix[-1] + 1][None, :], ys[iy[0] : iy[-1] + 1][:, None]
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        t = ((px - x0) * dx + (py - y0) * dy) / length2 if length2 > 0 else torch.zeros_like(px + py)
        t = t.clamp(0.0, 1.0)
        covered[iy[0] : iy[-1] + 1, ix[0] : ix[-1] + 1] |= (px - (x0 + t * dx)) ** 2 + (py - (y0 + t * dy)) ** 2 <= r * r
    return covered
