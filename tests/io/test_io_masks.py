"""BoxNet mask TIFFs (``cryowarp.io.masks``): round trip, what other readers see, and broken files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from cryowarp.io.errors import CorruptFileError
from cryowarp.io.masks import read_mask_tif, write_mask_tif


def test_round_trip_is_exact_and_the_file_is_an_8_bit_0_255_tiff(tmp_path):
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.random((37, 52)) > 0.7)
    path = write_mask_tif(tmp_path / "sub" / "m.tif", mask)
    raw = tifffile.imread(path)
    assert raw.dtype == np.uint8 and raw.shape == (37, 52) and set(np.unique(raw)) <= {0, 255}
    assert torch.equal(read_mask_tif(path), mask)
    assert [p.name for p in path.parent.iterdir()] == ["m.tif"]  # no temporary file left behind


def test_probabilities_are_thresholded_at_one_half(tmp_path):
    probs = np.array([[0.2, 0.5, 0.51, 1.0]], dtype=np.float32)
    path = write_mask_tif(tmp_path / "p.tif", probs)
    assert read_mask_tif(path).tolist() == [[False, False, True, True]]


def test_a_broken_or_3d_file_gives_an_error_naming_it(tmp_path):
    bad = tmp_path / "half_written.tif"
    good = write_mask_tif(tmp_path / "good.tif", np.ones((8, 8)))
    bad.write_bytes(good.read_bytes()[:20])
    with pytest.raises(CorruptFileError, match="half_written.tif"):
        read_mask_tif(bad)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(CorruptFileError, match=r"stack.tif: expected one 2D mask"):
        read_mask_tif(stack)
    with pytest.raises(ValueError, match="2D"):
        write_mask_tif(tmp_path / "x.tif", np.zeros((2, 2, 2)))
