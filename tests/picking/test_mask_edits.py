"""Brush strokes on BoxNet's artefact mask (``cryowarp.picking.mask_edits``), checked against
hand-computed coverage on small grids."""

from __future__ import annotations

import pytest
import torch

from cryowarp.picking.mask_edits import MaskStroke, apply_mask_strokes


def test_a_dab_covers_the_mask_pixels_within_the_radius_in_micrograph_pixels():
    mask = torch.zeros(20, 30, dtype=torch.bool)
    # micrograph 4× larger than the mask: a dab of radius 8 px at (40, 20) covers mask pixels within 2
    # of (10, 5)
    out = apply_mask_strokes(mask, [MaskStroke(True, 8.0, ((40.0, 20.0),))], scale_xy=(4.0, 4.0))
    yy, xx = torch.meshgrid(torch.arange(20), torch.arange(30), indexing="ij")
    expected = (xx - 10) ** 2 + (yy - 5) ** 2 <= 4
    assert torch.equal(out, expected)
    assert not mask.any()  # the input is not modified


def test_a_stroke_covers_the_segments_between_its_points_not_only_the_points():
    mask = torch.zeros(16, 40, dtype=torch.bool)
    out = apply_mask_strokes(mask, [MaskStroke(True, 1.0, ((2.0, 8.0), (37.0, 8.0)))], scale_xy=(1.0, 1.0))
    assert out[8, 2:38].all() and out[7, 2:38].all() and out[9, 2:38].all()
    assert not out[6].any() and not out[10].any()
    assert not out[8, :1].any() and not out[8, 39:].any()


def test_strokes_apply_in_order_and_erasing_clears_boxnets_own_mask():
    mask = torch.zeros(10, 10)
    mask[:, 5:] = 0.9  # float probabilities: > 0.5 is artefact
    erase = MaskStroke(False, 1.5, ((7.0, 4.0),))
    paint = MaskStroke(True, 0.5, ((7.0, 4.0),))
    out = apply_mask_strokes(mask, [erase], (1.0, 1.0))
    assert out.dtype == torch.bool
    assert not out[4, 7] and not out[3, 7] and not out[4, 6] and out[4, 9] and out[0, 7]
    assert int((~out[:, 5:]).sum()) == 9  # a radius-1.5 disc holds 9 pixel centres
    out2 = apply_mask_strokes(mask, [erase, paint], (1.0, 1.0))
    assert out2[4, 7] and not out2[3, 7]  # the later dab wins at its centre


def test_anisotropic_scale_maps_x_and_y_separately():
    mask = torch.zeros(10, 10, dtype=torch.bool)
    out = apply_mask_strokes(mask, [MaskStroke(True, 0.1, ((6.0, 30.0),))], scale_xy=(2.0, 5.0))
    assert out.nonzero().tolist() == [[6, 3]]


@pytest.mark.parametrize(
    ("radius", "points"),
    [(0.0, ((1.0, 1.0),)), (float("nan"), ((1.0, 1.0),)), (2.0, ()), (2.0, ((1.0, float("inf")),))],
)
def test_invalid_strokes_are_refused(radius, points):
    with pytest.raises(ValueError, match="radius|point"):
        MaskStroke(True, radius, points)


def test_random_strokes_match_a_brute_force_distance_to_the_polyline():
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(40, 50, generator=gen) > 0.8
    scale = (3.0, 2.5)
    strokes = []
    for k in range(6):
        n = int(torch.randint(1, 5, (1,), generator=gen))
        pts = (torch.rand(n, 2, generator=gen) * torch.tensor([150.0, 100.0]) - 10).tolist()
        strokes.append(MaskStroke(k % 3 != 0, float(torch.rand(1, generator=gen)) * 15 + 1, tuple(map(tuple, pts))))
    expected = mask.clone()
    yy, xx = torch.meshgrid(torch.arange(40) * scale[1], torch.arange(50) * scale[0], indexing="ij")
    for s in strokes:  # distance of every pixel to every segment, no bounding boxes
        p = torch.tensor(s.points_px_xy if len(s.points_px_xy) > 1 else s.points_px_xy * 2, dtype=torch.float64)
        near = torch.zeros_like(mask)
        for a, b in zip(p[:-1], p[1:], strict=True):
            d = b - a
            t = (((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / max(float(d @ d), 1e-30)).clamp(0, 1)
            near |= (xx - a[0] - t * d[0]) ** 2 + (yy - a[1] - t * d[1]) ** 2 <= s.radius_px**2
        expected[near] = s.paint
    out = apply_mask_strokes(mask, strokes, scale)
    assert int((out != expected).sum()) <= 2  # float32 vs float64 exactly on a disc's rim
    assert out.sum() != mask.sum()
