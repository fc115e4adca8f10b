"""Gain references: orientation transforms, normalisation, defects, and detecting a wrong orientation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryowarp.io.errors import InvalidDataError, ShapeMismatchError
from cryowarp.io.gain import (
    GOOD_PIXELS_PER_DEFECT,
    GainOrientationReport,
    GainTransform,
    all_gain_transforms,
    detect_gain_orientation,
    load_gain,
    make_defect_corrector,
    read_defect_map,
)


def test_transforms_follow_warps_order():
    image = torch.arange(6.0).reshape(2, 3)  # [[0 1 2], [3 4 5]]
    # flip x, then transpose: [[2 1 0], [5 4 3]]ᵀ
    out = GainTransform(flip_x=True, transpose=True).apply(image)
    torch.testing.assert_close(out, torch.tensor([[2.0, 5.0], [1.0, 4.0], [0.0, 3.0]]))
    assert GainTransform(transpose=True).output_shape((2, 3)) == (3, 2)
    # rotating by 90° counter-clockwise (as displayed, rows down) moves the top-right corner to top-left
    rotated = GainTransform(rotate_deg=90).apply(image)
    assert rotated[0, 0].item() == 2.0


def test_the_eight_transforms_are_distinct_and_closed():
    probe = torch.arange(16.0).reshape(4, 4)
    results = {tuple(t.apply(probe).flatten().tolist()) for t in all_gain_transforms()}
    assert len(results) == 8
    for a in all_gain_transforms():
        for b in all_gain_transforms():
            torch.testing.assert_close(a.then(b).apply(probe), b.apply(a.apply(probe)))
    # a 90° rotation equals flip_y then transpose (Warp's order), so it needs no ninth case
    torch.testing.assert_close(
        GainTransform(rotate_deg=90).apply(probe), GainTransform(flip_x=True, transpose=True).apply(probe)
    )


def test_load_gain_normalises_and_marks_zeros():
    raw = np.array([[2.0, 4.0], [0.0, 6.0]], np.float32)
    gain = load_gain(raw)
    torch.testing.assert_close(gain.gain, torch.tensor([[0.5, 1.0], [1.0, 1.5]]))  # / mean(2, 4, 6) = 4
    assert gain.defects.tolist() == [[False, False], [True, False]]
    with pytest.raises(InvalidDataError, match="all zeros"):
        load_gain(np.zeros((3, 3)))
    with pytest.raises(InvalidDataError, match="2 negative pixels"):
        load_gain(np.array([[1.0, -1.0], [-2.0, 1.0]]))


def test_defect_corrector_uses_49_good_pixels_and_grows_its_disc():
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[10, 10] = True  # isolated: radius 4 holds 48 others + ... = enough
    mask[30:42, 30:42] = True  # a 12 × 12 block: its centre needs a larger disc
    corrector = make_defect_corrector(mask)
    counts = torch.bincount(corrector.target_slot, minlength=corrector.n_defects)
    assert corrector.n_defects == 1 + 144
    assert int(counts.min()) >= GOOD_PIXELS_PER_DEFECT == 49
    assert not bool(mask.flatten()[corrector.source_index].any())  # only good pixels are used
    # constant frames stay constant whatever the defects held
    frames = torch.full((2, 64, 64), 7.0)
    frames[:, mask] = 1e6
    corrector.apply_(frames)
    torch.testing.assert_close(frames, torch.full((2, 64, 64), 7.0))


def test_defect_map_shape_mismatch_names_both(tmp_path):
    with pytest.raises(
        ShapeMismatchError, match=r"expected a defect map of the frame size 64×32 \(W×H\), found 32×64"
    ):
        read_defect_map(np.zeros((64, 32)), (32, 64))


def _raw_sum(gain_true: torch.Tensor, n_electrons_per_px: float, seed: int) -> torch.Tensor:
    """Sum of frames of a smooth specimen seen through a detector whose sensitivity is 1/gain."""
    g = torch.Generator().manual_seed(seed)
    h, w = gain_true.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    specimen = 1 + 0.3 * torch.cos(2 * torch.pi * xx / 40) * torch.sin(2 * torch.pi * yy / 57)
    return torch.poisson(n_electrons_per_px * specimen / gain_true, generator=g)


@pytest.mark.parametrize(
    "wrong",
    [GainTransform(flip_y=True), GainTransform(flip_x=True, transpose=True), GainTransform(rotate_deg=180)],
)
def test_wrong_gain_orientation_is_detected_and_fixed(wrong):
    g = torch.Generator().manual_seed(0)
    gain_true = (1 + 0.1 * torch.randn(256, 256, generator=g)).clamp(min=0.5)
    raw_sum = _raw_sum(gain_true, 400.0, seed=1)  # 400 e/px: a 40-frame movie at 10 e/px/frame
    # the user's gain file is stored in another orientation than the camera's frames
    stored = wrong.apply(gain_true)
    report = detect_gain_orientation(raw_sum, load_gain(stored))
    assert report.looks_wrong
    fixed = report.best.apply(stored)
    torch.testing.assert_close(fixed, gain_true)  # the suggested transform undoes the wrong one
    # pixel-to-pixel gain s.d. 0.1 vs shot noise 1/√400 = 0.05: a wrong gain leaves a correlation ~ 0.7
    assert abs(report.current_correlation) > 0.5
    assert abs(report.correlations[report.best.name]) < 5 * report.noise_level
    assert GainOrientationReport.from_dict(report.to_dict()) == report


def test_right_gain_orientation_is_accepted():
    g = torch.Generator().manual_seed(3)
    gain_true = (1 + 0.1 * torch.randn(128, 192, generator=g)).clamp(min=0.5)  # non-square: 4 candidates
    report = detect_gain_orientation(_raw_sum(gain_true, 400.0, seed=4), load_gain(gain_true))
    assert not report.looks_wrong and report.best.name == "identity"
    assert len(report.correlations) == 4
    assert "looks right" in report.summary()


def test_eer_gain_orientation_with_divide_convention():
    g = torch.Generator().manual_seed(5)
    gain_true = (1 + 0.1 * torch.randn(128, 128, generator=g)).clamp(min=0.5)
    # EER: the detector's sensitivity *is* the gain (frames are divided by it)
    raw_sum = torch.poisson(400.0 * gain_true, generator=g)
    report = detect_gain_orientation(raw_sum, load_gain(gain_true.flip(-1), convention="divide"))
    assert report.looks_wrong and report.best.name == "flip_x"
