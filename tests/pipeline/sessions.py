"""Tiny but real sessions on disk for pipeline tests: Poisson movies (MRC) + RELION coordinate files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cryowarp.io.mrc import write_mrc
from cryowarp.io.star import write_star
from cryowarp.pipeline.settings import ProcessingSettings

PIXEL_SIZE_A = 2.0
SHAPE_FYX = (6, 256, 256)


def write_movie(path: Path, seed: int, shape_fyx=SHAPE_FYX, n_particles: int = 5) -> np.ndarray:
    """A uint16 Poisson movie with dark Gaussian blobs; returns the blob centres (x, y) in px."""
    rng = np.random.default_rng(seed)
    f, h, w = shape_fyx
    xy = rng.uniform(40, min(h, w) - 40, size=(n_particles, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    rate = np.full((h, w), 20.0)
    for x, y in xy:
        rate -= 6.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0**2))
    frames = rng.poisson(rate, size=(f, h, w)).astype(np.uint16)
    write_mrc(path, frames, PIXEL_SIZE_A, stack=True, dtype="uint16")
    return xy


def write_session(folder: Path, n_movies: int, *, seed: int = 0) -> tuple[Path, Path]:
    """``folder/movies/m<i>.mrc`` and ``folder/coords/m<i>_picks.star``; returns both folders."""
    movies, coords = folder / "movies", folder / "coords"
    movies.mkdir(parents=True, exist_ok=True)
    coords.mkdir(parents=True, exist_ok=True)
    for i in range(n_movies):
        xy = write_movie(movies / f"m{i:02d}.mrc", seed + i)
        write_star(
            coords / f"m{i:02d}_picks.star",
            {"": pd.DataFrame({"rlnCoordinateX": xy[:, 0], "rlnCoordinateY": xy[:, 1]})},
        )
    return movies, coords


def fast_settings(coords: Path, **changes) -> ProcessingSettings:
    """Real processing (read, average, dose-weighted extraction) without motion/CTF fitting or BoxNet."""
    base = {
        "input": {"pixel_size_a": PIXEL_SIZE_A},
        "do_motion": False,
        "do_ctf": False,
        "picks_star_dir": str(coords),
        "export": {"box_size_px": 32, "particle_diameter_a": 40.0},
        "ctf": {"window": 128},
    }
    return ProcessingSettings().updated({**base, **changes})
