"""Deconvolution filter (warp-facts.md §5): analytic values, limits, and plant-and-recover on images."""

from __future__ import annotations

import math

import pytest
import torch
from tests.conftest import DEVICES

from cryowarp.deconv import (
    DeconvSettings,
    deconvolution_filter_1d,
    deconvolution_filter_2d,
    deconvolve_2d,
    deconvolve_3d,
    highpass_weight,
)


def _ctf_by_hand(freq_per_a: float, defocus_um: float, voltage_kv=300.0, cs_mm=2.7, amp=0.07) -> float:
    """Independent CTF: -sin(χ_warp) form written out from the textbook formula."""
    volts = voltage_kv * 1e3
    lam = 12.2643247 / math.sqrt(volts * (1 + 0.978466e-6 * volts))
    k2 = freq_per_a**2
    chi = math.pi * lam * defocus_um * 1e4 * k2 - 0.5 * math.pi * cs_mm * 1e7 * lam**3 * k2**2
    return math.sqrt(1 - amp**2) * math.sin(chi) + amp * math.cos(chi)


@pytest.mark.parametrize(
    "convention,nu_full,plateau",
    [("warp_cpu", 1 / 100, 2.0), ("warp_gpu", 2 / 100, 1.0), ("stated", 1 / 100, 1.0)],
)
def test_highpass_plateau_and_midpoint(convention, nu_full, plateau):
    # warp-facts §5: the CPU version reaches 2 at 1/hp, the GPU one reaches 1 at 2/hp (factor-2 surprise)
    nu = torch.tensor([0.0, nu_full / 2, nu_full, 3 * nu_full])
    h = highpass_weight(nu, 100.0, convention)
    torch.testing.assert_close(h, torch.tensor([0.0, plateau / 2, plateau, plateau]), atol=1e-6, rtol=0)


def test_filter_matches_the_formula_written_out():
    # W = CTF / (CTF² + 1/SNR), SNR = 10^(3s) exp(-200 f ν) H(ν), checked at three frequencies
    strength, falloff, defocus = 0.7, 0.5, 1.8
    freqs = [0.004, 0.05, 0.13]
    got = deconvolution_filter_1d(
        torch.tensor(freqs, dtype=torch.float64),
        defocus,
        strength=strength,
        falloff=falloff,
        highpass_a=100.0,
    )
    for nu, w in zip(freqs, got.tolist(), strict=True):
        hp = 1 - math.cos(math.pi * min(1.0, nu * 100.0))
        snr = 10 ** (3 * strength) * math.exp(-200 * falloff * nu) * hp
        ctf = _ctf_by_hand(nu, defocus)
        assert w == pytest.approx(ctf / (ctf**2 + 1 / snr), rel=1e-5, abs=1e-9)


def test_strength_limits():
    nu = torch.linspace(0.02, 0.2, 200, dtype=torch.float64)
    ctf = torch.tensor([_ctf_by_hand(v, 1.5) for v in nu.tolist()], dtype=torch.float64)
    # s → ∞ with no falloff: the pure inverse 1/CTF wherever the CTF is not tiny
    inverse = deconvolution_filter_1d(nu, 1.5, strength=8.0, falloff=0.0, highpass_a=100.0)
    ok = ctf.abs() > 0.05
    torch.testing.assert_close(inverse[ok], 1 / ctf[ok], rtol=1e-3, atol=0)
    # s = 0: SNR = exp(-200 f ν) H ≤ 2, W = CTF·SNR/(CTF²·SNR+1) is never larger than 1/(2·sqrt(1/SNR))
    weak = deconvolution_filter_1d(nu, 1.5, strength=0.0, falloff=1.0, highpass_a=100.0)
    snr = 2 * torch.exp(-200 * nu)
    torch.testing.assert_close(weak, ctf * snr / (ctf**2 * snr + 1), rtol=1e-5, atol=1e-9)
    assert (weak.abs() <= 0.5 * torch.sqrt(snr) + 1e-9).all()
    # the filter is zero at CTF zeros and keeps the CTF's sign (phase flipping)
    assert (torch.sign(weak[ok]) == torch.sign(ctf[ok])).all()


def test_constant_image_is_removed_by_the_highpass():
    out = deconvolve_2d(torch.full((64, 64), 7.0), 1.0, 1.0)
    assert out.abs().max() < 1e-5


def _ctf_modulate(
    image: torch.Tensor, pixel_size_a: float, defocus_um: float, delta=0.0, angle=0.0
) -> torch.Tensor:
    from cryowarp.base.optics import ctf_2d

    ctf = ctf_2d(defocus_um, delta, angle, pixel_size_a=pixel_size_a, shape_yx=tuple(image.shape[-2:]))
    return torch.fft.irfft2(torch.fft.rfft2(image) * ctf, s=image.shape[-2:])


@pytest.mark.parametrize("device", DEVICES)
def test_ctf_modulated_delta_becomes_compact_again(device):
    # a delta blurred by an astigmatic CTF rings over tens of pixels; deconvolution must pull the
    # energy back: we require ≥ 3× more of it within 3 px of the delta (measured ≈ 6–8×)
    n, px = 256, 2.0
    delta = torch.zeros(n, n)
    delta[100, 140] = 1.0
    blurred = _ctf_modulate(delta, px, 2.5, 0.3, 30.0).to(device)
    sharp = deconvolve_2d(blurred, px, 2.5, 0.3, 30.0)
    assert sharp.device.type == device
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    near = (((yy - 100) ** 2 + (xx - 140) ** 2) <= 9).to(device)

    def fraction(img):
        return float((img[near] ** 2).sum() / (img**2).sum())

    assert fraction(sharp) > 3 * fraction(blurred)
    assert int(sharp.abs().argmax()) == 100 * n + 140


def test_deconvolved_blobs_correlate_better_with_the_truth():
    # 3-Å-wide blobs modulated by a 3 µm CTF: past the first zero the contrast flips, so the observed
    # image correlates poorly with the truth (measured 0.28); deconvolution flips it back (0.65)
    gen = torch.Generator().manual_seed(0)
    n, px = 256, 1.5
    yy, xx = torch.meshgrid(
        torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij"
    )
    truth = torch.zeros(n, n)
    for cy, cx in torch.randint(20, n - 20, (12, 2), generator=gen).tolist():
        truth += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 2.0**2))
    observed = _ctf_modulate(truth, px, 3.0)
    restored = deconvolve_2d(observed, px, 3.0)
    truth_hp = truth - truth.mean()

    def corr(a):
        a = a - a.mean()
        return float((a * truth_hp).sum() / (a.norm() * truth_hp.norm()))

    assert corr(observed) < 0.35
    assert corr(restored) > 0.6


def test_batch_defocus_gives_one_filter_per_image():
    filt = deconvolution_filter_2d((32, 32), 1.0, torch.tensor([1.0, 2.0, 3.0]))
    assert filt.shape == (3, 32, 17)
    single = deconvolution_filter_2d((32, 32), 1.0, 2.0)
    torch.testing.assert_close(filt[1], single)
    images = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = deconvolve_2d(images, 1.0, torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(out[1], deconvolve_2d(images[1], 1.0, 2.0), atol=1e-5, rtol=0)


def test_deconvolve_3d_is_isotropic_and_keeps_input():
    # a centred delta stays symmetric under the isotropic 3-D filter; the input is untouched
    vol = torch.zeros(32, 32, 32)
    vol[16, 16, 16] = 1.0
    before = vol.clone()
    out = deconvolve_3d(vol, 10.0, 4.0)
    torch.testing.assert_close(vol, before)
    torch.testing.assert_close(out, out.permute(1, 2, 0), atol=1e-6, rtol=0)
    torch.testing.assert_close(out, out.flip(0).roll(1, 0), atol=1e-6, rtol=0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="NaN or infinite"):
        deconvolve_2d(torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]), 1.0, 1.0)
    with pytest.raises(ValueError, match=r"expected shape \(d, h, w\)"):
        deconvolve_3d(torch.zeros(2, 4, 4, 4), 1.0, 1.0)
    with pytest.raises(ValueError, match="highpass convention"):
        highpass_weight(torch.zeros(3), 100.0, "gpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strength"):
        deconvolve_2d(torch.zeros(8, 8), 1.0, 1.0, strength=-1.0)


def test_settings_defaults_are_warps():
    s = DeconvSettings()
    assert (s.strength, s.falloff, s.highpass_a) == (1.0, 1.0, None)
    with pytest.raises(ValueError):
        DeconvSettings(unknown=1)
