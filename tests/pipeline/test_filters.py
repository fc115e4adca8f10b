"""Warp's quality filter (warp-facts.md §7.4) on hand-made items with known verdicts."""

from __future__ import annotations

import math

import pytest

from cryowarp.pipeline.filters import astigmatism_vector_um, evaluate_filters, is_selected
from cryowarp.pipeline.settings import FilterSettings

GOOD = {
    "defocus_um": 1.5,
    "defocus_delta_um": 0.05,
    "astigmatism_angle_deg": 10.0,
    "resolution_a": 3.5,
    "mean_motion_a": 2.0,
    "n_particles": 120,
    "mask_percentage": 1.0,
    "phase_shift_deg": 0.0,
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"defocus_um": 5.5}, "defocus 5.5 µm outside"),
        ({"defocus_um": -0.2}, "defocus -0.2 µm outside"),
        ({"resolution_a": 6.0}, "resolution 6 Å > 5 Å"),
        ({"mean_motion_a": 7.5}, "motion 7.5 Å > 5 Å"),
        ({"n_particles": 0}, "0 particles < 1"),
        ({"mask_percentage": 12.0}, "masked 12 % > 10 %"),
    ],
)
def test_each_criterion_rejects_with_a_reason(change, reason):
    items = [dict(GOOD), {**GOOD, **change}]
    verdicts = evaluate_filters(items, FilterSettings())
    assert verdicts[0].passes
    assert not verdicts[1].passes
    assert any(r.startswith(reason) for r in verdicts[1].reasons), verdicts[1].reasons


def test_astigmatism_outlier_relative_to_dataset():
    # 20 items with ΔD = 0.05 µm at 0°, one with 0.5 µm at 45°: its vector (0, 0.5) is far from the mean
    items = [dict(GOOD, defocus_delta_um=0.05, astigmatism_angle_deg=0.0) for _ in range(20)]
    items.append(dict(GOOD, defocus_delta_um=0.5, astigmatism_angle_deg=45.0))
    verdicts = evaluate_filters(items, FilterSettings())
    assert all(v.passes for v in verdicts[:-1])
    assert not verdicts[-1].passes and "astigmatism" in verdicts[-1].reasons[0]
    # the mean is (0.05·20/21, 0.5/21); the outlier's distance / RMS distance, by hand:
    mx, my = 0.05 * 20 / 21, 0.5 / 21
    d_out = math.hypot(0 - mx, 0.5 - my)
    d_in = math.hypot(0.05 - mx, 0 - my)
    sigma = math.sqrt((20 * d_in**2 + d_out**2) / 21)
    assert f"{d_out / sigma:.2f} s.d." in verdicts[-1].reasons[0]


def test_astigmatism_vector_is_continuous_across_90_deg():
    a = astigmatism_vector_um(0.2, 89.99)
    b = astigmatism_vector_um(0.2, -89.99)
    assert math.hypot(a[0] - b[0], a[1] - b[1]) < 1e-3


def test_phase_only_when_enabled_and_missing_values_pass():
    item = dict(GOOD, phase_shift_deg=120.0)
    assert evaluate_filters([item], FilterSettings())[0].passes
    v = evaluate_filters([item], FilterSettings(filter_phase=True, phase_max_deg=90.0))[0]
    assert not v.passes and v.reasons[0].startswith("phase 120")
    assert evaluate_filters([{"defocus_um": None, "n_particles": None}], FilterSettings())[0].passes


def test_manual_selection_overrides():
    assert is_selected(True, None) and not is_selected(False, None)
    assert not is_selected(True, "exclude") and is_selected(False, "include")
    with pytest.raises(ValueError, match="must be 'include', 'exclude' or None"):
        is_selected(True, "maybe")
