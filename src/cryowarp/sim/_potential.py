"""Projected Coulomb potential of atoms and of amorphous ice, as phase shifts in radians.

Physics (documented in :mod:`cryowarp.sim`):

* An atom's potential is the Fourier transform of its 5-Gaussian electron scattering factor
  f(s) = Σ aᵢ exp(−bᵢ s²), s = k/2 (International Tables C 4.3.2.2, read from gemmi's ``c4322``):
  ∫V e^{−2πi k·r} d³r = (h²/2πm₀e) f(k/2) with h²/2πm₀e = 47.878 V·Å² (Kirkland 2010, Eq. 5.9).
* Implicit hydrogens are added at their heavy atom (C, N: 1, O: 0.3, S: 0.5 H per atom).
* The water each heavy atom displaces (17.2 Å³, protein density 0.81 Da/Å³) is subtracted as a
  Gaussian of that volume (Fraser et al. 1978) at the mean potential of vitreous ice (4.64 V, computed
  from 0.0311 molecules/Å³ and the same scattering factors), so particles have their contrast
  *relative to the ice* they sit in.
* The phase is σₑ·V_z with the relativistic interaction constant σₑ (0.000653 rad/(V·Å) at 300 kV).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from cryowarp.base.fourier import fftfreq_grid_2d, fourier_crop_or_pad_2d
from cryowarp.base.optics import electron_wavelength_a
from cryowarp.sim._atoms import _DALTON_PER_A3, _DALTON_PER_HEAVY_ATOM, AtomCloud

#: h²/(2π m₀ e) in V·Å² (Kirkland, Advanced Computing in Electron Microscopy, 2nd ed., Eq. 5.9).
POTENTIAL_PER_SCATTERING_V_A2 = 47.878
#: molecules of water per Å³ in vitreous ice (0.93 g/cm³).
ICE_MOLECULES_PER_A3 = 0.0311
_IMPLICIT_H = {"C": 1.0, "N": 1.0, "O": 0.3, "S": 0.5}
_EXCLUDED_VOLUME_A3 = _DALTON_PER_HEAVY_ATOM / _DALTON_PER_A3
_ELECTRON_REST_ENERGY_KEV = 510.99895


def interaction_constant_rad_per_v_a(voltage_kv: float) -> float:
    """Relativistic interaction constant σₑ = (2π/λV)·(m₀c² + eV)/(2m₀c² + eV), rad per V·Å."""
    wavelength_a = float(electron_wavelength_a(voltage_kv))
    e0 = _ELECTRON_REST_ENERGY_KEV
    return 2.0 * math.pi / (wavelength_a * voltage_kv * 1e3) * (e0 + voltage_kv) / (2 * e0 + voltage_kv)


@lru_cache(maxsize=64)
def _scattering_coefs(symbol: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    import gemmi

    coefs = gemmi.Element(symbol).c4322.get_coefs()
    return tuple(coefs[:5]), tuple(coefs[5:])


def scattering_factor_a(symbol: str, freq_per_a: torch.Tensor) -> torch.Tensor:
    """Electron scattering factor f(s = k/2) in Å at spatial frequencies ``freq_per_a`` (1/Å)."""
    a, b = _scattering_coefs(symbol)
    k2 = freq_per_a * freq_per_a
    out = torch.zeros_like(freq_per_a)
    for ai, bi in zip(a, b, strict=True):
        out = out + ai * torch.exp(-bi * k2 / 4.0)
    return out


def water_mean_potential_v() -> float:
    """Mean inner potential of vitreous ice from its molecular density and scattering factors, V."""
    zero = torch.zeros(())
    f_water = scattering_factor_a("O", zero) + 2.0 * scattering_factor_a("H", zero)
    return float(ICE_MOLECULES_PER_A3 * POTENTIAL_PER_SCATTERING_V_A2 * f_water)


def atom_kernel_v_a3(symbol: str, freq_per_a: torch.Tensor, *, solvent: bool = True) -> torch.Tensor:
    """Fourier transform of one heavy atom's potential (with implicit H, minus displaced water), V·Å³."""
    f = scattering_factor_a(symbol, freq_per_a) + _IMPLICIT_H.get(symbol, 0.0) * scattering_factor_a(
        "H", freq_per_a
    )
    kernel = POTENTIAL_PER_SCATTERING_V_A2 * f
    if solvent:
        v = _EXCLUDED_VOLUME_A3
        kernel = kernel - water_mean_potential_v() * v * torch.exp(-math.pi * v ** (2 / 3) * freq_per_a**2)
    return kernel


def water_kernel_v_a3(freq_per_a: torch.Tensor) -> torch.Tensor:
    """Fourier transform of one water molecule's potential (O + 2 H at one point), V·Å³."""
    f = scattering_factor_a("O", freq_per_a) + 2.0 * scattering_factor_a("H", freq_per_a)
    return POTENTIAL_PER_SCATTERING_V_A2 * f


def water_structure_factor(freq_per_a: torch.Tensor) -> torch.Tensor:
    """A liquid-water-like structure factor S(k): 0.06 at k → 0, a peak at 1/3.7 Å⁻¹, 1 beyond.

    The low-k value is water's compressibility limit; the peak gives the "ice ring" at 3.7 Å.
    """
    low = 1.0 - 0.94 * torch.exp(-((freq_per_a / 0.17) ** 2))
    peak = 1.4 * torch.exp(-(((freq_per_a - 0.27) / 0.035) ** 2))
    return low + peak


def project_atoms(
    cloud: AtomCloud,
    rotation: torch.Tensor,
    *,
    pixel_size_a: float,
    box_px: int,
    offset_px_xy: tuple[float, float] = (0.0, 0.0),
    voltage_kv: float = 300.0,
    solvent: bool = True,
    oversampling: int = 2,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Phase image (rad) of ``cloud`` rotated by ``rotation`` and projected along z.

    Parameters
    ----------
    cloud : AtomCloud
        The atoms (Å, centred).
    rotation : torch.Tensor
        `(3, 3)` matrix A acting on (x, y, z): an atom at r appears at A·r (RELION convention,
        :func:`cryowarp.base.geometry.euler_zyz_to_matrix`).
    pixel_size_a : float
        Output pixel size, Å.
    box_px : int
        Output box side (even); the particle centre lands on pixel ``box_px // 2`` + ``offset_px_xy``.
    offset_px_xy : tuple of float
        Sub-pixel offset of the centre, px.
    voltage_kv : float
        For the interaction constant.
    solvent : bool
        Subtract the displaced water (contrast relative to ice).
    oversampling : int
        Atoms are splatted bilinearly on a grid this many times finer, then Fourier-cropped.

    Returns
    -------
    phase : torch.Tensor
        `(box_px, box_px)` float32 phase shift in radians.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    fine = box_px * oversampling
    fine_px_a = pixel_size_a / oversampling
    coords = cloud.coords_a_xyz.to(device=device, dtype=torch.float32)
    rotated = coords @ rotation.to(device=device, dtype=torch.float32).T
    # coarse pixel c -> fine pixel (c + 0.5)·s − 0.5
    x = (rotated[:, 0] / pixel_size_a + box_px // 2 + offset_px_xy[0] + 0.5) * oversampling - 0.5
    y = (rotated[:, 1] / pixel_size_a + box_px // 2 + offset_px_xy[1] + 0.5) * oversampling - 0.5
    symbols, channel = _element_channels(cloud)
    channel = channel.to(device)
    n_channels = len(symbols)
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    hist = torch.zeros(n_channels * fine * fine, dtype=torch.float32, device=device)
    for dy, dx, w in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < fine) & (xx >= 0) & (xx < fine)
        hist.index_add_(0, ((channel * fine + yy) * fine + xx)[ok], w[ok])
    kernels = _projection_kernels(symbols, fine, fine_px_a, solvent, str(device))
    spectrum = (torch.fft.rfft2(hist.reshape(n_channels, fine, fine)) * kernels).sum(0)
    cropped = fourier_crop_or_pad_2d(spectrum, (box_px, box_px), (fine, fine))
    # the cropped Nyquist row/column would hold one-sided (asymmetric) terms: drop them
    cropped[box_px // 2, :] = 0
    cropped[:, -1] = 0
    # V_z = IFFT(H·K) / (fine pixel area); the crop keeps the fine grid's normalisation
    potential_v_a = (
        torch.fft.irfft2(cropped, s=(box_px, box_px)) * (box_px * box_px) / (fine * fine) / fine_px_a**2
    )
    return potential_v_a * interaction_constant_rad_per_v_a(voltage_kv)


def _element_channels(cloud: AtomCloud) -> tuple[tuple[str, ...], torch.Tensor]:
    """Distinct element symbols of ``cloud`` and each atom's channel index."""
    symbols, inverse = np.unique(np.asarray(cloud.elements), return_inverse=True)
    return tuple(str(s) for s in symbols), torch.from_numpy(inverse.astype(np.int64))


@lru_cache(maxsize=32)
def _projection_kernels(
    symbols: tuple[str, ...], fine: int, fine_px_a: float, solvent: bool, device: str
) -> torch.Tensor:
    """Per-element kernels on the fine rfft grid, divided by the bilinear splat response (sinc²)."""
    freq_yx = fftfreq_grid_2d((fine, fine), device=torch.device(device))
    freq_per_a = torch.linalg.vector_norm(freq_yx, dim=-1) / fine_px_a
    splat_response = (torch.sinc(freq_yx[..., 0]) * torch.sinc(freq_yx[..., 1])) ** 2
    return torch.stack([atom_kernel_v_a3(s, freq_per_a, solvent=solvent) for s in symbols]) / splat_response


def ice_phase_spectrum(
    shape_yx: tuple[int, int],
    *,
    pixel_size_a: float,
    thickness_a: float,
    voltage_kv: float,
    generator: torch.Generator,
    device: torch.device | None = None,
) -> torch.Tensor:
    """rfft of a random phase image (rad) of amorphous ice of ``thickness_a``, zero mean.

    Water molecules are a Poisson-like point process of 0.0311 /Å³ (Gaussian approximation, fine for
    ≥ 100 molecules per pixel column) correlated by :func:`water_structure_factor`; the power
    spectrum of the projected potential is n·t·|K_w(k)|²·S(k) per unit area.
    """
    h, w = shape_yx
    freq_per_a = torch.linalg.vector_norm(fftfreq_grid_2d(shape_yx, device=device), dim=-1) / pixel_size_a
    molecules_per_pixel = ICE_MOLECULES_PER_A3 * thickness_a * pixel_size_a**2
    noise = torch.randn((h, w), generator=generator, dtype=torch.float32).to(device)
    spectrum = torch.fft.rfft2(noise) * math.sqrt(molecules_per_pixel)
    spectrum = spectrum * water_kernel_v_a3(freq_per_a) * torch.sqrt(water_structure_factor(freq_per_a))
    spectrum[0, 0] = 0.0
    return spectrum * (interaction_constant_rad_per_v_a(voltage_kv) / pixel_size_a**2)
