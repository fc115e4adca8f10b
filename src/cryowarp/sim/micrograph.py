"""Single micrographs for pickers and CTF: an aligned-average-like noisy image plus its truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field

from cryowarp.base.fourier import fftfreq_grid_2d
from cryowarp.base.optics import critical_exposure_e_per_a2
from cryowarp.sim._motion import MotionField
from cryowarp.sim._specimen import build_specimen
from cryowarp.sim.movie import MovieTruth, SpecimenSimSettings, _truth, poisson


class MicrographSimSettings(SpecimenSimSettings):
    """A motion-corrected micrograph: the specimen seen with ``total_exposure_e_per_a2``."""

    total_exposure_e_per_a2: float = Field(
        40.0, gt=0, description="exposure summed over the (virtual) frames"
    )
    n_frames: int = Field(40, ge=1, description="frames the exposure was fractionated into (for damage)")
    radiation_damage: bool = True


@dataclass(frozen=True)
class SimulatedMicrograph:
    """A simulated micrograph.

    Attributes
    ----------
    image : torch.Tensor
        `(H, W)` float32 electron counts summed over the exposure (Poisson), as a perfectly aligned,
        unweighted frame sum.
    clean_image : torch.Tensor
        `(H, W)` noise-free, undamaged intensity (mean ≈ 1), CTF-modulated; particles dark.
    expected_image : torch.Tensor
        `(H, W)` the noise-free mean of ``image`` (with the exposure-averaged damage), counts.
    phase_image_rad : torch.Tensor
        `(H, W)` projected phase (no CTF).
    artifact_mask : torch.Tensor
        `(H, W)` bool: contamination and carbon.
    """

    image: torch.Tensor
    clean_image: torch.Tensor
    expected_image: torch.Tensor
    phase_image_rad: torch.Tensor
    artifact_mask: torch.Tensor
    pixel_size_a: float
    total_exposure_e_per_a2: float
    truth: MovieTruth

    @property
    def coords_px_xy(self) -> torch.Tensor:
        """`(P, 2)` true particle centres (x, y) in pixels."""
        return self.truth.particles.coords_px_xy

    def to_files(self, directory: str | Path, *, stem: str = "micrograph") -> dict[str, Path]:
        """Write image, clean image, artifact mask (MRC), particles STAR and truth JSON."""
        from cryowarp.sim.files import write_micrograph_files

        return write_micrograph_files(self, directory, stem=stem)


def simulate_micrograph(
    settings: MicrographSimSettings | None = None,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> SimulatedMicrograph:
    """Simulate one micrograph (no motion) with particles, ice, artifacts and the true picks.

    Parameters
    ----------
    settings : MicrographSimSettings
        Specimen, microscope and exposure (defaults: 1024², 1 Å/px, 40 e/Å²).
    seed : int
        Seed of every random choice.
    device : torch.device, optional
        Where to compute (default CPU).

    Returns
    -------
    micrograph : SimulatedMicrograph
    """
    s = settings if settings is not None else MicrographSimSettings()
    device = torch.device(device) if device is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(int(seed))
    h, w = s.shape_yx
    margin = 16
    specimen = build_specimen(s, margin_px=margin, generator=generator, device=device)
    canvas = specimen.canvas_shape_yx
    window = (slice(margin, margin + h), slice(margin, margin + w))
    transmission = (
        torch.fft.irfft2(specimen.transmission_spectrum, s=canvas)[window]
        if specimen.transmission_spectrum is not None
        else torch.ones((h, w), device=device)
    )
    clean = (1.0 - torch.fft.irfft2(specimen.contrast_spectrum, s=canvas)[window]) * transmission
    spectrum = specimen.contrast_spectrum
    if s.radiation_damage:
        freq = torch.linalg.vector_norm(fftfreq_grid_2d(canvas, device=device), dim=-1) / s.pixel_size_a
        critical = critical_exposure_e_per_a2(freq, s.voltage_kv)
        per_frame = s.total_exposure_e_per_a2 / s.n_frames
        damage = torch.zeros_like(freq)
        for f in range(s.n_frames):
            damage += torch.exp(-(f + 0.5) * per_frame / (2.0 * critical))
        spectrum = spectrum * (damage / s.n_frames)
    expected = (1.0 - torch.fft.irfft2(spectrum, s=canvas)[window]) * transmission
    expected = expected.clamp_min(0.0) * (s.total_exposure_e_per_a2 * s.pixel_size_a**2)
    noise_generator = (
        generator if device.type == "cpu" else torch.Generator(device=device).manual_seed(int(seed) + 1)
    )
    image = poisson(expected, noise_generator)
    motion = MotionField(tuple(s.shape_yx), ((0.0, 0.0),), (), (), (), ())
    truth = _truth(s, motion, specimen, seed)
    return SimulatedMicrograph(
        image,
        clean.contiguous(),
        expected.contiguous(),
        specimen.phase_rad,
        specimen.artifact_mask,
        s.pixel_size_a,
        s.total_exposure_e_per_a2,
        truth,
    )
