"""Dose-fractionated movies with exact ground truth (see :mod:`cryowarp.sim` for the conventions)."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from cryowarp.base.fourier import fftfreq_grid_2d
from cryowarp.base.optics import critical_exposure_e_per_a2
from cryowarp.sim._motion import MotionField, generate_motion
from cryowarp.sim._specimen import (
    Specimen,
    build_specimen,
    defocus_gradient_um_per_px_xy,
    plane_defocus_um,
)


class SpecimenSimSettings(BaseModel):
    """Specimen and microscope (shared by movies, micrographs and sessions). Lengths Å, defocus µm."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shape_yx: tuple[int, int] = Field((1024, 1024), description="frame size (h, w) in pixels")
    pixel_size_a: float = Field(1.0, gt=0, description="pixel size, Å")
    voltage_kv: float = Field(300.0, gt=0)
    cs_mm: float = 2.7
    amplitude_contrast: float = Field(0.07, ge=0, lt=1)
    defocus_um: float = Field(1.5, description="mean defocus at the image centre, µm, + = underfocus")
    defocus_delta_um: float = Field(0.1, description="astigmatism: full difference U − V, µm")
    astigmatism_angle_deg: float = Field(30.0, description="angle of U from +x towards +y")
    phase_shift_deg: float = 0.0
    specimen_tilt_deg: float = Field(0.0, description="tilt of the specimen plane, degrees")
    tilt_axis_deg: float = Field(0.0, description="tilt axis angle from +x towards +y, degrees")
    bfactor_a2: float = Field(30.0, ge=0, description="specimen B-factor envelope exp(−B k²/4), Å²")
    ice_thickness_a: float = Field(300.0, ge=0)
    ice_thickness_variation: float = Field(0.1, ge=0, description="relative s.d. of the ice thickness")
    ice_thickness_correlation_a: float = Field(800.0, gt=0, description="correlation length of thickness")
    particle_models: tuple[str, ...] = Field(
        ("5a1a",), description="'5a1a' (built-in), a .cif/.pdb path, or 'kind:kDa'"
    )
    protein_kinds: tuple[str, ...] = Field(
        (), description="generated protein kinds (sim._atoms.PROTEIN_KINDS)"
    )
    protein_masses_kda: tuple[float, ...] = Field(
        (300.0,), description="masses of the generated kinds, cycled"
    )
    n_particles: int | None = Field(
        None, ge=0, description="exact number (None: from particle_area_fraction)"
    )
    particle_area_fraction: float = Field(0.2, ge=0, le=0.6, description="area covered by particle discs")
    particle_spacing: float = Field(1.0, gt=0, description="disc radius / particle radius for non-overlap")
    solvent_contrast: bool = Field(True, description="subtract displaced water: contrast relative to ice")
    n_contamination_blobs: int = Field(0, ge=0)
    contamination_radius_a: float = Field(400.0, gt=0)
    carbon_edge: bool = False
    carbon_thickness_a: float = Field(150.0, gt=0)


class MovieSimSettings(SpecimenSimSettings):
    """A movie: specimen + exposure, motion, detector."""

    n_frames: int = Field(20, ge=1)
    exposure_per_frame_e_per_a2: float = Field(1.0, gt=0)
    pre_exposure_e_per_a2: float = Field(0.0, ge=0)
    radiation_damage: bool = Field(True, description="Grant–Grigorieff attenuation per frame")
    initial_motion_a: float = Field(6.0, ge=0, description="size of the fast initial beam-induced motion, Å")
    drift_a_per_frame: float = Field(0.3, ge=0, description="steady stage drift, Å per frame")
    n_jumps: int = Field(0, ge=0, description="sudden jumps of the global track")
    jump_a: float = Field(3.0, ge=0)
    local_amplitude_a: float = Field(2.0, ge=0, description="RMS-scale amplitude of local deformation, Å")
    local_n_modes: int = Field(4, ge=1)
    shot_noise: bool = Field(True, description="Poisson counts; False gives the expected counts (float)")
    gain_sd: float = Field(0.0, ge=0, le=0.5, description="relative s.d. of the per-pixel gain (0 = uniform)")
    frames_gain_corrected: bool = Field(False, description="return frames × gain instead of raw counts")
    n_hot_pixels: int = Field(0, ge=0)
    hot_pixel_counts: float = Field(30.0, ge=0, description="mean extra counts per frame of a hot pixel")
    n_dead_columns: int = Field(0, ge=0)


@dataclass(frozen=True)
class ParticleTruth:
    """True particles: pixel coordinates of the frame (mean position), orientation and defocus."""

    coords_px_xy: torch.Tensor  # (P, 2)
    euler_deg: torch.Tensor  # (P, 3) RELION rot, tilt, psi
    defocus_um: torch.Tensor  # (P,) mean defocus at the particle, including its height
    height_a: torch.Tensor  # (P,)
    species: torch.Tensor  # (P,) index into species_names
    species_names: tuple[str, ...]
    radius_a: torch.Tensor  # (P,)

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return {
            "coords_px_xy": self.coords_px_xy.tolist(),
            "euler_deg": self.euler_deg.tolist(),
            "defocus_um": self.defocus_um.tolist(),
            "height_a": self.height_a.tolist(),
            "species": self.species.tolist(),
            "species_names": list(self.species_names),
            "radius_a": self.radius_a.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ParticleTruth:
        """Inverse of :meth:`to_dict`."""
        f64 = lambda k, shape: torch.tensor(d[k], dtype=torch.float64).reshape(shape)  # noqa: E731
        return cls(
            f64("coords_px_xy", (-1, 2)),
            f64("euler_deg", (-1, 3)),
            f64("defocus_um", (-1,)),
            f64("height_a", (-1,)),
            torch.tensor(d["species"], dtype=torch.long).reshape(-1),
            tuple(d["species_names"]),
            f64("radius_a", (-1,)),
        )


@dataclass(frozen=True)
class MovieTruth:
    """Everything that was planted. Displacements in Å (yx), coordinates in frame pixels.

    ``displacement_a_yx(coords_px_yx, frame_index)`` is d_f(x) with frame_f(x) = specimen(x − d_f(x)).
    """

    motion: MotionField
    particles: ParticleTruth
    pixel_size_a: float
    shape_yx: tuple[int, int]
    exposure_per_frame_e_per_a2: float
    pre_exposure_e_per_a2: float
    voltage_kv: float
    cs_mm: float
    amplitude_contrast: float
    defocus_um: float
    defocus_delta_um: float
    astigmatism_angle_deg: float
    phase_shift_deg: float
    specimen_tilt_deg: float
    tilt_axis_deg: float
    defocus_gradient_um_per_px_xy: tuple[float, float]
    seed: int = 0
    settings: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return self.motion.n_frames

    @property
    def global_displacement_a_yx(self) -> torch.Tensor:
        """`(F, 2)` float64 global displacement per frame, Å, mean 0 over frames."""
        return self.motion.global_displacement_a_yx()

    @property
    def coords_px_xy(self) -> torch.Tensor:
        """`(P, 2)` true particle centres (x, y), px (same as ``particles.coords_px_xy``)."""
        return self.particles.coords_px_xy

    @property
    def euler_deg(self) -> torch.Tensor:
        """`(P, 3)` true RELION ZYZ angles (rot, tilt, psi), degrees."""
        return self.particles.euler_deg

    @property
    def particle_defocus_um(self) -> torch.Tensor:
        """`(P,)` defocus at each particle (plane + height), µm; ``defocus_um`` is the image centre's."""
        return self.particles.defocus_um

    @property
    def global_shifts_px_yx(self) -> torch.Tensor:
        """`(F, 2)` global displacement in pixels (content of frame f sits this far from the clean image)."""
        return self.global_displacement_a_yx / self.pixel_size_a

    def displacement_a_yx(self, coords_px_yx: torch.Tensor, frame_index: torch.Tensor | int) -> torch.Tensor:
        """Total true displacement (global + local), Å, at frame pixels `(N, 2)` yx, frames `(N,)` or int."""
        return self.motion.displacement_a_yx(coords_px_yx, frame_index)

    def local_defocus_um(self, coords_px_xy: torch.Tensor) -> torch.Tensor:
        """Defocus of the specimen mid-plane at frame pixels `(N, 2)` xy, µm (particles add their height)."""
        gx, gy = self.defocus_gradient_um_per_px_xy
        c = torch.as_tensor(coords_px_xy, dtype=torch.float64).reshape(-1, 2)
        h, w = self.shape_yx
        return self.defocus_um + gx * (c[:, 0] - (w - 1) / 2) + gy * (c[:, 1] - (h - 1) / 2)

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        out = {
            k: getattr(self, k)
            for k in (
                "pixel_size_a",
                "exposure_per_frame_e_per_a2",
                "pre_exposure_e_per_a2",
                "voltage_kv",
                "cs_mm",
                "amplitude_contrast",
                "defocus_um",
                "defocus_delta_um",
                "astigmatism_angle_deg",
                "phase_shift_deg",
                "specimen_tilt_deg",
                "tilt_axis_deg",
                "seed",
            )
        }
        out["shape_yx"] = list(self.shape_yx)
        out["defocus_gradient_um_per_px_xy"] = list(self.defocus_gradient_um_per_px_xy)
        out["motion"] = self.motion.to_dict()
        out["particles"] = self.particles.to_dict()
        out["settings"] = self.settings
        return out

    @classmethod
    def from_dict(cls, d: dict) -> MovieTruth:
        """Inverse of :meth:`to_dict`."""
        kw = {
            k: v
            for k, v in d.items()
            if k not in ("motion", "particles", "shape_yx", "defocus_gradient_um_per_px_xy")
        }
        return cls(
            motion=MotionField.from_dict(d["motion"]),
            particles=ParticleTruth.from_dict(d["particles"]),
            shape_yx=tuple(d["shape_yx"]),
            defocus_gradient_um_per_px_xy=tuple(d["defocus_gradient_um_per_px_xy"]),
            **kw,
        )


@dataclass(frozen=True)
class SimulatedMovie:
    """A simulated movie with its truth.

    Attributes
    ----------
    frames : torch.Tensor
        `(F, H, W)` float32 electron counts (raw detector counts unless ``frames_gain_corrected``).
    gain : torch.Tensor
        `(H, W)` gain reference, mean 1: multiply raw frames by it (ones when ``gain_sd`` = 0).
    clean_image : torch.Tensor
        `(H, W)` noise-free, motion-free, undamaged image in units of the incident beam (mean ≈ 1),
        CTF-modulated: I = T·(1 − 2 φ⊛CTF). Particles are dark.
    phase_image_rad : torch.Tensor
        `(H, W)` the projected phase φ (no CTF), particles bright.
    artifact_mask, defect_mask : torch.Tensor
        `(H, W)` bool: contamination/carbon; hot pixels and dead columns.
    """

    frames: torch.Tensor
    gain: torch.Tensor
    clean_image: torch.Tensor
    phase_image_rad: torch.Tensor
    artifact_mask: torch.Tensor
    defect_mask: torch.Tensor
    pixel_size_a: float
    exposure_per_frame_e_per_a2: float
    truth: MovieTruth

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.frames.shape[0])

    def to_files(
        self, directory: str | Path, *, stem: str = "movie", formats: tuple[str, ...] = ("mrc", "tiff")
    ) -> dict:
        """Write movie (MRC/TIFF), gain, clean image, truth STAR + JSON (``sim.files.write_movie_files``)."""
        from cryowarp.sim.files import write_movie_files

        return write_movie_files(self, directory, stem=stem, formats=formats)


def _truth(
    s: MovieSimSettings | SpecimenSimSettings, motion: MotionField, specimen: Specimen, seed: int
) -> MovieTruth:
    p = specimen.placement
    return MovieTruth(
        motion=motion,
        particles=ParticleTruth(
            p.coords_px_xy, p.euler_deg, p.defocus_um, p.height_a, p.species, p.species_names, p.radius_a
        ),
        pixel_size_a=s.pixel_size_a,
        shape_yx=tuple(s.shape_yx),
        exposure_per_frame_e_per_a2=getattr(s, "exposure_per_frame_e_per_a2", 0.0),
        pre_exposure_e_per_a2=getattr(s, "pre_exposure_e_per_a2", 0.0),
        voltage_kv=s.voltage_kv,
        cs_mm=s.cs_mm,
        amplitude_contrast=s.amplitude_contrast,
        defocus_um=s.defocus_um,
        defocus_delta_um=s.defocus_delta_um,
        astigmatism_angle_deg=s.astigmatism_angle_deg,
        phase_shift_deg=s.phase_shift_deg,
        specimen_tilt_deg=s.specimen_tilt_deg,
        tilt_axis_deg=s.tilt_axis_deg,
        defocus_gradient_um_per_px_xy=defocus_gradient_um_per_px_xy(s),
        seed=seed,
        settings=s.model_dump(mode="json"),
    )


def make_gain(
    shape_yx: tuple[int, int], gain_sd: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Gain reference of mean 1: per-pixel scatter, column and row patterns (70/20/10 % of the variance)."""
    h, w = shape_yx
    if gain_sd == 0:
        return torch.ones(shape_yx, device=device)
    pix = torch.randn(shape_yx, generator=generator)
    col = torch.randn(1, w, generator=generator).expand(h, w)
    row = torch.randn(h, 1, generator=generator).expand(h, w)
    g = 1.0 + gain_sd * (math.sqrt(0.7) * pix + math.sqrt(0.2) * col + math.sqrt(0.1) * row)
    g = g.clamp(0.3, 3.0)
    return (g / g.mean()).to(device)


def make_defects(
    shape_yx, n_hot: int, n_dead_columns: int, generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of hot pixels (flat), dead columns, and the boolean defect mask."""
    h, w = shape_yx
    hot = torch.randperm(h * w, generator=generator)[:n_hot]
    dead = torch.randperm(w, generator=generator)[:n_dead_columns]
    mask = torch.zeros(h * w, dtype=torch.bool)
    mask[hot] = True
    mask = mask.reshape(h, w)
    mask[:, dead] = True
    return hot, dead, mask


def poisson(rate: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Poisson samples of ``rate`` (float32 counts), on the device of ``rate``."""
    return torch.poisson(rate, generator=generator)


def simulate_movie(
    settings: MovieSimSettings | None = None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    gain: torch.Tensor | None = None,
) -> SimulatedMovie:
    """Simulate a dose-fractionated movie of particles in ice with known motion, CTF and particles.

    Parameters
    ----------
    settings : MovieSimSettings
        Everything about the specimen, microscope, motion and detector (defaults: 1024², 20 frames).
    seed : int
        All randomness derives from it: the same seed gives the same movie on the same device.
    device : torch.device, optional
        Where to compute (default CPU). Random numbers are drawn on the CPU, so truth is device-independent.
    progress : callable, optional
        ``progress(done, total)`` after each frame.
    gain : torch.Tensor, optional
        `(H, W)` gain reference to use (e.g. one detector for a whole session) instead of drawing one.

    Returns
    -------
    movie : SimulatedMovie
        Frames, gain, clean image and the truth (see :mod:`cryowarp.sim`).
    """
    s = settings if settings is not None else MovieSimSettings()
    device = torch.device(device) if device is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(int(seed))
    h, w = s.shape_yx
    motion = generate_motion(s, generator)
    max_disp_a = float(motion.global_displacement_a_yx().abs().max()) + sum(
        math.hypot(*a) for a in motion.mode_amplitude_a_yx
    )
    margin = int(math.ceil(max_disp_a / s.pixel_size_a)) + 16
    specimen = build_specimen(s, margin_px=margin, generator=generator, device=device)
    canvas = specimen.canvas_shape_yx
    window = (slice(margin, margin + h), slice(margin, margin + w))

    contrast = torch.fft.irfft2(specimen.contrast_spectrum, s=canvas)
    transmission = (
        torch.fft.irfft2(specimen.transmission_spectrum, s=canvas)
        if specimen.transmission_spectrum is not None
        else None
    )
    clean = 1.0 - contrast[window]
    if transmission is not None:
        clean = clean * transmission[window]
    del contrast

    drawn_gain = make_gain(s.shape_yx, s.gain_sd, generator, device)
    if gain is None:
        gain = drawn_gain
    elif tuple(gain.shape) != tuple(s.shape_yx):
        raise ValueError(
            f"gain: expected shape {tuple(s.shape_yx)} (the frame size), found {tuple(gain.shape)}"
        )
    else:
        gain = gain.to(device=device, dtype=torch.float32)
    hot, dead, defect_mask = make_defects(s.shape_yx, s.n_hot_pixels, s.n_dead_columns, generator)
    sensitivity = 1.0 / gain
    counts_per_unit = s.exposure_per_frame_e_per_a2 * s.pixel_size_a**2

    freq_yx = fftfreq_grid_2d(canvas, device=device)
    freq_per_a = torch.linalg.vector_norm(freq_yx, dim=-1) / s.pixel_size_a
    critical = critical_exposure_e_per_a2(freq_per_a, s.voltage_kv)
    ky = torch.fft.fftfreq(canvas[0], device=device)[:, None]
    kx = torch.fft.rfftfreq(canvas[1], device=device)[None, :]
    global_px = motion.global_displacement_a_yx() / s.pixel_size_a
    has_local = len(motion.mode_phase_rad) > 0
    if has_local:
        # sampling grid of the frame window in the canvas (align_corners=False normalisation)
        base_y = (torch.arange(h, device=device, dtype=torch.float32) + margin + 0.5) * (
            2.0 / canvas[0]
        ) - 1.0
        base_x = (torch.arange(w, device=device, dtype=torch.float32) + margin + 0.5) * (
            2.0 / canvas[1]
        ) - 1.0
    # shot noise runs in a worker thread (torch.poisson is serial) while the next frame is rendered;
    # one generator used in frame order keeps the result deterministic
    noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    frame_generator = torch.Generator(device=device).manual_seed(noise_seed)
    frames = torch.empty((s.n_frames, h, w), dtype=torch.float32, device=device)
    uniform_gain = bool((gain == 1.0).all())
    rate_scale = counts_per_unit if uniform_gain else counts_per_unit * sensitivity
    hot_d, dead_d = hot.to(device), dead.to(device)

    def finish(f: int, frame: torch.Tensor) -> None:
        rate = frame.clamp_min_(0.0).mul_(rate_scale)
        counts = poisson(rate, frame_generator) if s.shot_noise else rate
        if s.n_hot_pixels:
            extra = poisson(torch.full((len(hot_d),), s.hot_pixel_counts, device=device), frame_generator)
            counts.view(-1)[hot_d] += extra
        if s.n_dead_columns:
            counts[:, dead_d] = 0.0
        frames[f] = counts * gain if s.frames_gain_corrected else counts

    spectrum = specimen.contrast_spectrum
    if s.radiation_damage:
        # N_f = pre + (f + ½)·e: the first frame's filter, then one more factor per frame
        spectrum = spectrum * torch.exp(
            -(s.pre_exposure_e_per_a2 + 0.5 * s.exposure_per_frame_e_per_a2) / (2.0 * critical)
        )
        per_frame_damage = torch.exp(-s.exposure_per_frame_e_per_a2 / (2.0 * critical))
    del critical
    work = torch.empty_like(spectrum)
    grid = torch.empty((1, h, w, 2), dtype=torch.float32, device=device) if has_local else None
    pending: list[Future] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        for f in range(s.n_frames):
            if f > 0 and s.radiation_damage:
                spectrum.mul_(per_frame_damage)  # our own copy (made above), safe to update in place
            dy, dx = float(global_px[f, 0]), float(global_px[f, 1])
            torch.mul(spectrum, torch.exp(-2j * math.pi * ky * dy), out=work)
            work.mul_(torch.exp(-2j * math.pi * kx * dx))
            intensity = torch.fft.irfft2(work, s=canvas).neg_().add_(1.0)
            if transmission is not None:
                torch.mul(specimen.transmission_spectrum, torch.exp(-2j * math.pi * ky * dy), out=work)
                work.mul_(torch.exp(-2j * math.pi * kx * dx))
                intensity.mul_(torch.fft.irfft2(work, s=canvas))
            if has_local:
                local_px = motion.local_field_px_yx(f, s.pixel_size_a, (h, w), device=device)  # (2, h, w)
                torch.sub(base_x[None, :], local_px[1], alpha=2.0 / canvas[1], out=grid[0, :, :, 0])
                torch.sub(base_y[:, None], local_px[0], alpha=2.0 / canvas[0], out=grid[0, :, :, 1])
                del local_px
                frame = torch.nn.functional.grid_sample(
                    intensity[None, None], grid, mode="bicubic", padding_mode="border", align_corners=False
                )[0, 0]
            else:
                frame = intensity[window].clone()
            del intensity
            while len(pending) >= 2:  # at most two frames in flight (memory)
                pending.pop(0).result()
            pending.append(pool.submit(finish, f, frame))
            del frame
            if progress is not None:
                progress(f + 1, s.n_frames)
        for future in pending:
            future.result()
    return SimulatedMovie(
        frames=frames,
        gain=gain,
        clean_image=clean.contiguous(),
        phase_image_rad=specimen.phase_rad,
        artifact_mask=specimen.artifact_mask,
        defect_mask=defect_mask.to(device),
        pixel_size_a=s.pixel_size_a,
        exposure_per_frame_e_per_a2=s.exposure_per_frame_e_per_a2,
        truth=_truth(s, motion, specimen, seed),
    )


__all__ = [
    "MovieSimSettings",
    "SpecimenSimSettings",
    "SimulatedMovie",
    "MovieTruth",
    "ParticleTruth",
    "simulate_movie",
    "plane_defocus_um",
]
