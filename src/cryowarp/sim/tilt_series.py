"""Tilt series of particles in an ice slab, with the true volume (see :mod:`cryowarp.sim` for conventions).

Geometry (Warp, warp-facts.md §6.1): a specimen point p = (x, y, z) in Å relative to the volume centre
appears in tilt t at q = R_t·p with R_t = ``euler_zyz_to_matrix(0, θ_t, −ψ)`` (θ_t the tilt angle,
ψ = ``tilt_axis_angle_deg``), at image pixel q_xy / pixel size + ((w − 1)/2, (h − 1)/2), with defocus
D_t + 10⁻⁴·q_z µm (+z towards the source is more underfocused). A particle of orientation A in the
specimen appears in tilt t with orientation R_t·A. With ψ = 0 the tilt axis is the image y axis and
positive tilts make the +x side more underfocused.

Acquisition follows the dose-symmetric scheme of Hagen et al. (2017): 0°, then groups of
``dose_symmetric_group`` tilts alternating between the positive and the negative branch. Tilt t
receives ``exposure_per_tilt_e_per_a2``; its signal is damaged by the exposure accumulated before it
plus half its own (Grant & Grigorieff). Each tilt image is motion-free (an aligned average).
Files are written in tilt-angle order (as IMOD and Warp sort them); the ``.mdoc`` keeps the
acquisition order in ``DateTime`` and ``PriorRecordDose``.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from pydantic import Field

from cryowarp.base.fourier import fftfreq_grid_2d
from cryowarp.base.geometry import euler_zyz_to_matrix, matrix_to_euler_zyz
from cryowarp.base.optics import critical_exposure_e_per_a2
from cryowarp.base.units import ANGSTROM_PER_UM
from cryowarp.sim._atoms import AtomCloud
from cryowarp.sim._potential import atom_kernel_v_a3
from cryowarp.sim._specimen import (
    Placement,
    _place_particles,
    build_specimen,
    defocus_gradient_um_per_px_xy,
    load_species,
)
from cryowarp.sim.movie import SpecimenSimSettings, poisson


class TiltSeriesSimSettings(SpecimenSimSettings):
    """A tilt series: specimen in a slab, tilt scheme, exposure and the true volume's sampling."""

    shape_yx: tuple[int, int] = Field((512, 512), description="tilt image size (h, w) in pixels")
    pixel_size_a: float = Field(3.0, gt=0, description="pixel size, Å")
    defocus_um: float = Field(3.0, description="defocus at the tilt axis, µm, + = underfocus")
    defocus_sd_um: float = Field(0.1, ge=0, description="random per-tilt defocus variation (s.d.), µm")
    ice_thickness_a: float = Field(1200.0, ge=0, description="slab thickness, Å")
    tilt_min_deg: float = -60.0
    tilt_max_deg: float = 60.0
    tilt_step_deg: float = Field(3.0, gt=0)
    dose_symmetric_group: int = Field(2, ge=1, description="tilts per branch before switching (Hagen)")
    tilt_axis_angle_deg: float = Field(
        0.0, description="ψ: in-plane angle of the tilt axis from +y (Warp/IMOD)"
    )
    exposure_per_tilt_e_per_a2: float = Field(3.0, gt=0)
    radiation_damage: bool = True
    volume_binning: int = Field(2, ge=1, description="voxel size of the true volume = binning × pixel size")
    particle_area_fraction: float = Field(0.15, ge=0, le=0.6, description="area covered at 0°")

    def tilt_angles_deg(self) -> list[float]:
        """Tilt angles in ascending order."""
        n = int(math.floor((self.tilt_max_deg - self.tilt_min_deg) / self.tilt_step_deg + 1e-6)) + 1
        if n < 1:
            raise ValueError(
                f"tilt range: expected tilt_min_deg ≤ tilt_max_deg, found {self.tilt_min_deg} > "
                f"{self.tilt_max_deg}"
            )
        return [round(self.tilt_min_deg + i * self.tilt_step_deg, 6) for i in range(n)]

    def acquisition_order(self) -> list[float]:
        """Tilt angles in the order they are recorded (dose-symmetric, starting nearest 0°)."""
        angles = self.tilt_angles_deg()
        start = min(angles, key=abs)
        positive = [a for a in angles if a > start]
        negative = sorted([a for a in angles if a < start], reverse=True)
        order = [start]
        g = self.dose_symmetric_group
        i = j = 0
        branch = 0
        while i < len(positive) or j < len(negative):
            if branch == 0 and i < len(positive):
                order += positive[i : i + g]
                i += g
            elif branch == 1 and j < len(negative):
                order += negative[j : j + g]
                j += g
            branch ^= 1
        return order


@dataclass(frozen=True)
class TiltSeriesTruth:
    """What was planted in a tilt series (tilt-angle order for every per-tilt list)."""

    tilt_angles_deg: torch.Tensor  # (T,) ascending
    acquisition_index: torch.Tensor  # (T,) position of each tilt in the acquisition order
    prior_exposure_e_per_a2: torch.Tensor  # (T,) exposure before this tilt
    defocus_um: torch.Tensor  # (T,) at the tilt axis (image centre)
    defocus_gradient_um_per_px_xy: torch.Tensor  # (T, 2)
    tilt_axis_angle_deg: float
    particles_xyz_a: torch.Tensor  # (P, 3) relative to the volume centre
    euler_deg: torch.Tensor  # (P, 3) orientation in the specimen (RELION ZYZ)
    species: torch.Tensor
    species_names: tuple[str, ...]
    pixel_size_a: float
    shape_yx: tuple[int, int]
    volume_pixel_size_a: float
    volume_shape_zyx: tuple[int, int, int]
    settings: dict

    def tilt_matrices(self) -> torch.Tensor:
        """`(T, 3, 3)` R_t = euler_zyz_to_matrix(0, θ_t, −ψ) acting on (x, y, z)."""
        return euler_zyz_to_matrix(
            torch.zeros_like(self.tilt_angles_deg),
            self.tilt_angles_deg,
            torch.full_like(self.tilt_angles_deg, -self.tilt_axis_angle_deg),
        )

    def project_px_xy(self, xyz_a: torch.Tensor) -> torch.Tensor:
        """Image positions `(T, N, 2)` (x, y) px of specimen points `(N, 3)` Å in every tilt."""
        q = torch.einsum("tij,nj->tni", self.tilt_matrices(), torch.as_tensor(xyz_a, dtype=torch.float64))
        h, w = self.shape_yx
        centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
        return q[..., :2] / self.pixel_size_a + centre

    def particle_defocus_um(self) -> torch.Tensor:
        """`(T, P)` defocus at every particle in every tilt, µm."""
        q = torch.einsum("tij,nj->tni", self.tilt_matrices(), self.particles_xyz_a)
        return self.defocus_um[:, None] + q[..., 2] / ANGSTROM_PER_UM

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        out = {}
        for k, v in self.__dict__.items():
            out[k] = v.tolist() if isinstance(v, torch.Tensor) else (list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> TiltSeriesTruth:
        """Inverse of :meth:`to_dict`."""
        t = lambda k, dt=torch.float64: torch.tensor(d[k], dtype=dt)  # noqa: E731
        return cls(
            t("tilt_angles_deg"),
            t("acquisition_index", torch.long),
            t("prior_exposure_e_per_a2"),
            t("defocus_um"),
            t("defocus_gradient_um_per_px_xy").reshape(-1, 2),
            d["tilt_axis_angle_deg"],
            t("particles_xyz_a").reshape(-1, 3),
            t("euler_deg").reshape(-1, 3),
            t("species", torch.long),
            tuple(d["species_names"]),
            d["pixel_size_a"],
            tuple(d["shape_yx"]),
            d["volume_pixel_size_a"],
            tuple(d["volume_shape_zyx"]),
            d["settings"],
        )


@dataclass(frozen=True)
class SimulatedTiltSeries:
    """Tilt images `(T, H, W)` (counts), clean images, projected phases, the true volume `(D, H', W')` (V)."""

    images: torch.Tensor
    clean_images: torch.Tensor
    phase_images_rad: torch.Tensor
    volume_v: torch.Tensor
    truth: TiltSeriesTruth

    @property
    def tilt_angles_deg(self) -> torch.Tensor:
        """`(T,)` ascending tilt angles."""
        return self.truth.tilt_angles_deg

    def to_files(self, directory: str | Path, *, stem: str = "tilt_series") -> dict[str, Path]:
        """Write stack, .tlt, .mdoc, true volume, clean stack, particles STAR and truth JSON."""
        from cryowarp.sim.files import write_tilt_series_files

        return write_tilt_series_files(self, directory, stem=stem)


def _tilt_axis_for_plane(psi_deg: float) -> float:
    """Our micrograph tilt-axis angle (from +x) for Warp's ψ (axis = R_z(ψ)·ŷ): 90° + ψ."""
    return 90.0 + psi_deg


def render_volume(
    species: list[AtomCloud],
    placement_xyz_a: torch.Tensor,
    matrices: torch.Tensor,
    species_index: torch.Tensor,
    *,
    voxel_size_a: float,
    shape_zyx: tuple[int, int, int],
    bfactor_a2: float,
    solvent: bool = True,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Coulomb potential (V, relative to ice) of the particles on a `(D, H, W)` grid centred on the origin.

    Atoms are splatted trilinearly with their k = 0 weight (scattering factor with implicit H, minus
    displaced water) and blurred with the carbon form factor and the B-factor: exact at low
    resolution, approximate (one shared atom shape) near Nyquist.
    """
    d, h, w = shape_zyx
    grid = torch.zeros(d * h * w, dtype=torch.float32, device=device)
    zero = torch.zeros((), device=device)
    for i in range(len(placement_xyz_a)):
        cloud = species[int(species_index[i])]
        xyz = cloud.coords_a_xyz.to(device) @ matrices[i].to(device=device, dtype=torch.float32).T
        xyz = xyz + placement_xyz_a[i].to(device=device, dtype=torch.float32)
        fx = xyz[:, 0] / voxel_size_a + (w - 1) / 2
        fy = xyz[:, 1] / voxel_size_a + (h - 1) / 2
        fz = xyz[:, 2] / voxel_size_a + (d - 1) / 2
        per_element = {e: float(atom_kernel_v_a3(e, zero, solvent=solvent)) for e in set(cloud.elements)}
        weights = torch.tensor([per_element[e] for e in cloud.elements], device=device)
        x0, y0, z0 = torch.floor(fx), torch.floor(fy), torch.floor(fz)
        tx, ty, tz = fx - x0, fy - y0, fz - z0
        x0, y0, z0 = x0.long(), y0.long(), z0.long()
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    wgt = weights * (tz if dz else 1 - tz) * (ty if dy else 1 - ty) * (tx if dx else 1 - tx)
                    zz, yy, xx = z0 + dz, y0 + dy, x0 + dx
                    ok = (zz >= 0) & (zz < d) & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                    grid.index_add_(0, ((zz * h + yy) * w + xx)[ok], wgt[ok])
    grid = grid.reshape(d, h, w)
    kz = torch.fft.fftfreq(d, device=device)[:, None, None]
    ky = torch.fft.fftfreq(h, device=device)[None, :, None]
    kx = torch.fft.rfftfreq(w, device=device)[None, None, :]
    k = torch.sqrt(kz**2 + ky**2 + kx**2) / voxel_size_a
    shape = atom_kernel_v_a3("C", k, solvent=False) / float(atom_kernel_v_a3("C", zero, solvent=False))
    # trilinear splatting multiplies the spectrum by sinc² per axis: undo it (bounded at Nyquist: ÷0.165)
    response = (torch.sinc(kz) * torch.sinc(ky) * torch.sinc(kx)) ** 2
    blur = shape * torch.exp(-bfactor_a2 * k**2 / 4.0) / response
    volume = torch.fft.irfftn(torch.fft.rfftn(grid) * blur, s=(d, h, w))
    return volume / voxel_size_a**3


def simulate_tilt_series(
    settings: TiltSeriesSimSettings | None = None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimulatedTiltSeries:
    """Simulate a dose-symmetric tilt series of particles in an ice slab, with the true volume.

    Parameters
    ----------
    settings : TiltSeriesSimSettings
        Specimen, microscope, tilt scheme and exposure (defaults: 512², 3 Å/px, ±60° in 3° steps).
    seed : int
        Seed of every random choice.
    device : torch.device, optional
        Where to compute (default CPU).
    progress : callable, optional
        ``progress(done, total)`` after each tilt.

    Returns
    -------
    tilt_series : SimulatedTiltSeries
    """
    s = settings if settings is not None else TiltSeriesSimSettings()
    device = torch.device(device) if device is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(int(seed))
    h, w = s.shape_yx
    angles = s.tilt_angles_deg()
    order = s.acquisition_order()
    species = load_species(s)
    if not species:
        raise ValueError("no particle species: give particle_models (e.g. '5a1a') or protein_kinds")

    # particles in the slab, over an area that fills the field of view at the highest tilt
    stretch = min(2.0, 1.0 / max(math.cos(math.radians(max(abs(a) for a in angles))), 0.5))
    big = s.model_copy(update={"shape_yx": (int(h * stretch), int(w * stretch)), "specimen_tilt_deg": 0.0})
    placed = _place_particles(big, species, None, generator)
    bh, bw = big.shape_yx
    xy_a = (
        placed.coords_px_xy - torch.tensor([(bw - 1) / 2, (bh - 1) / 2], dtype=torch.float64)
    ) * s.pixel_size_a
    xyz_a = torch.cat([xy_a, placed.height_a[:, None]], 1)
    matrices = euler_zyz_to_matrix(placed.euler_deg[:, 0], placed.euler_deg[:, 1], placed.euler_deg[:, 2])

    n_tilts = len(angles)
    angle_t = torch.tensor(angles, dtype=torch.float64)
    acquisition_index = torch.tensor([order.index(a) for a in angles], dtype=torch.long)
    prior = acquisition_index.to(torch.float64) * s.exposure_per_tilt_e_per_a2
    defocus = s.defocus_um + s.defocus_sd_um * torch.randn(n_tilts, generator=generator, dtype=torch.float64)
    gradients = torch.zeros(n_tilts, 2, dtype=torch.float64)
    truth_stub = TiltSeriesTruth(
        angle_t,
        acquisition_index,
        prior,
        defocus,
        gradients,
        s.tilt_axis_angle_deg,
        xyz_a,
        placed.euler_deg,
        placed.species,
        placed.species_names,
        s.pixel_size_a,
        (h, w),
        0.0,
        (0, 0, 0),
        {},
    )
    tilt_r = truth_stub.tilt_matrices()
    images = torch.empty((n_tilts, h, w), dtype=torch.float32, device=device)
    clean_images = torch.empty((n_tilts, h, w), dtype=torch.float32, device=device)
    phase_images = torch.empty((n_tilts, h, w), dtype=torch.float32, device=device)
    margin = 16
    for t in range(n_tilts):
        theta = angles[t]
        q = xyz_a @ tilt_r[t].T  # (P, 3)
        coords = q[:, :2] / s.pixel_size_a + torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
        euler_t = matrix_to_euler_zyz(tilt_r[t][None] @ matrices)
        placement = Placement(
            coords,
            euler_t,
            q[:, 2],
            float(defocus[t]) + q[:, 2] / ANGSTROM_PER_UM,
            placed.species,
            placed.species_names,
            placed.radius_a,
        )
        tilt_settings = s.model_copy(
            update={
                "defocus_um": float(defocus[t]),
                "specimen_tilt_deg": theta,
                "tilt_axis_deg": _tilt_axis_for_plane(s.tilt_axis_angle_deg),
                "ice_thickness_a": s.ice_thickness_a / max(math.cos(math.radians(theta)), 0.1),
            }
        )
        gradients[t] = torch.tensor(defocus_gradient_um_per_px_xy(tilt_settings), dtype=torch.float64)
        specimen = build_specimen(
            tilt_settings,
            margin_px=margin,
            generator=generator,
            device=device,
            species=species,
            placement=placement,
        )
        canvas = specimen.canvas_shape_yx
        window = (slice(margin, margin + h), slice(margin, margin + w))
        clean = 1.0 - torch.fft.irfft2(specimen.contrast_spectrum, s=canvas)[window]
        spectrum = specimen.contrast_spectrum
        if s.radiation_damage:
            freq = torch.linalg.vector_norm(fftfreq_grid_2d(canvas, device=device), dim=-1) / s.pixel_size_a
            exposure = float(prior[t]) + 0.5 * s.exposure_per_tilt_e_per_a2
            spectrum = spectrum * torch.exp(
                -exposure / (2.0 * critical_exposure_e_per_a2(freq, s.voltage_kv))
            )
        expected = (1.0 - torch.fft.irfft2(spectrum, s=canvas)[window]).clamp_min(0.0)
        # the slab is thicker at high tilt: inelastic losses, exp(−t/λ) with λ = 3500 Å (energy filter)
        attenuation = math.exp(-tilt_settings.ice_thickness_a / 3500.0)
        rate = expected * (s.exposure_per_tilt_e_per_a2 * s.pixel_size_a**2 * attenuation)
        images[t] = poisson(
            rate, generator if device.type == "cpu" else torch.Generator(device=device).manual_seed(seed + t)
        )
        clean_images[t] = clean
        phase_images[t] = specimen.phase_rad
        if progress is not None:
            progress(t + 1, n_tilts)

    voxel = s.pixel_size_a * s.volume_binning
    depth = 2 * int(math.ceil(0.6 * s.ice_thickness_a / voxel))
    shape_zyx = (max(depth, 2), h // s.volume_binning, w // s.volume_binning)
    volume = render_volume(
        species,
        xyz_a,
        matrices,
        placed.species,
        voxel_size_a=voxel,
        shape_zyx=shape_zyx,
        bfactor_a2=s.bfactor_a2,
        solvent=s.solvent_contrast,
        device=device,
    )
    # the stub already holds the per-tilt geometry (its gradients were filled in place above)
    truth = replace(truth_stub, volume_pixel_size_a=voxel, volume_shape_zyx=shape_zyx,
                    settings=s.model_dump(mode="json"))
    return SimulatedTiltSeries(images, clean_images, phase_images, volume, truth)


def mdoc_text(
    truth: TiltSeriesTruth,
    stack_name: str,
    *,
    voltage_kv: float,
    exposure_per_tilt_e_per_a2: float,
    start: _dt.datetime | None = None,
    seconds_per_tilt: float = 60.0,
) -> str:
    """SerialEM-style .mdoc: one ``[ZValue = i]`` section per image of the (angle-sorted) stack."""
    start = start or _dt.datetime(2026, 1, 1, 12, 0, 0)
    h, w = truth.shape_yx
    lines = [
        f"PixelSpacing = {truth.pixel_size_a:g}",
        f"Voltage = {voltage_kv:g}",
        f"ImageFile = {stack_name}",
        f"ImageSize = {w} {h}",
        "DataMode = 2",
        "",
        f"[T = SerialEM: simulated by cryowarp; tilt axis angle {truth.tilt_axis_angle_deg:g}]",
        "",
    ]
    for i in range(len(truth.tilt_angles_deg)):
        when = start + _dt.timedelta(seconds=seconds_per_tilt * int(truth.acquisition_index[i]))
        lines += [
            f"[ZValue = {i}]",
            f"TiltAngle = {float(truth.tilt_angles_deg[i]):.2f}",
            f"ExposureDose = {exposure_per_tilt_e_per_a2:g}",
            f"PriorRecordDose = {float(truth.prior_exposure_e_per_a2[i]):g}",
            f"PixelSpacing = {truth.pixel_size_a:g}",
            f"Defocus = {-float(truth.defocus_um[i]):.4f}",  # SerialEM: negative = underfocus
            f"TargetDefocus = {-float(truth.settings.get('defocus_um', 0.0)):.4f}",
            f"RotationAngle = {truth.tilt_axis_angle_deg:g}",
            f"SubFramePath = {Path(stack_name).stem}_{int(truth.acquisition_index[i]):03d}_"
            f"{float(truth.tilt_angles_deg[i]):.1f}.tif",
            f"DateTime = {when.strftime('%d-%b-%y  %H:%M:%S')}",
            "",
        ]
    return "\n".join(lines) + "\n"


__all__ = [
    "TiltSeriesSimSettings",
    "TiltSeriesTruth",
    "SimulatedTiltSeries",
    "simulate_tilt_series",
    "render_volume",
    "mdoc_text",
]
