"""Rescaling, high-pass/normalisation and nearest-tile-centre stitching (warp-facts.md §3.4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cryowarp.picking import highpass_and_normalize, predict_probabilities, prepare_boxnet_input
from cryowarp.picking.preprocess import _tile_starts


def test_rescale_to_8a_gives_even_size_and_coordinate_scale():
    img = torch.randn(1000, 1200)
    x8, scale_xy = prepare_boxnet_input(img, 2.0)
    assert tuple(x8.shape) == (250, 300)
    assert scale_xy == (4.0, 4.0)
    x8, scale_xy = prepare_boxnet_input(torch.randn(1030, 1030), 1.0)  # 128.75 -> 128 (even)
    assert tuple(x8.shape) == (128, 128)
    assert scale_xy[0] == pytest.approx(1030 / 128)


def test_highpass_removes_a_ramp_and_normalises_the_centre():
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    noise = torch.randn(256, 256)
    # a ramp of 50 noise s.d. over 2048 Å: far below 1/500 Å⁻¹, removed by the 500 Å high-pass
    out = highpass_and_normalize(noise + 50 * xx / 256)
    centre = out[64:192, 64:192]
    assert float(centre.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(centre.std()) == pytest.approx(1.0, abs=1e-3)
    # without the filter the ramp dominates (correlation with the noise 0.08); after it the noise does.
    # Measured 0.979: what is left of the ramp sits at the edges (clamped padding), hence 0.97.
    corr = torch.corrcoef(torch.stack([out[16:-16, 16:-16].reshape(-1), noise[16:-16, 16:-16].reshape(-1)]))[
        0, 1
    ]
    assert float(corr) > 0.97
    assert torch.allclose(highpass_and_normalize(noise, invert_contrast=True), -highpass_and_normalize(noise))


def test_tiles_cover_the_axis_evenly():
    assert _tile_starts(512, 512, 384) == [0]
    starts = _tile_starts(1000, 512, 384)
    assert starts[0] == 0 and starts[-1] == 1000 - 512
    # valid centres [s + 64, s + 448) must cover [64, 936)
    covered = set()
    for s in starts:
        covered |= set(range(s + 64, s + 448))
    assert set(range(64, 936)) <= covered


class _PointwiseNet(nn.Module):
    """Logits that depend only on the pixel's own value: tiling must reproduce whole-image output."""

    granularity = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 3 * x, -2 * x], dim=1)


class _ContextNet(nn.Module):
    """Logits from a 3×3 mean: tile seams inside the discarded border cannot show."""

    granularity = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([torch.zeros_like(m), m, -m], dim=1)


@pytest.mark.parametrize("shape", [(100, 130), (300, 700), (64, 64)])
def test_stitched_tiles_equal_whole_image_prediction(shape):
    torch.manual_seed(1)
    img = torch.randn(shape)
    for net in (_PointwiseNet(), _ContextNet()):
        whole = torch.softmax(net(img[None, None]), dim=1)[0]
        tiled = predict_probabilities(net, img, tile_px=128, border_px=16)
        assert tiled.shape == (3, *shape)
        if isinstance(net, _ContextNet):  # the image edge differs (zero padding vs shrinking window)
            torch.testing.assert_close(tiled[:, 1:-1, 1:-1], whole[:, 1:-1, 1:-1], atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_single_tile_mode_equals_whole_image_with_zero_border():
    torch.manual_seed(2)
    img = torch.randn(200, 250)
    net = _ContextNet()
    single = predict_probabilities(net, img, tile_px=128, border_px=16, single_tile_max_px=512)
    padded = torch.nn.functional.pad(img, (16, 16, 16, 16))
    whole = torch.softmax(net(padded[None, None]), dim=1)[0, :, 16:-16, 16:-16]
    torch.testing.assert_close(single, whole, atol=1e-6, rtol=0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="must be a multiple of 8"):
        predict_probabilities(_PointwiseNet(), torch.zeros(64, 64), tile_px=100)
    with pytest.raises(ValueError, match="expected one micrograph of shape"):
        prepare_boxnet_input(torch.zeros(2, 64, 64), 1.0)
    bad = torch.zeros(64, 64)
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        prepare_boxnet_input(bad, 1.0)
    with pytest.raises(ValueError, match="pixel size must be > 0"):
        prepare_boxnet_input(torch.zeros(64, 64), 0.0)
