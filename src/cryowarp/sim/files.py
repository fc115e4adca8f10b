"""Writing simulated data to disk: movies (MRC/TIFF), gain, clean image, truth as RELION STAR + JSON.

Files written by :func:`write_movie_files` for ``stem`` in ``directory``:

* ``<stem>.mrc`` (uint16 counts, MRC mode 6, a stack) and/or ``<stem>.tif`` (uint16, LZW, one page
  per frame); float32 instead when the frames are gain-corrected; and/or ``<stem>.eer`` (each frame
  spread over ``eer_raw_per_frame`` raw EER frames, :class:`EerRawFrames`);
* ``<stem>_gain.mrc`` (float32, mean 1; multiply raw frames by it), ``<stem>_defects.mrc`` (uint8, 1 =
  defect) when there are defects, ``<stem>_clean.mrc`` (noise-free reference, float32);
* ``<stem>_motion.star``: RELION motion-correction STAR (``data_general``, ``data_global_shift`` with
  ``rlnMicrographShiftX/Y`` = −global displacement / pixel size, the shift that aligns each frame);
* ``<stem>_particles.star``: RELION 3.1 (``data_optics`` + ``data_particles``) with true coordinates,
  angles and per-particle defocus (Å);
* ``<stem>_truth.json``: :meth:`MovieTruth.to_dict` (everything, including the local deformation).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from cryowarp.base.units import ANGSTROM_PER_UM
from cryowarp.io.mrc import atomic_path, write_mrc
from cryowarp.io.star import write_star

if TYPE_CHECKING:
    from cryowarp.sim.movie import MovieTruth, SimulatedMovie


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data, indent=1))
    return path


def write_tiff_stack(path: str | Path, frames: np.ndarray, pixel_size_a: float) -> Path:
    """Multi-page TIFF, LZW-compressed; pixel size as resolution (pixels per cm) and in the description."""
    import tifffile

    path = Path(path)
    with atomic_path(path, suffix=".tif") as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=frames.nbytes > 3_900_000_000) as tif:
            for frame in frames:
                tif.write(
                    frame,
                    compression="lzw",
                    resolution=(1e8 / pixel_size_a, 1e8 / pixel_size_a),
                    resolutionunit="CENTIMETER",
                    description=f"pixel_size_a={pixel_size_a}",
                    metadata=None,
                    contiguous=False,
                )
    return path


def motion_star_tables(
    truth: MovieTruth, movie_name: str, gain_name: str = ""
) -> dict[str, pd.DataFrame | dict]:
    """RELION motion STAR (the format relion_run_motioncorr writes per micrograph), global shifts only."""
    shifts_px_xy = (-truth.global_displacement_a_yx / truth.pixel_size_a).numpy()[:, ::-1]
    h, w = truth.shape_yx
    general = {
        "rlnImageSizeX": int(w),
        "rlnImageSizeY": int(h),
        "rlnImageSizeZ": int(truth.n_frames),
        "rlnMicrographMovieName": movie_name,
        "rlnMicrographGainName": gain_name,
        "rlnMicrographBinning": 1.0,
        "rlnMicrographOriginalPixelSize": float(truth.pixel_size_a),
        "rlnMicrographDoseRate": float(truth.exposure_per_frame_e_per_a2),
        "rlnMicrographPreExposure": float(truth.pre_exposure_e_per_a2),
        "rlnVoltage": float(truth.voltage_kv),
        "rlnMicrographStartFrame": 1,
        "rlnMotionModelVersion": 0,
    }
    shifts = pd.DataFrame(
        {
            "rlnMicrographFrameNumber": np.arange(1, truth.n_frames + 1),
            "rlnMicrographShiftX": shifts_px_xy[:, 0],
            "rlnMicrographShiftY": shifts_px_xy[:, 1],
        }
    )
    return {"general": general, "global_shift": shifts}


def particle_star_tables(truth: MovieTruth, micrograph_name: str) -> dict[str, pd.DataFrame]:
    """RELION 3.1 particle coordinates with the true angles and the defocus at each particle."""
    p = truth.particles
    d_a = p.defocus_um.numpy() * ANGSTROM_PER_UM
    half_delta_a = 0.5 * truth.defocus_delta_um * ANGSTROM_PER_UM
    optics = pd.DataFrame(
        {
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnOpticsGroup": [1],
            "rlnMicrographPixelSize": [truth.pixel_size_a],
            "rlnVoltage": [truth.voltage_kv],
            "rlnSphericalAberration": [truth.cs_mm],
            "rlnAmplitudeContrast": [truth.amplitude_contrast],
        }
    )
    particles = pd.DataFrame(
        {
            "rlnMicrographName": [micrograph_name] * len(d_a),
            "rlnCoordinateX": p.coords_px_xy[:, 0].numpy(),
            "rlnCoordinateY": p.coords_px_xy[:, 1].numpy(),
            "rlnAngleRot": p.euler_deg[:, 0].numpy(),
            "rlnAngleTilt": p.euler_deg[:, 1].numpy(),
            "rlnAnglePsi": p.euler_deg[:, 2].numpy(),
            "rlnDefocusU": d_a + half_delta_a,
            "rlnDefocusV": d_a - half_delta_a,
            "rlnDefocusAngle": np.full(len(d_a), truth.astigmatism_angle_deg),
            "rlnPhaseShift": np.full(len(d_a), truth.phase_shift_deg),
            "rlnClassNumber": p.species.numpy() + 1,
            "rlnOpticsGroup": np.ones(len(d_a), dtype=int),
        }
    )
    return {"optics": optics, "particles": particles}


def write_movie_files(
    movie: SimulatedMovie,
    directory: str | Path,
    *,
    stem: str = "movie",
    formats: tuple[str, ...] = ("mrc", "tiff"),
    eer_raw_per_frame: int = 20,
) -> dict[str, Path]:
    """Write a :class:`SimulatedMovie` (see the module docstring); returns the paths by role."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    unknown = set(formats) - {"mrc", "tiff", "eer"}
    if unknown or not formats:
        raise ValueError(f"movie formats: expected 'mrc', 'tiff' and/or 'eer', found {sorted(formats)}")
    frames = movie.frames.detach().cpu().numpy()
    is_counts = bool(np.all(frames == np.rint(frames))) and frames.min() >= 0 and frames.max() < 65536
    out: dict[str, Path] = {}
    if "mrc" in formats:
        out["movie_mrc"] = write_mrc(
            directory / f"{stem}.mrc",
            frames,
            movie.pixel_size_a,
            stack=True,
            dtype="uint16" if is_counts else "float32",
        )
    if "tiff" in formats:
        out["movie_tiff"] = write_tiff_stack(
            directory / f"{stem}.tif",
            frames.astype(np.uint16 if is_counts else np.float32),
            movie.pixel_size_a,
        )
    if "eer" in formats:
        out["movie_eer"] = write_movie_eer(
            movie, directory / f"{stem}.eer", n_raw_per_frame=eer_raw_per_frame, seed=movie.truth.seed
        )
    out["gain"] = write_mrc(directory / f"{stem}_gain.mrc", movie.gain, movie.pixel_size_a)
    if bool(movie.defect_mask.any()):
        out["defects"] = write_mrc(
            directory / f"{stem}_defects.mrc",
            movie.defect_mask.to(torch.uint8),
            movie.pixel_size_a,
            dtype="int8",
        )
    out["clean"] = write_mrc(directory / f"{stem}_clean.mrc", movie.clean_image, movie.pixel_size_a)
    movie_name = (out.get("movie_mrc") or out.get("movie_tiff") or out["movie_eer"]).name
    out["motion_star"] = write_star(
        directory / f"{stem}_motion.star", motion_star_tables(movie.truth, movie_name, out["gain"].name)
    )
    out["particles_star"] = write_star(
        directory / f"{stem}_particles.star", particle_star_tables(movie.truth, f"{stem}.mrc")
    )
    out["truth_json"] = write_json(directory / f"{stem}_truth.json", movie.truth.to_dict())
    return out


def write_micrograph_files(micrograph, directory: str | Path, *, stem: str = "micrograph") -> dict[str, Path]:
    """Write a :class:`SimulatedMicrograph`: image, clean image, artifact mask, particles STAR, truth JSON."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {
        "image": write_mrc(directory / f"{stem}.mrc", micrograph.image, micrograph.pixel_size_a),
        "clean": write_mrc(directory / f"{stem}_clean.mrc", micrograph.clean_image, micrograph.pixel_size_a),
        "artifact_mask": write_mrc(
            directory / f"{stem}_mask.mrc",
            micrograph.artifact_mask.to(torch.uint8),
            micrograph.pixel_size_a,
            dtype="int8",
        ),
    }
    out["particles_star"] = write_star(
        directory / f"{stem}_particles.star", particle_star_tables(micrograph.truth, f"{stem}.mrc")
    )
    out["truth_json"] = write_json(directory / f"{stem}_truth.json", micrograph.truth.to_dict())
    return out


def write_tilt_series_files(series, directory: str | Path, *, stem: str = "tilt_series") -> dict[str, Path]:
    """Write a :class:`SimulatedTiltSeries`.

    ``<stem>.mrc`` (angle-sorted stack, float32 counts), ``<stem>.tlt`` (one angle per line, same order),
    ``<stem>.mdoc`` (SerialEM-style, acquisition order in DateTime/PriorRecordDose), ``<stem>_clean.mrc``,
    ``<stem>_volume.mrc`` (true potential, V, voxel = binning × pixel size), ``<stem>_particles.star``
    (RELION 4/5 tomography style: rlnCoordinateX/Y/Z in voxels of the true volume, from its corner; angles),
    ``<stem>_truth.json``.
    """
    from cryowarp.sim.tilt_series import mdoc_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    truth = series.truth
    settings = truth.settings
    out = {
        "stack": write_mrc(directory / f"{stem}.mrc", series.images, truth.pixel_size_a, stack=True),
        "clean": write_mrc(
            directory / f"{stem}_clean.mrc", series.clean_images, truth.pixel_size_a, stack=True
        ),
        "volume": write_mrc(directory / f"{stem}_volume.mrc", series.volume_v, truth.volume_pixel_size_a),
    }
    tlt = directory / f"{stem}.tlt"
    with atomic_path(tlt, suffix=".tlt") as tmp:
        tmp.write_text("".join(f"{float(a):.2f}\n" for a in truth.tilt_angles_deg))
    out["tlt"] = tlt
    mdoc = directory / f"{stem}.mrc.mdoc"
    with atomic_path(mdoc, suffix=".mdoc") as tmp:
        tmp.write_text(
            mdoc_text(
                truth,
                out["stack"].name,
                voltage_kv=settings.get("voltage_kv", 300.0),
                exposure_per_tilt_e_per_a2=settings.get("exposure_per_tilt_e_per_a2", 0.0),
            )
        )
    out["mdoc"] = mdoc
    d, h, w = truth.volume_shape_zyx
    voxel = truth.volume_pixel_size_a
    xyz = truth.particles_xyz_a.numpy() / voxel + np.array([(w - 1) / 2, (h - 1) / 2, (d - 1) / 2])
    particles = pd.DataFrame(
        {
            "rlnTomoName": [stem] * len(xyz),
            "rlnCoordinateX": xyz[:, 0],
            "rlnCoordinateY": xyz[:, 1],
            "rlnCoordinateZ": xyz[:, 2],
            "rlnAngleRot": truth.euler_deg[:, 0].numpy(),
            "rlnAngleTilt": truth.euler_deg[:, 1].numpy(),
            "rlnAnglePsi": truth.euler_deg[:, 2].numpy(),
            "rlnClassNumber": truth.species.numpy() + 1,
        }
    )
    out["particles_star"] = write_star(directory / f"{stem}_particles.star", {"particles": particles})
    out["truth_json"] = write_json(directory / f"{stem}_truth.json", truth.to_dict())
    return out


class EerRawFrames:
    """The counts of each movie frame spread over ``n_raw_per_frame`` EER raw frames (0/1 per pixel).

    A pixel with c counts in frame f gets its events in the raw frames (r + j·s) mod n, j < c, with
    r and s (s coprime to n) drawn per pixel from ``seed`` and f: distinct raw frames, uniformly placed.
    Summing each group of n raw frames gives the movie frames back exactly (counts above n are clipped
    to n; ``n_clipped`` says how many events that lost). Raw frames are made on demand (a ``Sequence``
    for :func:`cryowarp.io.eer.write_eer`), so a long movie never sits in memory twice.
    """

    def __init__(self, frames: torch.Tensor, n_raw_per_frame: int = 20, *, seed: int = 0):
        if n_raw_per_frame < 1:
            raise ValueError(f"n_raw_per_frame: expected ≥ 1, found {n_raw_per_frame}")
        counts = frames.detach().cpu()
        if bool((counts != counts.round()).any()) or float(counts.min()) < 0:
            raise ValueError("EER needs integer electron counts ≥ 0 (raw frames, not gain-corrected)")
        self.frames = counts.to(torch.int64)
        self.n = int(n_raw_per_frame)
        self.seed = int(seed)
        self.n_clipped = int((self.frames - self.n).clamp_min(0).sum())
        self._cached: tuple[int, torch.Tensor, torch.Tensor] | None = None
        coprime = [s for s in range(1, self.n + 1) if math.gcd(s, self.n) == 1] if self.n > 1 else [1]
        self._strides = torch.tensor(coprime, dtype=torch.int64)
        self._inverses = torch.tensor(
            [pow(s, -1, self.n) if self.n > 1 else 0 for s in coprime], dtype=torch.int64
        )

    def __len__(self) -> int:
        return self.frames.shape[0] * self.n

    def _offsets(self, f: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cached is None or self._cached[0] != f:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + f)
            shape = self.frames.shape[1:]
            r = torch.randint(0, self.n, shape, generator=g)
            k = torch.randint(0, len(self._strides), shape, generator=g)
            self._cached = (f, r, self._inverses[k])
        return self._cached[1], self._cached[2]

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"raw frame {i} out of range 0..{len(self) - 1}")
        f, raw = divmod(int(i), self.n)
        r, s_inv = self._offsets(f)
        j = ((raw - r) * s_inv) % self.n  # the j with (r + j·s) ≡ raw (mod n)
        return (j < self.frames[f]).to(torch.uint8).numpy()


def write_movie_eer(
    movie: SimulatedMovie, path: str | Path, *, n_raw_per_frame: int = 20, seed: int = 0
) -> Path:
    """Write the movie's raw counts as EER (each frame = ``n_raw_per_frame`` raw frames), with pixel size."""
    from cryowarp.io.eer import write_eer

    raw = EerRawFrames(movie.frames, n_raw_per_frame, seed=seed)
    metadata = {
        "sensorPixelSize.width": movie.pixel_size_a * 1e-10,
        "sensorPixelSize.height": movie.pixel_size_a * 1e-10,
        "cryowarpFramesPerGroup": n_raw_per_frame,
    }
    return write_eer(path, raw, metadata=metadata)
