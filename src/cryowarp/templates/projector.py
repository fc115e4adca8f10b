"""Fourier-slice projector: projections and rotations of a volume by sampling its 3-D spectrum.

Central-slice theorem: the 2-D Fourier transform of the projection of V along z after the rotation A
(RELION convention: a map point r appears at A·r) is V̂ sampled on the plane A^T·(k_x, k_y, 0).
Likewise the rotated volume V(A^T r) has the spectrum V̂(A^T k). The volume is zero-padded by
``oversampling`` (2 by default, as Warp's 3-D projector) before its FFT, and V̂ is sampled with
trilinear interpolation. Trilinear interpolation multiplies real space by sinc²(x/P) per axis (P the
padded size), so the volume is divided by that product first ("gridding correction") and the
projections come out with errors well below 1 % inside the original box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "FourierProjector",
    "make_projector",
    "project_spectra",
    "project_images",
    "rotate_spectra",
    "rotate_volumes",
]


@dataclass(frozen=True)
class FourierProjector:
    """The oversampled, centred 3-D spectrum of a cubic volume, ready for slicing.

    Attributes
    ----------
    spectrum : torch.Tensor
        `(1, 2, P, P, P)` real and imaginary parts of the centred (fftshifted) spectrum of the padded,
        gridding-corrected volume; axes (kz, ky, kx); zero frequency at index P // 2.
    box_px : int
        Side of the original volume B (even).
    oversampling : int
        P = oversampling · B.
    """

    spectrum: torch.Tensor
    box_px: int
    oversampling: int

    @property
    def padded_px(self) -> int:
        """P, the side of the padded volume."""
        return self.box_px * self.oversampling


def _sinc2_correction(n: int, padded: int, device, dtype) -> torch.Tensor:
    """1-D trilinear gridding response sinc²(x/P) of an n-voxel box centred at n//2."""
    x = torch.arange(n, device=device, dtype=dtype) - n // 2
    return torch.sinc(x / padded) ** 2


def make_projector(volume: torch.Tensor, *, oversampling: int = 2) -> FourierProjector:
    """Build a :class:`FourierProjector` from a cubic volume `(B, B, B)` (B even), centre at B // 2.

    Parameters
    ----------
    volume : torch.Tensor
        `(B, B, B)` real volume, axes (z, y, x); the rotation centre is voxel (B//2, B//2, B//2).
    oversampling : int
        Zero-padding factor before the FFT (≥ 1; 2 is Warp's choice for 3-D matching).

    Returns
    -------
    projector : FourierProjector
        On the device of ``volume``, float32.
    """
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError(
            f"make_projector: expected a cubic volume (B, B, B), found shape {tuple(volume.shape)}"
        )
    box = volume.shape[0]
    if box % 2:
        raise ValueError(
            f"make_projector: expected an even box size, found {box}; pad the volume by one voxel"
        )
    if oversampling < 1:
        raise ValueError(f"make_projector: oversampling must be ≥ 1, got {oversampling}")
    padded = box * oversampling
    vol = volume.to(torch.float32)
    c = _sinc2_correction(box, padded, vol.device, vol.dtype)
    vol = vol / (c[:, None, None] * c[None, :, None] * c[None, None, :])
    lo = padded // 2 - box // 2
    big = vol.new_zeros((padded, padded, padded))
    big[lo : lo + box, lo : lo + box, lo : lo + box] = vol
    spectrum = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(big)))
    stacked = torch.stack([spectrum.real, spectrum.imag])[None].contiguous()  # (1, 2, P, P, P)
    return FourierProjector(stacked, box, oversampling)


def _sample(projector: FourierProjector, coords_xyz: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of the centred spectrum at `(..., 3)` frequencies in cycles per box (x, y, z)."""
    padded = projector.padded_px
    # frequency f (in units of 1/B) sits at index P//2 + f·oversampling; normalise for align_corners=True
    index = coords_xyz * projector.oversampling + padded // 2
    grid = index * (2.0 / (padded - 1)) - 1.0
    shape = grid.shape[:-1]
    grid = grid.reshape(1, 1, 1, -1, 3).to(projector.spectrum.dtype)
    out = F.grid_sample(projector.spectrum, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    out = out.reshape(2, *shape)
    return torch.complex(out[0], out[1])


def project_spectra(projector: FourierProjector, matrices: torch.Tensor) -> torch.Tensor:
    """rfft spectra of the projections along z of the volume rotated by ``matrices``.

    Parameters
    ----------
    projector : FourierProjector
        From :func:`make_projector`.
    matrices : torch.Tensor
        `(n, 3, 3)` RELION rotation matrices A (a map point r appears at A·r).

    Returns
    -------
    spectra : torch.Tensor
        `(n, B, B // 2 + 1)` complex64, the rfft2 of projections whose centre is pixel (B//2, B//2);
        ``torch.fft.irfft2(spectra, s=(B, B))`` gives the images (line integrals in voxel units).
    """
    box = projector.box_px
    dev = projector.spectrum.device
    ky = torch.fft.fftfreq(box, device=dev) * box
    kx = torch.fft.rfftfreq(box, device=dev) * box
    # columns of A^T that multiply kx and ky (kz = 0): A^T (kx, ky, 0) = kx·A[0, :] + ky·A[1, :]
    a = matrices.to(device=dev, dtype=torch.float32)
    coords = (
        kx[None, None, :, None] * a[:, None, None, 0, :] + ky[None, :, None, None] * a[:, None, None, 1, :]
    )
    spectra = _sample(projector, coords)  # (n, B, B//2+1)
    # move the real-space origin from the box centre to index 0: phase (−1)^(kx+ky) for even B
    sign = (1 - 2 * ((ky[:, None].long() + kx[None, :].long()) % 2)).to(torch.float32)
    return spectra * sign


def project_images(projector: FourierProjector, matrices: torch.Tensor) -> torch.Tensor:
    """Real-space projections `(n, B, B)` (centre at pixel B//2), see :func:`project_spectra`."""
    box = projector.box_px
    return torch.fft.irfft2(project_spectra(projector, matrices), s=(box, box))


def rotate_spectra(
    projector: FourierProjector, matrices: torch.Tensor, shape_zyx: tuple[int, int, int] | None = None
) -> torch.Tensor:
    """rfftn spectra of the volume rotated by ``matrices``, sampled for a ``shape_zyx`` box.

    With ``shape_zyx`` larger than the projector's box the spectrum is interpolated onto a finer
    grid (the volume zero-padded in real space, up to interpolation error). The real-space origin is
    the box centre of the output (d//2, h//2, w//2).

    Returns
    -------
    spectra : torch.Tensor
        `(n, d, h, w // 2 + 1)` complex64.
    """
    box = projector.box_px
    d, h, w = shape_zyx if shape_zyx is not None else (box, box, box)
    dev = projector.spectrum.device
    kz = torch.fft.fftfreq(d, device=dev) * box
    ky = torch.fft.fftfreq(h, device=dev) * box
    kx = torch.fft.rfftfreq(w, device=dev) * box
    a = matrices.to(device=dev, dtype=torch.float32)
    coords = (
        kx[None, None, None, :, None] * a[:, None, None, None, 0, :]
        + ky[None, None, :, None, None] * a[:, None, None, None, 1, :]
        + kz[None, :, None, None, None] * a[:, None, None, None, 2, :]
    )  # (n, d, h, w', 3)
    spectra = _sample(projector, coords)
    # phase for the origin shift by (d//2, h//2, w//2): exp(−2πi Σ k·c / n)
    phase = (2 * torch.pi) * (
        torch.fft.fftfreq(d, device=dev)[:, None, None] * (d // 2)
        + torch.fft.fftfreq(h, device=dev)[None, :, None] * (h // 2)
        + torch.fft.rfftfreq(w, device=dev)[None, None, :] * (w // 2)
    )
    return spectra * torch.polar(torch.ones_like(phase), -phase)


def rotate_volumes(projector: FourierProjector, matrices: torch.Tensor) -> torch.Tensor:
    """Rotated volumes `(n, B, B, B)` (centre at B//2): V_A(r) = V(A^T r)."""
    box = projector.box_px
    return torch.fft.irfftn(rotate_spectra(projector, matrices), s=(box, box, box))
