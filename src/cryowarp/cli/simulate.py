"""Simulate cryo-EM data with exact ground truth: movies, micrographs, whole sessions, tilt series.

Every simulator setting is an option (``--shape-yx 4096 4096``, ``--particle-models 5a1a
--particle-models globule:300``, ``--particle-models none``, ``--no-radiation-damage`` ...); the
defaults are those of the
settings classes in ``cryowarp.sim``. Besides the data and the truth (STAR + JSON), each command writes
PNG previews: the clean image, the frame sum, its power spectrum and the true motion tracks.

Examples::

    cryowarp simulate movie -o sim/ --shape-yx 4096 4096 --n-frames 40 --seed 1
    cryowarp simulate micrograph -o picks/ --protein-kinds ring --protein-kinds rod --carbon-edge
    cryowarp simulate session -o session/ --n-movies 10 --interval-s 30 --shape-yx 2048 2048
    cryowarp simulate tilt-series -o ts/ --tilt-min-deg -60 --tilt-max-deg 60 --tilt-step-deg 3
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel

app = typer.Typer(
    help="Simulate movies, micrographs, sessions and tilt series with exact ground truth.",
    no_args_is_help=True,
)


def _option_annotation(annotation: Any) -> Any:
    """The typer-friendly annotation of a settings field (variable tuples become lists)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return list[args[0]]
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        return typing.Optional[inner]  # noqa: UP045  (typer needs Optional here)
    return annotation


def _settings_parameters(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    params = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        annotation = _option_annotation(field.annotation)
        default = field.default
        if isinstance(default, tuple) and typing.get_origin(annotation) is list:
            default = list(default)
        help_text = field.description or ""
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=annotation,
                default=typer.Option(default, help=help_text, rich_help_panel="Simulation"),
            )
        )
    return params


def _settings_from_kwargs(model: type[BaseModel], kwargs: dict) -> BaseModel:
    values = {}
    for name in model.model_fields:
        if name in kwargs:
            v = kwargs.pop(name)
            if isinstance(v, list):
                v = () if [str(x).lower() for x in v] == ["none"] else tuple(v)  # "--particle-models none"
            values[name] = v
    try:
        return model(**values)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err


def _with_settings(model: type[BaseModel], base: inspect.Signature, skip: tuple[str, ...] = ()):
    """Decorator: give a command the options of ``model`` in addition to its own."""

    def wrap(func):
        params = list(base.parameters.values()) + _settings_parameters(model, skip)
        func.__signature__ = base.replace(parameters=params)
        return func

    return wrap


def _common_signature(extra: list[inspect.Parameter] | None = None) -> inspect.Signature:
    params = [
        inspect.Parameter(
            "output",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Path,
            default=typer.Option(Path("sim"), "--output", "-o", help="output folder"),
        ),
        inspect.Parameter(
            "seed",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=int,
            default=typer.Option(0, help="random seed (same seed, same data)"),
        ),
        inspect.Parameter(
            "device",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=str,
            default=typer.Option("auto", help="cpu, cuda, cuda:1 or auto"),
        ),
        inspect.Parameter(
            "plots",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=bool,
            default=typer.Option(True, help="write PNG previews"),
        ),
    ]
    return inspect.Signature(params + (extra or []))


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def plot_image_and_spectrum(
    image, path: Path, *, title: str = "", coords_px_xy=None, pixel_size_a: float = 1.0, artifact_mask=None
) -> Path:
    """PNG: the image (binned for display, true particle centres as circles) and its power spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    img = image.detach().float().cpu()
    h, w = img.shape
    factor = max(1, max(h, w) // 1024)
    shown = (
        torch.nn.functional.avg_pool2d(img[None, None], factor)[0, 0].numpy() if factor > 1 else img.numpy()
    )
    crop = min(h, w, 1024)
    tile = img[(h - crop) // 2 : (h + crop) // 2, (w - crop) // 2 : (w + crop) // 2]
    ps = torch.fft.fftshift(torch.fft.fft2(tile - tile.mean()).abs() ** 2).numpy()
    ps = np.log(ps + ps.mean() * 1e-3)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 6), dpi=100)
    lo, hi = np.percentile(shown, [1, 99])
    a.imshow(shown, cmap="gray", vmin=lo, vmax=hi, extent=(0, w, h, 0))
    if coords_px_xy is not None and len(coords_px_xy):
        c = np.asarray(coords_px_xy)
        a.scatter(c[:, 0], c[:, 1], s=60, facecolors="none", edgecolors="tab:red", linewidths=0.8)
    if artifact_mask is not None and bool(artifact_mask.any()):
        a.contour(
            np.asarray(artifact_mask.cpu(), dtype=float), levels=[0.5], colors="tab:orange", linewidths=0.8
        )
    a.set_title(title or "image")
    lo, hi = np.percentile(ps, [5, 99.5])
    nyq = 0.5 / pixel_size_a
    b.imshow(ps, cmap="gray", vmin=lo, vmax=hi, extent=(-nyq, nyq, nyq, -nyq))
    b.set_xlabel("kx (1/Å)")
    b.set_ylabel("ky (1/Å)")
    b.set_title(f"power spectrum (central {crop}² px)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_true_motion(truth, path: Path) -> Path:
    """PNG: the true global track and local tracks (×10) on a 5×5 grid over the field."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    g = truth.global_displacement_a_yx.numpy()
    h, w = truth.shape_yx
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 5), dpi=100)
    sc = a.scatter(g[:, 1], g[:, 0], c=np.arange(len(g)), cmap="viridis", s=15)
    a.plot(g[:, 1], g[:, 0], "-", color="0.6", lw=1)
    a.set_aspect("equal", adjustable="datalim")
    a.invert_yaxis()
    a.set_xlabel("x displacement (Å)")
    a.set_ylabel("y displacement (Å)")
    a.set_title("true global track")
    fig.colorbar(sc, ax=a, label="frame", shrink=0.8)
    ys, xs = np.linspace(0.1 * h, 0.9 * h, 5), np.linspace(0.1 * w, 0.9 * w, 5)
    scale = (
        0.08
        * min(h, w)
        / max(1e-6, max(float(np.abs(np.array(truth.motion.mode_amplitude_a_yx)).sum()), 1e-6))
    )
    for y in ys:
        for x in xs:
            pts = torch.tensor([[y, x]], dtype=torch.float64)
            tr = torch.stack(
                [truth.motion.local_displacement_a_yx(pts, f)[0] for f in range(truth.n_frames)]
            ).numpy()
            b.plot(x + scale * tr[:, 1], y + scale * tr[:, 0], "-", color="tab:blue", lw=1)
            b.plot(x + scale * tr[-1, 1], y + scale * tr[-1, 0], ".", color="tab:red", ms=4)
    b.set_xlim(0, w)
    b.set_ylim(h, 0)
    b.set_aspect("equal")
    b.set_title(f"true local deformation (×{scale:.0f} px per Å)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _movie_command():
    from cryowarp.sim.movie import MovieSimSettings

    @_with_settings(
        MovieSimSettings,
        _common_signature(
            [
                inspect.Parameter(
                    "stem",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=str,
                    default=typer.Option("movie", help="file name stem"),
                ),
                inspect.Parameter(
                    "formats",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=list[str],
                    default=typer.Option(["mrc", "tiff"], help="movie formats: mrc, tiff and/or eer"),
                ),
            ]
        ),
    )
    def movie(**kwargs) -> None:
        """Simulate one dose-fractionated movie (frames, gain, clean image, truth STAR + JSON, previews)."""
        from cryowarp.device import resolve_device
        from cryowarp.sim.movie import simulate_movie

        settings = _settings_from_kwargs(MovieSimSettings, kwargs)
        out: Path = kwargs["output"]
        with _progress() as bar:
            task = bar.add_task("frames", total=settings.n_frames)
            result = simulate_movie(
                settings,
                seed=kwargs["seed"],
                device=resolve_device(kwargs["device"]),
                progress=lambda done, total: bar.update(task, completed=done),
            )
        paths = result.to_files(out, stem=kwargs["stem"], formats=tuple(kwargs["formats"]))
        if kwargs["plots"]:
            paths["preview"] = plot_image_and_spectrum(
                result.frames.sum(0) * result.gain,
                out / f"{kwargs['stem']}_sum.png",
                title="frame sum (gain-corrected)",
                coords_px_xy=result.truth.particles.coords_px_xy,
                pixel_size_a=settings.pixel_size_a,
                artifact_mask=result.artifact_mask,
            )
            paths["clean_preview"] = plot_image_and_spectrum(
                result.clean_image,
                out / f"{kwargs['stem']}_clean.png",
                title="clean image (no noise, no motion)",
                coords_px_xy=result.truth.particles.coords_px_xy,
                pixel_size_a=settings.pixel_size_a,
            )
            paths["motion_preview"] = plot_true_motion(result.truth, out / f"{kwargs['stem']}_motion.png")
        n = len(result.truth.particles.coords_px_xy)
        typer.echo(
            f"{settings.n_frames} frames of {settings.shape_yx[0]}×{settings.shape_yx[1]}, {n} particles"
        )
        for role, p in paths.items():
            typer.echo(f"  {role:15s} {p}")

    return movie


def _micrograph_command():
    from cryowarp.sim.micrograph import MicrographSimSettings

    @_with_settings(
        MicrographSimSettings,
        _common_signature(
            [
                inspect.Parameter(
                    "stem",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=str,
                    default=typer.Option("micrograph", help="file name stem"),
                ),
            ]
        ),
    )
    def micrograph(**kwargs) -> None:
        """Simulate one motion-corrected micrograph with true particle centres and an artifact mask."""
        from cryowarp.device import resolve_device
        from cryowarp.sim.micrograph import simulate_micrograph

        settings = _settings_from_kwargs(MicrographSimSettings, kwargs)
        out: Path = kwargs["output"]
        result = simulate_micrograph(settings, seed=kwargs["seed"], device=resolve_device(kwargs["device"]))
        paths = result.to_files(out, stem=kwargs["stem"])
        if kwargs["plots"]:
            paths["preview"] = plot_image_and_spectrum(
                result.image,
                out / f"{kwargs['stem']}.png",
                title="micrograph",
                coords_px_xy=result.coords_px_xy,
                pixel_size_a=settings.pixel_size_a,
                artifact_mask=result.artifact_mask,
            )
        typer.echo(
            f"{settings.shape_yx[0]}×{settings.shape_yx[1]} micrograph, "
            f"{len(result.coords_px_xy)} particles, "
            f"{100 * float(result.artifact_mask.float().mean()):.1f} % masked"
        )
        for role, p in paths.items():
            typer.echo(f"  {role:15s} {p}")

    return micrograph


def _session_command():
    from cryowarp.sim.movie import MovieSimSettings

    @_with_settings(
        MovieSimSettings,
        _common_signature(
            [
                inspect.Parameter(
                    "n_movies",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=int,
                    default=typer.Option(5, help="number of movies"),
                ),
                inspect.Parameter(
                    "interval_s",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=float,
                    default=typer.Option(0.0, help="seconds between movies (collection rate)"),
                ),
                inspect.Parameter(
                    "defocus_min_um",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=float,
                    default=typer.Option(0.8, help="lowest defocus of the session, µm"),
                ),
                inspect.Parameter(
                    "defocus_max_um",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=float,
                    default=typer.Option(2.5, help="highest defocus of the session, µm"),
                ),
                inspect.Parameter(
                    "movie_format",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=str,
                    default=typer.Option("tiff", help="tiff or mrc"),
                ),
            ]
        ),
        skip=("defocus_um",),
    )
    def session(**kwargs) -> None:
        """Write movies into a folder over time (atomic renames), like a microscope during collection."""
        from cryowarp.device import resolve_device
        from cryowarp.sim.session import simulate_session

        settings = _settings_from_kwargs(MovieSimSettings, kwargs)
        out: Path = kwargs["output"]
        with _progress() as bar:
            task = bar.add_task("movies", total=kwargs["n_movies"])
            paths = simulate_session(
                out,
                kwargs["n_movies"],
                settings,
                seed=kwargs["seed"],
                interval_s=kwargs["interval_s"],
                defocus_range_um=(kwargs["defocus_min_um"], kwargs["defocus_max_um"]),
                movie_format=kwargs["movie_format"],
                device=resolve_device(kwargs["device"]),
                progress=lambda done, total, path: bar.update(task, completed=done),
            )
        typer.echo(f"{len(paths)} movies in {out} (gain.mrc, truth/, session.json)")

    return session


def _tilt_series_command():
    from cryowarp.sim.tilt_series import TiltSeriesSimSettings

    @_with_settings(
        TiltSeriesSimSettings,
        _common_signature(
            [
                inspect.Parameter(
                    "stem",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=str,
                    default=typer.Option("tilt_series", help="file name stem"),
                ),
            ]
        ),
    )
    def tilt_series(**kwargs) -> None:
        """Simulate a dose-symmetric tilt series (stack, .tlt, .mdoc, true volume and particles)."""
        from cryowarp.device import resolve_device
        from cryowarp.sim.tilt_series import simulate_tilt_series

        settings = _settings_from_kwargs(TiltSeriesSimSettings, kwargs)
        out: Path = kwargs["output"]
        with _progress() as bar:
            task = bar.add_task("tilts", total=len(settings.tilt_angles_deg()))
            result = simulate_tilt_series(
                settings,
                seed=kwargs["seed"],
                device=resolve_device(kwargs["device"]),
                progress=lambda done, total: bar.update(task, completed=done),
            )
        paths = result.to_files(out, stem=kwargs["stem"])
        if kwargs["plots"]:
            zero = int(result.tilt_angles_deg.abs().argmin())
            paths["preview"] = plot_image_and_spectrum(
                result.images[zero],
                out / f"{kwargs['stem']}_0deg.png",
                title="0° tilt",
                pixel_size_a=settings.pixel_size_a,
            )
        typer.echo(f"{len(result.tilt_angles_deg)} tilts, {len(result.truth.particles_xyz_a)} particles")
        for role, p in paths.items():
            typer.echo(f"  {role:15s} {p}")

    return tilt_series


def register(main_app: typer.Typer) -> None:
    """Add ``cryowarp simulate movie|micrograph|session|tilt-series``."""
    app.command("movie")(_movie_command())
    app.command("micrograph")(_micrograph_command())
    app.command("session")(_session_command())
    try:
        app.command("tilt-series")(_tilt_series_command())
    except ImportError:  # tilt-series simulator not available in this build
        pass
    main_app.add_typer(app, name="simulate")
