"""The specimen: particles, ice and artifacts on a padded canvas, imaged through a local-defocus CTF.

The result is the rfft of the *contrast* c on the canvas, with image intensity I = T·(1 − c) where
T is the transmission of thick artifacts (1 elsewhere) and c = 2·(φ ⊛ CTF_local) is the weak-phase
image of the phase φ. Ice and artifacts are imaged with the defocus of the specimen plane under each
pixel (exactly, by the Chebyshev/Bessel expansion of :mod:`cryowarp.sim._ctf`); every particle is
imaged separately, in a box padded by its point-spread function, at its own defocus (plane + height).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cryowarp.base.fourier import fftfreq_grid_2d
from cryowarp.base.geometry import euler_zyz_to_matrix, matrix_to_euler_zyz, random_rotations
from cryowarp.base.optics import ctf_2d, electron_wavelength_a
from cryowarp.base.units import ANGSTROM_PER_UM
from cryowarp.sim._atoms import AtomCloud, generate_protein, resolve_model
from cryowarp.sim._ctf import space_variant_ctf_spectrum
from cryowarp.sim._potential import (
    ice_phase_spectrum,
    interaction_constant_rad_per_v_a,
    project_atoms,
    water_mean_potential_v,
)

#: inelastic mean free path used for the transmission of thick artifacts (Å, 300 kV, no slit)
_MEAN_FREE_PATH_A = 3500.0
#: mean inner potential of amorphous carbon, V
_CARBON_POTENTIAL_V = 9.0


@dataclass(frozen=True)
class Placement:
    """Particles placed on the specimen (frame pixel coordinates)."""

    coords_px_xy: torch.Tensor  # (P, 2) float64
    euler_deg: torch.Tensor  # (P, 3) rot, tilt, psi
    height_a: torch.Tensor  # (P,) z above the specimen mid-plane, Å (+z = towards the source)
    defocus_um: torch.Tensor  # (P,)
    species: torch.Tensor  # (P,) index into species names
    species_names: tuple[str, ...]
    radius_a: torch.Tensor  # (P,)


@dataclass(frozen=True)
class Specimen:
    """What image formation needs; canvas = frame padded by ``margin_px`` on every side."""

    contrast_spectrum: torch.Tensor  # rfft of c on the canvas, complex64
    transmission_spectrum: torch.Tensor | None  # rfft of T on the canvas, or None when T ≡ 1
    phase_rad: torch.Tensor  # (H, W) the phase φ (no CTF) in the frame window, for pickers/templates
    artifact_mask: torch.Tensor  # (H, W) bool, frame window
    placement: Placement
    canvas_shape_yx: tuple[int, int]
    margin_px: int


def nice_fft_size(n: int) -> int:
    """Smallest integer ≥ n whose prime factors are 2, 3, 5 and 7 (fast FFT sizes)."""
    m = max(1, int(n))
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def plane_defocus_um(coords_px_xy: torch.Tensor, s) -> torch.Tensor:
    """Defocus of the specimen mid-plane at frame pixels ``(..., 2)`` (x, y), µm (Warp's sign)."""
    gx, gy = defocus_gradient_um_per_px_xy(s)
    h, w = s.shape_yx
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    return s.defocus_um + gx * (coords_px_xy[..., 0] - cx) + gy * (coords_px_xy[..., 1] - cy)


def defocus_gradient_um_per_px_xy(s) -> tuple[float, float]:
    """Gradient of the plane's defocus in µm per pixel along x and y.

    The tilt axis runs at ``tilt_axis_deg`` from +x towards +y; the height of the plane is
    z = tan(tilt)·(r · n) with n the axis direction turned by −90°, so with the axis along +y and a
    positive tilt the +x side is higher (closer to the source) and more underfocused, as in Warp.
    """
    axis = math.radians(s.tilt_axis_deg)
    nx, ny = math.sin(axis), -math.cos(axis)
    slope = math.tan(math.radians(s.specimen_tilt_deg)) * s.pixel_size_a / ANGSTROM_PER_UM
    return slope * nx, slope * ny


def _smooth_field(shape_yx, correlation_px: float, generator, device) -> torch.Tensor:
    """Gaussian random field with unit s.d. and a Gaussian correlation of ``correlation_px``."""
    h, w = shape_yx
    noise = torch.randn((h, w), generator=generator).to(device)
    freq = torch.linalg.vector_norm(fftfreq_grid_2d((h, w), device=device), dim=-1)
    field = torch.fft.irfft2(
        torch.fft.rfft2(noise) * torch.exp(-2 * (math.pi * correlation_px * freq) ** 2), s=(h, w)
    )
    return (field - field.mean()) / field.std().clamp_min(1e-12)


def _artifacts(s, canvas_shape, margin, generator, device) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Thickness (Å) maps of contamination and carbon on the canvas, and the material potential (V)."""
    h, w = canvas_shape
    if s.n_contamination_blobs == 0 and not s.carbon_edge:
        return None, torch.zeros(())
    y = torch.arange(h, device=device, dtype=torch.float32)[:, None] - margin
    x = torch.arange(w, device=device, dtype=torch.float32)[None, :] - margin
    thickness = torch.zeros((h, w), device=device)
    potential = torch.zeros((h, w), device=device)
    fh, fw = s.shape_yx
    for _ in range(s.n_contamination_blobs):
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        radius_px = (s.contamination_radius_a * (0.5 + u[2])) / s.pixel_size_a
        cx, cy = u[0] * fw, u[1] * fh
        r = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        # a lumpy ice ball: a sphere's chord length, slightly smoothed at the rim
        chord = 2.0 * torch.sqrt((1.0 - (r / radius_px) ** 2).clamp_min(0.0)) * radius_px * s.pixel_size_a
        thickness = torch.maximum(thickness, chord * (0.8 + 0.4 * u[3]))
        potential = torch.where(chord > 0, torch.full_like(potential, water_mean_potential_v()), potential)
    if s.carbon_edge:
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        angle = 2 * math.pi * u[0]
        # the edge passes at a random distance from the centre, covering 15–35 % of the field
        offset = (0.15 + 0.3 * u[1]) * min(fh, fw)
        d = (x - fw / 2) * math.cos(angle) + (y - fh / 2) * math.sin(angle) - (min(fh, fw) / 2 - offset)
        carbon = torch.sigmoid(d / 2.0) * s.carbon_thickness_a
        potential = torch.where(
            carbon > thickness, torch.full_like(potential, _CARBON_POTENTIAL_V), potential
        )
        thickness = torch.maximum(thickness, carbon)
    return thickness, potential


def _place_particles(s, species: list[AtomCloud], blocked: torch.Tensor | None, generator) -> Placement:
    """Random sequential adsorption of non-overlapping discs; heights within the ice slab."""
    h, w = s.shape_yx
    radii_a = torch.tensor([c.radius_a for c in species], dtype=torch.float64)
    if s.n_particles is not None:
        target = s.n_particles
    else:
        mean_area = float((math.pi * radii_a**2).mean())
        target = int(s.particle_area_fraction * h * w * s.pixel_size_a**2 / mean_area)
    coords, kinds, rads = [], [], []
    attempts = 0
    while len(coords) < target and attempts < 50 * max(target, 1) + 1000:
        attempts += 1
        u = torch.rand(3, generator=generator, dtype=torch.float64)
        k = int(u[2] * len(species)) % len(species)
        r_px = float(radii_a[k]) * s.particle_spacing / s.pixel_size_a
        x, y = float(u[0]) * w, float(u[1]) * h
        if blocked is not None:
            iy, ix = min(int(y), h - 1), min(int(x), w - 1)
            if bool(blocked[iy, ix]):
                continue
        if coords:
            c = torch.tensor(coords)
            r = torch.tensor(rads)
            if bool(((c[:, 0] - x) ** 2 + (c[:, 1] - y) ** 2 < (r + r_px) ** 2).any()):
                continue
        coords.append((x, y))
        kinds.append(k)
        rads.append(r_px)
    n = len(coords)
    coords_t = torch.tensor(coords, dtype=torch.float64).reshape(n, 2)
    kinds_t = torch.tensor(kinds, dtype=torch.long)
    matrices = random_rotations(n, generator=generator)
    euler = matrix_to_euler_zyz(matrices)
    radius_a = radii_a[kinds_t] if n else torch.zeros(0, dtype=torch.float64)
    # heights: the particle fits in the slab where it can, else sits at the mid-plane
    room = (0.5 * s.ice_thickness_a - radius_a).clamp_min(0.0)
    height = (2.0 * torch.rand(n, generator=generator, dtype=torch.float64) - 1.0) * room
    defocus = plane_defocus_um(coords_t, s) + height / ANGSTROM_PER_UM
    return Placement(coords_t, euler, height, defocus, kinds_t, tuple(c.name for c in species), radius_a)


def load_species(s) -> list[AtomCloud]:
    """The particle species of the settings: models named in ``particle_models`` and generated kinds."""
    species = [resolve_model(spec) for spec in s.particle_models]
    for i, kind in enumerate(s.protein_kinds):
        mass = s.protein_masses_kda[i % len(s.protein_masses_kda)]
        species.append(generate_protein(kind, mass, seed=1000 + i))
    return species


def build_specimen(
    s,
    *,
    margin_px: int,
    generator: torch.Generator,
    device: torch.device,
    species: list[AtomCloud] | None = None,
    placement: Placement | None = None,
) -> Specimen:
    """Place particles, ice and artifacts; return the canvas contrast spectrum and the truth.

    A given ``placement`` (e.g. the projections of 3D positions in a tilt series) is used as is:
    its coordinates, orientations and defocus values are taken literally.
    """
    h, w = s.shape_yx
    canvas = (nice_fft_size(h + 2 * margin_px), nice_fft_size(w + 2 * margin_px))
    ch, cw = canvas
    sigma = interaction_constant_rad_per_v_a(s.voltage_kv)
    species = load_species(s) if species is None else species
    if not species and (s.n_particles or s.particle_area_fraction > 0):
        raise ValueError("no particle species: give particle_models (e.g. '5a1a') or protein_kinds")

    # artifacts first, so particles avoid them
    thickness, potential = _artifacts(s, canvas, margin_px, generator, device)
    artifact_canvas = (
        (thickness > 1.0) if thickness is not None else torch.zeros(canvas, dtype=torch.bool, device=device)
    )
    artifact_mask = artifact_canvas[margin_px : margin_px + h, margin_px : margin_px + w]
    blocked = artifact_mask.cpu() if thickness is not None else None
    if placement is None:
        placement = _place_particles(s, species, blocked, generator) if species else _no_particles()

    # ice: a random phase field in the slab + a smooth thickness variation
    phase = torch.zeros(canvas, device=device)
    if s.ice_thickness_a > 0:
        phase += torch.fft.irfft2(
            ice_phase_spectrum(
                canvas,
                pixel_size_a=s.pixel_size_a,
                thickness_a=s.ice_thickness_a,
                voltage_kv=s.voltage_kv,
                generator=generator,
                device=device,
            ),
            s=canvas,
        )
        if s.ice_thickness_variation > 0:
            field = _smooth_field(canvas, s.ice_thickness_correlation_a / s.pixel_size_a, generator, device)
            phase += sigma * water_mean_potential_v() * s.ice_thickness_a * s.ice_thickness_variation * field
    if thickness is not None:
        phase += sigma * (potential - water_mean_potential_v() * (potential > 0)) * thickness

    # ice and artifacts: each pixel imaged at the defocus of the plane under it (Chebyshev expansion)
    yy = torch.arange(ch, device=device, dtype=torch.float64)[:, None] - margin_px
    xx = torch.arange(cw, device=device, dtype=torch.float64)[None, :] - margin_px
    plane_um = plane_defocus_um(torch.stack(torch.broadcast_tensors(xx, yy), -1), s).to(torch.float32)
    del yy, xx
    freq_per_a = torch.linalg.vector_norm(fftfreq_grid_2d(canvas, device=device), dim=-1) / s.pixel_size_a
    envelope = torch.exp(-s.bfactor_a2 * freq_per_a**2 / 4.0)
    del freq_per_a
    optics = dict(
        pixel_size_a=s.pixel_size_a,
        voltage_kv=s.voltage_kv,
        cs_mm=s.cs_mm,
        amplitude_contrast=s.amplitude_contrast,
        defocus_delta_um=s.defocus_delta_um,
        astigmatism_angle_deg=s.astigmatism_angle_deg,
        phase_shift_deg=s.phase_shift_deg,
    )
    contrast = space_variant_ctf_spectrum(phase, plane_um, envelope=envelope, **optics)
    del plane_um, envelope

    # particles: each imaged in its own padded box at its own defocus (exact), then added
    phase_total = phase
    if len(placement.coords_px_xy):
        matrices = euler_zyz_to_matrix(
            placement.euler_deg[:, 0], placement.euler_deg[:, 1], placement.euler_deg[:, 2]
        )
        particle_contrast = torch.zeros(canvas, device=device)
        psf_margin = psf_margin_px(s, float(placement.defocus_um.abs().max()) + abs(s.defocus_delta_um))
        for i in range(len(placement.coords_px_xy)):
            cloud = species[int(placement.species[i])]
            box = 2 * int(math.ceil(cloud.radius_a / s.pixel_size_a + 8))
            cx, cy = (float(v) + margin_px for v in placement.coords_px_xy[i])
            ix, iy = int(math.floor(cx)), int(math.floor(cy))
            proj = project_atoms(
                cloud,
                matrices[i],
                pixel_size_a=s.pixel_size_a,
                box_px=box,
                offset_px_xy=(cx - ix, cy - iy),
                voltage_kv=s.voltage_kv,
                solvent=s.solvent_contrast,
                device=device,
            )
            _paste(phase_total, proj, iy - box // 2, ix - box // 2)
            padded = nice_fft_size(box + 2 * psf_margin)
            padded += padded % 2
            big = torch.zeros((padded, padded), device=device)
            o = (padded - box) // 2
            big[o : o + box, o : o + box] = proj
            ctf = ctf_2d(
                float(placement.defocus_um[i]),
                s.defocus_delta_um,
                s.astigmatism_angle_deg,
                voltage_kv=s.voltage_kv,
                cs_mm=s.cs_mm,
                amplitude_contrast=s.amplitude_contrast,
                pixel_size_a=s.pixel_size_a,
                shape_yx=(padded, padded),
                phase_shift_deg=s.phase_shift_deg,
                bfactor_a2=-s.bfactor_a2,
                device=device,
            )
            imaged = torch.fft.irfft2(torch.fft.rfft2(big) * (2.0 * ctf), s=(padded, padded))
            _paste(particle_contrast, imaged, iy - box // 2 - o, ix - box // 2 - o)
        contrast += torch.fft.rfft2(particle_contrast)
        del particle_contrast
    transmission = None
    if thickness is not None:
        t = torch.exp(-thickness / _MEAN_FREE_PATH_A)
        transmission = torch.fft.rfft2(t)
    return Specimen(
        contrast,
        transmission,
        phase_total[margin_px : margin_px + h, margin_px : margin_px + w].clone(),
        artifact_mask.clone(),
        placement,
        canvas,
        margin_px,
    )


def psf_margin_px(s, defocus_um: float, cap_px: int = 384) -> int:
    """Half-width of the CTF's point-spread function, λ·D·k_max / pixel size (capped), in pixels."""
    wavelength_a = float(electron_wavelength_a(s.voltage_kv))
    k_max = 0.5 / s.pixel_size_a
    return min(
        cap_px, int(math.ceil(wavelength_a * abs(defocus_um) * ANGSTROM_PER_UM * k_max / s.pixel_size_a)) + 8
    )


def _no_particles() -> Placement:
    z = torch.zeros(0, dtype=torch.float64)
    return Placement(z.reshape(0, 2), z.reshape(0, 3), z, z, torch.zeros(0, dtype=torch.long), (), z)


def _paste(canvas: torch.Tensor, box: torch.Tensor, y0: int, x0: int) -> None:
    """Add ``box`` into ``canvas`` with its corner at (y0, x0), clipped at the borders."""
    h, w = canvas.shape
    bh, bw = box.shape
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(h, y0 + bh), min(w, x0 + bw)
    if ye <= ys or xe <= xs:
        return
    canvas[ys:ye, xs:xe] += box[ys - y0 : ye - y0, xs - x0 : xe - x0]
