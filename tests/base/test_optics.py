"""Exact answers for the optics primitives (closed forms; independent-implementation checks live in
test_optics_peers.py)."""

import math

import pytest
import torch

from cryowarp.base.optics import (
    ctf_1d,
    ctf_2d,
    dose_weights_bfactor,
    dose_weights_critical_exposure,
    electron_wavelength_a,
)


def test_wavelength_at_300kv_is_0_019687_a():
    # 0.019687 Å (1.9687 pm), as stated to 6 decimals (truncated): the exact value is 0.01968762 Å
    assert electron_wavelength_a(300.0) == pytest.approx(0.019687, abs=1e-6)
    assert electron_wavelength_a(300.0) == pytest.approx(0.0196876, abs=1e-7)
    assert electron_wavelength_a(200.0) == pytest.approx(0.0250795, abs=1e-7)


def test_ctf_at_origin_is_plus_amplitude_contrast():
    c = ctf_2d(1.5, 0.3, 20.0, pixel_size_a=1.0, shape_yx=(32, 32), amplitude_contrast=0.1)
    assert c[0, 0].item() == pytest.approx(0.1, abs=1e-6)


def test_ctf_zeros_at_closed_form_radii_without_cs():
    # With Cs = 0 and A = 0, CTF = sin(π λ Δz k²) vanishes at k_n = sqrt(n / (λ Δz)).
    defocus_um, voltage = 2.0, 300.0
    lam = electron_wavelength_a(voltage)
    k_n = torch.tensor([math.sqrt(n / (lam * defocus_um * 1e4)) for n in range(1, 6)], dtype=torch.float64)
    c = ctf_1d(k_n, defocus_um, voltage_kv=voltage, cs_mm=0.0, amplitude_contrast=0.0)
    assert torch.allclose(c, torch.zeros_like(c), atol=1e-9)


def test_astigmatism_axis_u_along_angle():
    # Along the U direction the local defocus is D + Δ/2: compare a 2D line with the 1D CTF.
    shape, px = (256, 256), 1.0
    c = ctf_2d(2.0, 0.5, 0.0, pixel_size_a=px, shape_yx=shape, cs_mm=2.7)
    kx = torch.fft.rfftfreq(256) / px
    c_u = ctf_1d(kx, 2.25, cs_mm=2.7)
    c_v = ctf_1d(torch.fft.fftfreq(256)[:129].abs() / px, 1.75, cs_mm=2.7)
    torch.testing.assert_close(c[0, :], c_u, atol=1e-5, rtol=0)
    torch.testing.assert_close(c[:129, 0], c_v, atol=1e-5, rtol=0)


def test_ctf_2d_broadcasts_batches():
    c = ctf_2d(torch.tensor([1.0, 2.0, 3.0]), 0.1, 45.0, pixel_size_a=1.2, shape_yx=(64, 48))
    assert c.shape == (3, 64, 25)
    single = ctf_2d(2.0, 0.1, 45.0, pixel_size_a=1.2, shape_yx=(64, 48))
    torch.testing.assert_close(c[1], single)


def test_dose_weights_are_one_at_zero_exposure_and_decay():
    k = torch.linspace(0.0, 0.3, 50)
    w = dose_weights_critical_exposure(k, torch.tensor([0.0]), torch.tensor([0.0]), normalize=False)
    torch.testing.assert_close(w, torch.ones_like(w))
    wb = dose_weights_bfactor(k, 10, 1.0)
    assert torch.all(wb[1:] <= wb[:-1] + 1e-7)
    wn = dose_weights_bfactor(k, 10, 1.0, bfactor_per_e_a2=-4.0, normalize=True)
    torch.testing.assert_close(wn.sum(0), torch.ones(50))
