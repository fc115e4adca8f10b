"""Aligned (and dose-weighted) frame averages with a per-pixel deformation field (warp-facts.md §1.5–1.6)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from cryowarp.base.optics import dose_weights_bfactor
from cryowarp.motion._kernels import accumulate_spectrum, warp_by_field
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
        How many frames needed a per-pixel resampling (those with a spatially varying field).
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


def _warp_torch(image: torch.Tensor, field_px_yx: torch.Tensor, offset_px_yx: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`cryowarp.motion._kernels.warp_by_field` (used on GPUs): the field is looked
    up at ``(y, x) − offset`` (bilinear, clamped) and the image sampled bicubically (edge-clamped)."""
    h, w = image.shape
    dtype, device = image.dtype, image.device
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    # positions where the field is evaluated, normalised to [−1, 1] over the field's corner nodes
    ly = (ys - offset_px_yx[0]) * (2.0 / max(1, h - 1)) - 1.0
    lx = (xs - offset_px_yx[1]) * (2.0 / max(1, w - 1)) - 1.0
    lookup = torch.stack(torch.broadcast_tensors(lx[None, :], ly[:, None]), dim=-1)[None]
    dense = nnf.grid_sample(
        field_px_yx[None].to(dtype), lookup, mode="bilinear", padding_mode="border", align_corners=True
    )[0]
    grid = torch.stack(
        (
            (xs[None, :] + dense[1]) * (2.0 / max(1, w - 1)) - 1.0,
            (ys[:, None] + dense[0]) * (2.0 / max(1, h - 1)) - 1.0,
        ),
        dim=-1,
    )[None]
    del dense
    out = nnf.grid_sample(image[None, None], grid, mode="bicubic", padding_mode="border", align_corners=True)
    return out[0, 0]


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
    progress: Callable[[str, int, int], None] | None = None,
) -> AlignedAverage:
    """Average frames after undoing the motion model, frame by frame.

    Each frame's displacement field splits into its mean (a constant shift, applied exactly as a Fourier
    phase) and the spatially varying rest (a few pixels at most), which is undone by resampling the frame
    in real space (Catmull-Rom cubic) before its FFT. Dose weighting and the shift are then one fused
    pass over the spectrum; only the final averages are transformed back. One FFT per frame and no
    frame grouping: every frame gets its own exact field.

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
    use_kernels = device.type == "cpu"  # fused numba loops on CPU, plain torch on GPUs
    ky = torch.fft.fftfreq(h, device=device)  # cycles/px
    kx = torch.fft.rfftfreq(w, device=device)
    keys = (
        ["main"]
        + (["nodw"] if dose_weighted and also_unweighted else [])
        + (["odd", "even"] if halves else [])
    )
    shape_c = (h, w // 2 + 1)
    acc = {key: torch.zeros(shape_c, device=device, dtype=torch.complex64) for key in keys}
    counts = {key: 0 for key in keys}
    unit_y = torch.ones(h, device=device)
    unit_x = torch.ones(shape_c[1], device=device)
    warped = torch.empty((h, w), device=device, dtype=torch.float32)
    scratch = torch.empty((h, w), dtype=torch.float32) if use_kernels else None
    spectrum = torch.empty(shape_c, device=device, dtype=torch.complex64)
    if dose_weighted:
        # Warp's weight exp(B_f k²/4) is Gaussian in |k|: the 2D weight is the outer product of the axis weights
        def axis_weights(k_cycles_per_px: torch.Tensor) -> torch.Tensor:  # (n_used, n)
            return dose_weights_bfactor(
                k_cycles_per_px.abs() / pixel_size_a, len(used), exposure_per_frame_e_per_a2, first_frame_index=first
            )

        axis_weights_y, axis_weights_x = axis_weights(ky), axis_weights(kx)
    n_warps = 0
    for done, f in enumerate(used, start=1):
        field = model.displacement_field_a_yx(f, field_grid_yx).to(device) / pixel_size_a  # (2, gy, gx) px
        const = field.mean((1, 2))
        residual = (field - const[:, None, None]).contiguous()
        frame = frames[f].to(torch.float32).contiguous()
        # aligned(x) = frame(x + c + r(x)): warp by the residual r looked up at x − c, then shift by the
        # constant c exactly as a Fourier phase (warp(x) = frame(x + r(x − c)), aligned(x) = warp(x + c))
        if float(residual.abs().max()) > 1e-3:
            if use_kernels:
                warp_by_field(
                    frame.numpy(), residual.numpy(), const.numpy().astype("float32"), warped.numpy(), scratch.numpy()
                )
            else:
                warped.copy_(_warp_torch(frame, residual, const))
            source = warped
            n_warps += 1
        else:
            source = frame
        torch.fft.rfft2(source, out=spectrum)
        if not bool(torch.isfinite(spectrum[0, 0])):
            raise_non_finite(frames, "average_frames")
        ramp_y = torch.polar(unit_y, 2 * torch.pi * ky * const[0])  # exp(+2πi k·c)
        ramp_x = torch.polar(unit_x, 2 * torch.pi * kx * const[1])
        wy, wx = (axis_weights_y[done - 1], axis_weights_x[done - 1]) if dose_weighted else (unit_y, unit_x)
        targets = [("main", "nodw" if "nodw" in acc else None)]
        if halves:
            targets.append(("odd" if f % 2 else "even", None))
        for key, plain_key in targets:
            if use_kernels:
                plain = acc[plain_key] if plain_key else acc[key]
                accumulate_spectrum(
                    spectrum.numpy(), ramp_y.numpy(), ramp_x.numpy(), wy.numpy(), wx.numpy(),
                    acc[key].numpy(), plain.numpy(), plain_key is not None,
                )  # fmt: skip
            else:
                shifted = spectrum * (ramp_y[:, None] * ramp_x[None, :])
                acc[key] += shifted * (wy[:, None] * wx[None, :])
                if plain_key:
                    acc[plain_key] += shifted
            counts[key] += 1
            if plain_key:
                counts[plain_key] += 1
        if progress is not None:
            progress("average", done, len(used))
    del warped, spectrum, scratch
    totals = {key: torch.fft.irfft2(acc.pop(key), s=(h, w)) for key in keys}
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
