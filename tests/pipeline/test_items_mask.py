"""The pick stage keeps BoxNet's artefact mask (``items/<name>/mask.tif``), the training label the UI
shows and lets the user edit; picks read from STAR files leave no stale mask behind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryowarp.io.masks import read_mask_tif
from cryowarp.io.mrc import write_mrc
from cryowarp.io.star import write_star
from cryowarp.pipeline.items import process_movie
from cryowarp.pipeline.settings import ProcessingSettings


def test_pick_stage_writes_the_mask_its_percentage_describes_and_star_picks_remove_it(tmp_path):
    # a 3-frame movie of a micrograph whose right third is a thick dark slab (carbon-like edge):
    # the stored mask must be the one BoxNet's mask_percentage was computed from
    rng = np.random.default_rng(0)
    px = 4.0
    frame = rng.normal(0.0, 1.0, (384, 384)).astype(np.float32)
    frame[:, 256:] -= 6.0
    write_mrc(tmp_path / "movies/m.mrc", np.stack([frame + rng.normal(0, 1, frame.shape).astype(np.float32)
                                                  for _ in range(3)]), px)
    settings = ProcessingSettings().updated(
        {"input": {"pixel_size_a": px}, "do_ctf": False, "do_export": False, "pick": {"particle_diameter_a": 120.0}}
    )
    result = process_movie(tmp_path / "movies/m.mrc", settings, tmp_path / "p", device="cpu")
    assert result.ok, result.error
    mask_path = tmp_path / "p" / result.artifacts["mask"]
    assert mask_path == tmp_path / "p/items/m/mask.tif"
    mask = read_mask_tif(mask_path)
    assert tuple(mask.shape) == (192, 192)  # 384 px at 4 Å on BoxNet's 8 Å grid
    assert 100 * float(mask.float().mean()) == pytest.approx(result.mask_percentage, abs=1e-6)
    assert 20 < result.mask_percentage < 50  # the slab is a third of the image (measured 34 %)
    assert mask[:, 120:].sum() >= 0.9 * mask.sum()  # and it is the slab (columns ≥ 128 at 8 Å) that is masked

    # the same item re-picked from a coordinate file: no BoxNet mask any more, and none left on disk
    write_star(tmp_path / "coords/m_picks.star",
               {"": pd.DataFrame({"rlnCoordinateX": [100.0], "rlnCoordinateY": [120.0]})})
    star_settings = settings.updated({"picks_star_dir": str(tmp_path / "coords")})
    again = process_movie(tmp_path / "movies/m.mrc", star_settings, tmp_path / "p", stages=["pick"], device="cpu")
    assert again.ok, again.error
    assert again.artifacts["mask"] is None and not mask_path.exists()


def test_a_model_file_replaced_in_place_is_read_again(tmp_path):
    """The worker's model cache is keyed by the file's identity, not only its path."""
    import torch

    from cryowarp.picking import BoxNet, BoxNetConfig, boxnet_to_state
    from cryowarp.pipeline.items import _load_boxnet

    path = tmp_path / "m.pt"
    config = BoxNetConfig(widths=(4, 8), blocks_per_stage=1, head_blocks=1)
    weights = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(boxnet_to_state(BoxNet(config)), path)
        model = _load_boxnet(str(path), torch.device("cpu"))
        weights.append(next(model.parameters()).detach().clone())
        assert _load_boxnet(str(path), torch.device("cpu")) is model  # unchanged file: cached
    assert not torch.equal(weights[0], weights[1])
