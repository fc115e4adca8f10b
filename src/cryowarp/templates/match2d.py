"""2-D template matching of a 3-D reference against a micrograph (warp-facts.md §4.2).

For every orientation of a HEALPix × psi grid the reference is projected (Fourier slice, 2×
oversampled); the micrograph is cut into overlapping square tiles and each tile is filtered once by
the matched filter ``−CTF(k)·W(k)²·H(k)``: the local CTF (signed, from the defocus at the tile centre),
the whitening filter W = 1/√(radial power) (applied to both micrograph and reference, hence W²), and
a raised-cosine high-pass at ~1/D. Correlating the filtered tile with a plain projection is the same
as Warp's phase-flipped micrograph × (|CTF|·W-weighted projection): the product of the two filters is
identical. Each orientation's correlation map is divided by its own s.d. (from Parseval, over the
tile) and by the local s.d. of the whitened micrograph relative to its median, so a score is in units
of the background noise. Per pixel we keep the maximum over orientations and its orientation; then
every local maximum above a low floor is stored with its orientation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from cryowarp.base.fourier import fftfreq_grid_2d, fourier_rescale_2d
from cryowarp.base.geometry import matrix_to_euler_zyz
from cryowarp.base.optics import ctf_2d
from cryowarp.templates._filters import (
    gaussian_lowpass,
    highpass_diameter,
    local_std,
    radial_index,
    whitening_filter,
)
from cryowarp.templates.orientations import orientation_grid, orientation_matrices
from cryowarp.templates.peaks import score_map_peaks
from cryowarp.templates.projector import make_projector, project_spectra
from cryowarp.templates.refine import refine_levels, refine_peak
from cryowarp.templates.results import CTFParameters, TemplateMatches
from cryowarp.templates.template import PreparedTemplate, prepare_template

__all__ = ["Match2DSettings", "Match2DResult", "match_template_2d", "tile_layout"]

Progress = Callable[[int, int], None]


class Match2DSettings(BaseModel):
    """Settings of 2-D template matching; defaults follow Warp where it publishes them (§4.2)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    angular_step_deg: float = Field(7.5, gt=0, le=60, description="HEALPix step (WarpTools order 3 = 7.5°)")
    psi_step_deg: float | None = Field(None, gt=0, description="in-plane step; default = the HEALPix step")
    tilt_range_deg: float | None = Field(None, ge=0, le=90, description="keep only |cos tilt| ≤ sin(range)")
    diameter_a: float | None = Field(None, gt=0, description="particle diameter, Å; default: from the map")
    matching_pixel_size_a: float | None = Field(None, gt=0, description="bin the micrograph to this first")
    whiten: bool = Field(True, description="flatten the micrograph spectrum (and weight the reference)")
    invert_contrast: bool = Field(True, description="particles are dark in the micrograph (normal cryo-EM)")
    lowpass_a: float | None = Field(None, gt=0, description="optional Gaussian low-pass, Å")
    tile_size_px: int = Field(1024, ge=64, description="square tiles at the matching pixel size")
    batch_orientations: int = Field(8, ge=1, description="orientations correlated per FFT batch")
    peak_distance_fraction: float = Field(2.0 / 3.0, gt=0, description="min peak distance / diameter (Warp 2/3)")
    border_fraction: float = Field(1.0, ge=0, description="scores zeroed within this × diameter of the edge")
    peak_floor_sigma: float = Field(0.5, description="store peaks above mean + this × s.d. of the score map")
    oversampling: int = Field(2, ge=1, le=4, description="projector zero-padding factor")
    local_normalization: bool = Field(True, description="divide scores by the local s.d. (relative, ≥ 1)")
    # Warp multiplies the reference by a binary mask (> 0.2 × max, dilated); on our planted tests it
    # halved the detection scores (sharp mask edges), so it is off by default here: a deliberate change.
    binary_threshold: float | None = Field(
        None,
        description="Warp's binary template mask (> this × max, dilated 1 voxel); None: soft sphere only",
    )
    ctf_tile_size_px: int = Field(
        384,
        ge=64,
        description="tile side used instead of tile_size_px when the local defocus varies over the "
        "micrograph by more than local_defocus_tolerance_um (Warp's SubPatchSize 384)",
    )
    local_defocus_tolerance_um: float = Field(
        0.02, ge=0, description="defocus range across the micrograph below which one tile CTF suffices"
    )
    refine_orientations: bool = Field(True, description="refine the best peaks locally (step/3, step/9)")
    refine_max_peaks: int = Field(300, ge=0, description="refine at most this many peaks, best first")


@dataclass(frozen=True)
class Match2DResult:
    """Everything a 2-D search produced.

    Attributes
    ----------
    matches : TemplateMatches
        Stored peaks (coordinates in input-micrograph pixels), best first.
    scores : torch.Tensor
        `(h', w')` best score per pixel at the matching pixel size (0 near the border).
    orientation_index : torch.Tensor
        `(h', w')` int64 index into ``orientations_deg`` of the best orientation.
    orientations_deg : torch.Tensor
        `(m, 3)` the searched RELION Euler angles.
    pixel_size_a : float
        Matching pixel size of the maps, Å.
    template : PreparedTemplate
        The reference as used.
    """

    matches: TemplateMatches
    scores: torch.Tensor
    orientation_index: torch.Tensor
    orientations_deg: torch.Tensor
    pixel_size_a: float
    template: PreparedTemplate


def prepare_search(template: PreparedTemplate, settings, device: torch.device | None):
    """Projector of the prepared template and the orientation set to search (shared by 2D and 3D).

    ``settings`` is a ``Match2DSettings`` or ``Match3DSettings`` (fields ``oversampling``,
    ``angular_step_deg``, ``psi_step_deg``, ``tilt_range_deg``). Returns ``(projector, euler_deg [N, 3],
    matrices [N, 3, 3] float32 on device)``.
    """
    projector = make_projector(template.volume, oversampling=settings.oversampling)
    euler = orientation_grid(
        settings.angular_step_deg, psi_step_deg=settings.psi_step_deg, tilt_range_deg=settings.tilt_range_deg
    )
    matrices = orientation_matrices(euler).to(device=device, dtype=torch.float32)
    return projector, euler, matrices


def tile_layout(length: int, tile: int, margin: int) -> list[tuple[int, int, int]]:
    """Tiles along one axis as (start, valid_from, valid_to) with valid ranges partitioning [0, length)."""
    if length <= tile:
        return [(0, 0, length)]
    if tile <= 2 * margin:
        raise ValueError(f"tile size {tile} px must exceed twice the margin ({margin} px); raise tile_size_px")
    n = math.ceil((length - 2 * margin) / (tile - 2 * margin))
    starts = [round(i * (length - tile) / max(n - 1, 1)) for i in range(n)] if n > 1 else [0]
    out = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (starts[i - 1] + tile + s) // 2
        hi = length if i == n - 1 else (s + tile + starts[i + 1]) // 2
        out.append((s, lo, hi))
    return out


def _delocalisation_px(ctf: CTFParameters, pixel_size_a: float) -> int:
    """λ·|Δz|·k_max in pixels: how far the CTF spreads signal at Nyquist."""
    from cryowarp.base.optics import electron_wavelength_a

    lam = float(electron_wavelength_a(ctf.voltage_kv))
    dz = (abs(ctf.defocus_um) + abs(ctf.defocus_delta_um) / 2) * 1e4
    return int(math.ceil(lam * dz / (2 * pixel_size_a) / pixel_size_a))


def match_template_2d(
    image: torch.Tensor,
    pixel_size_a: float,
    template_volume: torch.Tensor,
    template_pixel_size_a: float,
    ctf: CTFParameters | None,
    settings: Match2DSettings = Match2DSettings(),
    *,
    local_defocus_um: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: Progress | None = None,
) -> Match2DResult:
    """Search a micrograph for a 3-D reference in all orientations (warp-facts.md §4.2).

    Parameters
    ----------
    image : torch.Tensor
        `(h, w)` micrograph (aligned average), float. Not modified.
    pixel_size_a : float
        Its pixel size, Å.
    template_volume : torch.Tensor
        `(n, n, n)` reference map, protein density positive.
    template_pixel_size_a : float
        Voxel size of the map, Å.
    ctf : CTFParameters or None
        The micrograph's CTF (None: no CTF weighting, e.g. for already corrected images).
    settings : Match2DSettings
        Search settings.
    local_defocus_um : callable, optional
        ``f(coords_px_xy (n, 2)) -> (n,)`` defocus in µm at input-micrograph pixel positions (e.g.
        ``CTFModel.local_defocus_um``); each tile uses the value at its centre. When the defocus varies
        by more than ``settings.local_defocus_tolerance_um`` over the micrograph, the tiles shrink to
        ``settings.ctf_tile_size_px`` so that each tile's CTF is local (Warp's sub-patches).
    progress : callable, optional
        ``progress(done, total)`` after each batch of orientations.

    Returns
    -------
    result : Match2DResult
    """
    if image.ndim != 2:
        raise ValueError(f"match_template_2d: expected a 2-D micrograph (h, w), found shape {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError("match_template_2d: the micrograph contains NaN or infinite values")
    device = image.device
    h0, w0 = image.shape
    p = settings.matching_pixel_size_a or pixel_size_a
    if p < pixel_size_a - 1e-6:
        raise ValueError(f"matching pixel size {p} Å is finer than the micrograph's {pixel_size_a} Å")
    if abs(p - pixel_size_a) > 1e-6:
        new_h = max(2, int(round(h0 * pixel_size_a / p)) // 2 * 2)
        new_w = max(2, int(round(w0 * pixel_size_a / p)) // 2 * 2)
        work = fourier_rescale_2d(image.to(torch.float32), (new_h, new_w))
        p = pixel_size_a * w0 / new_w
    else:
        work = image.to(torch.float32)
    h, w = work.shape
    scale_xy = torch.tensor([w0 / w, h0 / h], dtype=torch.float64)

    template = prepare_template(
        template_volume.to(device=device, dtype=torch.float32),
        template_pixel_size_a,
        p,
        diameter_a=settings.diameter_a,
        binary_threshold=settings.binary_threshold,
    )
    projector, euler, matrices = prepare_search(template, settings, device)
    box = template.box_px
    diameter_px = template.diameter_px
    n_orient = len(euler)

    deloc = _delocalisation_px(ctf, p) if ctf is not None else 0
    margin = box // 2 + min(deloc, box)
    tile_size = settings.tile_size_px
    if ctf is not None and local_defocus_um is not None:
        probe = torch.stack(
            torch.meshgrid(torch.linspace(0, w0 - 1, 9), torch.linspace(0, h0 - 1, 9), indexing="xy"), -1
        ).reshape(-1, 2)
        values = torch.as_tensor(local_defocus_um(probe.to(torch.float64))).reshape(-1).to(torch.float64)
        if float(values.max() - values.min()) > settings.local_defocus_tolerance_um:
            tile_size = min(tile_size, max(settings.ctf_tile_size_px, 2 * margin + 32))
    tile = min(tile_size, max(h, w))
    tile += tile % 2
    tile = max(tile, 2 * margin + 32) if max(h, w) > tile else tile
    tiles_y = tile_layout(h, tile, margin)
    tiles_x = tile_layout(w, tile, margin)

    sign = -1.0 if settings.invert_contrast else 1.0
    work = (work - work.mean()) * sign
    # tile spectra, filtered once: (−)CTF · W² · H · LP
    freq_yx = fftfreq_grid_2d((tile, tile), device=device)
    freq_px = torch.linalg.vector_norm(freq_yx, dim=-1)
    freq_per_a = freq_px / p
    band = highpass_diameter(freq_per_a, template.diameter_a) * gaussian_lowpass(freq_per_a, settings.lowpass_a)
    tiles = []
    tile_defocus: list[float] = []
    for ty in tiles_y:
        for tx in tiles_x:
            y0, x0 = ty[0], tx[0]
            patch = work[y0 : y0 + tile, x0 : x0 + tile]
            if patch.shape != (tile, tile):  # micrograph smaller than a tile: reflect-pad
                pad_y, pad_x = tile - patch.shape[0], tile - patch.shape[1]
                patch = (
                    torch.nn.functional.pad(patch[None, None], (0, pad_x, 0, pad_y), mode="reflect")[0, 0]
                    if pad_y < patch.shape[0] and pad_x < patch.shape[1]
                    else torch.nn.functional.pad(patch, (0, pad_x, 0, pad_y))
                )
            spec = torch.fft.rfft2(patch)
            whiten = whitening_filter(spec.real**2 + spec.imag**2, freq_px) if settings.whiten else 1.0
            filt = band * whiten
            if ctf is not None:
                centre_xy = torch.tensor([[(x0 + tile / 2) * scale_xy[0], (y0 + tile / 2) * scale_xy[1]]], dtype=torch.float64)
                defocus = float(local_defocus_um(centre_xy).reshape(-1)[0]) if local_defocus_um else ctf.defocus_um
                c = ctf_2d(
                    defocus,
                    ctf.defocus_delta_um,
                    ctf.astigmatism_angle_deg,
                    voltage_kv=ctf.voltage_kv,
                    cs_mm=ctf.cs_mm,
                    amplitude_contrast=ctf.amplitude_contrast,
                    pixel_size_a=p,
                    shape_yx=(tile, tile),
                    phase_shift_deg=ctf.phase_shift_deg,
                    device=device,
                )
                matched = spec * (filt * whiten * c if settings.whiten else filt * c)
                tile_defocus.append(defocus)
            else:
                matched = spec * (filt * whiten if settings.whiten else filt)
            ty_lo, ty_hi = ty[1] - y0, ty[2] - y0
            tx_lo, tx_hi = tx[1] - x0, tx[2] - x0
            inv_rel_std = None
            if settings.local_normalization:
                whitened = torch.fft.irfft2(spec * filt, s=(tile, tile))
                lsd = local_std(whitened, diameter_px / 2)[ty_lo:ty_hi, tx_lo:tx_hi]
                # only damp regions busier than the median (carbon, contamination), never boost
                inv_rel_std = 1.0 / (lsd / lsd.median().clamp_min(1e-12)).clamp_min(1.0)
            tiles.append(dict(y0=y0, x0=x0, ys=(ty_lo, ty_hi), xs=(tx_lo, tx_hi), spec=matched, inv_rel_std=inv_rel_std))

    # background power of each filtered tile, radially averaged and put on the template's box grid, so
    # that each orientation's correlation s.d. follows from Parseval without touching the full tile
    n_shells = tile // 2 + 1
    shell_t = radial_index(freq_px, n_shells).reshape(-1)
    counts = torch.zeros(n_shells, device=device).index_add_(0, shell_t, torch.ones_like(shell_t, dtype=torch.float32))
    freq_box = torch.linalg.vector_norm(fftfreq_grid_2d((box, box), device=device), dim=-1)
    shell_box = radial_index(freq_box, n_shells)
    weights_box = []
    for t in tiles:
        power = (t["spec"].real ** 2 + t["spec"].imag ** 2).reshape(-1)
        profile = torch.zeros(n_shells, device=device).index_add_(0, shell_t, power) / counts.clamp_min(1)
        weight = profile[shell_box]
        weight[:, 1:-1] *= 2.0  # rfft columns other than 0 and Nyquist stand for two coefficients
        weight[0, 0] = 0.0
        weights_box.append(weight / float(tile * box) ** 2)
    weights_box = torch.stack(weights_box)  # (n_tiles, B, B//2+1)

    best = torch.full((h, w), -torch.inf, device=device)
    best_index = torch.zeros((h, w), dtype=torch.int64, device=device)
    total = math.ceil(n_orient / settings.batch_orientations)
    half = box // 2
    buffer = None
    for b, start in enumerate(range(0, n_orient, settings.batch_orientations)):
        mats = matrices[start : start + settings.batch_orientations]
        proj_spec = project_spectra(projector, mats)  # (nb, B, B//2+1)
        proj_spec[:, 0, 0] = 0.0  # zero mean
        # Parseval on the box grid: s.d. of each correlation map over background (≈ noise), per tile
        power = proj_spec.real**2 + proj_spec.imag**2
        inv_sd = torch.einsum("tyx,oyx->to", weights_box, power).clamp_min(1e-30).rsqrt()  # (n_tiles, nb)
        proj = torch.fft.irfft2(proj_spec, s=(box, box))
        # correlation = convolution with the point-mirrored projection t(−u); the mirrored box has its
        # centre at B//2 − 1, which goes to pixel (0, 0) (wrapping around). The zero buffer is reused:
        # the same corners are overwritten every batch.
        mirrored = proj.flip(-2, -1)
        if buffer is None or buffer.shape[0] != len(mats):
            buffer = proj.new_zeros((len(mats), tile, tile))
        c = half - 1
        buffer[:, : box - c, : box - c] = mirrored[:, c:, c:]
        buffer[:, : box - c, tile - c :] = mirrored[:, c:, :c]
        buffer[:, tile - c :, : box - c] = mirrored[:, :c, c:]
        buffer[:, tile - c :, tile - c :] = mirrored[:, :c, :c]
        ref = torch.fft.rfft2(buffer)
        for i_tile, t in enumerate(tiles):
            cc = torch.fft.irfft2(t["spec"][None] * ref, s=(tile, tile))
            (ylo, yhi), (xlo, xhi) = t["ys"], t["xs"]
            values, index = (cc[:, ylo:yhi, xlo:xhi] * inv_sd[i_tile][:, None, None]).max(dim=0)
            if t["inv_rel_std"] is not None:
                values = values * t["inv_rel_std"]
            gy, gx = t["y0"] + ylo, t["x0"] + xlo
            region = best[gy : gy + (yhi - ylo), gx : gx + (xhi - xlo)]
            region_index = best_index[gy : gy + (yhi - ylo), gx : gx + (xhi - xlo)]
            better = values > region
            region_index.copy_(torch.where(better, index + start, region_index))
            torch.maximum(region, values, out=region)
        if progress is not None:
            progress(b + 1, total)

    scores = best.clone()
    index, pos_yx, values, floor = score_map_peaks(
        scores,
        int(round(settings.border_fraction * diameter_px)),
        settings.peak_floor_sigma,
        settings.peak_distance_fraction * diameter_px,
    )
    orient = euler[best_index[tuple(index.T)].cpu()] if len(index) else euler.new_zeros((0, 3))
    n_refine = min(len(index), settings.refine_max_peaks) if settings.refine_orientations else 0
    if n_refine:
        filtered: dict[int, torch.Tensor] = {}

        def block_of(yx: torch.Tensor) -> int:
            for i, t in enumerate(tiles):
                if (
                    t["y0"] + t["ys"][0] <= yx[0] < t["y0"] + t["ys"][1]
                    and t["x0"] + t["xs"][0] <= yx[1] < t["x0"] + t["xs"][1]
                ):
                    return i
            raise AssertionError("peak outside every tile")

        levels = refine_levels(settings.angular_step_deg)
        for k in range(n_refine):
            i_tile = block_of(index[k])
            t = tiles[i_tile]
            if i_tile not in filtered:
                filtered[i_tile] = torch.fft.irfft2(t["spec"], s=(tile, tile))

            def kernels(mats: torch.Tensor, i_tile=i_tile):
                ps = project_spectra(projector, mats.to(device=device, dtype=torch.float32))
                ps[:, 0, 0] = 0.0
                inv = torch.einsum("yx,oyx->o", weights_box[i_tile], ps.real**2 + ps.imag**2)
                return torch.fft.irfft2(ps, s=(box, box)), inv.clamp_min(1e-30).rsqrt()

            factor = None
            if t["inv_rel_std"] is not None:
                rel, (ylo, yhi), (xlo, xhi) = t["inv_rel_std"], t["ys"], t["xs"]

                def factor(pos: torch.Tensor, rel=rel, ylo=ylo, yhi=yhi, xlo=xlo, xhi=xhi) -> torch.Tensor:
                    iy = pos[:, 0].clamp(ylo, yhi - 1) - ylo
                    ix = pos[:, 1].clamp(xlo, xhi - 1) - xlo
                    return rel[iy.to(rel.device), ix.to(rel.device)]

            origin = torch.tensor([t["y0"], t["x0"]], dtype=torch.int64)
            coarse_rot = orientation_matrices(orient[k][None])[0]
            peak = refine_peak(filtered[i_tile], index[k].cpu() - origin, coarse_rot, kernels, factor, levels)
            pos_yx[k] = peak.position + origin
            orient[k] = matrix_to_euler_zyz(peak.rotation)
            values[k] = peak.score
        order = torch.argsort(values, descending=True, stable=True)
        pos_yx, orient, values = pos_yx[order], orient[order], values[order]
    coords_xy = pos_yx.flip(-1) * scale_xy
    matches = TemplateMatches(
        coords_xy,
        orient,
        values.to(torch.float32),
        float(pixel_size_a),
        template.diameter_a,
        float(settings.angular_step_deg),
        floor,
        meta={
            "ndim": 2,
            "matching_pixel_size_a": p,
            "n_orientations": n_orient,
            "n_refined": n_refine,
            "tile_px": tile,
            "tile_defocus_um": tile_defocus,
        },
    )
    return Match2DResult(matches, scores, best_index, euler, p, template)
