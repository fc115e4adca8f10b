"""The simulated picking micrographs and the general corpus that BoxNet retraining mixes in."""

from __future__ import annotations

import math

import torch

from cryowarp.sim.picking_corpus import (
    SIM_HELDOUT_KINDS,
    SIM_TRAIN_KINDS,
    general_corpus,
    nominal_diameter_a,
    simulate_picking_micrograph,
)


def test_nominal_diameter_is_the_sphere_of_the_protein_volume():
    # 1 MDa at 0.81 Da/Å³: V = 1.2346e6 Å³, sphere diameter 2·(3V/4π)^⅓ = 133.1 Å; elongated ×1.3
    assert math.isclose(nominal_diameter_a(1000.0, "globule"), 133.1, rel_tol=1e-3)
    assert math.isclose(nominal_diameter_a(1000.0, "rod"), 1.3 * 133.1, rel_tol=1e-3)


def test_picking_micrographs_keep_training_and_held_out_kinds_apart():
    train = simulate_picking_micrograph(50_000, size_px=256)
    held = simulate_picking_micrograph(20_000, heldout=True, size_px=256)
    assert train.kind.split("_")[1] in SIM_TRAIN_KINDS
    assert any(held.kind.startswith(f"sim_{k}_") for k in SIM_HELDOUT_KINDS)
    # no true particle sits on an artefact; the draw is reproducible
    ix, iy = train.coords_px_xy.round().long().unbind(1)
    assert not train.mask[iy.clamp(0, 255), ix.clamp(0, 255)].any()
    again = simulate_picking_micrograph(50_000, size_px=256)
    assert torch.equal(again.image, train.image) and torch.equal(again.coords_px_xy, train.coords_px_xy)


def test_general_corpus_labels_the_simulated_truth():
    corpus = general_corpus(2, size_px=512)
    assert len(corpus) == 2
    n_particles = 0
    for ex, seed in zip(corpus, (50_000, 50_001), strict=True):
        m = simulate_picking_micrograph(seed, size_px=512)
        assert ex.name == m.kind
        scale = m.pixel_size_a / 8.0  # positions at BoxNet's 8 Å/px (up to the even-size rounding)
        for x, y in (m.coords_px_xy * scale).round().long().tolist():
            if 0 <= y < ex.labels.shape[0] and 0 <= x < ex.labels.shape[1]:
                assert int(ex.labels[y, x]) in (1, 2)  # a disc, unless a mask pixel overwrote it
        n_particles += len(m.coords_px_xy)
        assert bool((ex.labels == 2).any()) == bool(m.mask.any())
    assert n_particles > 0
