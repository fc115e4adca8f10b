"""Reference preparation for template matching: rescale, mask and normalise a 3-D map (warp-facts §4.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "PreparedTemplate",
    "fourier_rescale_3d",
    "estimate_diameter_a",
    "soft_sphere_mask",
    "prepare_template",
]


@dataclass(frozen=True)
class PreparedTemplate:
    """A masked, normalised reference on the matching pixel size.

    Attributes
    ----------
    volume : torch.Tensor
        `(B, B, B)` template × mask, mean 0 and s.d. 1 inside the mask, centre at voxel B // 2.
    mask : torch.Tensor
        `(B, B, B)` the mask used (soft sphere × dilated binary mask).
    pixel_size_a : float
        Voxel size in Å (the matching pixel size).
    diameter_a : float
        Particle diameter used for the mask, the peak distance and the high-pass, Å.
    """

    volume: torch.Tensor
    mask: torch.Tensor
    pixel_size_a: float
    diameter_a: float

    @property
    def box_px(self) -> int:
        """Side B of the template box."""
        return int(self.volume.shape[0])

    @property
    def diameter_px(self) -> float:
        """Diameter in voxels."""
        return self.diameter_a / self.pixel_size_a


def _crop_or_pad_centred(volume: torch.Tensor, size: int) -> torch.Tensor:
    """Crop or zero-pad a cube to ``size`` keeping voxel n//2 at size//2."""
    out = volume.new_zeros((size,) * 3)
    n = volume.shape[0]
    src_lo = max(0, n // 2 - size // 2)
    dst_lo = max(0, size // 2 - n // 2)
    m = min(n - src_lo, size - dst_lo)
    out[dst_lo : dst_lo + m, dst_lo : dst_lo + m, dst_lo : dst_lo + m] = volume[
        src_lo : src_lo + m, src_lo : src_lo + m, src_lo : src_lo + m
    ]
    return out


def fourier_rescale_3d(
    volume: torch.Tensor, pixel_size_a: float, target_pixel_size_a: float
) -> tuple[torch.Tensor, float]:
    """Resample a cubic volume to about ``target_pixel_size_a`` by Fourier cropping or padding.

    The box becomes the even size n' = round(n · p / p_target); the exact new voxel size p·n/n' is
    returned with the volume. Values (not sums) are preserved.

    Returns
    -------
    volume : torch.Tensor
        `(n', n', n')`.
    pixel_size_a : float
        Exact new voxel size, Å.
    """
    n = volume.shape[0]
    new_n = max(2, int(round(n * pixel_size_a / target_pixel_size_a / 2)) * 2)
    if new_n == n:
        return volume.clone(), pixel_size_a
    spectrum = torch.fft.fftshift(torch.fft.fftn(volume.to(torch.float32)))
    c_in, c_out = n // 2, new_n // 2
    keep = min(n, new_n)
    lo_in, lo_out = c_in - keep // 2, c_out - keep // 2
    out = spectrum.new_zeros((new_n,) * 3)
    out[lo_out : lo_out + keep, lo_out : lo_out + keep, lo_out : lo_out + keep] = spectrum[
        lo_in : lo_in + keep, lo_in : lo_in + keep, lo_in : lo_in + keep
    ]
    rescaled = torch.fft.ifftn(torch.fft.ifftshift(out)).real * (new_n / n) ** 3
    return rescaled.to(volume.dtype), pixel_size_a * n / new_n


def _radius_grid(n: int, device, dtype=torch.float32) -> torch.Tensor:
    c = torch.arange(n, device=device, dtype=dtype) - n // 2
    return torch.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)


def soft_sphere_mask(
    box_px: int, radius_px: float, falloff_px: float, *, device: torch.device | None = None
) -> torch.Tensor:
    """1 inside ``radius_px``, raised cosine to 0 at ``radius_px + falloff_px`` (centre at box // 2)."""
    r = _radius_grid(box_px, device)
    t = ((r - radius_px) / max(falloff_px, 1e-6)).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * t))


def estimate_diameter_a(volume: torch.Tensor, pixel_size_a: float, *, threshold: float = 0.2) -> float:
    """Twice the largest distance from the box centre of voxels above ``threshold`` × max, in Å."""
    r = _radius_grid(volume.shape[0], volume.device)
    inside = volume > threshold * volume.max()
    if not inside.any():
        raise ValueError("estimate_diameter_a: the volume has no positive density")
    return float(2.0 * (r[inside].max() + 1.0) * pixel_size_a)


def prepare_template(
    volume: torch.Tensor,
    volume_pixel_size_a: float,
    pixel_size_a: float,
    *,
    diameter_a: float | None = None,
    box_px: int | None = None,
    binary_threshold: float | None = 0.2,
) -> PreparedTemplate:
    """Rescale a map to the matching pixel size, mask it and normalise it (warp-facts.md §4.1).

    Parameters
    ----------
    volume : torch.Tensor
        `(n, n, n)` map (protein density positive), centre at n // 2.
    volume_pixel_size_a : float
        Voxel size of ``volume``, Å.
    pixel_size_a : float
        Matching pixel size (of the micrograph or tomogram), Å.
    diameter_a : float, optional
        Particle diameter in Å; by default estimated from the map (:func:`estimate_diameter_a`).
    box_px : int, optional
        Template box (even); default: the smallest even box holding the mask and its fall-off.
    binary_threshold : float or None
        Warp's binary mask: voxels > this fraction of the maximum, dilated by one voxel; None: only the
        soft sphere.

    Returns
    -------
    template : PreparedTemplate
    """
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError(f"template map: expected a cubic volume, found shape {tuple(volume.shape)}")
    if not torch.isfinite(volume).all():
        raise ValueError("template map: contains NaN or infinite values")
    if volume.shape[0] % 2:
        volume = F.pad(volume, (0, 1, 0, 1, 0, 1))
    rescaled, new_px = fourier_rescale_3d(volume.to(torch.float32), volume_pixel_size_a, pixel_size_a)
    if diameter_a is None:
        diameter_a = estimate_diameter_a(rescaled, new_px)
    radius_px = 0.5 * diameter_a / new_px
    # Warp: fall-off max(5 px, 20 Å) (warp-facts.md §4.1)
    falloff_px = max(5.0, 20.0 / new_px)
    if box_px is None:
        box_px = int(math.ceil(radius_px + falloff_px + 1)) * 2
    if box_px % 2:
        raise ValueError(f"template box must be even, got {box_px}")
    rescaled = _crop_or_pad_centred(rescaled, box_px)
    mask = soft_sphere_mask(box_px, radius_px, falloff_px, device=rescaled.device)
    masked = rescaled * mask
    if binary_threshold is not None:
        binary = (masked > binary_threshold * masked.max()).to(torch.float32)
        binary = (F.max_pool3d(binary[None, None], 3, stride=1, padding=1)[0, 0] > 0).to(torch.float32)
        mask = mask * binary
    inside = mask > 0.5
    if inside.sum() < 8:
        raise ValueError(
            "template map: the mask holds fewer than 8 voxels; check the map's contrast (protein "
            "should be positive) and the diameter"
        )
    values = rescaled[inside]
    normalised = (rescaled - values.mean()) / values.std().clamp_min(1e-12) * mask
    return PreparedTemplate(normalised, mask, new_px, float(diameter_a))
