"""Fourier-space helpers: frequency grids on rfft/fft layouts (extended by the rest of base/)."""

from __future__ import annotations

import torch


def fftfreq_grid_2d(
    shape_yx: tuple[int, int],
    *,
    rfft: bool = True,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Spatial frequencies in cycles/px for an image of ``shape_yx``.

    Parameters
    ----------
    shape_yx : tuple of int
        ``(h, w)`` of the real-space image.
    rfft : bool
        If True the grid has the rfft layout ``(h, w // 2 + 1)``, else the full fft layout ``(h, w)``.
        Neither is fftshifted.
    device, dtype
        Where and how to build the grid.

    Returns
    -------
    freq_yx : torch.Tensor
        ``(h, w', 2)`` with ``[..., 0]`` = ky and ``[..., 1]`` = kx in cycles/px.
    """
    h, w = shape_yx
    ky = torch.fft.fftfreq(h, device=device, dtype=dtype)
    kx = torch.fft.rfftfreq(w, device=device, dtype=dtype) if rfft else torch.fft.fftfreq(
        w, device=device, dtype=dtype
    )
    grid_y, grid_x = torch.meshgrid(ky, kx, indexing="ij")
    return torch.stack([grid_y, grid_x], dim=-1)
