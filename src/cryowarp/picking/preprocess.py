"""Inference/training preprocessing and tiled inference (warp-facts.md §3.4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cryowarp.base.fourier import bandpass_raised_cosine, fourier_rescale_2d
from cryowarp.picking.model import PIXEL_SIZE_A, BoxNet


def rescale_to_boxnet_pixel_size(
    image: torch.Tensor, pixel_size_a: float, target_pixel_size_a: float = PIXEL_SIZE_A
) -> tuple[torch.Tensor, tuple[float, float]]:
    """Fourier-rescale `(h, w)` to about ``target_pixel_size_a`` with even output sizes.

    Returns
    -------
    rescaled : torch.Tensor
        `(h', w')` image.
    scale_xy : tuple of float
        Input pixels per output pixel along x and y (``w / w'``, ``h / h'``): multiply output
        coordinates by it to get input coordinates.
    """
    if pixel_size_a <= 0:
        raise ValueError(f"pixel size must be > 0 Å, found {pixel_size_a}")
    h, w = image.shape[-2:]
    factor = pixel_size_a / target_pixel_size_a
    new_h = max(2, int(round(h * factor / 2)) * 2)
    new_w = max(2, int(round(w * factor / 2)) * 2)
    return fourier_rescale_2d(image, (new_h, new_w)), (w / new_w, h / new_h)


def highpass_and_normalize(
    image_8a: torch.Tensor,
    *,
    highpass_a: float = 500.0,
    pixel_size_a: float = PIXEL_SIZE_A,
    invert_contrast: bool = False,
) -> torch.Tensor:
    """High-pass an 8 Å/px image at ``highpass_a`` and normalise it (warp-facts.md §3.4 steps 2–3).

    The image (minus its mean) is cropped by 1 px per side, padded to twice its size by edge
    clamping, faded to zero outside the original area with a raised cosine of width min(h, w)/2,
    high-passed (raised cosine from 0 at DC to 1 at 1/``highpass_a``), cropped back, and normalised
    with the mean and s.d. of its central half. ``invert_contrast`` multiplies by −1 (negative stain).

    Parameters
    ----------
    image_8a : torch.Tensor
        `(h, w)` image at ``pixel_size_a``.

    Returns
    -------
    normalized : torch.Tensor
        `(h, w)`.
    """
    h, w = image_8a.shape[-2:]
    x = image_8a - image_8a.mean()
    inner = x[1:-1, 1:-1] if h > 4 and w > 4 else x
    ih, iw = inner.shape
    pad_y0, pad_x0 = (2 * h - ih) // 2, (2 * w - iw) // 2
    pad_y1, pad_x1 = 2 * h - ih - pad_y0, 2 * w - iw - pad_x0
    padded = F.pad(inner[None, None], (pad_x0, pad_x1, pad_y0, pad_y1), mode="replicate")[0, 0]
    # raised-cosine fade of width min(h, w)/2 outside the original area
    falloff = max(min(h, w) / 2, 1.0)
    yy = torch.arange(2 * h, device=x.device, dtype=x.dtype)
    xx = torch.arange(2 * w, device=x.device, dtype=x.dtype)
    dy = torch.clamp(torch.maximum(pad_y0 - yy, yy - (pad_y0 + ih - 1)), min=0)
    dx = torch.clamp(torch.maximum(pad_x0 - xx, xx - (pad_x0 + iw - 1)), min=0)
    dist = torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)
    fade = 0.5 * (1 + torch.cos(torch.pi * (dist / falloff).clamp(max=1.0)))
    padded = padded * fade
    filt = bandpass_raised_cosine((2 * h, 2 * w), pixel_size_a, highpass_a=highpass_a, device=x.device)
    filtered = torch.fft.irfft2(torch.fft.rfft2(padded) * filt.to(x.dtype), s=(2 * h, 2 * w))
    out = filtered[pad_y0 - 1 : pad_y0 - 1 + h, pad_x0 - 1 : pad_x0 - 1 + w]
    centre = out[h // 4 : h // 4 + max(h // 2, 1), w // 4 : w // 4 + max(w // 2, 1)]
    sd = centre.std()
    out = (out - centre.mean()) / torch.clamp(sd, min=torch.finfo(out.dtype).eps)
    return -out if invert_contrast else out


def prepare_boxnet_input(
    image: torch.Tensor, pixel_size_a: float, *, highpass_a: float = 500.0, invert_contrast: bool = False
) -> tuple[torch.Tensor, tuple[float, float]]:
    """Rescale to 8 Å/px, high-pass and normalise; returns the image and the input px per 8 Å px (x, y)."""
    if image.ndim != 2:
        raise ValueError(f"expected one micrograph of shape (h, w), found shape {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError(
            "micrograph contains NaN or inf values; fix the input (e.g. the gain reference) first"
        )
    rescaled, scale_xy = rescale_to_boxnet_pixel_size(image.to(torch.float32), pixel_size_a)
    return highpass_and_normalize(rescaled, highpass_a=highpass_a, invert_contrast=invert_contrast), scale_xy


def _tile_starts(length: int, tile: int, valid: int) -> list[int]:
    """Evenly spaced tile starts in a padded axis of ``length`` so the valid centres cover it."""
    n = max(1, math.ceil((length - (tile - valid)) / valid))
    if n == 1:
        return [0]
    step = (length - tile) / (n - 1)
    return [int(round(i * step)) for i in range(n)]


def predict_probabilities(
    model: BoxNet,
    image_8a: torch.Tensor,
    *,
    tile_px: int = 512,
    border_px: int = 64,
    batch_size: int = 4,
    single_tile_max_px: int = 0,
) -> torch.Tensor:
    """Softmax class probabilities of a preprocessed 8 Å/px image by overlapping tiles.

    The image is padded by ``border_px`` (zeros = the normalised mean), cut into tiles of ``tile_px``
    whose valid centres of ``tile_px − 2·border_px`` cover it, and every output pixel takes the
    prediction of the nearest tile centre (warp-facts.md §3.4 step 4).

    Parameters
    ----------
    model : BoxNet
        In eval mode on the device of ``image_8a``.
    image_8a : torch.Tensor
        `(h, w)` preprocessed image.

    single_tile_max_px : int
        If > 0 and the padded image fits in one square tile of at most this size, use that single
        tile instead (a CPU speed-up: a 4096² micrograph at 1 Å/px is one 640² tile instead of four
        512² ones). 0 = Warp's tiling only.

    Returns
    -------
    probabilities : torch.Tensor
        `(3, h, w)` softmax probabilities (background, particle, artefact).
    """
    g = model.granularity
    if tile_px % g:
        raise ValueError(f"tile_px must be a multiple of {g} for this BoxNet, found {tile_px}")
    if not 0 <= 2 * border_px < tile_px:
        raise ValueError(f"border_px must be in [0, tile_px/2), found {border_px} for tile {tile_px}")
    h, w = image_8a.shape
    if single_tile_max_px:
        # one tile of the padded image (rounded up to the net's granularity) when it is small enough:
        # fewer pixels than several overlapping 512² tiles, and no seams
        fit_h = -(-(h + 2 * border_px) // g) * g
        fit_w = -(-(w + 2 * border_px) // g) * g
        if max(fit_h, fit_w) <= single_tile_max_px and max(fit_h, fit_w) > tile_px:
            tile_px = max(fit_h, fit_w)
    valid = tile_px - 2 * border_px
    ph, pw = max(h + 2 * border_px, tile_px), max(w + 2 * border_px, tile_px)
    padded = image_8a.new_zeros(ph, pw)
    padded[border_px : border_px + h, border_px : border_px + w] = image_8a
    ys, xs = _tile_starts(ph, tile_px, valid), _tile_starts(pw, tile_px, valid)
    starts = [(y, x) for y in ys for x in xs]
    tiles = torch.stack([padded[y : y + tile_px, x : x + tile_px] for y, x in starts])[:, None]
    outs = []
    with torch.no_grad():
        for i in range(0, len(tiles), batch_size):
            outs.append(torch.softmax(model(tiles[i : i + batch_size]), dim=1))
    probs_tiles = torch.cat(outs)  # (n_tiles, 3, tile, tile)
    # nearest tile centre per output pixel, separably along y and x
    pos_y = torch.arange(h, device=image_8a.device) + border_px
    pos_x = torch.arange(w, device=image_8a.device) + border_px
    cy = torch.tensor([y + tile_px / 2 for y in ys], device=image_8a.device)
    cx = torch.tensor([x + tile_px / 2 for x in xs], device=image_8a.device)
    iy = torch.argmin((pos_y[:, None] + 0.5 - cy[None]).abs(), dim=1)
    ix = torch.argmin((pos_x[:, None] + 0.5 - cx[None]).abs(), dim=1)
    tile_index = iy[:, None] * len(xs) + ix[None, :]  # (h, w)
    start_y = torch.tensor(ys, device=image_8a.device)[iy]
    start_x = torch.tensor(xs, device=image_8a.device)[ix]
    local_y = (pos_y - start_y)[:, None].expand(h, w)
    local_x = (pos_x - start_x)[None, :].expand(h, w)
    return probs_tiles[tile_index, :, local_y, local_x].permute(2, 0, 1).contiguous()
