"""The numba extraction kernels against their direct torch formulations (the CUDA path)."""

import torch

from cryowarp.export import _kernels


def test_cut_boxes_repeats_edge_pixels_like_clamped_indexing():
    g = torch.Generator().manual_seed(3)
    frames = torch.rand(5, 40, 50, generator=g)
    frame_ids = torch.tensor([1, 3, 4])
    cut = 16
    # box centres inside, across the top-left corner, and past the right/bottom edges
    origin = torch.tensor([[[20, 25], [2, 3], [38, 49]], [[-5, 60], [39, 0], [10, 10]]])
    out = torch.empty((2, 3, cut, cut))
    _kernels.cut_boxes(frames.numpy(), frame_ids.numpy(), origin.numpy(), out.numpy())

    offsets = torch.arange(cut) - cut // 2
    iy = (origin[..., 0, None] + offsets).clamp(0, 39)
    ix = (origin[..., 1, None] + offsets).clamp(0, 49)
    expected = frames[frame_ids[None, :, None, None], iy[..., :, None], ix[..., None, :]]
    assert torch.equal(out, expected)


def test_weighted_frame_sum_equals_broadcast_product_sum():
    g = torch.Generator().manual_seed(4)
    b, f, ny, nx = 3, 7, 12, 7
    spectra = torch.randn(b, f, ny, nx, dtype=torch.complex64, generator=g)
    fy = torch.randn(b, f, ny, dtype=torch.complex64, generator=g)
    fx = torch.randn(b, f, nx, dtype=torch.complex64, generator=g)
    scale = torch.rand(ny, nx, generator=g)
    out = torch.empty(b, ny, nx, dtype=torch.complex64)
    _kernels.weighted_frame_sum(spectra.numpy(), fy.numpy(), fx.numpy(), scale.numpy(), out.numpy())
    expected = (spectra * fy[..., :, None] * fx[..., None, :]).sum(1) * scale
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
