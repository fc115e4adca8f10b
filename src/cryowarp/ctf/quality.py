"""Astigmatism-corrected 1D average (§2.6), fit-quality curve and resolution estimate (§2.7)."""

from __future__ import annotations

import math

import torch

from cryowarp.base.optics import electron_wavelength_a
from cryowarp.base.units import ANGSTROM_PER_MM, ANGSTROM_PER_UM
from cryowarp.ctf.search import pearson_last_dim


def rescaled_frequency_sq(
    freq_sq_per_a2: torch.Tensor,
    source_defocus_a: torch.Tensor,
    target_defocus_a: float,
    *,
    voltage_kv: float,
    cs_mm: float,
) -> torch.Tensor:
    """k_t² whose defocus + Cs phase at ``target_defocus_a`` equals that of k_s² at the source defocus.

    Solves π λ z_t k_t² − (π/2) Cs λ³ k_t⁴ = π λ z_s k_s² − (π/2) Cs λ³ k_s⁴ for the smaller root
    (warp-facts.md §2.6), in the cancellation-free form k_t² = 2c / (z_t + sqrt(z_t² − 2 Cs λ² c)),
    c = z_s k_s² − ½ Cs λ² k_s⁴. Defocus in Å, positive = underfocus.
    """
    wavelength_a = electron_wavelength_a(voltage_kv)
    cs_l2 = cs_mm * ANGSTROM_PER_MM * wavelength_a**2
    c = source_defocus_a * freq_sq_per_a2 - 0.5 * cs_l2 * freq_sq_per_a2**2
    disc = (target_defocus_a**2 - 2.0 * cs_l2 * c).clamp_min(0.0)
    return (2.0 * c / (target_defocus_a + torch.sqrt(disc))).abs()


def corrected_average_1d(
    spectra: torch.Tensor,
    local_defocus_um: torch.Tensor,
    defocus_delta_um: float,
    astigmatism_angle_deg: float,
    target_defocus_um: float,
    *,
    pixel_size_a: float,
    voltage_kv: float,
    cs_mm: float,
    background: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Average fftshifted spectra into one 1D spectrum at a common defocus, undoing astigmatism.

    Every pixel (radius k_s, azimuth φ) of spectrum s, whose defocus is
    z_s(φ) = D_s + (ΔD/2) cos 2(φ − φ_a), moves to the radius k_t at which the target CTF has the same
    phase (:func:`rescaled_frequency_sq`), and is split linearly between the two nearest bins.

    Parameters
    ----------
    spectra : torch.Tensor
        `(s, w, w)` fftshifted amplitude spectra.
    local_defocus_um : torch.Tensor
        `(s,)` defocus of each spectrum, µm.
    defocus_delta_um, astigmatism_angle_deg : float
        Astigmatism (full U − V, µm; angle of U from +x towards +y, degrees).
    target_defocus_um : float
        Common defocus of the output, µm.
    pixel_size_a, voltage_kv, cs_mm : float
        Sampling and microscope.
    background : torch.Tensor, optional
        `(s, w // 2)` per-spectrum 1D background (on the source radii) subtracted before averaging.
    weights : torch.Tensor, optional
        `(s,)` weight of each spectrum (e.g. 1/envelope scale), default 1.

    Returns
    -------
    ps1d : torch.Tensor
        `(w // 2,)`; bins with no contribution are 0.
    """
    n, size = spectra.shape[0], spectra.shape[-1]
    n_bins = size // 2
    coords = torch.arange(size, device=spectra.device, dtype=torch.float32) - size // 2
    ky, kx = torch.meshgrid(coords, coords, indexing="ij")
    radius_px = torch.sqrt(kx**2 + ky**2).reshape(-1)
    inside = torch.nonzero(radius_px < n_bins).flatten()  # only pixels inside Nyquist
    radius_px = radius_px[inside]
    azimuth = torch.atan2(ky.reshape(-1)[inside], kx.reshape(-1)[inside])
    freq_sq = (radius_px / (size * pixel_size_a)) ** 2
    angle_rad = math.radians(astigmatism_angle_deg)
    astig_a = 0.5 * defocus_delta_um * ANGSTROM_PER_UM * torch.cos(2 * (azimuth - angle_rad))
    flat = spectra.reshape(n, -1)[:, inside]  # (s, pixels)
    if background is not None:
        idx = radius_px.floor().long().clamp_max(n_bins - 2)
        frac = radius_px - idx
        flat = flat - (background[:, idx] * (1 - frac) + background[:, idx + 1] * frac)
    sums = spectra.new_zeros(n_bins + 2)
    counts = spectra.new_zeros(n_bins + 2)
    target_a = target_defocus_um * ANGSTROM_PER_UM
    for s in range(n):
        source_a = float(local_defocus_um[s]) * ANGSTROM_PER_UM + astig_a
        kt_sq = rescaled_frequency_sq(freq_sq, source_a, target_a, voltage_kv=voltage_kv, cs_mm=cs_mm)
        bin_t = torch.sqrt(kt_sq) * (size * pixel_size_a)
        weight = 1.0 if weights is None else float(weights[s])
        lower_f = bin_t.floor()
        frac_t = (bin_t - lower_f) * weight
        lower = lower_f.long().clamp(0, n_bins + 1)
        upper = (lower + 1).clamp_max(n_bins + 1)
        values = flat[s]
        sums.index_add_(0, lower, values * (weight - frac_t))
        sums.index_add_(0, upper, values * frac_t)
        counts.index_add_(0, lower, weight - frac_t)
        counts.index_add_(0, upper, frac_t)
    return torch.where(counts > 1e-6, sums / counts.clamp_min(1e-6), torch.zeros_like(sums))[:n_bins]


def fit_quality_1d(
    spectrum_sub: torch.Tensor,
    simulated: torch.Tensor,
    zeros_bins: torch.Tensor,
    bin_min: int,
    *,
    min_window: int = 16,
) -> torch.Tensor:
    """Local Pearson correlation between the measured and simulated 1D spectra around every bin.

    The window at bin i spans the lobe around the nearest CTF peak (distance between the two zeros
    enclosing it), at least ``min_window`` bins (warp-facts.md §2.7). Bins below ``bin_min`` are NaN.

    Parameters
    ----------
    spectrum_sub : torch.Tensor
        `(n_bins,)` background-subtracted spectrum.
    simulated : torch.Tensor
        `(n_bins,)` simulated |CTF| × envelope.
    zeros_bins : torch.Tensor
        Fractional bins of the CTF zeros.
    bin_min : int
        First bin scored.
    min_window : int
        Shortest window in bins.

    Returns
    -------
    quality : torch.Tensor
        `(n_bins,)` in [−1, 1], NaN below ``bin_min`` and where the window does not fit.
    """
    n_bins = spectrum_sub.shape[-1]
    quality = torch.full((n_bins,), float("nan"), device=spectrum_sub.device)
    zeros = zeros_bins.tolist()
    for i in range(bin_min, n_bins):
        # the lobe containing i: the zeros just below and above it
        below = [z for z in zeros if z <= i]
        above = [z for z in zeros if z > i]
        if below and above:
            width = above[0] - below[-1]
        elif above:
            width = above[0] if len(above) < 2 else above[1] - above[0]
        elif len(below) >= 2:
            width = below[-1] - below[-2]
        else:
            width = min_window
        length = max(min_window, int(math.ceil(width)))
        a = max(0, i - length // 2)
        b = min(n_bins, a + length)
        a = max(0, b - length)
        if b - a < 3:
            continue
        quality[i] = pearson_last_dim(spectrum_sub[a:b], simulated[a:b])
    return quality


def resolution_from_quality(
    quality: torch.Tensor,
    bin_min: int,
    bin_max: int,
    *,
    pixel_size_a: float,
    window: int,
    threshold: float = 0.3,
) -> tuple[float, int]:
    """Walk outwards from the middle of the fit range while quality > threshold (warp-facts.md §2.7).

    Returns the resolution in Å (window·pixel / i, rounded to 0.1 Å, the Nyquist limit 2·pixel if no
    bin fails) and the first failing bin i.
    """
    n_bins = quality.shape[-1]
    start = bin_min + (bin_max - bin_min) // 2
    failing = n_bins
    for i in range(start, n_bins):
        value = float(quality[i])
        if not (value > threshold):
            failing = i
            break
    failing = max(failing, 1)
    resolution = window * pixel_size_a / failing if failing < n_bins else 2.0 * pixel_size_a
    return round(resolution, 1), failing
