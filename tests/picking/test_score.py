"""Precision/recall/F1 matching used by the benchmark."""

import pytest
import torch

from cryowarp.picking import match_picks


def test_one_to_one_matching_within_radius():
    truth = torch.tensor([[0.0, 0.0], [10.0, 0.0], [50.0, 50.0]])
    picks = torch.tensor([[1.0, 0.0], [2.0, 0.0], [10.0, 1.5], [80.0, 80.0]])
    s = match_picks(picks, truth, radius_px=2.5)
    # two picks near (0, 0) can only claim it once; (10, 1.5) matches (10, 0); (80, 80) matches nothing
    assert (s.n_true, s.n_picked, s.n_matched) == (3, 4, 2)
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert match_picks(torch.zeros(0, 2), truth, 2.5).f1 == 0.0
