"""Weak-phase image formation with a space-variant defocus (tilted specimen), without defocus bins.

Write the CTF at defocus D(x′) = D_c + R·t(x′), t ∈ [−1, 1], as Im[G(k)·e^{i a(k) R t}] with
G = (√(1−A²) + iA)·e^{iχ(k; D_c)} and a(k) = π λ k² (per µm of defocus). The Jacobi–Anger expansion
e^{i z t} = Σ_n εₙ iⁿ Jₙ(z) Tₙ(t) (Chebyshev Tₙ, Bessel Jₙ, ε₀ = 1, εₙ = 2) turns the space-variant
filter into a sum of ordinary filters applied to the phase weighted by Tₙ(t(x′)):

    c(x) = 2 Σₙ IFFT[ Fₙ(k) · FFT(Tₙ(t)·φ)(k) ](x),
    Fₙ = εₙ Jₙ(a R) · (−1)^{n/2} Im G        (n even)
    Fₙ = εₙ Jₙ(a R) · (−1)^{(n−1)/2} Re G    (n odd)

Each scatterer is filtered with the defocus *at its own position* x′ (the physically right choice for
a tilted slab). The series converges super-exponentially once n exceeds max a·R; we keep
n ≤ max(a R) + 15 + 3 (max a R)^{1/3}, which is exact to float32 precision.
Im G and Re G come from :func:`cryowarp.base.optics.ctf_1d` (Re G is the CTF with 90° more phase shift).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cryowarp.base.fourier import fftfreq_grid_2d
from cryowarp.base.optics import ctf_1d, electron_wavelength_a
from cryowarp.base.units import ANGSTROM_PER_UM


def n_expansion_terms(z_max: float) -> int:
    """Number of Chebyshev terms for a maximum Bessel argument ``z_max`` (rad)."""
    if z_max <= 0:
        return 1
    return int(math.ceil(z_max + 15.0 + 3.0 * z_max ** (1.0 / 3.0)))


def _bessel_table(n_terms: int, z_max: float, n_samples: int = 16385) -> tuple[torch.Tensor, float]:
    """Jₙ(z) for n < n_terms on a uniform grid of z in [0, z_max] (float64), and the grid step."""
    z = np.linspace(0.0, max(z_max, 1e-12), n_samples)
    # Miller's backward recurrence J_{n−1} = (2n/z) J_n − J_{n+1} from well above max(z, n_terms),
    # normalised by J₀ + 2 Σ J_{2k} = 1 (stable for every order and argument)
    start = int(n_terms + max(z_max, 0.0) + 40 + 10 * max(z_max, 1.0) ** (1.0 / 3.0))
    start += start % 2
    zz = np.where(z > 0, z, 1.0)
    j_next = np.zeros_like(zz)
    j_cur = np.full_like(zz, 1e-300)
    table = np.zeros((n_terms, n_samples))
    norm = np.zeros_like(zz)
    for n in range(start, 0, -1):
        j_prev = (2.0 * n / zz) * j_cur - j_next
        j_next, j_cur = j_cur, j_prev  # j_cur is now J_{n−1}
        if (n - 1) % 2 == 0:
            norm += (1.0 if n - 1 == 0 else 2.0) * j_cur
        if n - 1 < n_terms:
            table[n - 1] = j_cur
        big = np.abs(j_cur) > 1e250  # rescale to avoid overflow
        if big.any():
            scale = np.where(big, 1e-250, 1.0)
            j_cur, j_next, norm = j_cur * scale, j_next * scale, norm * scale
            if n - 1 < n_terms:  # rows ≥ n−1 are written already and share the scale
                table[n - 1 : n_terms] *= scale
    table = table / norm
    table[:, z == 0] = 0.0
    table[0, z == 0] = 1.0
    return torch.from_numpy(table), float(z[1] - z[0])


def space_variant_ctf_spectrum(
    phase: torch.Tensor,
    defocus_um: torch.Tensor,
    *,
    pixel_size_a: float,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    defocus_delta_um: float,
    astigmatism_angle_deg: float,
    phase_shift_deg: float,
    envelope: torch.Tensor | None = None,
) -> torch.Tensor:
    """rfft of the weak-phase contrast c = 2·φ⊛CTF_{D(x′)} for a phase image with per-pixel defocus.

    Parameters
    ----------
    phase : torch.Tensor
        `(h, w)` phase φ in radians.
    defocus_um : torch.Tensor
        `(h, w)` mean defocus at each pixel (the scatterer's own), µm, positive = underfocus.
    pixel_size_a, voltage_kv, cs_mm, amplitude_contrast : float
        Optics (Å, kV, mm, fraction).
    defocus_delta_um, astigmatism_angle_deg, phase_shift_deg : float
        Astigmatism (full U − V, µm; angle of U from +x towards +y) and phase-plate shift (degrees).
    envelope : torch.Tensor, optional
        `(h, w//2+1)` extra real filter (e.g. the B-factor envelope).

    Returns
    -------
    spectrum : torch.Tensor
        `(h, w//2+1)` complex64, rfft of c.
    """
    h, w = phase.shape
    device = phase.device
    freq_yx = fftfreq_grid_2d((h, w), device=device)
    freq_per_a = torch.linalg.vector_norm(freq_yx, dim=-1) / pixel_size_a
    azimuth = torch.atan2(freq_yx[..., 0], freq_yx[..., 1])
    d_min, d_max = float(defocus_um.min()), float(defocus_um.max())
    centre_um = 0.5 * (d_min + d_max)
    half_range_um = 0.5 * (d_max - d_min)
    local_um = centre_um + 0.5 * defocus_delta_um * torch.cos(
        2.0 * (azimuth - math.radians(astigmatism_angle_deg))
    )
    optics = dict(voltage_kv=voltage_kv, cs_mm=cs_mm, amplitude_contrast=amplitude_contrast)
    im_g = ctf_1d(freq_per_a, local_um, phase_shift_deg=phase_shift_deg, **optics)
    filt = 2.0 * (envelope if envelope is not None else 1.0)
    if half_range_um < 1e-9:
        return torch.fft.rfft2(phase) * (im_g * filt)
    re_g = ctf_1d(freq_per_a, local_um, phase_shift_deg=phase_shift_deg + 90.0, **optics)
    wavelength_a = float(electron_wavelength_a(voltage_kv))
    z = math.pi * wavelength_a * freq_per_a**2 * ANGSTROM_PER_UM * half_range_um  # a(k)·R, rad
    z_max = float(z.max())
    n_terms = n_expansion_terms(z_max)
    table, step = _bessel_table(n_terms, z_max)
    table = table.to(device=device, dtype=torch.float32)
    # linear interpolation of every Jₙ at z(k): shared indices and weights
    pos = (z / step).clamp(0, table.shape[1] - 1)
    index = pos.floor().long().clamp_max(table.shape[1] - 2)
    frac = pos - index
    flat_index = index.reshape(-1)
    t = ((defocus_um - centre_um) / half_range_um).to(torch.float32)
    t_prev, t_cur = torch.ones_like(t), t.clone()
    spectrum = torch.zeros((h, w // 2 + 1), dtype=torch.complex64, device=device)
    for n in range(n_terms):
        if n == 0:
            weighted = phase
        elif n == 1:
            weighted = phase * t_cur
        else:
            t_prev, t_cur = t_cur, 2.0 * t * t_cur - t_prev
            weighted = phase * t_cur
        jn = (
            table[n][flat_index] * (1 - frac.reshape(-1)) + table[n][flat_index + 1] * frac.reshape(-1)
        ).reshape(z.shape)
        if n % 2 == 0:
            coef = (1.0 if n == 0 else 2.0) * (-1.0) ** (n // 2) * im_g
        else:
            coef = 2.0 * (-1.0) ** ((n - 1) // 2) * re_g
        spectrum += torch.fft.rfft2(weighted) * (jn * coef * filt)
    return spectrum
