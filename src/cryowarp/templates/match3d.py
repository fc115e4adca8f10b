"""3-D template matching in tomograms (warp-facts.md §4.1).

The tomogram is processed in overlapping cubic sub-volumes. Each sub-volume's spectrum is filtered
once by the matched filter W(k)²·H(k)·C₃(k): whitening W (1/√ radial power of the sub-volume, applied to
data and reference, hence squared), the raised-cosine high-pass H at ~1/D, and the 3-D CTF /
missing-wedge weight C₃ of the tilt geometry (given by the caller, e.g. ``tomo.ctf_weight_3d``). The
reference is rotated in Fourier space (2× oversampled projector) for each orientation of the grid and
correlated by FFT. Each orientation's map is divided by its background s.d. (Parseval, per
sub-volume, anisotropic because of the wedge), then the maximum over orientations is kept per voxel,
divided by the local s.d. of the whitened tomogram relative to its median (clamped at 1, as Warp
clamps at the median), and local maxima at least one diameter apart are stored with orientations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from cryowarp.base.geometry import matrix_to_euler_zyz
from cryowarp.templates._filters import gaussian_lowpass, highpass_diameter, local_std, whitening_filter
from cryowarp.templates.match2d import prepare_search, tile_layout
from cryowarp.templates.orientations import orientation_matrices
from cryowarp.templates.peaks import score_map_peaks
from cryowarp.templates.projector import rotate_spectra
from cryowarp.templates.refine import refine_levels, refine_peak
from cryowarp.templates.results import TemplateMatches
from cryowarp.templates.template import PreparedTemplate, prepare_template

__all__ = ["Match3DSettings", "Match3DResult", "match_template_3d"]

WeightFunction = Callable[[tuple[int, int, int]], torch.Tensor]


class Match3DSettings(BaseModel):
    """Settings of 3-D template matching; defaults follow WarpTools where it publishes them (§4.1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    angular_step_deg: float = Field(7.5, gt=0, le=60, description="HEALPix step (WarpTools --subdivisions 3)")
    psi_step_deg: float | None = Field(None, gt=0)
    tilt_range_deg: float | None = Field(None, ge=0, le=90)
    diameter_a: float | None = Field(None, gt=0, description="particle diameter, Å; default: from the map")
    whiten: bool = Field(True, description="WarpTools --whiten")
    lowpass_a: float | None = Field(None, gt=0, description="optional Gaussian low-pass, Å")
    subvolume_size_px: int = Field(192, ge=32, description="largest sub-volume side (Warp 192)")
    batch_orientations: int = Field(4, ge=1)
    peak_distance_fraction: float = Field(1.0, gt=0, description="min peak distance / diameter (Warp 1)")
    border_fraction: float = Field(0.5, ge=0, description="scores zeroed within this × diameter of the edge")
    peak_floor_sigma: float = Field(2.0, description="store peaks above mean + this × s.d. of the score map")
    local_normalization: bool = Field(True)
    binary_threshold: float | None = Field(None, description="Warp's binary template mask; None: soft sphere")
    oversampling: int = Field(2, ge=1, le=4)
    refine_orientations: bool = Field(True, description="refine the best peaks locally (step/3, step/9)")
    refine_max_peaks: int = Field(100, ge=0, description="refine at most this many peaks, best first")


@dataclass(frozen=True)
class Match3DResult:
    """Everything a 3-D search produced (see :class:`~cryowarp.templates.Match2DResult`)."""

    matches: TemplateMatches
    scores: torch.Tensor
    orientation_index: torch.Tensor
    orientations_deg: torch.Tensor
    pixel_size_a: float
    template: PreparedTemplate


def match_template_3d(
    tomogram: torch.Tensor,
    pixel_size_a: float,
    template_volume: torch.Tensor,
    template_pixel_size_a: float,
    settings: Match3DSettings = Match3DSettings(),
    *,
    fourier_weight: WeightFunction | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Match3DResult:
    """Search a tomogram for a 3-D reference in all orientations (warp-facts.md §4.1).

    Parameters
    ----------
    tomogram : torch.Tensor
        `(d, h, w)` reconstruction, protein density *positive* (invert a raw cryo-ET tomogram first).
    pixel_size_a : float
        Its voxel size, Å.
    template_volume : torch.Tensor
        `(n, n, n)` reference map, protein density positive.
    template_pixel_size_a : float
        Voxel size of the map, Å.
    settings : Match3DSettings
        Search settings.
    fourier_weight : callable, optional
        ``f(shape_zyx) -> (d, h, w//2+1)`` 3-D CTF / missing-wedge weight for a sub-volume shape (e.g.
        ``functools.partial`` of :func:`cryowarp.tomo.ctf_weight_3d`); None: no weight.
    progress : callable, optional
        ``progress(done, total)`` after each batch of orientations of each sub-volume.

    Returns
    -------
    result : Match3DResult
        Coordinates are (x, y, z) in voxels of the input tomogram.
    """
    if tomogram.ndim != 3:
        raise ValueError(f"match_template_3d: expected a tomogram (d, h, w), found shape {tuple(tomogram.shape)}")
    if not torch.isfinite(tomogram).all():
        raise ValueError("match_template_3d: the tomogram contains NaN or infinite values")
    device = tomogram.device
    d, h, w = tomogram.shape
    template = prepare_template(
        template_volume.to(device=device, dtype=torch.float32),
        template_pixel_size_a,
        pixel_size_a,
        diameter_a=settings.diameter_a,
        binary_threshold=settings.binary_threshold,
    )
    p = template.pixel_size_a
    projector, euler, matrices = prepare_search(template, settings, device)
    box = template.box_px
    diameter_px = template.diameter_px
    n_orient = len(euler)

    margin = box // 2 + 2
    # sub-volume sides: at most subvolume_size_px, but never larger than the (even-rounded) tomogram
    shape = tuple(min(settings.subvolume_size_px, n + n % 2) for n in (d, h, w))
    for n, sn in zip((d, h, w), shape, strict=True):
        if n > sn and sn <= 2 * margin:
            raise ValueError(f"sub-volume size {sn} must exceed the template box {box} + 4; raise subvolume_size_px")
    sd, sh, sw = shape
    layouts = [tile_layout(n, sn, margin) for n, sn in zip((d, h, w), shape, strict=True)]
    work = tomogram.to(torch.float32)
    work = work - work.mean()

    kz = torch.fft.fftfreq(sd, device=device)[:, None, None]
    ky = torch.fft.fftfreq(sh, device=device)[None, :, None]
    kx = torch.fft.rfftfreq(sw, device=device)[None, None, :]
    freq_px = torch.sqrt(kz**2 + ky**2 + kx**2)
    freq_per_a = freq_px / p
    band = highpass_diameter(freq_per_a, template.diameter_a) * gaussian_lowpass(freq_per_a, settings.lowpass_a)
    wedge = fourier_weight(shape).to(device) if fourier_weight is not None else None
    # nearest sub-volume frequency for every frequency of the template box (for Parseval on the box grid)
    bf = torch.fft.fftfreq(box, device=device)
    iz = ((bf * sd).round().long() % sd)[:, None, None]
    iy = ((bf * sh).round().long() % sh)[None, :, None]
    ix = (torch.fft.rfftfreq(box, device=device) * sw).round().long().clamp_max(sw // 2)[None, None, :]
    col_weight = torch.full((box // 2 + 1,), 2.0, device=device)
    col_weight[0] = 1.0
    col_weight[-1] = 1.0
    n_voxels = float(sd * sh * sw)

    scores = torch.full((d, h, w), -torch.inf, device=device)
    best_index = torch.zeros((d, h, w), dtype=torch.int32, device=device)
    blocks = [(a, b, c) for a in layouts[0] for b in layouts[1] for c in layouts[2]]
    n_batches = math.ceil(n_orient / settings.batch_orientations)
    total = len(blocks) * n_batches
    done = 0
    half = box // 2
    c = half - 1

    def parts(n: int) -> tuple[tuple[slice, slice], ...]:
        # source/destination slices that put the mirrored box's centre (B//2 − 1) on index 0, wrapping
        return ((slice(c, None), slice(0, box - c)), (slice(None, c), slice(n - c, None)))

    def prepare_block(block):
        (z0, zlo, zhi), (y0, ylo, yhi), (x0, xlo, xhi) = block
        sub = work[z0 : z0 + sd, y0 : y0 + sh, x0 : x0 + sw]
        if sub.shape != shape:
            pads = [0, sw - sub.shape[2], 0, sh - sub.shape[1], 0, sd - sub.shape[0]]
            sub = torch.nn.functional.pad(sub, pads)
        spec = torch.fft.rfftn(sub)
        power = spec.real**2 + spec.imag**2
        wht = whitening_filter(power, freq_px) if settings.whiten else torch.ones_like(freq_px)
        filt = band * wht * wht
        if wedge is not None:
            filt = filt * wedge
        matched = spec * filt
        # background power of the matched spectrum sampled on the box grid, /(S³·B³) for Parseval
        m_power = (matched.real**2 + matched.imag**2)[iz, iy, ix] * col_weight / (n_voxels * box**3)
        m_power[0, 0, 0] = 0.0
        valid = (slice(zlo - z0, zhi - z0), slice(ylo - y0, yhi - y0), slice(xlo - x0, xhi - x0))
        inv_rel = None
        if settings.local_normalization:
            whitened = torch.fft.irfftn(spec * band * wht, s=shape)
            lsd = local_std(whitened, diameter_px / 2)[valid]
            inv_rel = 1.0 / (lsd / lsd.median().clamp_min(1e-12)).clamp_min(1.0)
        return matched, m_power, valid, inv_rel

    for block in blocks:
        (z0, zlo, zhi), (y0, ylo, yhi), (x0, xlo, xhi) = block
        matched, m_power, (vz, vy, vx), inv_rel = prepare_block(block)
        region = scores[zlo:zhi, ylo:yhi, xlo:xhi]
        region_index = best_index[zlo:zhi, ylo:yhi, xlo:xhi]
        buffer = None
        for start in range(0, n_orient, settings.batch_orientations):
            mats = matrices[start : start + settings.batch_orientations]
            rot = rotate_spectra(projector, mats)  # (nb, B, B, B//2+1), centre at B//2
            rot[:, 0, 0, 0] = 0.0
            inv_sd = torch.einsum("zyx,ozyx->o", m_power, rot.real**2 + rot.imag**2).clamp_min(1e-30).rsqrt()
            vol = torch.fft.irfftn(rot, s=(box,) * 3).flip(-3, -2, -1)  # point-mirrored: centre at B//2 − 1
            if buffer is None or buffer.shape[0] != len(mats):
                buffer = vol.new_zeros((len(mats), sd, sh, sw))
            for sz_src, sz_dst in parts(sd):
                for sy_src, sy_dst in parts(sh):
                    for sx_src, sx_dst in parts(sw):
                        buffer[:, sz_dst, sy_dst, sx_dst] = vol[:, sz_src, sy_src, sx_src]
            cc = torch.fft.irfftn(matched[None] * torch.fft.rfftn(buffer, dim=(-3, -2, -1)), s=shape)
            values, index = (cc[:, vz, vy, vx] * inv_sd[:, None, None, None]).max(dim=0)
            if inv_rel is not None:
                values = values * inv_rel
            better = values > region
            region_index.copy_(torch.where(better, (index + start).to(torch.int32), region_index))
            torch.maximum(region, values, out=region)
            done += 1
            if progress is not None:
                progress(done, total)

    index, pos_zyx, values, floor = score_map_peaks(
        scores,
        int(round(settings.border_fraction * diameter_px)),
        settings.peak_floor_sigma,
        settings.peak_distance_fraction * diameter_px,
    )
    orient = euler[best_index[tuple(index.T)].long().cpu()] if len(index) else euler.new_zeros((0, 3))
    n_refine = min(len(index), settings.refine_max_peaks) if settings.refine_orientations else 0
    if n_refine:
        levels = refine_levels(settings.angular_step_deg)
        owner = []
        for k in range(n_refine):
            z, y, x = (int(v) for v in index[k])
            owner.append(
                next(
                    i
                    for i, ((_, zlo, zhi), (_, ylo, yhi), (_, xlo, xhi)) in enumerate(blocks)
                    if zlo <= z < zhi and ylo <= y < yhi and xlo <= x < xhi
                )
            )
        for i_block in sorted(set(owner)):
            block = blocks[i_block]
            matched, m_power, valid, inv_rel = prepare_block(block)
            data = torch.fft.irfftn(matched, s=shape)
            origin = torch.tensor([block[0][0], block[1][0], block[2][0]], dtype=torch.int64)
            lo = torch.tensor([v.start for v in valid], dtype=torch.int64)
            hi = torch.tensor([v.stop for v in valid], dtype=torch.int64)

            def kernels(mats: torch.Tensor, m_power=m_power):
                rot = rotate_spectra(projector, mats.to(device=device, dtype=torch.float32))
                rot[:, 0, 0, 0] = 0.0
                inv = torch.einsum("zyx,ozyx->o", m_power, rot.real**2 + rot.imag**2)
                return torch.fft.irfftn(rot, s=(box,) * 3), inv.clamp_min(1e-30).rsqrt()

            def factor(pos: torch.Tensor, inv_rel=inv_rel, lo=lo, hi=hi) -> torch.Tensor:
                if inv_rel is None:
                    return torch.ones(len(pos))
                q = torch.maximum(torch.minimum(pos, hi - 1), lo) - lo
                q = q.to(inv_rel.device)
                return inv_rel[q[:, 0], q[:, 1], q[:, 2]]

            for k in (k for k in range(n_refine) if owner[k] == i_block):
                coarse_rot = orientation_matrices(orient[k][None])[0]
                peak = refine_peak(data, index[k].cpu() - origin, coarse_rot, kernels, factor, levels)
                pos_zyx[k] = peak.position + origin
                orient[k] = matrix_to_euler_zyz(peak.rotation)
                values[k] = peak.score
        order = torch.argsort(values, descending=True, stable=True)
        pos_zyx, orient, values = pos_zyx[order], orient[order], values[order]
    coords_xyz = pos_zyx.flip(-1)
    matches = TemplateMatches(
        coords_xyz,
        orient,
        values.to(torch.float32),
        float(pixel_size_a),
        template.diameter_a,
        float(settings.angular_step_deg),
        floor,
        meta={
            "ndim": 3,
            "n_orientations": n_orient,
            "subvolume_shape_zyx": list(shape),
            "n_refined": n_refine,
        },
    )
    return Match3DResult(matches, scores, best_index, euler, p, template)
