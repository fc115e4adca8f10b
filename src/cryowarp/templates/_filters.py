"""Fourier filters shared by 2-D and 3-D matching: whitening, high-pass, local s.d."""

from __future__ import annotations

import math

import torch


def radial_index(freq_cycles_per_px: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Shell index (0 … n_shells−1) of each frequency magnitude in cycles/px (Nyquist = 0.5)."""
    return (freq_cycles_per_px / 0.5 * (n_shells - 1)).round().long().clamp(0, n_shells - 1)


def whitening_filter(
    power: torch.Tensor,
    freq_cycles_per_px: torch.Tensor,
    *,
    n_shells: int = 128,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """1/√(radial mean power), normalised to max 1 (warp-facts.md §4.1).

    Parameters
    ----------
    power : torch.Tensor
        `(...)` |F|² on an rfft grid.
    freq_cycles_per_px : torch.Tensor
        Same shape, |k| in cycles/px.
    n_shells : int
        Radial shells from 0 to Nyquist (Warp: 128).
    weight : torch.Tensor, optional
        Per-coefficient weights of the average (Warp: the sampling of a single tilt in 3-D).
    """
    index = radial_index(freq_cycles_per_px, n_shells).reshape(-1)
    w = weight.reshape(-1) if weight is not None else torch.ones_like(index, dtype=power.dtype)
    sums = power.new_zeros(n_shells).index_add_(0, index, (power.reshape(-1) * w))
    counts = power.new_zeros(n_shells).index_add_(0, index, w)
    mean_power = sums / counts.clamp_min(1e-12)
    # Warp copies the last two shells from the third-to-last (corners of the FFT cube are sparse)
    mean_power[-2:] = mean_power[-3]
    filt = (
        1.0
        / mean_power.clamp_min(mean_power[mean_power > 0].min() if (mean_power > 0).any() else 1e-30).sqrt()
    )
    filt[0] = 0.0
    filt = filt / filt.max().clamp_min(1e-30)
    return filt[radial_index(freq_cycles_per_px, n_shells)]


def highpass_diameter(freq_per_a: torch.Tensor, diameter_a: float) -> torch.Tensor:
    """Raised-cosine high-pass from 0 at 0.5/D to 1 at 1.5/D (1/Å): removes features larger than D (§4.1)."""
    lo, hi = 0.5 / diameter_a, 1.5 / diameter_a
    t = ((freq_per_a - lo) / (hi - lo)).clamp(0.0, 1.0)
    return 0.5 * (1.0 - torch.cos(math.pi * t))


def gaussian_lowpass(freq_per_a: torch.Tensor, lowpass_a: float | None) -> torch.Tensor | float:
    """exp(−ν²/(2σ²)) with σ = 1/lowpass_a, or 1 when ``lowpass_a`` is None."""
    if lowpass_a is None:
        return 1.0
    return torch.exp(-0.5 * (freq_per_a * lowpass_a) ** 2)


def local_std(image: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Standard deviation of ``image`` in a disc (2-D) or ball (3-D) of ``radius_px`` around every pixel.

    Periodic boundaries (computed with FFTs); `(h, w)` or `(d, h, w)`.
    """
    shape = image.shape
    grids = torch.meshgrid(*[torch.fft.fftfreq(n, device=image.device) * n for n in shape], indexing="ij")
    r2 = sum(g**2 for g in grids)
    kernel = (r2 <= radius_px**2).to(image.dtype)
    kernel = kernel / kernel.sum()
    k_spec = torch.fft.rfftn(kernel)
    mean = torch.fft.irfftn(torch.fft.rfftn(image) * k_spec, s=shape)
    mean_sq = torch.fft.irfftn(torch.fft.rfftn(image * image) * k_spec, s=shape)
    return (mean_sq - mean * mean).clamp_min(0).sqrt()
