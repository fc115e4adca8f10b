"""Fourier-space helpers: frequency grids on rfft/fft layouts (extended by the rest of base/)."""

from __future__ import annotations

import torch


def fftfreq_grid_2d(
    shape_yx: tuple[int, int],
    *,
    rfft: bool = True,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Spatial frequencies in cycles/px for an image of ``shape_yx``.

    Parameters
    ----------
    shape_yx : tuple of int
        ``(h, w)`` of the real-space image.
    rfft : bool
        If True the grid has the rfft layout ``(h, w // 2 + 1)``, else the full fft layout ``(h, w)``.
        Neither is fftshifted.
    device, dtype
        Where and how to build the grid.

    Returns
    -------
    freq_yx : torch.Tensor
        ``(h, w', 2)`` with ``[..., 0]`` = ky and ``[..., 1]`` = kx in cycles/px.
    """
    h, w = shape_yx
    ky = torch.fft.fftfreq(h, device=device, dtype=dtype)
    kx = torch.fft.rfftfreq(w, device=device, dtype=dtype) if rfft else torch.fft.fftfreq(
        w, device=device, dtype=dtype
    )
    grid_y, grid_x = torch.meshgrid(ky, kx, indexing="ij")
    return torch.stack([grid_y, grid_x], dim=-1)


def fourier_shift_2d(image: torch.Tensor, shifts_px_yx: torch.Tensor) -> torch.Tensor:
    """Shift images by sub-pixel amounts with a Fourier phase ramp (periodic boundaries).

    Parameters
    ----------
    image : torch.Tensor
        `(..., h, w)` real images.
    shifts_px_yx : torch.Tensor
        `(..., 2)` shifts in pixels, (dy, dx); the content at x moves to x + shift.

    Returns
    -------
    shifted : torch.Tensor
        `(..., h, w)`, same dtype and device as ``image``.
    """
    h, w = image.shape[-2:]
    shifts_px_yx = torch.as_tensor(shifts_px_yx, dtype=image.dtype, device=image.device)
    ky = torch.fft.fftfreq(h, device=image.device, dtype=image.dtype)
    kx = torch.fft.rfftfreq(w, device=image.device, dtype=image.dtype)
    # separable ramps exp(-2πi ky dy) · exp(-2πi kx dx): 2x cheaper than a full 2D exp (toolchain.md §8)
    ramp_y = torch.exp(-2j * torch.pi * ky * shifts_px_yx[..., 0, None])[..., :, None]
    ramp_x = torch.exp(-2j * torch.pi * kx * shifts_px_yx[..., 1, None])[..., None, :]
    spectrum = torch.fft.rfft2(image)
    return torch.fft.irfft2(spectrum * ramp_y * ramp_x, s=(h, w))


def fourier_crop_or_pad_2d(spectrum: torch.Tensor, shape_yx: tuple[int, int], real_shape_yx: tuple[int, int]) -> torch.Tensor:
    """Crop or zero-pad an rfft spectrum of a ``real_shape_yx`` image to that of a ``shape_yx`` image.

    The shared low frequencies are copied; for even output sizes the Nyquist row is left as the
    input's corresponding row (cropping) or zero (padding).
    """
    h_in, w_in = real_shape_yx
    h_out, w_out = shape_yx
    out = spectrum.new_zeros(spectrum.shape[:-2] + (h_out, w_out // 2 + 1))
    h_keep = min(h_in, h_out)
    w_keep = min(w_in // 2 + 1, w_out // 2 + 1)
    pos = (h_keep + 1) // 2  # rows 0 .. pos-1 are non-negative frequencies
    neg = h_keep // 2  # the last ``neg`` rows are negative frequencies
    out[..., :pos, :w_keep] = spectrum[..., :pos, :w_keep]
    if neg > 0:
        out[..., h_out - neg:, :w_keep] = spectrum[..., h_in - neg:, :w_keep]
    return out


def fourier_rescale_2d(image: torch.Tensor, shape_yx: tuple[int, int]) -> torch.Tensor:
    """Resample images to ``shape_yx`` by cropping (binning) or zero-padding their spectrum.

    The mean intensity is preserved (not the sum), so a movie frame binned 2× keeps its counts per
    pixel scaled by nothing: multiply by the area ratio yourself if you want counts per binned pixel.

    Parameters
    ----------
    image : torch.Tensor
        `(..., h, w)` real images.
    shape_yx : tuple of int
        Output ``(h', w')``. Pixel size scales by ``h / h'``.

    Returns
    -------
    rescaled : torch.Tensor
        `(..., h', w')`.
    """
    h, w = image.shape[-2:]
    if (h, w) == tuple(shape_yx):
        return image.clone()
    spectrum = torch.fft.rfft2(image)
    cropped = fourier_crop_or_pad_2d(spectrum, tuple(shape_yx), (h, w))
    scale = (shape_yx[0] * shape_yx[1]) / (h * w)
    return torch.fft.irfft2(cropped * scale, s=tuple(shape_yx))


def fourier_rescale_to_pixel_size_2d(
    image: torch.Tensor, pixel_size_a: float, target_pixel_size_a: float
) -> tuple[torch.Tensor, float]:
    """Fourier-rescale to (about) ``target_pixel_size_a``; sizes are rounded to even numbers.

    Returns the rescaled image and its exact new pixel size in Å (which differs from the target by
    the rounding; Warp does the same, warp-facts.md §1.7).
    """
    h, w = image.shape[-2:]
    factor = pixel_size_a / target_pixel_size_a
    new_h = max(2, int(round(h * factor)) // 2 * 2)
    new_w = max(2, int(round(w * factor)) // 2 * 2)
    return fourier_rescale_2d(image, (new_h, new_w)), pixel_size_a * w / new_w


def raised_cosine(radius: torch.Tensor, inner: float, outer: float) -> torch.Tensor:
    """1 inside ``inner``, 0 outside ``outer``, ½(1 + cos) fall-off between (any units)."""
    width = max(outer - inner, 1e-12)
    t = ((radius - inner) / width).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(torch.pi * t))


def soft_circular_mask(
    shape_yx: tuple[int, int],
    radius_px: float,
    falloff_px: float,
    *,
    center_yx: tuple[float, float] | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Circular mask: 1 to ``radius_px``, raised-cosine to 0 at ``radius_px + falloff_px``.

    The centre defaults to ``(h // 2, w // 2)`` (the FFT origin of an fftshifted box). Warp's patch
    masks (warp-facts.md §1.1, §2.2) are this with radius R/4, fall-off R/4 and radius 3R/8, R/8.
    """
    h, w = shape_yx
    cy, cx = center_yx if center_yx is not None else (h // 2, w // 2)
    y = torch.arange(h, device=device, dtype=dtype) - cy
    x = torch.arange(w, device=device, dtype=dtype) - cx
    r = torch.sqrt(y[:, None] ** 2 + x[None, :] ** 2)
    return raised_cosine(r, radius_px, radius_px + falloff_px)


def bandpass_raised_cosine(
    shape_yx: tuple[int, int],
    pixel_size_a: float,
    *,
    highpass_a: float | None = None,
    lowpass_a: float | None = None,
    falloff_per_a: float | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Band-pass filter on the rfft grid with raised-cosine edges.

    Passes frequencies between 1/``highpass_a`` and 1/``lowpass_a`` (1/Å); each edge falls off over
    ``falloff_per_a`` (default: the pass frequency itself for the high-pass, i.e. a cosine from 0 to
    1/highpass_a, and 1/(4·pixel size) wide for the low-pass). ``None`` disables an edge.
    """
    freq = torch.linalg.vector_norm(fftfreq_grid_2d(shape_yx, device=device), dim=-1) / pixel_size_a
    filt = torch.ones_like(freq)
    if highpass_a is not None:
        f_hp = 1.0 / highpass_a
        width = falloff_per_a if falloff_per_a is not None else f_hp
        filt = filt * (1.0 - raised_cosine(freq, f_hp - width, f_hp))
    if lowpass_a is not None:
        f_lp = 1.0 / lowpass_a
        width = falloff_per_a if falloff_per_a is not None else 0.25 / pixel_size_a
        filt = filt * raised_cosine(freq, f_lp, f_lp + width)
    return filt


def radial_average_2d(spectrum_2d: torch.Tensor, *, rfft: bool = True, n_bins: int | None = None) -> torch.Tensor:
    """Average a 2D spectrum over rings of integer radius (in Fourier pixels of the short axis).

    Parameters
    ----------
    spectrum_2d : torch.Tensor
        `(..., h, w')` real values on the rfft (default) or full fft grid of an ``(h, w)`` image with
        h = w (square images; rectangular ones are binned by frequency in units of 1/h).
    n_bins : int, optional
        Number of radial bins; default h // 2 + 1 (DC to Nyquist).

    Returns
    -------
    profile : torch.Tensor
        `(..., n_bins)`; bin i holds the mean of pixels with round(|k|·h) == i.
    """
    h = spectrum_2d.shape[-2]
    w = (spectrum_2d.shape[-1] - 1) * 2 if rfft else spectrum_2d.shape[-1]
    freq = torch.linalg.vector_norm(
        fftfreq_grid_2d((h, w), rfft=rfft, device=spectrum_2d.device, dtype=torch.float32), dim=-1
    )
    n_bins = n_bins if n_bins is not None else h // 2 + 1
    index = torch.round(freq * h).long().clamp_max(n_bins)  # bin n_bins collects the corners
    flat = spectrum_2d.reshape(spectrum_2d.shape[:-2] + (-1,))
    sums = flat.new_zeros(flat.shape[:-1] + (n_bins + 1,))
    sums.index_add_(-1, index.reshape(-1), flat)
    counts = torch.bincount(index.reshape(-1), minlength=n_bins + 1).to(flat.dtype)
    return (sums / counts.clamp_min(1))[..., :n_bins]
