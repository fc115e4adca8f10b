"""2-D particle extraction from movie frames following local motion (warp-facts.md §7.6)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from cryowarp.base.fourier import fourier_rescale_2d
from cryowarp.base.optics import ctf_2d, dose_weights_bfactor
from cryowarp.export import _kernels
from cryowarp.export.settings import ExportSettings

__all__ = [
    "ParticleStack",
    "check_normalization_area",
    "extract_particles_2d",
    "normalize_outside_radius",
    "extraction_box_px",
]


@dataclass(frozen=True)
class ParticleStack:
    """Extracted particles of one micrograph.

    Attributes
    ----------
    images : torch.Tensor
        `(n, box, box)` float32 particle images, centred on the particle at pixel ``box // 2``.
    coords_px_xy : torch.Tensor
        `(n, 2)` particle centres (x, y) in px of the full-size micrograph (rlnCoordinateX/Y).
    defocus_u_um, defocus_v_um : torch.Tensor or None
        `(n,)` local principal defoci in µm (None without a CTF model).
    astigmatism_angle_deg, phase_shift_deg : float
        From the CTF model (0 without one).
    pixel_size_a : float
        Exact pixel size of ``images`` in Å (movie pixel × extraction box / output box).
    box_size_px : int
        Side of ``images``.
    phase_flipped : bool
        Whether sign(CTF) was applied.
    """

    images: torch.Tensor
    coords_px_xy: torch.Tensor
    defocus_u_um: torch.Tensor | None
    defocus_v_um: torch.Tensor | None
    astigmatism_angle_deg: float
    phase_shift_deg: float
    pixel_size_a: float
    box_size_px: int
    phase_flipped: bool = False

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to_dict(self, *, include_images: bool = False) -> dict[str, Any]:
        """Plain-JSON form; the images only with ``include_images`` (they are written as .mrcs instead)."""
        d: dict[str, Any] = {
            "coords_px_xy": self.coords_px_xy.detach().cpu().tolist(),
            "defocus_u_um": None if self.defocus_u_um is None else self.defocus_u_um.detach().cpu().tolist(),
            "defocus_v_um": None if self.defocus_v_um is None else self.defocus_v_um.detach().cpu().tolist(),
            "astigmatism_angle_deg": float(self.astigmatism_angle_deg),
            "phase_shift_deg": float(self.phase_shift_deg),
            "pixel_size_a": float(self.pixel_size_a),
            "box_size_px": int(self.box_size_px),
            "phase_flipped": bool(self.phase_flipped),
        }
        if include_images:
            d["images"] = self.images.detach().cpu().tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParticleStack:
        """Inverse of :meth:`to_dict` (an empty image stack when images were not included)."""
        box = int(d["box_size_px"])
        coords = torch.tensor(d["coords_px_xy"], dtype=torch.float32).reshape(-1, 2)
        images = (
            torch.tensor(d["images"], dtype=torch.float32).reshape(-1, box, box)
            if "images" in d
            else torch.zeros(0, box, box)
        )
        tensor = lambda v: None if v is None else torch.tensor(v, dtype=torch.float32)  # noqa: E731
        return cls(
            images=images,
            coords_px_xy=coords,
            defocus_u_um=tensor(d["defocus_u_um"]),
            defocus_v_um=tensor(d["defocus_v_um"]),
            astigmatism_angle_deg=d["astigmatism_angle_deg"],
            phase_shift_deg=d["phase_shift_deg"],
            pixel_size_a=d["pixel_size_a"],
            box_size_px=box,
            phase_flipped=d.get("phase_flipped", False),
        )


def extraction_box_px(box_size_px: int, pixel_size_a: float, output_pixel_size_a: float | None) -> int:
    """Even box in movie pixels that covers ``box_size_px`` output pixels (equal without rescaling)."""
    if output_pixel_size_a is None:
        return box_size_px
    return max(2, int(round(box_size_px * output_pixel_size_a / pixel_size_a / 2)) * 2)


def _outside_radius(
    box: int, radius_px: float, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centred pixel coordinates `yy`, `xx` of a ``box`` box and the mask of pixels outside ``radius_px``.

    ``ValueError`` if fewer than 3 pixels lie outside (a plane cannot be fitted to the background).
    """
    coord = torch.arange(box, device=device, dtype=dtype) - box // 2
    yy, xx = torch.meshgrid(coord, coord, indexing="ij")
    outside = (yy**2 + xx**2) > radius_px**2
    n_out = int(outside.sum())
    if n_out < 3:
        raise ValueError(
            f"particle radius {radius_px:.1f} px leaves {n_out} pixels outside it in a {box}-px box; "
            f"expected at least 3 — use a larger box or a smaller diameter"
        )
    return yy, xx, outside


def check_normalization_area(box_px: int, radius_px: float) -> None:
    """``ValueError`` unless :func:`normalize_outside_radius` can normalise a ``box_px`` box at ``radius_px``."""
    _outside_radius(box_px, radius_px)


def normalize_outside_radius(images: torch.Tensor, radius_px: float) -> torch.Tensor:
    """Subtract a least-squares plane fitted outside ``radius_px``, then scale to mean 0 / s.d. 1 there.

    Parameters
    ----------
    images : torch.Tensor
        `(n, box, box)` particles centred at ``box // 2``.
    radius_px : float
        Radius (D/2 in px) inside which the particle is; statistics come from outside.

    Returns
    -------
    normalized : torch.Tensor
        `(n, box, box)`.
    """
    yy, xx, outside = _outside_radius(images.shape[-1], radius_px, device=images.device, dtype=images.dtype)
    n_out = int(outside.sum())
    # Masked least squares as matrix products over the whole box (no boolean gathers): the design
    # rows (1, x, y) are zero inside the radius, so one (box², 3) matrix gives every particle's fit.
    mask = outside.reshape(-1).to(images.dtype)
    design = torch.stack([mask, xx.reshape(-1) * mask, yy.reshape(-1) * mask], dim=-1)  # (box², 3)
    design64 = design.double()
    solve = (design64 @ torch.linalg.inv(design64.T @ design64)).to(images.dtype)  # (box², 3)
    flat_images = images.reshape(images.shape[0], -1)
    coef = flat_images @ solve  # (n, 3)
    plane = coef @ torch.stack([torch.ones_like(mask), xx.reshape(-1), yy.reshape(-1)])  # (n, box²)
    flat = flat_images - plane
    mean = (flat @ mask) / n_out  # zero up to rounding: the plane's constant term absorbs it
    var = ((flat * flat) @ mask) / n_out - mean**2
    std = var.clamp_min(1e-24).sqrt()
    return ((flat - mean[:, None]) / std[:, None]).reshape(images.shape)


def _separable_dose_weights(
    ky: torch.Tensor,
    kx: torch.Tensor,
    n_frames: int,
    first_frame_index: int,
    pixel_size_a: float,
    exposure_per_frame_e_per_a2: float,
    settings: ExportSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-axis frame weights and the per-frequency normalisation of Warp's export dose weighting.

    W_f(k) = exp(B_f |k|²/4) is a product of a ky and a kx factor, so each frame's weight (and its
    phase ramp) can be applied as two 1-D vectors; Σ_f W_f(k) = 1 is restored by ``scale``. The
    factors are taken relative to the first used frame (computed in float64, so they never
    underflow), which leaves Σ_f ≥ 1.

    Returns
    -------
    weight_y : `(f, ky)`, weight_x : `(f, kx)`, scale : `(ky, kx)` = 1 / Σ_f weight_y·weight_x.
    """
    if not settings.dose_weighted:
        ones_y = torch.ones((n_frames, len(ky)), dtype=ky.dtype, device=ky.device)
        ones_x = torch.ones((n_frames, len(kx)), dtype=kx.dtype, device=kx.device)
        return ones_y, ones_x, torch.full((len(ky), len(kx)), 1.0 / n_frames, dtype=ky.dtype, device=ky.device)

    def axis(k: torch.Tensor) -> torch.Tensor:
        w = dose_weights_bfactor(
            k.double() / pixel_size_a,
            n_frames,
            exposure_per_frame_e_per_a2,
            bfactor_per_e_a2=settings.bfactor_per_e_a2,
            first_frame_index=first_frame_index,
        )
        return w / w[:1]

    wy, wx = axis(ky), axis(kx)
    scale = 1.0 / torch.einsum("fy,fx->yx", wy, wx)
    return wy.to(ky.dtype), wx.to(kx.dtype), scale.to(ky.dtype)


def extract_particles_2d(
    frames: torch.Tensor,
    motion_model: Any,
    ctf_model: Any,
    coords_px_xy: torch.Tensor,
    *,
    pixel_size_a: float,
    exposure_per_frame_e_per_a2: float,
    settings: ExportSettings | None = None,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> ParticleStack:
    """Extract particles from movie frames, following the local motion of each particle.

    For every particle and frame the box is cut at the integer position nearest to where the particle
    sits in that frame (its centre plus the motion model's displacement there), the remaining
    sub-pixel offset is removed with a Fourier phase ramp, and the frames are summed with per-frame
    B-factor dose weights normalised to Σ_f W_f(k) = 1 per frequency (Warp's particle export,
    warp-facts.md §1.6, §7.6). Then, optionally: phase flip with sign(CTF) at the particle's local
    defocus (extracted at 2× box and cropped, as Warp's ``--flip_phases``), Fourier rescaling to the
    output pixel size, contrast inversion and normalisation outside D/2.

    Parameters
    ----------
    frames : torch.Tensor
        `(f, h, w)` gain-corrected movie frames.
    motion_model : MotionModel or None
        Provides ``displacement_a_yx(coords_px_yx [n, 2], frame_index [n]) -> [n, 2]`` in Å, with
        ``frame_f(x) = specimen(x − d_f(x))``; None = no motion.
    ctf_model : CTFModel or None
        Provides ``local_defocus_uv_um(coords_px_xy)``, ``astigmatism_angle_deg``,
        ``phase_shift_deg``, ``voltage_kv``, ``cs_mm``, ``amplitude_contrast``; None = no CTF columns
        (and no phase flip).
    coords_px_xy : torch.Tensor
        `(n, 2)` particle centres (x, y) in px of the motion-corrected micrograph (as picked).
    pixel_size_a : float
        Movie pixel size in Å.
    exposure_per_frame_e_per_a2 : float
        Exposure per frame in e⁻/Å².
    settings : ExportSettings, optional
        Box, diameter, output pixel size, invert, normalize, flip, dose weighting, skipped frames.
    batch_size : int
        Particles processed together (memory ≈ batch × frames × (2·box)² × 12 bytes).
    progress : callable, optional
        ``progress(done, total)`` after each batch.

    Returns
    -------
    ParticleStack
        On the device of ``frames``.

    References
    ----------
    Tegunov & Cramer, Nat. Methods 16, 1146 (2019); warp-facts.md §1.6, §7.6.
    """
    settings = settings or ExportSettings()
    if frames.ndim != 3:
        raise ValueError(f"frames must be (f, h, w), found shape {tuple(frames.shape)}")
    device, dtype = frames.device, torch.float32
    n_frames, h, w = frames.shape
    first, last = settings.skip_first_frames, n_frames - settings.skip_last_frames
    if last - first < 1:
        raise ValueError(
            f"skipping {settings.skip_first_frames} first and {settings.skip_last_frames} last frames "
            f"leaves none of {n_frames}"
        )
    if settings.flip_phases and ctf_model is None:
        raise ValueError("flip_phases needs a CTF model, got None")
    coords_px_xy = torch.as_tensor(coords_px_xy, dtype=dtype, device=device).reshape(-1, 2)
    n = coords_px_xy.shape[0]
    out_box = settings.box_size_px
    box = extraction_box_px(out_box, pixel_size_a, settings.output_pixel_size_a)
    out_pixel_size_a = pixel_size_a * box / out_box
    cut = 2 * box if settings.flip_phases else box  # Warp pre-flips at 2× box, then crops

    frame_ids = torch.arange(first, last, device=device)
    f_used = len(frame_ids)
    ky = torch.fft.fftfreq(cut, device=device, dtype=dtype)  # cycles / px
    kx = torch.fft.rfftfreq(cut, device=device, dtype=dtype)
    weight_y, weight_x, scale = _separable_dose_weights(
        ky, kx, f_used, first, pixel_size_a, exposure_per_frame_e_per_a2, settings
    )

    if ctf_model is not None:
        u_um, v_um = ctf_model.local_defocus_uv_um(coords_px_xy.cpu())
        u_um, v_um = u_um.to(device), v_um.to(device)
        angle_deg, phase_deg = float(ctf_model.astigmatism_angle_deg), float(ctf_model.phase_shift_deg)
    else:
        u_um = v_um = None
        angle_deg = phase_deg = 0.0

    use_kernels = device.type == "cpu"  # fused numba loops on CPU, plain torch on GPUs
    frames_np = frames.to(dtype).contiguous().numpy() if use_kernels else None  # no copy when float32
    offsets = torch.arange(cut, device=device) - cut // 2
    images = torch.empty((n, out_box, out_box), device=device, dtype=dtype)
    radius_px = settings.particle_diameter_a / 2.0 / out_pixel_size_a
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        b = stop - start
        centre_yx = coords_px_xy[start:stop].flip(-1)  # (b, 2)
        if motion_model is not None:
            coords_rep = centre_yx[:, None, :].expand(b, f_used, 2).reshape(-1, 2)
            frame_rep = frame_ids[None, :].expand(b, f_used).reshape(-1)
            disp_a = motion_model.displacement_a_yx(coords_rep.cpu(), frame_rep.cpu()).to(device, dtype)
            position = centre_yx[:, None, :] + disp_a.reshape(b, f_used, 2) / pixel_size_a  # (b, f, 2)
        else:
            position = centre_yx[:, None, :].expand(b, f_used, 2)
        origin = torch.round(position)
        residual = position - origin  # the particle sits at box centre + residual
        # shift by −residual: exp(+2πi k·r), one factor per axis, times that axis's dose weight
        factor_y = weight_y * torch.exp(2j * math.pi * ky * residual[..., 0, None])  # (b, f, cut)
        factor_x = weight_x * torch.exp(2j * math.pi * kx * residual[..., 1, None])  # (b, f, cut//2+1)
        if use_kernels:
            patches = torch.empty((b, f_used, cut, cut), dtype=dtype)
            _kernels.cut_boxes(frames_np, frame_ids.numpy(), origin.long().numpy(), patches.numpy())
            spectra = torch.fft.rfft2(patches)
            del patches
            summed = torch.empty((b, cut, cut // 2 + 1), dtype=torch.complex64)
            _kernels.weighted_frame_sum(
                spectra.numpy(),
                factor_y.to(torch.complex64).numpy(),
                factor_x.to(torch.complex64).numpy(),
                scale.numpy(),
                summed.numpy(),
            )
            del spectra
        else:
            iy = (origin[..., 0, None].long() + offsets).clamp(0, h - 1)  # (b, f, cut)
            ix = (origin[..., 1, None].long() + offsets).clamp(0, w - 1)
            patches = frames[frame_ids[None, :, None, None], iy[..., :, None], ix[..., None, :]]
            spectra = torch.fft.rfft2(patches.to(dtype))
            summed = (spectra * factor_y[..., :, None] * factor_x[..., None, :]).sum(dim=1) * scale
        if settings.flip_phases:
            mean_um = 0.5 * (u_um[start:stop] + v_um[start:stop])
            delta_um = u_um[start:stop] - v_um[start:stop]
            ctf = ctf_2d(
                mean_um,
                delta_um,
                angle_deg,
                voltage_kv=float(ctf_model.voltage_kv),
                cs_mm=float(ctf_model.cs_mm),
                amplitude_contrast=float(ctf_model.amplitude_contrast),
                pixel_size_a=pixel_size_a,
                shape_yx=(cut, cut),
                phase_shift_deg=phase_deg,
            )
            summed = summed * torch.sign(ctf).to(summed.dtype)
        real = torch.fft.irfft2(summed, s=(cut, cut))
        if cut != box:
            lo = cut // 2 - box // 2
            real = real[:, lo : lo + box, lo : lo + box]
        if box != out_box:
            real = fourier_rescale_2d(real, (out_box, out_box))
        if settings.invert:
            real = -real
        images[start:stop] = real
        if progress is not None:
            progress(stop, n)
    if settings.normalize:
        images = normalize_outside_radius(images, radius_px)
    return ParticleStack(
        images=images,
        coords_px_xy=coords_px_xy,
        defocus_u_um=u_um,
        defocus_v_um=v_um,
        astigmatism_angle_deg=angle_deg,
        phase_shift_deg=phase_deg,
        pixel_size_a=out_pixel_size_a,
        box_size_px=out_box,
        phase_flipped=settings.flip_phases,
    )
