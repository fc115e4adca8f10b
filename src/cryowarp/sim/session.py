"""A simulated collection session: movies appear in a folder over time, as from a microscope.

Layout written by :func:`simulate_session` in ``directory``::

    gain.mrc                       one gain reference for the whole session (one detector)
    movie_0000.tif, movie_0001.tif ...   each moved in complete (atomic rename from .incoming/)
    truth/movie_0000_truth.json, _motion.star, _particles.star, _clean.mrc
    session.json                   the settings, seeds and per-movie defocus (written first, then updated)

Each movie is written into ``directory/.incoming/`` and renamed into ``directory`` only when complete,
so a folder watcher never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cryowarp.io.mrc import write_mrc
from cryowarp.sim.files import write_json
from cryowarp.sim.movie import MovieSimSettings, SimulatedMovie, make_gain, simulate_movie


def session_movie_settings(
    settings: MovieSimSettings,
    index: int,
    *,
    seed: int,
    defocus_range_um: tuple[float, float],
    contamination_every: int = 0,
) -> MovieSimSettings:
    """Settings of movie ``index``: defocus drawn in ``defocus_range_um``, astigmatism angle at random.

    With ``contamination_every`` = n > 0, every n-th movie (index n−1, 2n−1, …) also gets 1–2 ice blobs
    of 250–450 Å radius (what BoxNet's artefact mask is for); the other draws do not change.
    """
    g = torch.Generator().manual_seed(int(seed) * 100_003 + index)
    u = torch.rand(2, generator=g, dtype=torch.float64).tolist()
    lo, hi = defocus_range_um
    update: dict[str, float | int] = {"defocus_um": lo + (hi - lo) * u[0], "astigmatism_angle_deg": 180.0 * u[1]}
    if contamination_every > 0 and index % contamination_every == contamination_every - 1:
        v = torch.rand(2, generator=g, dtype=torch.float64).tolist()
        update |= {"n_contamination_blobs": 1 + int(v[0] < 0.5), "contamination_radius_a": 250.0 + 200.0 * v[1]}
    return settings.model_copy(update=update)


def simulate_session(
    directory: str | Path,
    n_movies: int,
    settings: MovieSimSettings | None = None,
    *,
    seed: int = 0,
    interval_s: float = 0.0,
    defocus_range_um: tuple[float, float] = (0.8, 2.5),
    movie_format: str = "tiff",
    write_truth: bool = True,
    device: torch.device | str | None = None,
    progress: Callable[[int, int, Path], None] | None = None,
    contamination_every: int = 0,
) -> list[Path]:
    """Write ``n_movies`` simulated movies into ``directory``, one every ``interval_s`` seconds.

    Parameters
    ----------
    directory : str or Path
        Target folder (created).
    n_movies : int
        Number of movies.
    settings : MovieSimSettings
        Settings shared by all movies; each movie gets its own seed (``seed + index``) and defocus.
    seed : int
        Session seed.
    interval_s : float
        Minimum time between the appearance of two movies (the collection rate).
    defocus_range_um : tuple of float
        Defocus of each movie is drawn uniformly in this range, µm.
    movie_format : str
        ``"tiff"`` (uint16 LZW) or ``"mrc"``.
    write_truth : bool
        Write the truth of each movie under ``truth/``.
    progress : callable, optional
        ``progress(done, total, path)`` after each movie.
    contamination_every : int
        Every n-th movie gets ice contamination (see :func:`session_movie_settings`; 0 = none).

    Returns
    -------
    paths : list of Path
        The movies, in order of appearance.
    """
    if n_movies < 0:
        raise ValueError(f"n_movies: expected ≥ 0, found {n_movies}")
    if movie_format not in ("tiff", "mrc"):
        raise ValueError(f"movie_format: expected 'tiff' or 'mrc', found {movie_format!r}")
    settings = settings if settings is not None else MovieSimSettings()
    directory = Path(directory)
    incoming = directory / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    device = torch.device(device) if device is not None else torch.device("cpu")
    gain = make_gain(
        settings.shape_yx, settings.gain_sd, torch.Generator().manual_seed(int(seed) + 7), device
    )
    # written aside and renamed in, so a watcher of *.mrc never sees a temporary file here
    os.replace(write_mrc(incoming / "gain.mrc", gain, settings.pixel_size_a), directory / "gain.mrc")
    record = {
        "settings": settings.model_dump(mode="json"),
        "seed": seed,
        "defocus_range_um": list(defocus_range_um),
        "contamination_every": contamination_every,
        "movies": [],
    }
    write_json(directory / "session.json", record)
    suffix = ".tif" if movie_format == "tiff" else ".mrc"
    paths = []
    last = time.monotonic()
    for i in range(n_movies):
        stem = f"movie_{i:04d}"
        movie_settings = session_movie_settings(
            settings, i, seed=seed, defocus_range_um=defocus_range_um, contamination_every=contamination_every
        )
        movie: SimulatedMovie = simulate_movie(movie_settings, seed=seed + i, device=device, gain=gain)
        written = movie.to_files(incoming, stem=stem, formats=(movie_format,))
        if write_truth:
            truth_dir = directory / "truth"
            truth_dir.mkdir(exist_ok=True)
            for role in ("motion_star", "particles_star", "truth_json", "clean"):
                os.replace(written[role], truth_dir / written[role].name)
        wait = interval_s - (time.monotonic() - last)
        if wait > 0:
            time.sleep(wait)
        target = directory / f"{stem}{suffix}"
        os.replace(written["movie_tiff" if movie_format == "tiff" else "movie_mrc"], target)
        last = time.monotonic()
        paths.append(target)
        record["movies"].append(
            {
                "path": target.name,
                "seed": seed + i,
                "defocus_um": movie_settings.defocus_um,
                "astigmatism_angle_deg": movie_settings.astigmatism_angle_deg,
                "n_particles": int(len(movie.truth.particles.coords_px_xy)),
                "n_contamination_blobs": movie_settings.n_contamination_blobs,
            }
        )
        write_json(directory / "session.json", record)
        if progress is not None:
            progress(i + 1, n_movies, target)
    shutil.rmtree(incoming, ignore_errors=True)
    return paths


def read_session(directory: str | Path) -> dict:
    """The ``session.json`` record of a simulated session."""
    path = Path(directory) / "session.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a simulated session (expected session.json)")
    return json.loads(path.read_text())
