"""Scoring picks against truth: precision, recall, F1 with one-to-one matching within a radius."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class PickScore:
    """Counts and rates of a pick set against truth."""

    n_true: int
    n_picked: int
    n_matched: int
    precision: float
    recall: float
    f1: float

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PickScore:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


def match_picks(picked_xy: torch.Tensor, true_xy: torch.Tensor, radius_px: float) -> PickScore:
    """Match picks one-to-one to true centres within ``radius_px`` (maximum matching) and score them.

    A pick is correct if it is matched to a distinct true centre closer than ``radius_px`` (the issue
    uses 0.25 × particle diameter).
    """
    p = np.asarray(torch.as_tensor(picked_xy).detach().cpu(), dtype=np.float64).reshape(-1, 2)
    t = np.asarray(torch.as_tensor(true_xy).detach().cpu(), dtype=np.float64).reshape(-1, 2)
    matched = 0
    if len(p) and len(t):
        d = np.hypot(p[:, None, 0] - t[None, :, 0], p[:, None, 1] - t[None, :, 1])
        cost = np.where(d <= radius_px, d, 1e9)
        rows, cols = linear_sum_assignment(cost)
        matched = int((cost[rows, cols] < 1e9).sum())
    precision = matched / len(p) if len(p) else 0.0
    recall = matched / len(t) if len(t) else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return PickScore(len(t), len(p), matched, precision, recall, f1)
