"""BoxNet artefact masks on disk: 8-bit TIFF at BoxNet's 8 Å/px, 255 = artefact (Warp's ``mask/<name>.tif``).

Warp writes its masks Y-flipped unless ``WARP_DONT_FLIPY`` is set (warp-facts.md §3.5); we write them in
the micrograph's own row order (row 0 = first row of the MRC), like every other image we write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch

from cryowarp.io.errors import CorruptFileError
from cryowarp.io.mrc import atomic_path

__all__ = ["read_mask_tif", "write_mask_tif"]


def write_mask_tif(path: str | Path, mask: torch.Tensor | np.ndarray) -> Path:
    """Write a `(h, w)` mask (bool or > 0.5 = artefact) as an 8-bit TIFF (0 / 255), atomically."""
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{path}: a mask must be 2D, got shape {array.shape}")
    with atomic_path(path, suffix=".tif") as tmp:
        tifffile.imwrite(tmp, (array > 0.5).astype(np.uint8) * 255)
    return Path(path)


def read_mask_tif(path: str | Path) -> torch.Tensor:
    """A mask TIFF as a `(h, w)` bool tensor (any non-zero pixel = artefact).

    Raises
    ------
    CorruptFileError
        The file is not a readable TIFF or holds more than one 2D image.
    """
    try:
        array = tifffile.imread(path)
    except Exception as exc:  # tifffile raises several types for broken files
        raise CorruptFileError(path, f"not a readable mask TIFF ({type(exc).__name__}: {exc})") from exc
    array = np.asarray(array)
    while array.ndim > 2 and array.shape[0] == 1:  # a one-page stack
        array = array[0]
    if array.ndim != 2:
        raise CorruptFileError(path, f"expected one 2D mask image, found shape {array.shape}")
    return torch.from_numpy(array != 0)
