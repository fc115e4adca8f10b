"""Images for the browser: averages scaled for display (optionally deconvolved) as PNG bytes.

Display only: binning for the screen, contrast stretching (±2.5 σ around the median, as Warp's
thumbnails, warp-facts.md §8) and the deconvolution filter of ``cryowarp.deconv`` (§5).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from cryowarp.base.fourier import fourier_rescale_2d
from cryowarp.deconv import deconvolve_2d
from cryowarp.io.mrc import read_mrc

__all__ = ["DisplayCache", "MASK_RGBA", "display_uint8", "mask_rgba_png", "png_bytes"]


def display_uint8(image: np.ndarray, n_sigma: float = 2.5) -> np.ndarray:
    """8-bit grey levels spanning median ± ``n_sigma`` standard deviations (Warp's thumbnail stretch)."""
    image = np.asarray(image, dtype=np.float32)
    med = float(np.median(image))
    sd = float(image.std()) or 1.0
    lo, hi = med - n_sigma * sd, med + n_sigma * sd
    return (np.clip((image - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def png_bytes(grey: np.ndarray) -> bytes:
    """Encode an 8-bit `(h, w)` array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(grey), mode="L").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


#: Colour of masked pixels in the mask overlay (RGBA; the alpha lets the micrograph show through).
MASK_RGBA = (255, 40, 40, 110)


def mask_rgba_png(mask: np.ndarray) -> bytes:
    """A `(h, w)` bool mask as an RGBA PNG: :data:`MASK_RGBA` where masked, transparent elsewhere."""
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[np.asarray(mask, dtype=bool)] = MASK_RGBA
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _display_shape(shape_yx: tuple[int, int], max_px: int) -> tuple[int, int]:
    h, w = shape_yx
    scale = min(1.0, max_px / max(h, w))
    return max(2, int(round(h * scale)) // 2 * 2), max(2, int(round(w * scale)) // 2 * 2)


class DisplayCache:
    """Binned averages kept in memory (LRU by file and mtime), rendered to PNG on request.

    Parameters
    ----------
    max_px : int
        Longest side of the displayed average.
    capacity : int
        Number of binned averages kept.
    """

    def __init__(self, max_px: int = 1024, capacity: int = 8):
        self.max_px = max_px
        self.capacity = capacity
        self._binned: OrderedDict[tuple[str, float], tuple[torch.Tensor, float]] = OrderedDict()
        self._png: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def binned_average(self, path: Path, pixel_size_a: float | None) -> tuple[torch.Tensor, float]:
        """The average Fourier-binned to at most ``max_px`` and its pixel size in Å."""
        key = (str(path), path.stat().st_mtime)
        with self._lock:
            if key in self._binned:
                self._binned.move_to_end(key)
                return self._binned[key]
        image, header_pixel_size_a = read_mrc(path, as_tensor=True)
        if image.ndim != 2:
            raise ValueError(f"{path}: expected a 2D average, found shape {tuple(image.shape)}")
        pixel_size = pixel_size_a or header_pixel_size_a or 1.0
        shape = _display_shape(tuple(image.shape), self.max_px)
        binned = fourier_rescale_2d(image, shape) if shape != tuple(image.shape) else image
        result = (binned, pixel_size * image.shape[-1] / shape[1])
        with self._lock:
            self._binned[key] = result
            while len(self._binned) > self.capacity:
                self._binned.popitem(last=False)
        return result

    def average_png(
        self,
        path: Path,
        pixel_size_a: float | None,
        *,
        ctf: dict[str, float] | None = None,
        strength: float = 1.0,
        falloff: float = 1.0,
    ) -> bytes:
        """PNG of the average; deconvolved with Warp's filter when ``ctf`` is given (§5)."""
        key = (
            str(path),
            path.stat().st_mtime,
            None if ctf is None else tuple(sorted(ctf.items())),
            round(strength, 4),
            round(falloff, 4),
        )
        with self._lock:
            if key in self._png:
                self._png.move_to_end(key)
                return self._png[key]
        binned, binned_pixel_size_a = self.binned_average(path, pixel_size_a)
        image = binned
        if ctf is not None:
            image = deconvolve_2d(
                binned,
                binned_pixel_size_a,
                ctf["defocus_um"],
                ctf.get("defocus_delta_um", 0.0),
                ctf.get("astigmatism_angle_deg", 0.0),
                voltage_kv=ctf.get("voltage_kv", 300.0),
                cs_mm=ctf.get("cs_mm", 2.7),
                amplitude_contrast=ctf.get("amplitude_contrast", 0.07),
                phase_shift_deg=ctf.get("phase_shift_deg", 0.0),
                strength=strength,
                falloff=falloff,
            )
        data = png_bytes(display_uint8(image.numpy()))
        with self._lock:
            self._png[key] = data
            while len(self._png) > 4 * self.capacity:
                self._png.popitem(last=False)
        return data
