"""3-D CTF / missing-wedge weights of a tomogram from its tilt geometry (warp-facts.md §4.1, §6.1).

Every tilt image fills one central plane of the tomogram's 3-D spectrum (central-slice theorem); a
Fourier voxel k receives tilt t with weight s_t(k) = max(0, 1 − |k·n_t|·S), n_t the beam direction of
tilt t in tomogram coordinates and S the box size (a one-voxel-thick slab), and the value of that
tilt's CTF × exposure filter. The weight is Σ_t s_t·CTF_t·D_t / max(1, Σ_t s_t): the average transfer
of the tilts that sample k, and 0 in the missing wedge. Multiplying a reference's spectrum by it
makes the reference look like a particle in the tomogram.
"""

from __future__ import annotations

import torch

from cryowarp.base.optics import ctf_1d

__all__ = ["ctf_weight_3d"]


def ctf_weight_3d(
    shape_zyx: tuple[int, int, int],
    pixel_size_a: float,
    matrices: torch.Tensor,
    *,
    defocus_um: torch.Tensor | float | None = None,
    exposure_e_per_a2: torch.Tensor | None = None,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    phase_flipped: bool = False,
    bfactor_per_e_a2: float = -4.0,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Missing-wedge × CTF weight on the rfftn grid of a ``shape_zyx`` (sub-)volume.

    Parameters
    ----------
    shape_zyx : tuple of int
        `(d, h, w)` of the volume whose spectrum is weighted.
    pixel_size_a : float
        Voxel size, Å.
    matrices : torch.Tensor
        `(T, 3, 3)` tilt matrices R_t (:func:`cryowarp.tomo.tilt_matrices`).
    defocus_um : torch.Tensor or float, optional
        `(T,)` or scalar defocus per tilt (µm, + = underfocus); None: no CTF (missing wedge only).
    exposure_e_per_a2 : torch.Tensor, optional
        `(T,)` accumulated exposure before each tilt; Warp's −4 Å² per e⁻/Å² B-factor weighting with the
        cos(θ) scaling is applied (warp-facts.md §10.1).
    voltage_kv, cs_mm, amplitude_contrast : float
        Microscope.
    phase_flipped : bool
        Use |CTF| (for tomograms reconstructed from phase-flipped tilts).
    bfactor_per_e_a2 : float
        Exposure B-factor per e⁻/Å².
    device : torch.device, optional
        Where to build the weight.

    Returns
    -------
    weight : torch.Tensor
        `(d, h, w // 2 + 1)` float32.
    """
    d, h, w = shape_zyx
    kz = torch.fft.fftfreq(d, device=device)[:, None, None]
    ky = torch.fft.fftfreq(h, device=device)[None, :, None]
    kx = torch.fft.rfftfreq(w, device=device)[None, None, :]
    freq_per_a = torch.sqrt(kz**2 + ky**2 + kx**2) / pixel_size_a
    mats = matrices.to(device=device, dtype=torch.float32)
    n_tilts = len(mats)
    size = float(max(d, h, w))
    total = torch.zeros((d, h, w // 2 + 1), device=device)
    coverage = torch.zeros_like(total)
    for t in range(n_tilts):
        # beam direction of tilt t in tomogram coordinates: Rᵀ e_z = third row of R (x, y, z)
        n = mats[t, 2]
        slab = (1.0 - (kx * n[0] + ky * n[1] + kz * n[2]).abs() * size).clamp_min(0.0)
        value = torch.ones_like(freq_per_a)
        if defocus_um is not None:
            dz = torch.as_tensor(defocus_um, dtype=torch.float32).reshape(-1)
            dz_t = float(dz[t] if dz.numel() > 1 else dz[0])
            value = ctf_1d(
                freq_per_a, dz_t, voltage_kv=voltage_kv, cs_mm=cs_mm, amplitude_contrast=amplitude_contrast
            )
            if phase_flipped:
                value = value.abs()
        if exposure_e_per_a2 is not None:
            cos_tilt = float(n[2].abs())
            value = (
                value
                * torch.exp(bfactor_per_e_a2 * float(exposure_e_per_a2[t]) * freq_per_a**2 / 4.0)
                * cos_tilt
            )
        total += slab * value
        coverage += slab
    return total / coverage.clamp_min(1.0)
