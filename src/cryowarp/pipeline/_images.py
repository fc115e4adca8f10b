"""PNG renderings for the UI: thumbnails, power spectra with the fitted CTF, motion tracks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cryowarp.base.fourier import fourier_rescale_2d
from cryowarp.base.optics import ctf_2d
from cryowarp.io.mrc import atomic_path


def _save_png(path: Path, array_uint8: np.ndarray) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array_uint8).save(tmp, format="PNG")
    return path


def _to_uint8(image: np.ndarray, n_sigma: float = 2.5) -> np.ndarray:
    """±n_sigma around the median → 0..255 (Warp's thumbnails: ±2.5 σ)."""
    median, sigma = float(np.median(image)), float(image.std()) or 1.0
    scaled = (image - median) / (2 * n_sigma * sigma) + 0.5
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def write_thumbnail(path: Path, average: torch.Tensor, max_size_px: int = 512) -> tuple[Path, float]:
    """Fourier-downsample the average so its long side is ≤ ``max_size_px`` and save an 8-bit PNG.

    Returns the path and the thumbnail's scale (thumbnail px per micrograph px).
    """
    h, w = average.shape[-2:]
    scale = min(1.0, max_size_px / max(h, w))
    if scale < 1.0:
        shape = (max(2, int(round(h * scale)) // 2 * 2), max(2, int(round(w * scale)) // 2 * 2))
        small = fourier_rescale_2d(average.float(), shape)
        scale = shape[1] / w
    else:
        small = average.float()
    return _save_png(path, _to_uint8(small.cpu().numpy())), scale


def power_spectrum_2d(image: torch.Tensor, window: int = 512) -> torch.Tensor:
    """Mean periodogram of overlapping ``window`` tiles, fftshifted `(window, window)` (DC at the centre)."""
    h, w = image.shape[-2:]
    window = min(window, h // 2 * 2, w // 2 * 2)
    step = window // 2
    tiles = image.float().unfold(0, window, step).unfold(1, window, step).reshape(-1, window, window)
    tiles = tiles - tiles.mean(dim=(-2, -1), keepdim=True)
    power = torch.zeros(window, window, dtype=torch.float32, device=image.device)
    for start in range(0, tiles.shape[0], 16):
        power += (torch.fft.fft2(tiles[start : start + 16]).abs() ** 2).sum(0)
    return torch.fft.fftshift(power / tiles.shape[0])


def write_spectrum_png(
    path: Path, average: torch.Tensor, ctf: Any | None, pixel_size_a: float, window: int = 512
) -> Path:
    """Left half: the micrograph's 2-D power spectrum (log, ±2.5 σ); right half: the fitted CTF² (if any)."""
    ps = power_spectrum_2d(average, window)
    size = ps.shape[-1]
    logps = torch.log(ps + 1e-12)
    centre = logps[size // 2 - 2 : size // 2 + 3, size // 2 - 2 : size // 2 + 3]
    logps[size // 2 - 2 : size // 2 + 3, size // 2 - 2 : size // 2 + 3] = centre.median()  # hide the DC spike
    left = _to_uint8(logps.cpu().numpy())
    if ctf is not None:
        sim = (
            ctf_2d(
                ctf.defocus_um,
                ctf.defocus_delta_um,
                ctf.astigmatism_angle_deg,
                voltage_kv=ctf.voltage_kv,
                cs_mm=ctf.cs_mm,
                amplitude_contrast=ctf.amplitude_contrast,
                pixel_size_a=pixel_size_a,
                shape_yx=(size, size),
                phase_shift_deg=ctf.phase_shift_deg,
                rfft=False,
            )
            ** 2
        )
        right = (torch.fft.fftshift(sim).cpu().numpy() * 255).astype(np.uint8)
        left[:, size // 2 :] = right[:, size // 2 :]
    return _save_png(path, left)


def write_tracks_png(
    path: Path,
    tracks_a_yx: np.ndarray,
    centers_px_yx: np.ndarray,
    shape_yx: tuple[int, int],
    exaggeration: float = 20.0,
) -> Path:
    """Motion tracks at the patch centres (×exaggeration) over the frame, with matplotlib (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4 * shape_yx[0] / shape_yx[1]), dpi=100)
    for (cy, cx), track in zip(centers_px_yx, tracks_a_yx, strict=True):
        ax.plot(cx + exaggeration * track[:, 1], cy + exaggeration * track[:, 0], lw=0.8)
        ax.plot(cx + exaggeration * track[-1, 1], cy + exaggeration * track[-1, 0], "k.", ms=2)
    ax.set_xlim(0, shape_yx[1])
    ax.set_ylim(shape_yx[0], 0)
    ax.set_aspect("equal")
    ax.set_title(f"motion tracks (×{exaggeration:g})", fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
