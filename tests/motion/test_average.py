"""Aligned averages: exact undoing of whole-pixel shifts, dose weights, halves, sharpness vs the sum."""

from __future__ import annotations

import pytest
import torch
from tests.conftest import DEVICES
from tests.motion._synthetic import make_movie

from cryowarp.base.fourier import fftfreq_grid_2d
from cryowarp.motion import MotionModel, MotionSettings, average_frames, fit_motion


def _rolled_movie(shifts_px_yx: torch.Tensor, shape=(96, 128)):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(shape, generator=gen)
    frames = torch.stack([torch.roll(image, (int(s[0]), int(s[1])), dims=(0, 1)) for s in shifts_px_yx])
    return image, frames


def _model_from_track(track_a_yx: torch.Tensor, shape_yx, pixel_size_a=1.0):
    # an interpolating spline with one node per frame passes exactly through the track
    return MotionModel(
        shape_yx=shape_yx,
        pixel_size_a=pixel_size_a,
        n_frames=track_a_yx.shape[0],
        global_values_a_yx=track_a_yx.T.contiguous(),
        local_values_a_yx=torch.zeros(2, 1, 1, 1),
        patch_centers_px_yx=torch.zeros(1, 2),
    )


@pytest.mark.parametrize("device", DEVICES)
def test_whole_pixel_shifts_are_undone_exactly(device):
    shifts = torch.tensor([[0, 0], [3, -2], [5, 1], [-4, 7]])
    image, frames = _rolled_movie(shifts)
    # frame_f(x) = specimen(x − d_f): torch.roll moves content by +shift, so d = shift (pixel size 1 Å)
    model = _model_from_track(shifts.float(), (96, 128))
    avg = average_frames(
        frames.to(device), model, pixel_size_a=1.0, exposure_per_frame_e_per_a2=1.0, dose_weighted=False
    )
    # a Fourier phase ramp by a whole pixel is an exact periodic roll: float32 round-off only
    torch.testing.assert_close(avg.average.cpu(), image, atol=1e-5, rtol=0)
    assert avg.n_resamplings == 0  # no local field: every shift is an exact Fourier phase


def test_dose_weighting_is_warps_bfactor_and_keeps_the_mean():
    shifts = torch.zeros(6, 2)
    image, frames = _rolled_movie(shifts, shape=(64, 64))
    model = _model_from_track(shifts, (64, 64))
    exposure = 2.0
    avg = average_frames(
        frames,
        model,
        pixel_size_a=1.0,
        exposure_per_frame_e_per_a2=exposure,
        dose_weighted=True,
        also_unweighted=True,
    )
    torch.testing.assert_close(avg.average_no_dw, image, atol=1e-5, rtol=0)
    # identical frames: DW average = image filtered by mean_f exp(−3·d·(f+½)·k²/4) (warp-facts.md §1.6)
    k2 = fftfreq_grid_2d((64, 64)).square().sum(-1)
    filt = torch.stack([torch.exp(-3 * exposure * (f + 0.5) * k2 / 4) for f in range(6)]).mean(0)
    expected = torch.fft.irfft2(torch.fft.rfft2(image) * filt, s=(64, 64))
    torch.testing.assert_close(avg.average, expected, atol=1e-5, rtol=0)
    assert float(avg.average.mean()) == pytest.approx(float(image.mean()), abs=1e-5)


def test_halves_and_skipping():
    shifts = torch.tensor([[0, 0], [1, 0], [2, 1], [3, 1], [4, 2], [5, 2]])
    image, frames = _rolled_movie(shifts, shape=(64, 64))
    frames = frames * torch.arange(1.0, 7.0)[:, None, None]  # tell frames apart by their scale
    model = _model_from_track(shifts.float(), (64, 64))
    avg = average_frames(
        frames,
        model,
        pixel_size_a=1.0,
        exposure_per_frame_e_per_a2=1.0,
        dose_weighted=False,
        skip_first=1,
        skip_last=1,
        halves=True,
    )
    assert (avg.first_frame, avg.last_frame) == (1, 5)
    torch.testing.assert_close(avg.average, image * (2 + 3 + 4 + 5) / 4, atol=1e-4, rtol=0)
    torch.testing.assert_close(avg.average_odd, image * (2 + 4) / 2, atol=1e-4, rtol=0)  # frames 1, 3
    torch.testing.assert_close(avg.average_even, image * (3 + 5) / 2, atol=1e-4, rtol=0)  # frames 2, 4


def _band_correlation(
    image: torch.Tensor, clean: torch.Tensor, pixel_size_a: float, low_a: float, high_a: float
):
    k = torch.linalg.vector_norm(fftfreq_grid_2d(tuple(image.shape)), dim=-1) / pixel_size_a
    band = (k > 1 / low_a) & (k < 1 / high_a)
    a, b = torch.fft.rfft2(image)[band], torch.fft.rfft2(clean)[band]
    return float((a * b.conj()).real.sum() / (a.abs().square().sum() * b.abs().square().sum()).sqrt())


def test_aligned_average_is_sharper_than_the_plain_sum():
    movie = make_movie(
        shape_yx=(768, 768), n_frames=16, pixel_size_a=2.0, drift_step_a=2.0, local_amplitude_a=5.0, seed=1
    )
    model = fit_motion(
        movie.frames, movie.pixel_size_a, 1.0, MotionSettings(patch_size_px=256, grid_xyt=(4, 4, 16))
    )
    avg = average_frames(
        movie.frames, model, pixel_size_a=2.0, exposure_per_frame_e_per_a2=1.0, dose_weighted=False
    )
    plain = movie.frames.mean(0)
    aligned_cc = _band_correlation(avg.average, movie.clean, 2.0, 15.0, 8.0)
    plain_cc = _band_correlation(plain, movie.clean, 2.0, 15.0, 8.0)
    # ~8 Å of drift blurs the plain sum at 8–15 Å (measured 0.26); aligned it keeps 0.98
    assert plain_cc < 0.5 < 0.95 < aligned_cc, (plain_cc, aligned_cc)
    # with the fitted local field the average beats the same model without its local part
    global_only = MotionModel(
        **{**model.__dict__, "local_values_a_yx": torch.zeros_like(model.local_values_a_yx)}
    )
    glob = average_frames(
        movie.frames, global_only, pixel_size_a=2.0, exposure_per_frame_e_per_a2=1.0, dose_weighted=False
    )
    # (measured 0.98 with vs 0.91 without the local field at 8–15 Å)
    assert aligned_cc > _band_correlation(glob.average, movie.clean, 2.0, 15.0, 8.0) + 0.03


def test_bad_input_is_named():
    model = _model_from_track(torch.zeros(4, 2), (64, 64))
    with pytest.raises(ValueError, match=r"fitted on 4 frames of 64×64, found frames 3×64×64"):
        average_frames(torch.zeros(3, 64, 64), model, pixel_size_a=1.0, exposure_per_frame_e_per_a2=1.0)
    nan_frames = torch.zeros(4, 64, 64)
    nan_frames[3, 0, 0] = float("inf")
    with pytest.raises(
        ValueError,
        match=r"average_frames: frames must be finite, found 1 NaN/inf values \(first in frame 3\)",
    ):
        average_frames(nan_frames, model, pixel_size_a=1.0, exposure_per_frame_e_per_a2=1.0)
    with pytest.raises(ValueError, match="leave no frames of 4"):
        average_frames(
            torch.zeros(4, 64, 64),
            model,
            pixel_size_a=1.0,
            exposure_per_frame_e_per_a2=1.0,
            skip_first=2,
            skip_last=2,
        )


def _smooth_image(n: int) -> tuple[torch.Tensor, callable]:
    def f(y, x):
        return torch.sin(2 * torch.pi * (0.07 * y + 0.05 * x)) + torch.cos(2 * torch.pi * (0.11 * x - 0.03 * y))

    yy, xx = torch.meshgrid(torch.arange(n).float(), torch.arange(n).float(), indexing="ij")
    return f(yy, xx).contiguous(), f


@pytest.mark.parametrize("offset_yx", [(0.0, 0.0), (37.0, -52.0)])
def test_warp_by_field_samples_the_analytic_image(offset_yx):
    """The CPU kernel samples image(y + f_y, x + f_x) with f looked up at (y, x) − offset; against the
    analytic function of a band-limited image (frequencies ≤ 0.12 cycles/px) the Catmull-Rom error is
    ≤ 0.025 of the unit amplitude, and the torch twin (GPU path) agrees to its bicubic's accuracy."""
    import numpy as np
    import torch.nn.functional as nnf

    from cryowarp.motion._kernels import warp_by_field
    from cryowarp.motion.average import _warp_torch

    n = 256
    image, f = _smooth_image(n)
    nodes = torch.linspace(0, n - 1, 8)
    gy, gx = torch.meshgrid(nodes, nodes, indexing="ij")
    # gradients ≤ 0.01 px/px (beam-induced fields: ~0.002); the separable x pass errs by ∂f_x/∂y·f_y
    field = torch.stack([1.5 * torch.sin(gx / 150), -1.2 * torch.cos(gy / 120)]).float().contiguous()
    offset = torch.tensor(offset_yx)
    out, scratch = torch.empty(n, n), torch.empty(n, n)
    warp_by_field(image.numpy(), field.numpy(), offset.numpy().astype(np.float32), out.numpy(), scratch.numpy())
    # truth: the field bilinearly interpolated at (y, x) − offset (clamped to the node range)
    yy, xx = torch.meshgrid(torch.arange(n).float(), torch.arange(n).float(), indexing="ij")
    lookup = torch.stack(((xx - offset[1]) / (n - 1) * 2 - 1, (yy - offset[0]) / (n - 1) * 2 - 1), -1)
    dense = nnf.grid_sample(field[None], lookup[None], mode="bilinear", padding_mode="border", align_corners=True)[0]
    exact = f(yy + dense[0], xx + dense[1])
    inner = (slice(4, -4), slice(4, -4))
    assert float((out - exact)[inner].abs().max()) < 0.025
    twin = _warp_torch(image, field, offset)
    assert float((twin - exact)[inner].abs().max()) < 0.08


def test_binning_with_real_space_prebinning_keeps_the_band():
    """The fit's 2×2 pre-binning divides out the box filter: for content inside the kept band the result
    equals plain Fourier cropping of the full frame."""
    from cryowarp.base.fourier import fourier_rescale_2d
    from cryowarp.motion._patches import normalise_and_bin

    gen = torch.Generator().manual_seed(3)
    full = torch.randn(2, 512, 512, generator=gen)
    band_limited = fourier_rescale_2d(fourier_rescale_2d(full, (96, 96)), (512, 512))  # content < 48/512 cyc/px
    binned = normalise_and_bin(band_limited, (100, 100))
    exact = fourier_rescale_2d(band_limited, (100, 100))
    exact = (exact - exact.mean((1, 2), keepdim=True)) / exact.std((1, 2), keepdim=True)
    torch.testing.assert_close(binned, exact, atol=2e-3, rtol=0)
