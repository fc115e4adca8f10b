"""Motion fit: planted global and local displacements are recovered; the cost's gradient is exact."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.conftest import DEVICES
from tests.motion._synthetic import make_movie

from cryowarp.motion import MotionModel, MotionSettings, auto_grid_xyt, fit_motion, patch_centers_1d
from cryowarp.motion._cost import alignment_cost
from cryowarp.motion.fit import n_stages_for


def _centred(tracks: torch.Tensor) -> torch.Tensor:
    # the cost cannot see a displacement that is constant over frames at one position (the gauge)
    return tracks - tracks.mean(-2, keepdim=True)


@pytest.fixture(scope="module")
def global_movie():
    return make_movie(shape_yx=(512, 512), n_frames=20, pixel_size_a=2.0, drift_step_a=1.5, seed=0)


@pytest.fixture(scope="module")
def local_movie():
    return make_movie(
        shape_yx=(768, 768),
        n_frames=16,
        pixel_size_a=2.0,
        drift_step_a=2.0,
        local_amplitude_a=5.0,
        jump_a=40.0,
        seed=1,
    )


@pytest.mark.parametrize("device", DEVICES)
def test_global_shifts_are_recovered(global_movie, device):
    movie = global_movie
    model = fit_motion(
        movie.frames.to(device),
        movie.pixel_size_a,
        movie.exposure_per_frame_e_per_a2,
        MotionSettings(patch_size_px=256),
    )
    est = model.global_displacement_a_yx().cpu()
    rmse = float((est - movie.global_a_yx).square().sum(-1).mean().sqrt())
    # 0.15 Å: half the 0.3 Å target at 1 e/Å²/frame; this 512² movie reaches ≈ 0.03 Å
    assert rmse < 0.15, rmse
    # the gauge of docs/api-contracts.md: the global displacement averages to 0 over frames
    assert float(est.mean(0).abs().max()) < 1e-4


def test_local_deformation_and_a_40_angstrom_jump_are_recovered(local_movie):
    movie = local_movie
    model = fit_motion(
        movie.frames,
        movie.pixel_size_a,
        movie.exposure_per_frame_e_per_a2,
        MotionSettings(patch_size_px=256, grid_xyt=(4, 4, 16)),
    )
    assert model.patch_centers_px_yx.shape == (25, 2)  # 768 px / 256-px patches at 50 % overlap: 5 × 5
    centres = model.patch_centers_px_yx
    truth = torch.stack([movie.displacement_a_yx(centres, f) for f in range(16)], dim=1)
    est = model.patch_tracks_a_yx()
    rmse = float((_centred(est) - _centred(truth)).square().sum(-1).mean().sqrt())
    # local motion of ±5 Å on a 4×4×4 grid sampled by 5×5 patches: ≈ 0.13 Å reached, 0.3 Å is the target
    assert rmse < 0.3, rmse
    # and the local part alone is really there (not absorbed as noise): > 3 Å deviations recovered
    assert model.max_local_deviation_a > 3.0


def test_without_local_grid_local_motion_is_not_recovered(local_movie):
    # the control for the test above: a global-only model cannot explain ±5 Å of local motion
    movie = local_movie
    model = fit_motion(
        movie.frames,
        movie.pixel_size_a,
        movie.exposure_per_frame_e_per_a2,
        MotionSettings(patch_size_px=256, grid_xyt=(1, 1, 16)),
    )
    centres = model.patch_centers_px_yx
    truth = torch.stack([movie.displacement_a_yx(centres, f) for f in range(16)], dim=1)
    rmse = float((_centred(model.patch_tracks_a_yx()) - _centred(truth)).square().sum(-1).mean().sqrt())
    assert rmse > 1.0, rmse


def test_cost_gradient_equals_autograd_of_the_plain_formula():
    gen = torch.Generator().manual_seed(0)
    spectra = torch.randn(5, 6, 9, 5, dtype=torch.complex64, generator=gen)
    ky, kx = torch.linspace(-0.1, 0.1, 9), torch.linspace(0.0, 0.1, 5)
    d = torch.randn(5, 6, 2, generator=gen, requires_grad=True)
    fused = alignment_cost(d, spectra, ky, kx)
    (g_fused,) = torch.autograd.grad(fused, d)
    phase = 2 * math.pi * (d[..., 0, None, None] * ky[:, None] + d[..., 1, None, None] * kx[None, :])
    q = spectra * torch.polar(torch.ones_like(phase), phase)
    plain = (q - q.mean(1, keepdim=True)).abs().square().sum()  # Warp's E (warp-facts.md §1.3)
    (g_plain,) = torch.autograd.grad(plain, d)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(g_fused, g_plain, rtol=1e-4, atol=1e-4)


def test_warp_patch_layout_and_auto_grid():
    centres = patch_centers_1d(4096, 768)
    assert len(centres) == 10  # warp-facts.md §1.1: 4096 px → 10 × 10 patches
    steps = {round(b - a, 6) for a, b in zip(centres, centres[1:], strict=False)}
    assert steps == {369.0}  # floor((4096 − 768) / 9)
    assert centres[0] + centres[-1] == pytest.approx(4095.0)  # centred
    # WarpTools auto grid (warp-facts.md §1.2): 40 e/Å² over 4096 Å → 5×5 and 40 temporal nodes;
    # 20 e/Å² → round(5·(20/30)·1.024) = 3 and 20 nodes
    assert auto_grid_xyt((4096, 4096), 1.0, 40, 1.0) == (5, 5, 40)
    assert auto_grid_xyt((4096, 4096), 1.0, 40, 0.5) == (3, 3, 20)
    assert auto_grid_xyt((4092, 5760), 0.834, 50, 1.0) == (6, 4, 50)
    # stages: Z = 20 → 3, 9, 20 nodes (3 stages); Z = 40 → 4 stages
    assert [n_stages_for(z) for z in (1, 3, 9, 20, 40)] == [1, 1, 2, 3, 4]


def test_model_json_round_trip(global_movie):
    movie = global_movie
    model = fit_motion(movie.frames[:6], movie.pixel_size_a, 1.0, MotionSettings(patch_size_px=256))
    back = MotionModel.from_dict(json.loads(json.dumps(model.to_dict())))
    coords = torch.tensor([[10.0, 20.0], [300.0, 400.0]])
    for f in (0, 3, 5):
        torch.testing.assert_close(back.displacement_a_yx(coords, f), model.displacement_a_yx(coords, f))
    assert back.to_dict()["stats"] == model.to_dict()["stats"]


def test_mean_frame_movement_is_warps_first_third_statistic():
    # a straight 2 Å/frame drift along x for 10 frames: MeanFrameMovement = 2 Å (first 3 steps)
    track = torch.stack([torch.zeros(10), 2.0 * torch.arange(10.0) - 9.0], dim=0)  # (2, 10) nodes
    model = MotionModel(
        shape_yx=(100, 100),
        pixel_size_a=1.0,
        n_frames=10,
        global_values_a_yx=track,
        local_values_a_yx=torch.zeros(2, 1, 1, 1),
        patch_centers_px_yx=torch.zeros(1, 2),
    )
    assert model.mean_frame_movement_a == pytest.approx(2.0, abs=1e-5)
    assert model.total_drift_a == pytest.approx(18.0, abs=1e-4)


def test_single_frame_is_skipped_with_a_reason():
    model = fit_motion(torch.ones(1, 64, 64), 1.0, 1.0)
    assert model.skipped_reason is not None and "single frame" in model.skipped_reason
    assert model.mean_frame_movement_a == 0.0
    assert float(model.displacement_a_yx(torch.tensor([[5.0, 5.0]]), 0).abs().max()) == 0.0


def test_bad_input_is_named():
    frames = torch.ones(4, 64, 64)
    frames[2, 10, 10] = float("nan")
    with pytest.raises(ValueError, match=r"found 1 NaN/inf values \(first in frame 2\)"):
        fit_motion(frames, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"expected frames as a tensor \(n_frames, h, w\), found \(64, 64\)"):
        fit_motion(torch.ones(64, 64), 1.0, 1.0)
    with pytest.raises(ValueError, match="must be > 0"):
        fit_motion(torch.ones(3, 64, 64), 0.0, 1.0)


def test_detect_jumps_finds_a_stage_jump_and_nothing_in_smooth_drift():
    from cryowarp.motion.fit import detect_jumps

    gen = torch.Generator().manual_seed(5)
    f = torch.arange(40, dtype=torch.float32)
    smooth = torch.stack([8 * torch.exp(-f / 6), 0.3 * f], dim=1)  # fast early drift, then steady
    noisy = smooth + 0.2 * torch.randn(40, 2, generator=gen)
    assert float(detect_jumps(noisy).abs().max()) == 0.0
    step = torch.zeros(40, 2)
    step[27:] = torch.tensor([9.0, -7.0])  # the stage jumps between frames 26 and 27
    jumps = detect_jumps(noisy + step)
    assert float(jumps[:27].abs().max()) == 0.0
    torch.testing.assert_close(jumps[27:], step[27:], atol=0.8, rtol=0)  # within the track's noise


def test_a_jump_survives_a_global_spline_with_fewer_nodes_than_frames(local_movie, monkeypatch):
    """WarpTools sizes the global spline by the total exposure (here 8 nodes for 16 frames); without the
    jump term the 40 Å jump is smeared over neighbouring frames (14 Å error at the jump). The remaining
    error is the random-walk drift between nodes, which 8 nodes cannot follow by design."""
    import cryowarp.motion.fit as fit_module

    movie = local_movie
    settings = MotionSettings(patch_size_px=256, grid_xyt=(4, 4, 8))

    def error_per_frame(model):
        centres = model.patch_centers_px_yx
        truth = torch.stack([movie.displacement_a_yx(centres, f) for f in range(16)], dim=1)
        return (_centred(model.patch_tracks_a_yx()) - _centred(truth)).square().sum(-1).mean(0).sqrt()

    model = fit_motion(movie.frames, movie.pixel_size_a, movie.exposure_per_frame_e_per_a2, settings)
    assert model.global_jumps_a_yx is not None
    err = error_per_frame(model)
    assert float(err.square().mean().sqrt()) < 1.5 and float(err[7:9].max()) < 2.0, err
    # the JSON round trip keeps the jumps
    again = MotionModel.from_dict(model.to_dict())
    torch.testing.assert_close(again.patch_tracks_a_yx(), model.patch_tracks_a_yx())
    # control: the same fit without the jump term
    monkeypatch.setattr(fit_module, "detect_jumps", lambda track, **_: torch.zeros_like(track))
    smeared = error_per_frame(fit_motion(movie.frames, movie.pixel_size_a, movie.exposure_per_frame_e_per_a2, settings))
    assert float(smeared.square().mean().sqrt()) > 3.0 and float(smeared[7:9].max()) > 5.0, smeared


def test_small_field_layout_only_below_warps_patch_count():
    from cryowarp.motion import fit_layout

    warp = MotionSettings()
    # 4096 px: Warp's 10 × 10 patches of 768 px, grid and band untouched
    big = fit_layout((4096, 4096), warp)
    assert not big.small_field and big.patch_size_px == 768 and big.range_high_a == 10.0
    assert big.local_grid_xy is None
    # 1536 px: Warp's layout has 3 patches per side; the small-field one 7 of 2·1536/8 = 384 px
    small = fit_layout((1536, 1536), warp)
    assert small.small_field and small.patch_size_px == 384 and small.local_grid_xy == (7, 7)
    assert len(patch_centers_1d(1536, small.patch_size_px)) == 7
    assert small.range_high_a == 6.0 and small.bfactor_a2 == -150.0
    # non-square: one node per patch on each axis (x first)
    assert fit_layout((1536, 2048), warp).local_grid_xy == (10, 7)
    # too small for 256-px patches, or switched off: Warp's layout
    assert not fit_layout((768, 768), warp).small_field
    assert not fit_layout((1536, 1536), MotionSettings(small_field_patches=0)).small_field


@pytest.fixture(scope="module")
def small_field_movie():
    return make_movie(
        shape_yx=(1024, 1024), n_frames=12, pixel_size_a=2.0, drift_step_a=1.0, local_amplitude_a=3.0, seed=3
    )


def test_small_field_layout_recovers_local_motion_across_the_whole_frame(small_field_movie):
    # Warp's 768-px layout sees this 1024-px field as 2 × 2 patches (centres ⅓ of the way in) and fits a
    # 2 × 2 local grid, a plane extrapolated to the edges; the small-field layout uses 7 × 7 patches of
    # 256 px. Scored over the whole frame, edges included, where particles are picked too.
    movie = small_field_movie
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(400, 2, generator=gen) * 1023
    truth = torch.stack([movie.displacement_a_yx(points, f) for f in range(12)], dim=1)

    def error(settings):
        model = fit_motion(movie.frames, 2.0, 1.0, settings)
        est = torch.stack([model.displacement_a_yx(points, f) for f in range(12)], dim=1)
        return float((_centred(est) - _centred(truth)).square().sum(-1).mean().sqrt()), model

    small, model = error(MotionSettings())
    warp, _ = error(MotionSettings(small_field_patches=0))
    assert model.patch_centers_px_yx.shape == (49, 2)
    # measured 0.34–0.36 Å against 1.33 Å for Warp's layout
    assert small < 0.4 * warp, (small, warp)
    assert small < 0.45, small
