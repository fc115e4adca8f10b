"""2-D particle extraction from movie frames following local motion (warp-facts.md §7.6)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from cryowarp.base.fourier import fourier_rescale_2d
from cryowarp.base.optics import ctf_2d, dose_weights_bfactor
from cryowarp.export.settings import ExportSettings

__all__ = ["ParticleStack", "extract_particles_2d", "normalize_outside_radius", "extraction_box_px"]


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
    box = images.shape[-1]
    coord = torch.arange(box, device=images.device, dtype=images.dtype) - box // 2
    yy, xx = torch.meshgrid(coord, coord, indexing="ij")
    outside = (yy**2 + xx**2) > radius_px**2
    n_out = int(outside.sum())
    if n_out < 3:
        raise ValueError(
            f"particle radius {radius_px:.1f} px leaves {n_out} pixels outside it in a {box}-px box; "
            f"expected at least 3 — use a larger box or a smaller diameter"
        )
    design = torch.stack([torch.ones_like(xx[outside]), xx[outside], yy[outside]], dim=-1)  # (m, 3)
    values = images[:, outside]  # (n, m)
    coef = torch.linalg.lstsq(design[None].expand(images.shape[0], -1, -1), values[..., None]).solution[
        ..., 0
    ]
    plane = coef[:, 0, None, None] + coef[:, 1, None, None] * xx + coef[:, 2, None, None] * yy
    flat = images - plane
    ring = flat[:, outside]
    std = ring.std(dim=-1, unbiased=False).clamp_min(1e-12)
    return (flat - ring.mean(dim=-1)[:, None, None]) / std[:, None, None]


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
    # dose weights on the cut box's rfft grid, (f_used, cut, cut//2+1)
    ky = torch.fft.fftfreq(cut, device=device, dtype=dtype)
    kx = torch.fft.rfftfreq(cut, device=device, dtype=dtype)
    freq_per_a = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2) / pixel_size_a
    if settings.dose_weighted:
        weights = dose_weights_bfactor(
            freq_per_a,
            f_used,
            exposure_per_frame_e_per_a2,
            bfactor_per_e_a2=settings.bfactor_per_e_a2,
            first_frame_index=first,
            normalize=True,
        )
    else:
        weights = torch.full((f_used, *freq_per_a.shape), 1.0 / f_used, device=device, dtype=dtype)

    if ctf_model is not None:
        u_um, v_um = ctf_model.local_defocus_uv_um(coords_px_xy.cpu())
        u_um, v_um = u_um.to(device), v_um.to(device)
        angle_deg, phase_deg = float(ctf_model.astigmatism_angle_deg), float(ctf_model.phase_shift_deg)
    else:
        u_um = v_um = None
        angle_deg = phase_deg = 0.0

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
        iy = (origin[..., 0, None].long() + offsets).clamp(0, h - 1)  # (b, f, cut)
        ix = (origin[..., 1, None].long() + offsets).clamp(0, w - 1)
        patches = frames[
            frame_ids[None, :, None, None], iy[..., :, None], ix[..., None, :]
        ]  # (b, f, cut, cut)
        spectra = torch.fft.rfft2(patches.to(dtype))
        # shift by −residual: exp(+2πi k·r)
        ramp = torch.exp(
            2j
            * math.pi
            * (
                ky[None, None, :, None] * residual[..., 0, None, None]
                + kx[None, None, None, :] * residual[..., 1, None, None]
            )
        )
        summed = (spectra * ramp * weights[None]).sum(dim=1)  # (b, cut, cut//2+1)
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
        if settings.normalize:
            real = normalize_outside_radius(real, radius_px)
        images[start:stop] = real
        if progress is not None:
            progress(stop, n)
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
