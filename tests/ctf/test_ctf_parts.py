"""Building blocks of CTF estimation: PCHIP, patch layout, spectrum axes, zeros, rescaling, quality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import PchipInterpolator

from cryowarp.base.optics import ctf_1d, electron_wavelength_a
from cryowarp.ctf._pchip import pchip_interpolate
from cryowarp.ctf.background import ctf_zeros_and_peaks, refine_background_and_envelope
from cryowarp.ctf.quality import corrected_average_1d, rescaled_frequency_sq, resolution_from_quality
from cryowarp.ctf.spectra import amplitude_spectra, patch_grid_1d, polar_spectra, radial_average_centered


def test_pchip_matches_scipy_inside_and_is_linear_outside():
    x = np.array([0.0, 1.0, 2.5, 3.0, 5.0, 6.0])
    y = np.array([1.0, 3.0, 2.0, 2.0, 7.0, 6.5])
    xs = np.linspace(0, 6, 97)
    got = pchip_interpolate(torch.tensor(x), torch.tensor(y), torch.tensor(xs))
    np.testing.assert_allclose(got.numpy(), PchipInterpolator(x, y)(xs), atol=1e-10)
    slope_end = PchipInterpolator(x, y).derivative()(6.0)
    outside = pchip_interpolate(torch.tensor(x), torch.tensor(y), torch.tensor([8.0]))
    assert float(outside[0]) == pytest.approx(6.5 + 2 * slope_end)


def test_patch_grid_is_warps_equal_spacing():
    starts = patch_grid_1d(4096, 1024)
    # n = ceil((4096 − 1024 + 512) / 512) = 7, spacing floor(3072 / 6) = 512, centred
    assert starts == [0, 512, 1024, 1536, 2048, 2560, 3072]
    assert patch_grid_1d(1024, 1024) == [0]
    # 3838 px: n = ceil(3326 / 512) = 7, spacing floor(2814 / 6) = 469, no remainder to centre
    assert patch_grid_1d(3838, 1024) == [0, 469, 938, 1407, 1876, 2345, 2814]
    # 3003 px: spacing floor(1979 / 4) = 494 leaves 3 px, so the set starts at 1
    assert patch_grid_1d(3003, 1024) == [1, 495, 989, 1483, 1977]
    with pytest.raises(ValueError, match="smaller than one patch"):
        patch_grid_1d(1000, 1024)


def test_spectrum_peak_sits_at_the_planted_frequency_and_angle():
    # a plane wave with 40 cycles per 128-px window (80 per 256-px patch) at 30° from +x towards +y
    size, window = 512, 128
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    k = 80 / 256
    wave = torch.cos(2 * math.pi * k * (xx * math.cos(math.radians(30)) + yy * math.sin(math.radians(30))))
    spectra = amplitude_spectra(wave, window=window).spectra.mean((0, 1))
    center = window // 2
    spectra[center, center] = 0
    row, col = divmod(int(torch.argmax(spectra)), window)
    # the positive- and negative-frequency peaks are equally high; fold to the upper half-plane
    if row < center:
        row, col = 2 * center - row, 2 * center - col
    assert (row - center, col - center) == (
        round(40 * math.sin(math.radians(30))),
        round(40 * math.cos(math.radians(30))),
    )
    polar = polar_spectra(spectra[None], torch.tensor([40.0]), 180)[0, 0]
    assert int(torch.argmax(polar)) == 30


def test_radial_average_of_a_radial_function():
    window = 64
    coords = torch.arange(window, dtype=torch.float32) - window // 2
    radius = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    profile = radial_average_centered(radius[None])[0]
    # the linear split is exact for a linear function away from the centre pixel's neighbourhood
    torch.testing.assert_close(profile[4:30], torch.arange(4, 30, dtype=torch.float32), atol=0.05, rtol=0)


def test_zeros_are_where_the_closed_form_puts_them():
    # without Cs and amplitude contrast, CTF = sin(π λ Δz k²): zeros at k² = n / (λ Δz)
    window, pixel, defocus_um = 512, 1.0, 2.0
    zeros, peaks = ctf_zeros_and_peaks(256, window, pixel, defocus_um, voltage_kv=300.0, cs_mm=0.0, amplitude_contrast=0.0)
    wavelength = electron_wavelength_a(300.0)
    expected = [math.sqrt(n / (wavelength * defocus_um * 1e4)) * window * pixel for n in range(1, 6)]
    np.testing.assert_allclose(zeros[:5].numpy(), expected, atol=0.02)
    expected_peaks = [math.sqrt((n + 0.5) / (wavelength * defocus_um * 1e4)) * window * pixel for n in range(0, 4)]
    np.testing.assert_allclose(peaks[:4].numpy(), expected_peaks, atol=0.1)


def test_rescaled_frequency_maps_zeros_onto_zeros():
    kwargs = {"voltage_kv": 300.0, "cs_mm": 2.7}
    source_um, target_um = 1.3, 2.4
    src_zeros, _ = ctf_zeros_and_peaks(256, 512, 1.0, source_um, amplitude_contrast=0.0, **kwargs)
    tgt_zeros, _ = ctf_zeros_and_peaks(256, 512, 1.0, target_um, amplitude_contrast=0.0, **kwargs)
    k_src = src_zeros[:8].double() / 512
    mapped = torch.sqrt(rescaled_frequency_sq(k_src**2, torch.tensor(source_um * 1e4), target_um * 1e4, **kwargs)) * 512
    np.testing.assert_allclose(mapped.numpy(), tgt_zeros[:8].numpy(), atol=0.02)
    same = rescaled_frequency_sq(k_src**2, torch.tensor(target_um * 1e4), target_um * 1e4, **kwargs)
    torch.testing.assert_close(same, k_src**2)


def test_corrected_average_undoes_astigmatism():
    # a noise-free astigmatic |CTF| spectrum, averaged at its own mean defocus, equals the 1D |CTF|
    from cryowarp.base.optics import ctf_2d

    window, pixel = 256, 1.5
    ctf = ctf_2d(2.0, 0.4, 35.0, pixel_size_a=pixel, shape_yx=(window, window), rfft=False).abs()
    spectrum = torch.fft.fftshift(ctf)[None]
    corrected = corrected_average_1d(
        spectrum, torch.tensor([2.0]), 0.4, 35.0, 2.0, pixel_size_a=pixel, voltage_kv=300.0, cs_mm=2.7
    )
    expected = ctf_1d(torch.arange(128) / (window * pixel), 2.0).abs()
    plain = radial_average_centered(spectrum)[0]
    band = slice(20, 80)  # beyond bin ~80 the lobes are < 3 bins wide and binning itself blurs them
    corr_fixed = np.corrcoef(corrected[band].numpy(), expected[band].numpy())[0, 1]
    corr_plain = np.corrcoef(plain[band].numpy(), expected[band].numpy())[0, 1]
    assert corr_fixed > 0.97 > 0.5 > corr_plain


def test_background_goes_through_the_minima():
    n = 128
    bins = torch.arange(n, dtype=torch.float32)
    truth_background = 5.0 * torch.exp(-bins / 60.0) + 1.0
    ctf = ctf_1d(bins / 512.0, 1.5).abs()
    envelope = torch.exp(-bins / 80.0)
    spectrum = truth_background + envelope * ctf
    zeros, peaks = ctf_zeros_and_peaks(n, 256, 2.0, 1.5, voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.07)
    region = slice(int(zeros[0]) + 1, int(zeros[-1]))
    warp_only, _ = refine_background_and_envelope(spectrum, zeros, peaks, 10, n - 1)
    background, env = refine_background_and_envelope(spectrum, zeros, peaks, 10, n - 1, ctf_abs=ctf)
    # Warp's minima on whole bins sit up to half a bin from the true zero, so they overestimate the
    # background by up to ~0.3 envelope where lobes are a few bins wide; the |CTF| correction brings
    # that under 0.1 (the remainder is PCHIP's shape error between zeros)
    error = ((background - truth_background) / envelope)[region].abs().max()
    error_warp = ((warp_only - truth_background) / envelope)[region].abs().max()
    assert float(error) < 0.1 < float(error_warp)
    assert float(((env - envelope) / envelope)[region].abs().max()) < 0.1


def test_resolution_walks_out_from_the_middle():
    quality = torch.full((128,), 0.9)
    quality[70:] = 0.1
    quality[15] = 0.0  # a dip below the start point is ignored
    resolution, failing = resolution_from_quality(quality, 10, 100, pixel_size_a=1.0, window=256)
    assert failing == 70 and resolution == pytest.approx(round(256 / 70, 1))
    all_good, _ = resolution_from_quality(torch.ones(128), 10, 100, pixel_size_a=1.0, window=256)
    assert all_good == 2.0


def test_friedel_completion_equals_the_full_fft_amplitude():
    from cryowarp.ctf.spectra import _full_amplitude_from_rfft

    image = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    completed = _full_amplitude_from_rfft(torch.fft.rfft2(image).abs(), 32)
    torch.testing.assert_close(completed, torch.fft.fft2(image).abs(), atol=1e-4, rtol=1e-5)


def test_frame_blocks_sum_frames_before_their_spectrum():
    frames = torch.rand(6, 128, 128, generator=torch.Generator().manual_seed(1))
    per_frame = amplitude_spectra(frames, window=32, frames_per_spectrum=1)
    blocks = amplitude_spectra(frames, window=32, frames_per_spectrum=3)
    whole = amplitude_spectra(frames, window=32, frames_per_spectrum=6)
    summed = amplitude_spectra(frames, window=32, use_movie_sum=True)
    torch.testing.assert_close(whole.spectra, summed.spectra, atol=1e-5, rtol=1e-4)
    # two blocks of three: the mean of the two blocks' spectra
    first = amplitude_spectra(frames[:3].sum(0), window=32)
    second = amplitude_spectra(frames[3:].sum(0), window=32)
    torch.testing.assert_close(blocks.spectra, (first.spectra + second.spectra) / 2, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(per_frame.spectra, blocks.spectra)


def test_overlapping_patches_have_correlated_noise():
    from cryowarp.ctf.spectra import patch_overlap_correlation

    starts = patch_grid_1d(4096, 1024)
    centers = torch.tensor([[x + 512.0, y + 512.0] for y in starts for x in starts])
    corr = patch_overlap_correlation(centers, 1024)
    assert corr.shape == (49, 49)
    torch.testing.assert_close(torch.diagonal(corr), torch.ones(49, dtype=torch.float64))
    assert 0.2 < float(corr[0, 1]) < 0.5 and float(corr[0, 1]) == pytest.approx(float(corr[0, 7]))
    assert float(corr[0, 8]) < float(corr[0, 1]) and float(corr[0, 2]) == 0.0
    assert float(torch.linalg.eigvalsh(corr).min()) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_2d_fit_model_is_the_astigmatic_ctf_squared(dtype):
    # the 2D fit's CTF² (one χ, ctf.model.ctf_chi_rad, for the float32 cost and the float64 finite
    # differences) must equal base.optics.ctf_1d² at the local defocus D + a₁ cos 2θ + a₂ sin 2θ
    from cryowarp.ctf import CTFSettings
    from cryowarp.ctf.fit import _Cost

    gen = torch.Generator().manual_seed(0)
    freq = 1 / 30 + torch.rand(4000, generator=gen) * (1 / 4 - 1 / 30)
    theta = torch.rand(4000, generator=gen) * math.pi
    settings = CTFSettings(fit_phase=True)
    cost = _Cost(torch.randn(2, 4000), freq, theta, torch.ones(4000), torch.eye(2), torch.ones(2, 1), settings)
    defocus = torch.tensor([0.8, 2.6], dtype=dtype)
    astig = torch.tensor([0.03, -0.05], dtype=dtype)
    phase = torch.tensor([0.0, math.radians(70.0)], dtype=dtype)
    simulated = cost.simulate(defocus, astig, phase, dtype=dtype)
    assert simulated.dtype == dtype
    for i in range(2):
        local = float(defocus[i]) + float(astig[0]) * torch.cos(2 * theta) + float(astig[1]) * torch.sin(2 * theta)
        expected = ctf_1d(freq.double(), local.double(), phase_shift_deg=math.degrees(float(phase[i]))) ** 2
        # the per-pixel terms are stored in float32 (float64 only keeps the finite differences exact)
        tolerance = 1e-3 if dtype == torch.float32 else 1e-4
        torch.testing.assert_close(simulated[i].double(), expected, atol=tolerance, rtol=0)
