"""BoxNet training examples on disk: Warp's 3-layer TIFF at 8 Å/px (image, label, certainty).

The layers are float32: the network input (rescaled, high-passed, normalised), the labels (0 background,
1 particle, 2 artefact) and the per-pixel loss weight (Warp's certainty layer: 1 plain, 4 false
positive, 0 uncertain; warp-facts.md §3.6). A folder of them is a corpus for ``cryowarp boxnet retrain
--general``; the UI writes the examples it retrains on to ``<project>/boxnet/examples/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import torch

from cryowarp.io.errors import CorruptFileError
from cryowarp.io.mrc import atomic_path
from cryowarp.picking import TrainingExample

__all__ = ["read_example_tiff", "write_example_tiff"]


def write_example_tiff(path: str | Path, example: TrainingExample) -> Path:
    """Write ``example`` as a 3-layer float32 TIFF (certainty 1 everywhere when it has none), atomically."""
    img = example.image_8a.detach().cpu().numpy().astype(np.float32)
    lab = example.labels.detach().cpu().numpy().astype(np.float32)
    cert = (
        np.ones_like(img)
        if example.certainty is None
        else example.certainty.detach().cpu().numpy().astype(np.float32)
    )
    with atomic_path(path, suffix=".tif") as tmp:
        tifffile.imwrite(tmp, np.stack([img, lab, cert]))
    return Path(path)


def read_example_tiff(path: str | Path) -> TrainingExample:
    """Inverse of :func:`write_example_tiff` (a 2-layer TIFF, image and label, is read as certainty 1).

    Raises
    ------
    CorruptFileError
        Not a readable TIFF, not 2–3 layers, labels outside 0–2, or a negative/non-finite certainty.
    """
    path = Path(path)
    try:
        data = tifffile.imread(path)
    except Exception as exc:  # tifffile raises several types for broken files
        raise CorruptFileError(path, f"not a readable training TIFF ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 3 or data.shape[0] < 2:
        raise CorruptFileError(
            path, f"expected a 3-layer training TIFF (image, label, certainty), found shape {data.shape}"
        )
    labels = np.rint(data[1]).astype(np.int64)
    if labels.min() < 0 or labels.max() > 2:
        raise CorruptFileError(path, f"labels must be 0, 1 or 2, found {labels.min()}..{labels.max()}")
    certainty = None
    if data.shape[0] >= 3 and not np.all(data[2] == 1):
        if not np.isfinite(data[2]).all() or data[2].min() < 0:
            raise CorruptFileError(path, "the certainty layer must be finite and ≥ 0")
        certainty = torch.from_numpy(data[2].astype(np.float32))
    return TrainingExample(
        torch.from_numpy(data[0].astype(np.float32)), torch.from_numpy(labels), path.stem, certainty
    )
