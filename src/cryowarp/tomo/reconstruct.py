"""Real-space projection of volumes along tilts and weighted back-projection (WBP) of tilt series.

These make test tomograms with known content (plant particles, project, add CTF and noise,
reconstruct); they are deliberately independent of the Fourier projector in ``templates``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cryowarp.base.geometry import euler_zyz_to_matrix

__all__ = ["project_volume", "ramp_filter", "weighted_backprojection"]


def _sampling_grid(shape_zyx, matrix: torch.Tensor, image_shape_yx, device) -> torch.Tensor:
    """For every voxel, its (x, y) position in the tilt image, normalised for grid_sample."""
    d, h, w = shape_zyx
    z = torch.arange(d, device=device, dtype=torch.float32) - d // 2
    y = torch.arange(h, device=device, dtype=torch.float32) - h // 2
    x = torch.arange(w, device=device, dtype=torch.float32) - w // 2
    m = matrix.to(device=device, dtype=torch.float32)
    qx = m[0, 0] * x[None, None, :] + m[0, 1] * y[None, :, None] + m[0, 2] * z[:, None, None]
    qy = m[1, 0] * x[None, None, :] + m[1, 1] * y[None, :, None] + m[1, 2] * z[:, None, None]
    ih, iw = image_shape_yx
    gx = (qx + iw // 2) * (2.0 / (iw - 1)) - 1.0
    gy = (qy + ih // 2) * (2.0 / (ih - 1)) - 1.0
    return torch.stack([gx, gy], -1)  # (d, h, w, 2)


def project_volume(volume: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Line integrals of ``volume`` `(d, h, w)` along z after rotating by each of ``matrices`` `(T, 3, 3)`.

    Real-space: the rotated volume V(Aᵀr) is sampled trilinearly on the output grid and summed along
    z. Output `(T, h, w)`, image centre (h//2, w//2) = volume centre. The tilted beam path through a
    slab is longer than d; content rotated out of the box is lost (keep the specimen central).
    """
    d, h, w = volume.shape
    size = max(d, h, w)
    out = []
    zz = torch.arange(size, device=volume.device, dtype=torch.float32) - size // 2
    yy = torch.arange(h, device=volume.device, dtype=torch.float32) - h // 2
    xx = torch.arange(w, device=volume.device, dtype=torch.float32) - w // 2
    for m in matrices.to(device=volume.device, dtype=torch.float32):
        # output point r (x, y, z) samples the volume at Aᵀ r
        mt = m.T
        px = mt[0, 0] * xx[None, None, :] + mt[0, 1] * yy[None, :, None] + mt[0, 2] * zz[:, None, None]
        py = mt[1, 0] * xx[None, None, :] + mt[1, 1] * yy[None, :, None] + mt[1, 2] * zz[:, None, None]
        pz = mt[2, 0] * xx[None, None, :] + mt[2, 1] * yy[None, :, None] + mt[2, 2] * zz[:, None, None]
        grid = torch.stack(
            [
                (px + w // 2) * (2.0 / (w - 1)) - 1.0,
                (py + h // 2) * (2.0 / (h - 1)) - 1.0,
                (pz + d // 2) * (2.0 / (d - 1)) - 1.0,
            ],
            -1,
        )
        sampled = F.grid_sample(
            volume[None, None].float(), grid[None], mode="bilinear", padding_mode="zeros", align_corners=True
        )[0, 0]
        out.append(sampled.sum(0))
    return torch.stack(out)


def ramp_filter(images: torch.Tensor, tilt_axis_angle_deg: float = 0.0) -> torch.Tensor:
    """Multiply each image's spectrum by |k⊥|, the frequency across the tilt axis (cycles/px)."""
    h, w = images.shape[-2:]
    ky = torch.fft.fftfreq(h, device=images.device)[:, None]
    kx = torch.fft.rfftfreq(w, device=images.device)[None, :]
    # the tilt axis in the image: the specimen y axis carried by Euler(0, 0, −ψ) (warp-facts.md §6.1)
    axis = euler_zyz_to_matrix(0.0, 0.0, -float(tilt_axis_angle_deg))[:2, 1].to(torch.float32)
    ramp = (-kx * axis[1] + ky * axis[0]).abs()
    ramp = ramp.clamp_min(0.5 / max(h, w) / 4)  # keep a little of the DC so the mean survives
    return torch.fft.irfft2(torch.fft.rfft2(images) * ramp, s=(h, w))


def weighted_backprojection(
    tilt_series: torch.Tensor,
    matrices: torch.Tensor,
    shape_zyx: tuple[int, int, int],
    *,
    tilt_axis_angle_deg: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Reconstruct a tomogram `(d, h, w)` by ramp-filtered back-projection of `(T, h', w')` images.

    Each voxel at r (relative to the volume centre) receives image t at (R_t r)_xy, sampled
    bilinearly; the sum is divided by T.
    """
    filtered = ramp_filter(tilt_series.float(), tilt_axis_angle_deg)
    out = torch.zeros(shape_zyx, device=tilt_series.device, dtype=torch.float32)
    n = len(matrices)
    for t in range(n):
        grid = _sampling_grid(shape_zyx, matrices[t], filtered.shape[-2:], tilt_series.device)
        d = shape_zyx[0]
        sampled = F.grid_sample(
            filtered[t][None, None].expand(d, 1, -1, -1),
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )[:, 0]
        out += sampled
        if progress is not None:
            progress(t + 1, n)
    return out / n
