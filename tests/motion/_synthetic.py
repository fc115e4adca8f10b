"""Small synthetic movies with exactly known displacements, for the motion tests.

frame_f(x) = Poisson(dose · specimen(x − d_f(x))) with d_f(x) = global_f + local_f(x) in Å
(docs/api-contracts.md). The specimen is band-limited (nothing finer than ~12 Å) so that bicubic
resampling of it is accurate to far better than the tolerances the tests state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from cryowarp.base.fourier import fftfreq_grid_2d


@dataclass
class SyntheticMovie:
    frames: torch.Tensor  # (f, h, w) counts
    clean: torch.Tensor  # (h, w) the specimen (expected counts per pixel per frame)
    global_a_yx: torch.Tensor  # (f, 2), mean over frames 0
    pixel_size_a: float
    exposure_per_frame_e_per_a2: float
    local_amplitude_a: float

    def displacement_a_yx(self, coords_px_yx: torch.Tensor, frame_index: int) -> torch.Tensor:
        """True total displacement `(n, 2)` in Å."""
        return self.global_a_yx[frame_index][None] + _local(
            coords_px_yx, frame_index, self.frames.shape, self.local_amplitude_a
        )


def _local(coords_px_yx, frame_index, shape_fyx, amplitude_a):
    n_f, h, w = shape_fyx
    t = frame_index / max(1, n_f - 1) - 0.5  # mean over frames 0
    v = coords_px_yx[..., 0] / (h - 1)
    u = coords_px_yx[..., 1] / (w - 1)
    dy = amplitude_a * 2 * t * torch.sin(math.pi * u) * torch.cos(math.pi * v)
    dx = amplitude_a * 2 * t * torch.cos(math.pi * u) * torch.sin(0.5 * math.pi * v)
    return torch.stack([dy, dx], dim=-1)


def make_movie(
    *,
    shape_yx=(512, 512),
    n_frames=20,
    pixel_size_a=2.0,
    exposure_per_frame_e_per_a2=1.0,
    drift_step_a=1.5,
    local_amplitude_a=0.0,
    jump_a=0.0,
    seed=0,
) -> SyntheticMovie:
    """A random walk drift (steps ~ ``drift_step_a``), an optional jump at the middle frame and a smooth
    local deformation growing linearly in time with peak ``local_amplitude_a`` at the first/last frame."""
    gen = torch.Generator().manual_seed(seed)
    h, w = shape_yx
    k = torch.linalg.vector_norm(fftfreq_grid_2d((h, w)), dim=-1) / pixel_size_a
    noise = torch.randn(h, w, generator=gen)
    spec = torch.fft.irfft2(torch.fft.rfft2(noise) * torch.exp(-((k * 12.0) ** 2)) * (k > 1 / 400), s=(h, w))
    clean = (1.0 + 0.5 * spec / spec.std()).clamp_min(0.05)
    drift = torch.cumsum(torch.randn(n_frames, 2, generator=gen) * drift_step_a, 0)
    drift[n_frames // 2 :] += torch.tensor([jump_a * 0.6, -jump_a * 0.8])
    drift = drift - drift.mean(0)
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    coords = torch.stack([yy, xx], dim=-1)
    counts_per_px = exposure_per_frame_e_per_a2 * pixel_size_a**2
    frames = []
    for f in range(n_frames):
        d_px = (drift[f] + _local(coords, f, (n_frames, h, w), local_amplitude_a)) / pixel_size_a
        src = coords - d_px  # frame(x) = specimen(x − d)
        grid = torch.stack([src[..., 1] / (w - 1) * 2 - 1, src[..., 0] / (h - 1) * 2 - 1], dim=-1)
        moved = nnf.grid_sample(
            clean[None, None], grid[None], mode="bicubic", padding_mode="reflection", align_corners=True
        )[0, 0]
        frames.append(torch.poisson(moved.clamp_min(0) * counts_per_px, generator=gen))
    return SyntheticMovie(
        torch.stack(frames),
        clean * counts_per_px,
        drift,
        pixel_size_a,
        exposure_per_frame_e_per_a2,
        local_amplitude_a,
    )
