"""Warp's deconvolution filter: a Wiener-like CTF correction that makes images readable to the eye.

warp-facts.md §5. With ν the spatial frequency in 1/Å, s the strength and f the falloff::

    SNR(ν)  = 10^(3 s) · exp(−200 f ν) · H(ν)
    W(ν, φ) = CTF(ν, φ) / (CTF(ν, φ)² + 1 / SNR(ν))  =  CTF · SNR / (CTF² · SNR + 1)

with the signed CTF (no envelope) and a raised-cosine high-pass H. We evaluate the right-hand form,
which is finite where SNR = 0 (Warp's GPU code clamps SNR ≥ 1e-15 for the same reason).

The high-pass. Warp has two versions that disagree by a factor 2 (warp-facts.md §5, §10.10):

* ``"warp_cpu"`` (Warp's micrograph export): H = 1 − cos(π·min(1, ν·hp)) ∈ [0, 2], i.e. a raised
  cosine reaching its plateau at ν = 1/hp, with plateau 2.
* ``"warp_gpu"`` (Warp's tomograms): H = ½(1 − cos(π·min(1, ν·hp/2))) ∈ [0, 1], plateau reached at
  ν = 2/hp, i.e. at *half* the stated length.

By default we follow, per product, the version Warp applies to that product — ``"warp_cpu"`` for
micrographs (:func:`deconvolve_2d`) and ``"warp_gpu"`` for volumes (:func:`deconvolve_3d`) — so that
a given strength/falloff/high-pass produces the same picture a Warp user already knows. A third,
``"stated"``, is the literal reading (plateau 1 reached at ν = 1/hp).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from cryowarp.base.fourier import fftfreq_grid_2d
from cryowarp.base.optics import ctf_1d, ctf_2d

HighpassConvention = Literal["warp_cpu", "warp_gpu", "stated"]

__all__ = [
    "DeconvSettings",
    "HighpassConvention",
    "deconvolution_filter_1d",
    "deconvolution_filter_2d",
    "deconvolution_filter_3d",
    "deconvolve_2d",
    "deconvolve_3d",
    "deconvolution_snr",
    "highpass_weight",
]


class DeconvSettings(BaseModel):
    """Deconvolution settings with Warp's defaults (warp-facts.md §5).

    ``highpass_a`` None means "Warp's default for the product": 100 Å for micrographs (fixed in
    Warp) and 300 Å for tomograms.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    strength: float = Field(1.0, ge=0.0, description="s: SNR scale 10^(3s)")
    falloff: float = Field(1.0, ge=0.0, description="f: SNR decay exp(-200 f ν), ν in 1/Å")
    highpass_a: float | None = Field(None, gt=0.0, description="high-pass length in Å")
    highpass_convention: HighpassConvention | None = None


def highpass_weight(
    freq_per_a: torch.Tensor, highpass_a: float, convention: HighpassConvention = "warp_cpu"
) -> torch.Tensor:
    """Raised-cosine high-pass H(ν) of Warp's deconvolution filter (see the module docstring).

    Parameters
    ----------
    freq_per_a : torch.Tensor
        `(...)` spatial frequency magnitude in 1/Å.
    highpass_a : float
        High-pass length in Å.
    convention : {"warp_cpu", "warp_gpu", "stated"}
        Which of Warp's two versions (or the literal reading) to evaluate.

    Returns
    -------
    weight : torch.Tensor
        `(...)`, in [0, 2] for ``"warp_cpu"`` and [0, 1] otherwise.
    """
    if highpass_a <= 0:
        raise ValueError(f"highpass_a must be > 0 Å, got {highpass_a}")
    if convention == "warp_cpu":
        return 1.0 - torch.cos(math.pi * (freq_per_a * highpass_a).clamp(max=1.0))
    if convention == "warp_gpu":
        return 0.5 * (1.0 - torch.cos(math.pi * (freq_per_a * highpass_a / 2.0).clamp(max=1.0)))
    if convention == "stated":
        return 0.5 * (1.0 - torch.cos(math.pi * (freq_per_a * highpass_a).clamp(max=1.0)))
    raise ValueError(f"highpass convention must be 'warp_cpu', 'warp_gpu' or 'stated', got {convention!r}")


def deconvolution_snr(
    freq_per_a: torch.Tensor,
    *,
    strength: float = 1.0,
    falloff: float = 1.0,
    highpass_a: float = 100.0,
    highpass_convention: HighpassConvention = "warp_cpu",
) -> torch.Tensor:
    """Warp's assumed SNR(ν) = 10^(3 s) · exp(−200 f ν) · H(ν), ν in 1/Å (warp-facts.md §5)."""
    return (
        (10.0 ** (3.0 * strength))
        * torch.exp(-200.0 * falloff * freq_per_a)
        * highpass_weight(freq_per_a, highpass_a, highpass_convention)
    )


def _wiener(ctf: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
    """CTF·SNR / (CTF²·SNR + 1): equals CTF / (CTF² + 1/SNR) and stays finite at SNR = 0."""
    return ctf * snr / (ctf * ctf * snr + 1.0)


def deconvolution_filter_1d(
    freq_per_a: torch.Tensor,
    defocus_um: float | torch.Tensor,
    *,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_shift_deg: float | torch.Tensor = 0.0,
    strength: float = 1.0,
    falloff: float = 1.0,
    highpass_a: float = 100.0,
    highpass_convention: HighpassConvention = "warp_cpu",
) -> torch.Tensor:
    """Deconvolution filter W(ν) for a rotationally symmetric CTF at frequencies ``freq_per_a`` (1/Å)."""
    ctf = ctf_1d(
        freq_per_a,
        defocus_um,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        phase_shift_deg=phase_shift_deg,
    )
    snr = deconvolution_snr(
        freq_per_a,
        strength=strength,
        falloff=falloff,
        highpass_a=highpass_a,
        highpass_convention=highpass_convention,
    )
    return _wiener(ctf, snr)


def deconvolution_filter_2d(
    shape_yx: tuple[int, int],
    pixel_size_a: float,
    defocus_um: float | torch.Tensor,
    defocus_delta_um: float | torch.Tensor = 0.0,
    astigmatism_angle_deg: float | torch.Tensor = 0.0,
    *,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_shift_deg: float | torch.Tensor = 0.0,
    strength: float = 1.0,
    falloff: float = 1.0,
    highpass_a: float = 100.0,
    highpass_convention: HighpassConvention = "warp_cpu",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Deconvolution filter on the rfft grid of an ``shape_yx`` image: `(..., h, w // 2 + 1)`.

    Parameters
    ----------
    shape_yx : tuple of int
        Real-space ``(h, w)``.
    pixel_size_a : float
        Pixel size in Å.
    defocus_um, defocus_delta_um, astigmatism_angle_deg : float or torch.Tensor
        CTF as in :func:`cryowarp.base.optics.ctf_2d` (µm, positive = underfocus; full U − V
        difference; angle of U from +x in degrees).
    voltage_kv, cs_mm, amplitude_contrast, phase_shift_deg
        Microscope and phase plate.
    strength, falloff, highpass_a, highpass_convention
        Filter shape, see the module docstring.
    device : torch.device, optional
        Where to build the filter when all CTF parameters are floats.
    """
    ctf = ctf_2d(
        defocus_um,
        defocus_delta_um,
        astigmatism_angle_deg,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        pixel_size_a=pixel_size_a,
        shape_yx=shape_yx,
        phase_shift_deg=phase_shift_deg,
        device=device,
    )
    freq_per_a = (
        torch.linalg.vector_norm(fftfreq_grid_2d(shape_yx, device=ctf.device, dtype=torch.float32), dim=-1)
        / pixel_size_a
    )
    snr = deconvolution_snr(
        freq_per_a,
        strength=strength,
        falloff=falloff,
        highpass_a=highpass_a,
        highpass_convention=highpass_convention,
    )
    return _wiener(ctf, snr)


def _check_finite(data: torch.Tensor, what: str, min_ndim: int) -> None:
    if data.ndim < min_ndim:
        raise ValueError(f"{what}: expected at least {min_ndim} dimensions, found shape {tuple(data.shape)}")
    if not data.is_floating_point():
        raise ValueError(f"{what}: expected a floating-point tensor, found {data.dtype}")
    if not torch.isfinite(data).all():
        raise ValueError(f"{what}: contains NaN or infinite values; clean the input first")


def deconvolve_2d(
    image: torch.Tensor,
    pixel_size_a: float,
    defocus_um: float | torch.Tensor,
    defocus_delta_um: float | torch.Tensor = 0.0,
    astigmatism_angle_deg: float | torch.Tensor = 0.0,
    *,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_shift_deg: float | torch.Tensor = 0.0,
    strength: float = 1.0,
    falloff: float = 1.0,
    highpass_a: float = 100.0,
    highpass_convention: HighpassConvention = "warp_cpu",
) -> torch.Tensor:
    """Apply Warp's deconvolution filter to micrographs (warp-facts.md §5).

    Parameters
    ----------
    image : torch.Tensor
        `(..., h, w)` real images (float). Not modified.
    pixel_size_a : float
        Pixel size in Å.
    defocus_um : float or torch.Tensor
        Mean defocus in µm, positive = underfocus; a tensor of shape `(...)` gives one per image.
    defocus_delta_um : float or torch.Tensor
        Full astigmatism U − V in µm (Warp's DefocusDelta).
    astigmatism_angle_deg : float or torch.Tensor
        Angle of U from the +x axis, degrees.
    voltage_kv, cs_mm, amplitude_contrast : float
        Microscope (kV, mm, fraction).
    phase_shift_deg : float or torch.Tensor
        Phase-plate shift in degrees.
    strength : float
        s ≥ 0; the assumed SNR scales as 10^(3s). Warp's default 1.
    falloff : float
        f ≥ 0; the SNR decays as exp(−200 f ν). Warp's default 1.
    highpass_a : float
        High-pass length in Å (Warp: 100 Å for micrographs, fixed).
    highpass_convention : {"warp_cpu", "warp_gpu", "stated"}
        Default ``"warp_cpu"``: the version Warp uses for micrographs.

    Returns
    -------
    deconvolved : torch.Tensor
        `(..., h, w)`, same dtype and device as ``image``; its mean is 0 (H(0) = 0).
    """
    _check_finite(image, "deconvolve_2d image", 2)
    if strength < 0 or falloff < 0:
        raise ValueError(f"strength and falloff must be ≥ 0, got strength={strength}, falloff={falloff}")
    h, w = image.shape[-2:]
    filt = deconvolution_filter_2d(
        (h, w),
        pixel_size_a,
        _on(defocus_um, image),
        _on(defocus_delta_um, image),
        _on(astigmatism_angle_deg, image),
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        phase_shift_deg=_on(phase_shift_deg, image),
        strength=strength,
        falloff=falloff,
        highpass_a=highpass_a,
        highpass_convention=highpass_convention,
        device=image.device,
    )
    spectrum = torch.fft.rfft2(image.to(torch.float32))
    return torch.fft.irfft2(spectrum * filt, s=(h, w)).to(image.dtype)


def deconvolution_filter_3d(
    shape_zyx: tuple[int, int, int],
    pixel_size_a: float,
    defocus_um: float | torch.Tensor,
    *,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_shift_deg: float | torch.Tensor = 0.0,
    strength: float = 1.0,
    falloff: float = 1.0,
    highpass_a: float = 300.0,
    highpass_convention: HighpassConvention = "warp_gpu",
    device: torch.device | None = None,
) -> torch.Tensor:
    """Deconvolution filter on the rfftn grid of a ``shape_zyx`` volume: `(d, h, w // 2 + 1)`.

    The CTF is the isotropic 1D CTF of |k| (a tomogram sums many tilts, so Warp deconvolves it with
    the defocus of the tilt series and no astigmatism).
    """
    d, h, w = shape_zyx
    kz = torch.fft.fftfreq(d, device=device)
    ky = torch.fft.fftfreq(h, device=device)
    kx = torch.fft.rfftfreq(w, device=device)
    freq_sq = kz[:, None, None] ** 2 + ky[None, :, None] ** 2 + kx[None, None, :] ** 2
    freq_per_a = torch.sqrt(freq_sq) / pixel_size_a
    return deconvolution_filter_1d(
        freq_per_a,
        defocus_um,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        phase_shift_deg=phase_shift_deg,
        strength=strength,
        falloff=falloff,
        highpass_a=highpass_a,
        highpass_convention=highpass_convention,
    )


def deconvolve_3d(
    volume: torch.Tensor,
    pixel_size_a: float,
    defocus_um: float,
    *,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_shift_deg: float = 0.0,
    strength: float = 1.0,
    falloff: float = 1.0,
    highpass_a: float = 300.0,
    highpass_convention: HighpassConvention = "warp_gpu",
) -> torch.Tensor:
    """Apply Warp's deconvolution filter to a tomogram (warp-facts.md §5).

    Parameters
    ----------
    volume : torch.Tensor
        `(d, h, w)` real volume. Not modified.
    pixel_size_a : float
        Voxel size in Å.
    defocus_um : float
        Defocus of the tilt series in µm, positive = underfocus.
    voltage_kv, cs_mm, amplitude_contrast, phase_shift_deg
        Microscope and phase plate.
    strength, falloff : float
        As in :func:`deconvolve_2d`.
    highpass_a : float
        High-pass length in Å; Warp's tomogram default is 300 Å.
    highpass_convention : {"warp_gpu", "warp_cpu", "stated"}
        Default ``"warp_gpu"``: the version Warp uses for tomograms (plateau at ν = 2/hp).

    Returns
    -------
    deconvolved : torch.Tensor
        `(d, h, w)`, same dtype and device as ``volume``.
    """
    _check_finite(volume, "deconvolve_3d volume", 3)
    if volume.ndim != 3:
        raise ValueError(f"deconvolve_3d volume: expected shape (d, h, w), found {tuple(volume.shape)}")
    if strength < 0 or falloff < 0:
        raise ValueError(f"strength and falloff must be ≥ 0, got strength={strength}, falloff={falloff}")
    filt = deconvolution_filter_3d(
        tuple(volume.shape),
        pixel_size_a,
        defocus_um,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        phase_shift_deg=phase_shift_deg,
        strength=strength,
        falloff=falloff,
        highpass_a=highpass_a,
        highpass_convention=highpass_convention,
        device=volume.device,
    )
    spectrum = torch.fft.rfftn(volume.to(torch.float32))
    return torch.fft.irfftn(spectrum * filt, s=tuple(volume.shape)).to(volume.dtype)


def _on(value: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """Move tensor parameters to the image's device; floats pass through."""
    return value.to(like.device) if isinstance(value, torch.Tensor) else value
