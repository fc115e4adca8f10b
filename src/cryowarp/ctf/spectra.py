"""Amplitude spectra of overlapping patches, and their polar and 1D views (warp-facts.md §2.2)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cryowarp.base.fourier import fourier_rescale_2d, soft_circular_mask


def patch_grid_1d(size_px: int, patch_px: int) -> list[int]:
    """Start positions of patches along one axis: 50 % overlap, spread evenly and centred.

    Warp's ``GetEqualGridSpacing`` (warp-facts.md §1.1): step s = P/2, n = ceil((W − P + s)/s) patches,
    spacing floor((W − P)/(n − 1)), the set centred in the image. 4096 px with 1024 px patches gives 7.
    """
    if size_px < patch_px:
        raise ValueError(f"image side of {size_px} px is smaller than one patch ({patch_px} px)")
    step = patch_px // 2
    n = math.ceil((size_px - patch_px + step) / step)
    if n <= 1:
        return [(size_px - patch_px) // 2]
    spacing = (size_px - patch_px) // (n - 1)
    offset = (size_px - patch_px - spacing * (n - 1)) // 2
    return [offset + i * spacing for i in range(n)]


@dataclass(frozen=True)
class PatchSpectra:
    """Amplitude spectra of patches, fftshifted (DC at ``[window // 2, window // 2]``).

    Attributes
    ----------
    spectra : torch.Tensor
        `(t, n, window, window)`: time groups × patches, |F| summed over the frames of each group,
        each patch's spectrum resampled from ``2 * window`` to ``window`` px.
    centers_px_xy : torch.Tensor
        `(n, 2)` patch centres (x, y) in px of the input image.
    group_frames : list of tuple of int
        `(first, last + 1)` frame range of each time group.
    shape_yx : tuple of int
        Input image size.
    n_frames : int
        Frames in the input (1 for a single image).
    patch_grid_yx : tuple of int
        Patches along y and x.
    """

    spectra: torch.Tensor
    centers_px_xy: torch.Tensor
    group_frames: list[tuple[int, int]]
    shape_yx: tuple[int, int]
    n_frames: int
    patch_grid_yx: tuple[int, int]

    @property
    def window(self) -> int:
        """Side of each spectrum in px."""
        return self.spectra.shape[-1]


def _full_amplitude_from_rfft(amplitude_rfft: torch.Tensor, size: int) -> torch.Tensor:
    """Complete an rfft amplitude `(..., P, P//2+1)` to the full `(..., P, P)` by Friedel symmetry."""
    full = amplitude_rfft.new_empty(amplitude_rfft.shape[:-1] + (size,))
    full[..., : size // 2 + 1] = amplitude_rfft
    # |F(−ky, −kx)| = |F(ky, kx)|: rows reversed with row 0 kept in place, columns reversed
    mirrored = amplitude_rfft[..., 1 : size // 2].flip(-1)
    full[..., 0, size // 2 + 1 :] = mirrored[..., 0, :]
    full[..., 1:, size // 2 + 1 :] = mirrored[..., 1:, :].flip(-2)
    return full


def check_image_input(image_or_frames: torch.Tensor, pixel_size_a: float, window: int) -> None:
    """Raise ``ValueError`` naming what is wrong with a CTF input (shape, size, NaN/Inf, pixel size)."""
    if not isinstance(image_or_frames, torch.Tensor):
        raise TypeError(
            f"CTF input must be a torch.Tensor [H, W] or [F, H, W], found {type(image_or_frames)}"
        )
    if image_or_frames.ndim not in (2, 3):
        raise ValueError(
            "CTF input must be an image [H, W] or frames [F, H, W], "
            f"found shape {tuple(image_or_frames.shape)}"
        )
    if not (pixel_size_a > 0 and math.isfinite(pixel_size_a)):
        raise ValueError(f"pixel_size_a must be a positive number of Å, found {pixel_size_a}")
    h, w = image_or_frames.shape[-2:]
    patch = 2 * window
    if h < patch or w < patch:
        raise ValueError(
            f"image of {w}×{h} px is too small for CTF spectra: expected at least one patch of "
            f"{patch}×{patch} px (2 × window {window}); use a smaller window"
        )
    if not bool(torch.isfinite(image_or_frames).all()):
        n_bad = int((~torch.isfinite(image_or_frames)).sum())
        raise ValueError(
            f"CTF input contains {n_bad} NaN/Inf pixel(s): expected finite values; "
            "fix or mask the image first"
        )


def amplitude_spectra(
    image_or_frames: torch.Tensor,
    *,
    window: int = 512,
    n_time_groups: int = 1,
    use_movie_sum: bool = False,
    frames_per_spectrum: int = 1,
    chunk: int = 8,
    progress: Callable[[str, float], None] | None = None,
) -> PatchSpectra:
    """Amplitude spectra of ``2 * window`` px patches with 50 % overlap, resampled to ``window`` px.

    Each patch is normalised to mean 0 / s.d. 1, multiplied by a soft circular mask (flat to 3/8 of
    the patch, raised-cosine to 0 at 1/2), Fourier transformed, and |F| (not |F|²) is taken. For
    frames, each frame's |F| is computed separately and summed over the frames of a time group, so
    motion does not blur the Thon rings. The summed |F| is then Fourier-resampled from 2·window to
    window px (warp-facts.md §2.2), giving ``window // 2`` radial bins up to Nyquist.

    Parameters
    ----------
    image_or_frames : torch.Tensor
        `(h, w)` micrograph or `(f, h, w)` frames.
    window : int
        Output spectrum side in px (even).
    n_time_groups : int
        Number of consecutive frame groups (floor(F / T) frames each, the rest in the last group).
    use_movie_sum : bool
        Sum the frames first (Warp's ``UseMovieSum``).
    frames_per_spectrum : int
        Consecutive frames (within a time group) summed before their |F| is taken (ours; 1 = Warp,
        every frame separately). Motion within so few frames blurs the rings far less than over the
        whole movie, at 1/k of the Fourier transforms.
    chunk : int
        Patches transformed at once (memory vs speed).
    progress : callable, optional
        ``progress(message, fraction)``.

    Returns
    -------
    PatchSpectra
    """
    frames = image_or_frames if image_or_frames.ndim == 3 else image_or_frames[None]
    if use_movie_sum and frames.shape[0] > 1:
        frames = frames.sum(0, keepdim=True)
    n_frames, h, w = frames.shape
    n_time_groups = max(1, min(n_time_groups, n_frames))
    patch = 2 * window
    starts_y = patch_grid_1d(h, patch)
    starts_x = patch_grid_1d(w, patch)
    corners = [(y0, x0) for y0 in starts_y for x0 in starts_x]
    device = frames.device
    mask = soft_circular_mask((patch, patch), 3 * patch / 8, patch / 8, device=device)

    per_group = n_frames // n_time_groups
    groups = [
        (g * per_group, (g + 1) * per_group if g < n_time_groups - 1 else n_frames)
        for g in range(n_time_groups)
    ]
    summed = torch.zeros((n_time_groups, len(corners), patch, patch // 2 + 1), device=device)
    per_spectrum = max(1, int(frames_per_spectrum))
    blocks = [
        [(f, min(f + per_spectrum, last)) for f in range(first, last, per_spectrum)] for first, last in groups
    ]
    total_steps = sum(len(b) for b in blocks) * math.ceil(len(corners) / chunk)
    step = 0
    for g, group_blocks in enumerate(blocks):
        for f0, f1 in group_blocks:
            frame = frames[f0:f1].to(torch.float32).sum(0)
            for c0 in range(0, len(corners), chunk):
                batch = torch.stack(
                    [frame[y0 : y0 + patch, x0 : x0 + patch] for y0, x0 in corners[c0 : c0 + chunk]]
                )
                std, mean = torch.std_mean(batch, dim=(-2, -1), keepdim=True)
                batch = (batch - mean) * (mask / std.clamp_min(1e-12))
                summed[g, c0 : c0 + batch.shape[0]] += torch.fft.rfft2(batch).abs()
                step += 1
                if progress is not None:
                    progress("patch spectra", step / total_steps)

    full = _full_amplitude_from_rfft(summed, patch)  # (t, n, P, P), unshifted
    counts = torch.tensor([float(len(b)) for b in blocks], device=device)
    full = full / (patch * counts[:, None, None, None])
    resampled = fourier_rescale_2d(full, (window, window))
    spectra = torch.fft.fftshift(resampled, dim=(-2, -1))
    centers = torch.tensor(
        [[x0 + patch / 2, y0 + patch / 2] for y0, x0 in corners], dtype=torch.float32, device=device
    )
    return PatchSpectra(
        spectra=spectra,
        centers_px_xy=centers,
        group_frames=groups,
        shape_yx=(h, w),
        n_frames=n_frames,
        patch_grid_yx=(len(starts_y), len(starts_x)),
    )


def polar_spectra(spectra: torch.Tensor, radii_px: torch.Tensor, n_angles: int) -> torch.Tensor:
    """Sample fftshifted spectra on polar grids (bilinear), angles θ ∈ [0, π) from +kx towards +ky.

    Parameters
    ----------
    spectra : torch.Tensor
        `(s, window, window)` fftshifted spectra.
    radii_px : torch.Tensor
        `(r,)` radii in Fourier px shared by all spectra, or `(s, r)` one set per spectrum.
    n_angles : int
        Number of angles, θ_a = π a / n_angles.

    Returns
    -------
    polar : torch.Tensor
        `(s, r, n_angles)`.
    """
    n, size = spectra.shape[0], spectra.shape[-1]
    center = size // 2
    angles = torch.arange(n_angles, device=spectra.device, dtype=spectra.dtype) * (math.pi / n_angles)
    radii = radii_px.to(spectra.dtype).expand(n, radii_px.shape[-1])
    col = center + radii[..., None] * torch.cos(angles)  # (s, r, a)
    row = center + radii[..., None] * torch.sin(angles)
    grid = torch.stack([col / (size - 1) * 2 - 1, row / (size - 1) * 2 - 1], dim=-1)
    return F.grid_sample(spectra[:, None], grid, mode="bilinear", align_corners=True)[:, 0]


def polar_angles_rad(n_angles: int, *, device: torch.device | None = None) -> torch.Tensor:
    """The angles `(n_angles,)` used by :func:`polar_spectra`, radians."""
    return torch.arange(n_angles, device=device, dtype=torch.float32) * (math.pi / n_angles)


def radial_average_centered(spectra: torch.Tensor, n_bins: int | None = None) -> torch.Tensor:
    """Average fftshifted spectra `(..., w, w)` over rings of integer radius (linear split)."""
    size = spectra.shape[-1]
    n_bins = n_bins if n_bins is not None else size // 2
    coords = torch.arange(size, device=spectra.device, dtype=torch.float32) - size // 2
    radius = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2).reshape(-1)
    lower = radius.floor().long()
    frac = radius - lower
    flat = spectra.reshape(spectra.shape[:-2] + (-1,))
    sums = flat.new_zeros(flat.shape[:-1] + (n_bins + 2,))
    weights = flat.new_zeros(n_bins + 2)
    lo = lower.clamp_max(n_bins + 1)
    hi = (lower + 1).clamp_max(n_bins + 1)
    sums.index_add_(-1, lo, flat * (1 - frac))
    sums.index_add_(-1, hi, flat * frac)
    weights.index_add_(0, lo, 1 - frac)
    weights.index_add_(0, hi, frac)
    return (sums / weights.clamp_min(1e-6))[..., :n_bins]


@functools.lru_cache(maxsize=4)
def _mask_power_autocorrelation(patch: int) -> torch.Tensor:
    """Σ m²(x) m²(x − d) / Σ m⁴ for every offset d (wrapped, `(2P, 2P)`) of the soft patch mask m."""
    weight = soft_circular_mask((patch, patch), 3 * patch / 8, patch / 8, dtype=torch.float64) ** 2
    padded = torch.zeros((2 * patch, 2 * patch), dtype=torch.float64)
    padded[:patch, :patch] = weight
    spectrum = torch.fft.rfft2(padded)
    autocorr = torch.fft.irfft2(spectrum * spectrum.conj(), s=padded.shape)
    return autocorr / autocorr[0, 0]


def patch_overlap_correlation(centers_px_xy: torch.Tensor, patch_px: int) -> torch.Tensor:
    """Correlation `(n, n)` of the spectrum noise of overlapping patches (ours, for the grid prior).

    A defocus estimate is a smooth weighted sum of a patch's power spectrum over many Fourier pixels;
    for stationary Gaussian noise seen through the patch mask m, such sums from two patches at offset
    d correlate (Parseval) as Σ m²(x) m²(x − d) / Σ m⁴. Neighbouring patches of the 50 %-overlap grid
    give ≈ 0.4, so their defocus estimates are not independent; ignoring this makes smooth noise look
    like a real departure of the specimen from a plane.
    """
    patch = int(patch_px)
    autocorr = _mask_power_autocorrelation(patch)
    centers = centers_px_xy.double().cpu()
    offsets = (centers[:, None, :] - centers[None, :, :]).round().long()
    inside = (offsets.abs() < patch).all(-1)
    dx, dy = offsets[..., 0] % (2 * patch), offsets[..., 1] % (2 * patch)
    return torch.where(inside, autocorr[dy, dx], torch.zeros((), dtype=torch.float64)).clamp(0, 1)
