"""The space-variant CTF (Chebyshev/Bessel expansion) equals brute force, one scatterer at a time."""

from __future__ import annotations

import pytest
import torch

from cryowarp.base.optics import ctf_2d
from cryowarp.sim._ctf import n_expansion_terms, space_variant_ctf_spectrum


@pytest.mark.parametrize(
    "delta_um,angle_deg,phase_shift_deg", [(0.0, 0.0, 0.0), (0.3, 35.0, 0.0), (0.1, 120.0, 90.0)]
)
def test_expansion_matches_per_pixel_brute_force(delta_um, angle_deg, phase_shift_deg):
    n = 40
    g = torch.Generator().manual_seed(0)
    phase = torch.randn(n, n, generator=g)
    yy, xx = torch.meshgrid(
        torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij"
    )
    # a steep plane: 1.0 → 3.4 µm across 40 px of 1.5 Å, i.e. a·R up to ~70 rad at Nyquist
    defocus = 1.0 + 0.04 * xx + 0.02 * yy
    optics = dict(voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.07)
    got = torch.fft.irfft2(
        space_variant_ctf_spectrum(
            phase,
            defocus,
            pixel_size_a=1.5,
            defocus_delta_um=delta_um,
            astigmatism_angle_deg=angle_deg,
            phase_shift_deg=phase_shift_deg,
            **optics,
        ),
        s=(n, n),
    )
    # brute force: every source pixel filtered by the CTF at its own defocus (periodic boundaries)
    ctfs = ctf_2d(
        defocus.reshape(-1).double(),
        delta_um,
        angle_deg,
        pixel_size_a=1.5,
        shape_yx=(n, n),
        phase_shift_deg=phase_shift_deg,
        **optics,
    )
    deltas = torch.zeros(n * n, n, n)
    deltas.view(n * n, -1)[torch.arange(n * n), torch.arange(n * n)] = phase.reshape(-1)
    expected = torch.fft.irfft2(torch.fft.rfft2(deltas) * (2.0 * ctfs), s=(n, n)).sum(0)
    # float32 accumulation over ~90 terms: agreement to 1e-4 of the contrast's scale
    torch.testing.assert_close(got, expected.float(), atol=1e-4 * float(expected.abs().max()), rtol=0)


def test_term_count_grows_with_the_defocus_range():
    assert n_expansion_terms(0.0) == 1
    assert n_expansion_terms(10.0) < n_expansion_terms(50.0) < 80


@pytest.mark.parametrize("z_max,n_terms", [(0.5, 16), (80.0, 120)])
def test_bessel_table_matches_scipy(z_max, n_terms):
    import numpy as np
    from scipy.special import jv

    from cryowarp.sim._ctf import _bessel_table

    table, step = _bessel_table(n_terms, z_max, n_samples=2049)
    z = np.arange(2049) * step
    np.testing.assert_allclose(table.numpy(), np.stack([jv(n, z) for n in range(n_terms)]), atol=1e-12)
