"""Writing simulated data to disk: movies (MRC/TIFF), gain, clean image, truth as RELION STAR + JSON.

Files written by :func:`write_movie_files` for ``stem`` in ``directory``:

* ``<stem>.mrc`` (uint16 counts, MRC mode 6, a stack) and/or ``<stem>.tif`` (uint16, LZW, one page
  per frame); float32 instead when the frames are gain-corrected;
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
) -> dict[str, Path]:
    """Write a :class:`SimulatedMovie` (see the module docstring); returns the paths by role."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    unknown = set(formats) - {"mrc", "tiff"}
    if unknown or not formats:
        raise ValueError(f"movie formats: expected 'mrc' and/or 'tiff', found {sorted(formats)}")
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
    out["gain"] = write_mrc(directory / f"{stem}_gain.mrc", movie.gain, movie.pixel_size_a)
    if bool(movie.defect_mask.any()):
        out["defects"] = write_mrc(
            directory / f"{stem}_defects.mrc",
            movie.defect_mask.to(torch.uint8),
            movie.pixel_size_a,
            dtype="int8",
        )
    out["clean"] = write_mrc(directory / f"{stem}_clean.mrc", movie.clean_image, movie.pixel_size_a)
    movie_name = (out.get("movie_mrc") or out["movie_tiff"]).name
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
