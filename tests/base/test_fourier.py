"""Fourier helpers: exact integer shifts, sub-pixel shift round trips, rescaling invariants."""

import pytest
import torch

from cryowarp.base.fourier import (
    bandpass_raised_cosine,
    fourier_rescale_2d,
    fourier_rescale_to_pixel_size_2d,
    fourier_shift_2d,
    radial_average_2d,
    soft_circular_mask,
)


def test_delta_shifted_by_whole_pixels_lands_on_exact_pixel():
    img = torch.zeros(32, 48)
    img[10, 7] = 1.0
    out = fourier_shift_2d(img, torch.tensor([3.0, -5.0]))
    assert out.argmax().item() == 13 * 48 + 2
    torch.testing.assert_close(out.max(), torch.tensor(1.0), atol=1e-5, rtol=0)


def test_subpixel_shift_round_trip():
    g = torch.Generator().manual_seed(1)
    img = torch.randn(64, 64, generator=g)
    shift = torch.tensor([0.37, -1.61])
    back = fourier_shift_2d(fourier_shift_2d(img, shift), -shift)
    # Exact except for the unpaired Nyquist row/column, whose imaginary part a real image cannot hold.
    img_no_nyq = torch.fft.irfft2(torch.fft.rfft2(img) * (torch.arange(33) < 32), s=(64, 64))
    back_no_nyq = torch.fft.irfft2(torch.fft.rfft2(back) * (torch.arange(33) < 32), s=(64, 64))
    lowpass = torch.fft.fftfreq(64).abs()[:, None] < 0.5
    torch.testing.assert_close(torch.fft.irfft2(torch.fft.rfft2(back_no_nyq) * lowpass, s=(64, 64)),
                               torch.fft.irfft2(torch.fft.rfft2(img_no_nyq) * lowpass, s=(64, 64)),
                               atol=1e-4, rtol=0)


def test_batched_shifts_broadcast():
    img = torch.zeros(3, 16, 16)
    img[:, 8, 8] = 1
    out = fourier_shift_2d(img, torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, -3.0]]))
    assert [o.argmax().item() for o in out] == [9 * 16 + 8, 8 * 16 + 10, 5 * 16 + 5]


def test_rescale_preserves_mean_and_low_frequencies():
    y, x = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    img = 3.0 + torch.cos(2 * torch.pi * 4 * x / 128) + torch.sin(2 * torch.pi * 3 * y / 128)
    small = fourier_rescale_2d(img, (64, 64))
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    expected = 3.0 + torch.cos(2 * torch.pi * 4 * xs / 64) + torch.sin(2 * torch.pi * 3 * ys / 64)
    torch.testing.assert_close(small, expected, atol=1e-4, rtol=0)
    big = fourier_rescale_2d(small, (128, 128))
    torch.testing.assert_close(big, img, atol=1e-4, rtol=0)


def test_rescale_to_pixel_size_rounds_to_even_and_reports_exact_pixel_size():
    out, px = fourier_rescale_to_pixel_size_2d(torch.zeros(1000, 1000), 1.0, 8.0)
    assert out.shape == (124, 124)  # 125 px rounded to even as Warp does (integer halves)
    assert px == pytest.approx(1000 / 124)


def test_soft_mask_profile():
    m = soft_circular_mask((64, 64), 10.0, 10.0)
    assert m[32, 32] == 1.0 and m[32, 32 + 10] == 1.0
    assert m[32, 32 + 15].item() == pytest.approx(0.5, abs=1e-6)
    assert m[32, 32 + 20] == 0.0


def test_bandpass_and_radial_average():
    f = bandpass_raised_cosine((64, 64), 1.0, highpass_a=16.0)
    assert f[0, 0] == 0.0 and f[0, 8] == 1.0  # 8/64 = 1/8 Å⁻¹ > 1/16
    ramp = torch.linalg.vector_norm(torch.stack(torch.meshgrid(torch.fft.fftfreq(64), torch.fft.rfftfreq(64),
                                                                indexing="ij"), -1), dim=-1) * 64
    prof = radial_average_2d(ramp)
    # ring i averages radii that round to i (within ±0.5), so the profile is i to within 0.2
    torch.testing.assert_close(prof[1:30], torch.arange(1.0, 30.0), atol=0.2, rtol=0)
