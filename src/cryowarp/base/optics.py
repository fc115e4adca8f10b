"""Electron optics: wavelength, the contrast transfer function and exposure (dose) weighting.

Conventions (docs/conventions.md, RELION/CTFFIND):

* defocus in µm, **positive = underfocus**; ``defocus_delta_um`` is the *full* difference U − V
  (Warp's DefocusDelta), so U = D + Δ/2, V = D − Δ/2;
* the astigmatism angle is the angle of the U axis from +x towards +y, in degrees;
* CTF(k) = √(1 − A²)·sin χ(k) + A·cos χ(k) with
  χ(k) = π λ Δz(φ) k² − (π/2) Cs λ³ k⁴ + φ_pp, so CTF(0) = +A. This equals Warp's −sin(χ_warp)
  (warp-facts.md §2.1) and RELION's CTF.
* spatial frequency k in 1/Å; images carry ``[..., h, w]`` axes, spectra the rfft layout.
"""

from __future__ import annotations

import math

import torch

from cryowarp.base.fourier import fftfreq_grid_2d
from cryowarp.base.units import ANGSTROM_PER_MM, ANGSTROM_PER_UM, VOLT_PER_KV

# Warp's and RELION's constants (warp-facts.md §2.1): h/sqrt(2 m0 e) in Å·V^½ and e/(2 m0 c²) in 1/V.
# CODATA 2018 gives 12.26426 and 0.9784756e-6 (6e-7 Å shorter at 300 kV); we keep the field's
# values so our CTFs equal RELION's to float precision (tests/base/test_optics_relion.py).
_H_OVER_SQRT_2ME_A = 12.2643247
_E_OVER_2MC2 = 0.978466e-6


def electron_wavelength_a(voltage_kv: float | torch.Tensor) -> float | torch.Tensor:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV.

    λ = h / sqrt(2 m₀ e V (1 + e V / (2 m₀ c²))) = 12.2643247 / sqrt(V (1 + 0.978466e-6 V)) Å for V
    in volts, with the constants Warp and RELION use (warp-facts.md §2.1). At 300 kV: 0.0196876 Å.
    """
    volts = voltage_kv * VOLT_PER_KV
    if isinstance(volts, torch.Tensor):
        return _H_OVER_SQRT_2ME_A / torch.sqrt(volts * (1.0 + _E_OVER_2MC2 * volts))
    return _H_OVER_SQRT_2ME_A / math.sqrt(volts * (1.0 + _E_OVER_2MC2 * volts))


def amplitude_contrast_phase_rad(amplitude_contrast: float) -> float:
    """Phase α with sin α = A: the amplitude contrast written as an extra phase (radians)."""
    return math.atan2(amplitude_contrast, math.sqrt(1.0 - amplitude_contrast**2))


def ctf_phase_rad(
    freq_per_a: torch.Tensor,
    defocus_um: torch.Tensor | float,
    *,
    voltage_kv: float,
    cs_mm: float,
    phase_shift_deg: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Aberration phase χ(k) = π λ Δz k² − (π/2) Cs λ³ k⁴ + φ_pp, in radians.

    Parameters
    ----------
    freq_per_a : torch.Tensor
        `(...)` spatial frequency magnitude in 1/Å.
    defocus_um : torch.Tensor or float
        Defocus along the direction of each frequency, µm, positive = underfocus; broadcasts.
    voltage_kv, cs_mm : float
        Acceleration voltage (kV) and spherical aberration (mm).
    phase_shift_deg : torch.Tensor or float
        Phase-plate shift in degrees; broadcasts.
    """
    wavelength_a = electron_wavelength_a(voltage_kv)
    cs_a = cs_mm * ANGSTROM_PER_MM
    k2 = freq_per_a * freq_per_a
    defocus_a = torch.as_tensor(defocus_um, dtype=freq_per_a.dtype, device=freq_per_a.device) * ANGSTROM_PER_UM
    phase_shift_rad = torch.deg2rad(
        torch.as_tensor(phase_shift_deg, dtype=freq_per_a.dtype, device=freq_per_a.device)
    )
    return (
        math.pi * wavelength_a * defocus_a * k2
        - 0.5 * math.pi * cs_a * wavelength_a**3 * k2 * k2
        + phase_shift_rad
    )


def ctf_1d(
    freq_per_a: torch.Tensor,
    defocus_um: torch.Tensor | float,
    *,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_shift_deg: torch.Tensor | float = 0.0,
    bfactor_a2: float = 0.0,
) -> torch.Tensor:
    """Rotationally symmetric CTF at frequencies ``freq_per_a`` (1/Å).

    Returns ``√(1−A²) sin χ + A cos χ`` times the envelope ``exp(B k² / 4)`` (B ≤ 0 damps);
    shape is the broadcast of ``freq_per_a`` with ``defocus_um`` and ``phase_shift_deg``.
    """
    chi = ctf_phase_rad(freq_per_a, defocus_um, voltage_kv=voltage_kv, cs_mm=cs_mm,
                        phase_shift_deg=phase_shift_deg)
    ctf = math.sqrt(1.0 - amplitude_contrast**2) * torch.sin(chi) + amplitude_contrast * torch.cos(chi)
    if bfactor_a2 != 0.0:
        ctf = ctf * torch.exp(bfactor_a2 * freq_per_a**2 / 4.0)
    return ctf


def ctf_2d(
    defocus_um: torch.Tensor | float,
    defocus_delta_um: torch.Tensor | float,
    astigmatism_angle_deg: torch.Tensor | float,
    *,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    pixel_size_a: float,
    shape_yx: tuple[int, int],
    phase_shift_deg: torch.Tensor | float = 0.0,
    bfactor_a2: float = 0.0,
    rfft: bool = True,
    device: torch.device | None = None,
) -> torch.Tensor:
    """CTF on an rfft (or full fft) grid for a batch of defocus values.

    Parameters
    ----------
    defocus_um : torch.Tensor or float
        `(...)` mean defocus (U + V)/2 in µm, positive = underfocus.
    defocus_delta_um : torch.Tensor or float
        `(...)` full difference U − V in µm (Warp's DefocusDelta).
    astigmatism_angle_deg : torch.Tensor or float
        `(...)` angle of U from the +x axis towards +y, degrees (RELION convention).
    voltage_kv, cs_mm, amplitude_contrast : float
        Microscope: kV, mm, fraction (0.07 is Warp's default).
    pixel_size_a : float
        Pixel size of the image, Å.
    shape_yx : tuple of int
        Real-space ``(h, w)``.
    phase_shift_deg : torch.Tensor or float
        `(...)` phase-plate shift, degrees.
    bfactor_a2 : float
        Envelope exp(B k²/4), Å²; 0 = no envelope.
    rfft : bool
        rfft layout ``(h, w//2+1)`` (default) or full fft ``(h, w)``; never fftshifted.
    device : torch.device, optional
        Device when all parameters are Python floats; otherwise that of ``defocus_um``.

    Returns
    -------
    ctf : torch.Tensor
        `(..., h, w // 2 + 1)` (or `(..., h, w)`), float32.

    References
    ----------
    Tegunov & Cramer, Nat. Methods 16, 1146 (2019); warp-facts.md §2.1.
    """
    params = [p for p in (defocus_um, defocus_delta_um, astigmatism_angle_deg, phase_shift_deg)
              if isinstance(p, torch.Tensor)]
    if params:
        device = params[0].device
    dtype = torch.float32
    defocus_um = torch.as_tensor(defocus_um, dtype=dtype, device=device)
    defocus_delta_um = torch.as_tensor(defocus_delta_um, dtype=dtype, device=device)
    angle_rad = torch.deg2rad(torch.as_tensor(astigmatism_angle_deg, dtype=dtype, device=device))
    phase_shift_deg = torch.as_tensor(phase_shift_deg, dtype=dtype, device=device)

    freq_yx = fftfreq_grid_2d(shape_yx, rfft=rfft, device=device, dtype=dtype) / pixel_size_a
    freq_per_a = torch.linalg.vector_norm(freq_yx, dim=-1)
    azimuth_rad = torch.atan2(freq_yx[..., 0], freq_yx[..., 1])
    batch = torch.broadcast_shapes(defocus_um.shape, defocus_delta_um.shape, angle_rad.shape,
                                   phase_shift_deg.shape)
    expand = (...,) + (None, None)
    local_defocus_um = defocus_um.expand(batch)[expand] + 0.5 * defocus_delta_um.expand(batch)[expand] * torch.cos(
        2.0 * (azimuth_rad - angle_rad.expand(batch)[expand])
    )
    return ctf_1d(freq_per_a, local_defocus_um, voltage_kv=voltage_kv, cs_mm=cs_mm,
                  amplitude_contrast=amplitude_contrast, phase_shift_deg=phase_shift_deg.expand(batch)[expand],
                  bfactor_a2=bfactor_a2)


def critical_exposure_e_per_a2(freq_per_a: torch.Tensor, voltage_kv: float = 300.0) -> torch.Tensor:
    """Grant & Grigorieff (2015) critical exposure N_e(k) = (0.245 k^−1.665 + 2.81)·s, e/Å².

    s = 1 above 250 kV, else 0.8 (warp-facts.md §1.6). k = 0 gives +inf (no damage at the origin).
    """
    scale = 1.0 if voltage_kv > 250.0 else 0.8
    k = freq_per_a.clamp_min(1e-9)
    return (0.245 * k.pow(-1.665) + 2.81) * scale


def dose_weights_critical_exposure(
    freq_per_a: torch.Tensor,
    exposure_start_e_per_a2: torch.Tensor,
    exposure_end_e_per_a2: torch.Tensor,
    voltage_kv: float = 300.0,
    normalize: bool = True,
) -> torch.Tensor:
    """Per-frame exposure filter after Grant & Grigorieff: W_f(k) = exp(−N_f / (2 N_e(k))).

    ``N_f`` is the accumulated exposure at the *middle* of frame f. Frames `(F,)` broadcast against
    ``freq_per_a`` `(...)` to give `(F, ...)`. With ``normalize`` the weights are scaled so that
    Σ_f W_f² = 1 per frequency (the SNR-optimal sum, G&G eq. 3); W is 1 at zero exposure.
    """
    n_e = critical_exposure_e_per_a2(freq_per_a, voltage_kv)
    mid = 0.5 * (exposure_start_e_per_a2 + exposure_end_e_per_a2)
    mid = mid.reshape(mid.shape + (1,) * freq_per_a.ndim)
    weights = torch.exp(-mid / (2.0 * n_e))
    if normalize:
        weights = weights / torch.sqrt((weights**2).sum(0, keepdim=True)).clamp_min(1e-12)
    return weights


def dose_weights_bfactor(
    freq_per_a: torch.Tensor,
    n_frames: int,
    exposure_per_frame_e_per_a2: float,
    *,
    bfactor_per_e_a2: float = -3.0,
    first_frame_index: int = 0,
    normalize: bool = False,
) -> torch.Tensor:
    """Warp's per-frame B-factor dose weights W_f(k) = exp(B_f k²/4), B_f = b·d·(f + first + ½).

    Warp uses b = −3 Å² per e/Å² for aligned averages (not normalized) and b = −4 with Σ_f W_f = 1
    for particle export (warp-facts.md §1.6). Returns `(n_frames, ...)`.
    """
    frames = torch.arange(n_frames, dtype=freq_per_a.dtype, device=freq_per_a.device) + first_frame_index + 0.5
    bfactors_a2 = bfactor_per_e_a2 * exposure_per_frame_e_per_a2 * frames
    bfactors_a2 = bfactors_a2.reshape((n_frames,) + (1,) * freq_per_a.ndim)
    weights = torch.exp(bfactors_a2 * freq_per_a**2 / 4.0)
    if normalize:
        weights = weights / weights.sum(0, keepdim=True).clamp_min(1e-6)
    return weights
