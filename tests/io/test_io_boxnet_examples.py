"""Warp-style BoxNet training TIFFs (``cryowarp.io.boxnet_examples``): round trip and broken files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from cryowarp.io.boxnet_examples import read_example_tiff, write_example_tiff
from cryowarp.io.errors import CorruptFileError
from cryowarp.picking import TrainingExample


def _example(certainty: bool) -> TrainingExample:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(40, 56, generator=g)
    labels = torch.randint(0, 3, (40, 56), generator=g)
    cert = torch.where(torch.rand(40, 56, generator=g) > 0.8, 4.0, 1.0) if certainty else None
    return TrainingExample(image, labels, "ex", cert)


@pytest.mark.parametrize("certainty", [False, True])
def test_round_trip_keeps_image_labels_and_certainty(tmp_path, certainty):
    ex = _example(certainty)
    path = write_example_tiff(tmp_path / "a" / "m1.tif", ex)
    raw = tifffile.imread(path)
    assert raw.shape == (3, 40, 56) and raw.dtype == np.float32
    back = read_example_tiff(path)
    assert back.name == "m1"
    assert torch.equal(back.image_8a, ex.image_8a) and torch.equal(back.labels, ex.labels)
    assert (back.certainty is None) if not certainty else torch.equal(back.certainty, ex.certainty)
    assert [p.name for p in path.parent.iterdir()] == ["m1.tif"]


def test_broken_examples_are_refused_naming_the_file(tmp_path):
    tifffile.imwrite(tmp_path / "one_layer.tif", np.zeros((8, 8), np.float32))
    tifffile.imwrite(tmp_path / "bad_labels.tif", np.stack([np.zeros((8, 8)), np.full((8, 8), 3.0)]).astype(np.float32))
    tifffile.imwrite(tmp_path / "bad_cert.tif", np.stack([np.zeros((8, 8))] * 2 + [np.full((8, 8), -1.0)]).astype(np.float32))
    (tmp_path / "cut.tif").write_bytes(b"II*\x00 cut")
    for name, match in [("one_layer", "3-layer"), ("bad_labels", "labels must be 0, 1 or 2"),
                        ("bad_cert", "certainty layer"), ("cut", "not a readable|3-layer")]:
        with pytest.raises(CorruptFileError, match=f"{name}.tif: .*({match})"):
            read_example_tiff(tmp_path / f"{name}.tif")
