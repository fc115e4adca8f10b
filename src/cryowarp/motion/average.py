"""Aligned (and dose-weighted) frame averages with a per-pixel deformation field (warp-facts.md §1.5–1.6)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from cryowarp.base.fourier import fftfreq_grid_2d
from cryowarp.motion._patches import raise_non_finite
from cryowarp.motion.model import MotionModel


@dataclass(frozen=True)
class AlignedAverage:
    """Result of :func:`average_frames`.

    Attributes
    ----------
    average : torch.Tensor
        `(h, w)` the aligned average (dose-weighted if ``dose_weighted``), mean over used frames.
    average_no_dw : torch.Tensor or None
        `(h, w)` the aligned average without dose weighting (if requested).
    average_odd, average_even : torch.Tensor or None
        `(h, w)` halves from odd / even frames (frame index 1, 3, … / 0, 2, …), same weighting as
        ``average``; ``(odd + even) / 2`` equals ``average`` when the used frame count is even.
    first_frame, last_frame : int
        Frames used, ``first_frame <= f < last_frame``.
    dose_weighted : bool
        Whether ``average`` is dose-weighted.
    n_resamplings : int
        How many per-pixel resamplings were needed (frame groups with a spatially varying field).
    """

    average: torch.Tensor
    average_no_dw: torch.Tensor | None
    average_odd: torch.Tensor | None
    average_even: torch.Tensor | None
    first_frame: int
    last_frame: int
    dose_weighted: bool
    n_resamplings: int = 0

    def to_dict(self) -> dict:
        """Metadata only (images go to MRC files, not JSON)."""
        return {
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "dose_weighted": self.dose_weighted,
            "shape_yx": list(self.average.shape),
            "n_resamplings": self.n_resamplings,
        }


def _residual_groups(fields_px: list[torch.Tensor], tolerance_px: float) -> list[list[int]]:
    """Split consecutive frames into groups whose residual fields span at most 2·``tolerance_px`` per
    component, so that each frame lies within about ``tolerance_px`` of its group's mean field."""
    groups: list[list[int]] = []
    for i, field in enumerate(fields_px):
        if groups and float((field - fields_px[groups[-1][0]]).abs().max()) <= 2 * tolerance_px:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _warp(images: torch.Tensor, field_px_yx: torch.Tensor) -> torch.Tensor:
    """``out(x) = image(x + field(x))`` for `(c, h, w)` images sharing one coarse field `(2, gy, gx)`:
    the field is bilinearly upsampled to every pixel and the images sampled by bicubic interpolation
    (all channels in one pass, so the sampling positions are computed once)."""
    _, h, w = images.shape
    dense = nnf.interpolate(
        field_px_yx[None].to(images.dtype), size=(h, w), mode="bilinear", align_corners=True
    )[0]
    gy = torch.linspace(-1.0, 1.0, h, device=images.device, dtype=images.dtype)
    gx = torch.linspace(-1.0, 1.0, w, device=images.device, dtype=images.dtype)
    grid = torch.empty((1, h, w, 2), device=images.device, dtype=images.dtype)
    torch.add(gx[None, :], dense[1], alpha=2.0 / max(1, w - 1), out=grid[0, :, :, 0])
    torch.add(gy[:, None], dense[0], alpha=2.0 / max(1, h - 1), out=grid[0, :, :, 1])
    del dense
    out = nnf.grid_sample(images[None], grid, mode="bicubic", padding_mode="reflection", align_corners=True)
    return out[0]


def average_frames(
    frames: torch.Tensor,
    model: MotionModel,
    *,
    pixel_size_a: float,
    exposure_per_frame_e_per_a2: float,
    dose_weighted: bool = True,
    skip_first: int = 0,
    skip_last: int = 0,
    halves: bool = False,
    also_unweighted: bool = False,
    field_grid_yx: tuple[int, int] = (16, 16),
    tolerance_px: float = 0.05,
    progress: Callable[[str, int, int], None] | None = None,
) -> AlignedAverage:
    """Average frames after undoing the motion model, frame by frame.

    Parameters
    ----------
    frames : torch.Tensor
        `(n_frames, h, w)` frames the model was fitted on.
    model : MotionModel
        Fitted motion.
    pixel_size_a, exposure_per_frame_e_per_a2 : float
        Pixel size (Å) and exposure per frame (e⁻/Å²) for the dose weights.
    dose_weighted : bool
        Weight frame f by Warp's exp(B_f k²/4), B_f = −3·d·(f + ½) (warp-facts.md §1.6; not
        normalised, so the DC term equals the plain mean).
    skip_first, skip_last : int
        Frames to leave out at the start and end.
    halves : bool
        Also return odd/even half averages.
    also_unweighted : bool
        With ``dose_weighted``, also return the average without dose weighting (one pass for both).
    field_grid_yx : tuple of int
        The deformation is evaluated on this grid and bilinearly interpolated per pixel (Warp: 16×16).
    tolerance_px : float
        Consecutive frames whose spatially varying part of the field stays within about this many pixels
        of their mean share one resampling (the constant part of each frame's shift is applied exactly as
        a Fourier phase). 0.05 px costs < 1 % of the amplitude at 3 Å for 1 Å pixels; 0 resamples every
        frame on its own.
    progress : callable, optional
        ``progress("average", done, total)``.

    Returns
    -------
    AlignedAverage
    """
    n_f, h, w = frames.shape
    if n_f != model.n_frames or (h, w) != tuple(model.shape_yx):
        raise ValueError(
            f"average_frames: the model was fitted on {model.n_frames} frames of {model.shape_yx[0]}×"
            f"{model.shape_yx[1]}, found frames {n_f}×{h}×{w}"
        )
    first, last = skip_first, n_f - skip_last
    if first < 0 or skip_last < 0 or last - first < 1:
        raise ValueError(
            f"average_frames: skip_first={skip_first}, skip_last={skip_last} leave no frames of {n_f}"
        )
    device = frames.device
    used = list(range(first, last))
    freq = torch.linalg.vector_norm(fftfreq_grid_2d((h, w), device=device), dim=-1) / pixel_size_a
    ky = torch.fft.fftfreq(h, device=device)[:, None]
    kx = torch.fft.rfftfreq(w, device=device)[None, :]
    # Warp's B_f = −3·d·(f + ½): W_f = base^(f + ½) with base = exp(−3 d k²/4), built by repeated products
    dw_base = torch.exp(-3.0 * exposure_per_frame_e_per_a2 * freq**2 / 4.0) if dose_weighted else None

    fields = []
    constants = []
    for f in used:
        field = model.displacement_field_a_yx(f, field_grid_yx).to(device) / pixel_size_a  # (2, gy, gx) px
        const = field.mean((1, 2))
        fields.append(field - const[:, None, None])
        constants.append(const)
    groups = _residual_groups(fields, tolerance_px)

    keys = (
        ["main"]
        + (["nodw"] if dose_weighted and also_unweighted else [])
        + (["odd", "even"] if halves else [])
    )
    totals = {key: torch.zeros((h, w), device=device, dtype=torch.float32) for key in keys}
    counts = {"main": 0, "nodw": 0, "odd": 0, "even": 0}
    weight = torch.pow(dw_base, first + 0.5) if dose_weighted else None
    done = 0
    n_warps = 0
    for group in groups:
        accum = {key: None for key in keys}
        field = torch.stack([fields[i] for i in group]).mean(0)
        for i in group:
            f = used[i]
            spectrum = torch.fft.rfft2(frames[f].float())
            if not bool(torch.isfinite(spectrum[0, 0])):
                raise_non_finite(frames, "average_frames")
            const = constants[i]
            # aligned(x) = frame(x + d): multiply by exp(+2πi k·d)
            spectrum *= torch.polar(torch.ones_like(ky), 2 * torch.pi * ky * const[0])
            spectrum *= torch.polar(torch.ones_like(kx), 2 * torch.pi * kx * const[1])
            weighted = spectrum * weight if dose_weighted else spectrum
            targets = [("main", weighted)]
            if "nodw" in accum:
                targets.append(("nodw", spectrum))
            if halves:
                targets.append(("odd" if f % 2 else "even", weighted))
            for key, value in targets:
                accum[key] = value if accum[key] is None else accum[key] + value
                counts[key] += 1
            if dose_weighted:
                weight = weight * dw_base
            done += 1
            if progress is not None:
                progress("average", done, len(used))
        present = [key for key in keys if accum[key] is not None]
        images = torch.stack([torch.fft.irfft2(accum.pop(key), s=(h, w)) for key in present])
        if float(field.abs().max()) > 1e-3:
            images = _warp(images, field)
            n_warps += 1
        for key, image in zip(present, images, strict=True):
            totals[key] += image
        del images
    out = {key: totals[key] / max(1, counts[key]) for key in keys}
    return AlignedAverage(
        average=out["main"],
        average_no_dw=out.get("nodw"),
        average_odd=out.get("odd"),
        average_even=out.get("even"),
        first_frame=first,
        last_frame=last,
        dose_weighted=dose_weighted,
        n_resamplings=n_warps,
    )
