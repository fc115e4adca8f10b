"""Warp's post-processing rules (warp-facts.md §3.5), each on a constructed probability map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryowarp.picking import clean_mask, find_particles, match_picks
from cryowarp.picking.postprocess import blob_prior

# D = 160 Å at 8 Å/px: D/px = 20 px; peak radius round(20/4) = 5; border round(0.8·20) = 16;
# overlap distance 20/1.5 = 13.3 px; mask distance floor((80 + d_min)/8) px.
D_A = 160.0


def _probs(h: int = 96, w: int = 96) -> torch.Tensor:
    p = torch.zeros(3, h, w)
    p[0] = 1.0
    return p


def _paint(p: torch.Tensor, cls: int, ys: slice, xs: slice, value: float = 0.9) -> None:
    p[:, ys, xs] = (1 - value) / 2
    p[cls, ys, xs] = value


def test_centroid_is_mean_pixel_position_of_component():
    p = _probs()
    # an L-shaped component: 3x3 block plus a 3-px tail; centroid = mean of the 12 pixel positions
    _paint(p, 1, slice(40, 43), slice(40, 43))
    _paint(p, 1, slice(43, 44), slice(40, 43))
    ys = torch.tensor([40, 40, 40, 41, 41, 41, 42, 42, 42, 43, 43, 43], dtype=torch.float32)
    xs = torch.tensor([40, 41, 42] * 4, dtype=torch.float32)
    cand = find_particles(p, particle_diameter_a=D_A, threshold=0.5)
    assert cand.coords_px_xy.shape == (1, 2)
    torch.testing.assert_close(cand.coords_px_xy[0], torch.stack([xs.mean(), ys.mean()]), atol=1e-5, rtol=0)
    assert int(cand.extents_px[0]) == 12
    assert float(cand.scores[0]) == pytest.approx(0.9)


def test_threshold_drops_components_below_it():
    p = _probs()
    _paint(p, 1, slice(30, 34), slice(30, 34), value=0.9)
    _paint(p, 1, slice(60, 64), slice(60, 64), value=0.97)
    assert len(find_particles(p, particle_diameter_a=D_A, threshold=0.5).coords_px_xy) == 2
    kept = find_particles(p, particle_diameter_a=D_A, threshold=0.95).coords_px_xy
    torch.testing.assert_close(kept, torch.tensor([[61.5, 61.5]]))


def test_pixels_whose_argmax_is_not_particle_are_ignored():
    p = _probs()
    # particle probability 0.45 but background 0.55: argmax = background, no pick even at threshold 0.1
    p[0, 40:44, 40:44] = 0.55
    p[1, 40:44, 40:44] = 0.45
    assert len(find_particles(p, particle_diameter_a=D_A, threshold=0.1).coords_px_xy) == 0


def test_overlap_suppression_keeps_the_larger_component():
    p = _probs()
    _paint(p, 1, slice(40, 46), slice(40, 46))  # 36 px, centroid (42.5, 42.5)
    _paint(p, 1, slice(40, 43), slice(52, 55))  # 9 px, centroid (53, 41) — 10.6 px away < 13.3
    cand = find_particles(p, particle_diameter_a=D_A, threshold=0.5)
    torch.testing.assert_close(cand.coords_px_xy, torch.tensor([[42.5, 42.5]]))
    # far enough apart (> 13.3 px) both survive
    p2 = _probs()
    _paint(p2, 1, slice(40, 46), slice(30, 36))
    _paint(p2, 1, slice(40, 43), slice(60, 63))
    assert len(find_particles(p2, particle_diameter_a=D_A, threshold=0.5).coords_px_xy) == 2


def test_peaks_near_the_border_are_discarded():
    p = _probs()
    _paint(p, 1, slice(10, 13), slice(48, 51))  # centre y = 11 < border 16
    _paint(p, 1, slice(48, 51), slice(48, 51))
    cand = find_particles(p, particle_diameter_a=D_A, threshold=0.5)
    torch.testing.assert_close(cand.coords_px_xy, torch.tensor([[49.0, 49.0]]))


def test_minimum_distance_to_mask():
    p = _probs(128, 128)
    _paint(p, 2, slice(20, 108), slice(0, 30))  # mask: columns 0..29
    _paint(p, 1, slice(40, 43), slice(38, 41))  # centroid x = 39: distance to mask 10 px ≤ 10 → removed
    _paint(p, 1, slice(80, 83), slice(40, 43))  # centroid x = 41: distance 12 > 10 → kept
    cand = find_particles(p, particle_diameter_a=D_A, threshold=0.5)
    torch.testing.assert_close(cand.coords_px_xy, torch.tensor([[41.0, 81.0]]))
    # with 24 Å extra distance the threshold becomes floor((80 + 24)/8) = 13 px: both removed
    cand = find_particles(p, particle_diameter_a=D_A, threshold=0.5, minimum_mask_distance_a=24.0)
    assert len(cand.coords_px_xy) == 0


def test_small_mask_components_are_removed():
    m = torch.zeros(64, 64, dtype=torch.bool)
    m[5:9, 5:10] = True  # 20 px: kept
    m[30:33, 30:36] = True  # 18 px: removed
    m[50, 50] = True  # 1 px: removed
    m[51, 51] = True  # diagonal neighbour is not 4-connected: removed
    cleaned = clean_mask(m, 20)
    assert int(cleaned.sum()) == 20
    assert bool(cleaned[5:9, 5:10].all())
    # and inside find_particles: a 4-px artefact blob does not block a nearby particle
    p = _probs()
    _paint(p, 2, slice(45, 47), slice(30, 32))
    _paint(p, 1, slice(45, 48), slice(40, 43))
    cand = find_particles(p, particle_diameter_a=D_A, threshold=0.5)
    assert len(cand.coords_px_xy) == 1
    assert not bool(cand.mask.any())


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match=r"expected probabilities of shape \(3, h, w\)"):
        find_particles(torch.zeros(2, 10, 10), particle_diameter_a=D_A)
    with pytest.raises(ValueError, match="particle_diameter_a must be > 0"):
        find_particles(_probs(), particle_diameter_a=0.0)


# ---- ours: method="smoothed" and the artefact-probability mask threshold ----
# D = 160 Å at 8 Å/px: label-disc radius max(1.5, 20/8) = 2.5 px; suppression distance 13.3 px.


def _disc(p: torch.Tensor, cy: float, cx: float, radius: float, value: float, cls: int = 1) -> None:
    h, w = p.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    sel = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    p[:, sel] = (1 - value) / 2
    p[cls, sel] = value


def test_smoothed_score_of_a_perfect_label_disc_is_one_and_scales_with_probability():
    for value in (1.0, 0.3):
        p = _probs()
        _disc(p, 48, 48, 2.5, value)
        cand = find_particles(p, particle_diameter_a=D_A, threshold=0.1, method="smoothed", border_frac=0.5)
        assert cand.coords_px_xy.shape == (1, 2)
        torch.testing.assert_close(cand.coords_px_xy[0], torch.tensor([48.0, 48.0]))
        assert float(cand.scores[0]) == pytest.approx(value, abs=0.03)
    # the threshold applies to that score: a p = 0.3 disc is dropped at 0.35
    p = _probs()
    _disc(p, 48, 48, 2.5, 0.3)
    assert len(find_particles(p, particle_diameter_a=D_A, threshold=0.35, method="smoothed").coords_px_xy) == 0


def test_smoothed_integrates_fragments_that_warps_argmax_gate_drops():
    p = _probs()
    # two 2x2 fragments of p1 = 0.45 (argmax = background), 4 px apart: one particle at their middle
    for y0, x0 in ((46, 44), (46, 48)):
        p[0, y0 : y0 + 2, x0 : x0 + 2] = 0.55
        p[1, y0 : y0 + 2, x0 : x0 + 2] = 0.45
    assert len(find_particles(p, particle_diameter_a=D_A, threshold=0.1, method="warp").coords_px_xy) == 0
    cand = find_particles(p, particle_diameter_a=D_A, threshold=0.1, method="smoothed")
    assert cand.coords_px_xy.shape == (1, 2)
    torch.testing.assert_close(cand.coords_px_xy[0], torch.tensor([46.5, 46.5]), atol=0.51, rtol=0)


def test_smoothed_suppression_keeps_the_higher_score_and_border_frac_applies():
    p = _probs(128, 128)
    _disc(p, 60, 60, 2.5, 0.9)
    _disc(p, 60, 70, 2.5, 0.6)  # 10 px < 13.3 px away, lower: suppressed
    _disc(p, 60, 100, 2.5, 0.6)  # 40 px away: kept
    cand = find_particles(p, particle_diameter_a=D_A, threshold=0.2, method="smoothed")
    xs = sorted(round(float(x)) for x in cand.coords_px_xy[:, 0])
    assert len(xs) == 2 and 59 <= xs[0] <= 62 and xs[1] == 100  # the neighbour pulls the peak ≤ 2 px
    # border: a particle 12 px from the edge survives border_frac 0.5 (10 px), not 0.8 (16 px)
    p = _probs()
    _disc(p, 12, 48, 2.5, 0.9)
    n = [
        len(find_particles(p, particle_diameter_a=D_A, threshold=0.2, method="smoothed", border_frac=b).scores)
        for b in (0.5, 0.8)
    ]
    assert n == [1, 0]


def test_mask_threshold_masks_by_artefact_probability():
    p = _probs(128, 128)
    _paint(p, 2, slice(20, 108), slice(0, 30), value=0.6)  # argmax = artefact, but p2 = 0.6 only
    _paint(p, 1, slice(40, 43), slice(38, 41))  # 10 px from that region
    for method in ("warp", "smoothed"):
        warp_rule = find_particles(p, particle_diameter_a=D_A, threshold=0.3, method=method)
        assert len(warp_rule.scores) == 0 and bool(warp_rule.mask.any())
        ours = find_particles(p, particle_diameter_a=D_A, threshold=0.3, method=method, mask_threshold=0.7)
        assert len(ours.scores) == 1 and not bool(ours.mask.any())
    # a confident artefact is masked either way
    _paint(p, 2, slice(20, 108), slice(0, 30), value=0.9)
    assert len(find_particles(p, particle_diameter_a=D_A, threshold=0.3, mask_threshold=0.7).scores) == 0


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="method must be 'warp' or 'smoothed'"):
        find_particles(_probs(), particle_diameter_a=D_A, method="blob")


# ---- ours: dark-blob (LoG) prior and per-micrograph relative threshold ----


def _blob_image(centres_yx, h: int = 96, w: int = 96, amplitude: float = -2.0, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(h, w, generator=gen)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    for cy, cx in centres_yx:
        img += amplitude * (((yy - cy) ** 2 + (xx - cx) ** 2) <= 8.0**2).float()  # disc of D = 16 px
    return img


def test_blob_prior_is_a_robust_z_score_positive_on_dark_discs():
    img = _blob_image([(48, 48)]).numpy()
    z = blob_prior(img, d_px=20.0, sigma_frac=0.8)
    assert z.shape == img.shape
    iy, ix = divmod(int(z.argmax()), z.shape[1])
    assert abs(iy - 48) <= 1 and abs(ix - 48) <= 1
    assert z[48, 48] > 8  # far above the noise (z ~ N(0, 1) away from the disc)
    assert abs(float(np.median(z))) < 1e-9
    # a bright disc is not a particle in cryo contrast
    assert blob_prior(-img, d_px=20.0)[48, 48] < -8
    # invariant to the image's offset and scale
    np.testing.assert_allclose(blob_prior(3.0 * img + 7.0, d_px=20.0), z, atol=1e-6)


def test_blob_prior_finds_particles_the_network_missed():
    p = _probs()  # the network sees only background
    img = _blob_image([(30, 30), (30, 66), (66, 48)])
    assert len(find_particles(p, particle_diameter_a=D_A, threshold=0.3, method="smoothed").scores) == 0
    cand = find_particles(
        p, particle_diameter_a=D_A, threshold=0.3, method="smoothed", border_frac=0.5, image_8a=img, blob_weight=1.0
    )
    assert cand.coords_px_xy.shape == (3, 2)
    truth_xy = torch.tensor([[30.0, 30.0], [66.0, 30.0], [48.0, 66.0]])
    assert match_picks(cand.coords_px_xy, truth_xy, radius_px=1.5).n_matched == 3  # noise: ≤ 1 px off
    assert bool((cand.scores > 0.3).all())  # figure of merit = the combined score, may exceed 1
    with pytest.raises(ValueError, match="blob_weight > 0 needs image_8a"):
        find_particles(p, particle_diameter_a=D_A, method="smoothed", blob_weight=1.0)
    with pytest.raises(ValueError, match="does not match the probabilities"):
        find_particles(p, particle_diameter_a=D_A, method="smoothed", image_8a=img[:-2], blob_weight=1.0)


def test_relative_threshold_is_min_of_threshold_and_alpha_times_quantile():
    # a micrograph on which the network is uniformly unsure: all particles at p = 0.2
    centres = [(20 + 25 * i, 20 + 25 * j) for i in range(4) for j in range(4)]
    p = _probs(128, 128)
    for cy, cx in centres:
        _disc(p, cy, cx, 2.5, 0.2)
    kw = dict(particle_diameter_a=D_A, method="smoothed", border_frac=0.5)
    assert len(find_particles(p, threshold=0.35, **kw).scores) == 0
    rel = find_particles(p, threshold=0.35, relative_threshold=0.3, relative_quantile=97.0, **kw)
    assert len(rel.scores) == len(centres)
    # confident particles plus one weak blob: the threshold stays at min(0.35, 0.3 × ~1) = 0.3
    p = _probs(128, 128)
    for cy, cx in centres[:-1]:
        _disc(p, cy, cx, 2.5, 1.0)
    _disc(p, *centres[-1], 2.5, 0.2)
    rel = find_particles(p, threshold=0.35, relative_threshold=0.3, **kw)
    assert len(rel.scores) == len(centres) - 1
    # the cap: with a low threshold the relative part cannot raise it
    low = find_particles(p, threshold=0.1, relative_threshold=0.9, **kw)
    assert len(low.scores) == len(centres)
