"""Correct the motion of one movie as Warp does: global + local spline motion, dose-weighted average.

Writes ``DIR/<stem>.mrc`` (dose-weighted average, float32 unless ``--float16``), ``DIR/<stem>_noDW.mrc``,
``DIR/<stem>_motion.json`` (the model and its statistics), ``DIR/<stem>_motion.png`` (tracks) and
``DIR/<stem>.star`` (RELION's per-movie motion STAR: ``data_general``, ``data_global_shift``,
``data_local_shift``; shifts in unbinned pixels with RELION's sign, i.e. −displacement / pixel size).

Example::

    cryowarp motion movie.tif --pixel-size 0.834 --exposure 1.0 --gain gain.mrc -o motion/
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer


def _parse_grid(text: str | None) -> tuple[int, int, int] | None:
    if text is None or text.lower() == "auto":
        return None
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise typer.BadParameter(
            f"--grid: expected XxYxZ with positive integers (e.g. 5x5x40) or 'auto', found {text!r}"
        )
    return int(parts[0]), int(parts[1]), int(parts[2])


def plot_motion(model, path: Path, *, title: str = "") -> Path:
    """Write a PNG of the motion: the global track (left) and the local tracks at the patch positions,
    magnified, over the field of view (right). Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    g = model.global_displacement_a_yx().detach().cpu().numpy()  # (f, 2)
    fig, (ax_g, ax_l) = plt.subplots(1, 2, figsize=(11, 5.2), dpi=110)
    frames = np.arange(model.n_frames)
    ax_g.plot(g[:, 1], g[:, 0], "-", color="0.7", lw=1, zorder=1)
    sc = ax_g.scatter(g[:, 1], g[:, 0], c=frames, cmap="viridis", s=18, zorder=2)
    ax_g.plot(g[0, 1], g[0, 0], "o", mfc="none", mec="red", ms=11, label="first frame")
    ax_g.set_xlabel("x displacement (Å)")
    ax_g.set_ylabel("y displacement (Å)")
    ax_g.set_aspect("equal", adjustable="datalim")
    ax_g.invert_yaxis()
    ax_g.legend(loc="best", fontsize=8)
    ax_g.set_title(f"global track · {model.mean_frame_movement_a:.2f} Å/frame in the first third")
    fig.colorbar(sc, ax=ax_g, label="frame", shrink=0.8)

    h, w = model.shape_yx
    tracks = model.patch_tracks_a_yx().detach().cpu() - torch.as_tensor(g)[None]
    tracks = (tracks - tracks.mean(1, keepdim=True)).numpy()  # local part, (p, f, 2)
    centres = model.patch_centers_px_yx.detach().cpu().numpy()
    peak = float(np.abs(tracks).max()) if tracks.size else 0.0
    spacing = (w / max(1, int(np.sqrt(len(centres))))) * 0.4
    scale = spacing / peak if peak > 1e-6 else 1.0
    for (cy, cx), tr in zip(centres, tracks, strict=True):
        ax_l.plot(cx + tr[:, 1] * scale, cy + tr[:, 0] * scale, "-", color="tab:blue", lw=1)
        ax_l.plot(cx + tr[-1, 1] * scale, cy + tr[-1, 0] * scale, ".", color="tab:red", ms=4)
    if model.local_values_a_yx.shape[-1] * model.local_values_a_yx.shape[-2] <= 1:
        note = "no local grid\n(field of view or exposure too small\nfor WarpTools' auto grid)"
        ax_l.text(w / 2, h / 2, note, ha="center", va="center", fontsize=10, color="0.3")
    ax_l.set_xlim(0, w)
    ax_l.set_ylim(h, 0)
    ax_l.set_aspect("equal")
    ax_l.set_xlabel("x (px)")
    ax_l.set_ylabel("y (px)")
    ax_l.set_title(
        f"local tracks ×{scale:.0f} px/Å, red = last frame · "
        f"max deviation {model.max_local_deviation_a:.2f} Å"
    )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def motion(
    movie: Path = typer.Argument(..., help="Movie (MRC, TIFF or EER).", exists=True, dir_okay=False),
    pixel_size_a: float = typer.Option(..., "--pixel-size", help="Pixel size of the movie, Å."),
    exposure_per_frame_e_per_a2: float = typer.Option(
        ..., "--exposure", help="Exposure per frame, e⁻/Å² (EER: per frame group, i.e. total dose / --eer-groups)."
    ),
    output_dir: Path = typer.Option(..., "-o", "--output", help="Output folder (created)."),
    gain: Path | None = typer.Option(
        None, "--gain", help="Gain reference (frames are multiplied by it).", exists=True, dir_okay=False
    ),
    gain_flip_x: bool = typer.Option(False, "--gain-flip-x"),
    gain_flip_y: bool = typer.Option(False, "--gain-flip-y"),
    gain_transpose: bool = typer.Option(False, "--gain-transpose"),
    defects: Path | None = typer.Option(
        None, "--defects", help="Defect map (non-zero = defective).", exists=True, dir_okay=False
    ),
    grid: str | None = typer.Option(
        None,
        "--grid",
        help="Local X×Y and global temporal nodes, e.g. 5x5x40; default: WarpTools' automatic sizing.",
    ),
    patch_size_px: int = typer.Option(768, "--patch-size", help="Patch size in movie pixels (Warp: 768)."),
    range_low_a: float = typer.Option(500.0, "--range-low", help="Lowest resolution used, Å."),
    range_high_a: float = typer.Option(10.0, "--range-high", help="Highest resolution used, Å."),
    bfactor_a2: float = typer.Option(-500.0, "--bfactor", help="B-factor weighting of the fit, Å²."),
    skip_first: int = typer.Option(
        0, "--skip-first", min=0, help="Frames left out of the average at the start."
    ),
    skip_last: int = typer.Option(0, "--skip-last", min=0, help="Frames left out of the average at the end."),
    halves: bool = typer.Option(False, "--halves", help="Also write odd/even half averages."),
    float16: bool = typer.Option(
        False,
        "--float16/--float32",
        help="Write float16 MRC (half the size, as Warp) instead of float32; RELION 3.1 cannot read float16.",
    ),
    voltage_kv: float = typer.Option(
        300.0, "--voltage", help="Acceleration voltage (for the STAR file), kV."
    ),
    eer_groups: int | None = typer.Option(
        None, "--eer-groups", help="EER: number of frame groups (default 40)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Fit Warp's motion model to MOVIE and write the aligned averages, model, plot and RELION STAR."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cryowarp.device import resolve_device
    from cryowarp.io.movies import read_movie
    from cryowarp.io.mrc import write_mrc
    from cryowarp.io.star import motion_to_star_tables, write_star
    from cryowarp.motion import MotionSettings, average_frames, fit_motion

    console = Console(stderr=True)
    settings = MotionSettings(
        grid_xyt=_parse_grid(grid),
        patch_size_px=patch_size_px,
        range_low_a=range_low_a,
        range_high_a=range_high_a,
        bfactor_a2=bfactor_a2,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = movie.stem
    dev = resolve_device(device)
    timings: dict[str, float] = {}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        t0 = time.perf_counter()
        task_read = bar.add_task("read", total=None)
        data = read_movie(
            movie,
            gain=gain,
            defects=defects,
            gain_flip_x=gain_flip_x,
            gain_flip_y=gain_flip_y,
            gain_transpose=gain_transpose,
            pixel_size_a=pixel_size_a,
            eer_n_groups=eer_groups,
            progress=lambda done, total: bar.update(task_read, completed=done, total=total),
        )
        frames = data.frames.to(dev)
        pixel = float(data.pixel_size_a or pixel_size_a)
        timings["read_s"] = time.perf_counter() - t0
        tasks: dict[str, int] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], completed=done, total=total)

        t0 = time.perf_counter()
        model = fit_motion(frames, pixel, exposure_per_frame_e_per_a2, settings, progress=progress)
        timings["fit_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        avg = average_frames(
            frames,
            model,
            pixel_size_a=pixel,
            exposure_per_frame_e_per_a2=exposure_per_frame_e_per_a2,
            dose_weighted=True,
            also_unweighted=True,
            skip_first=skip_first,
            skip_last=skip_last,
            halves=halves,
            progress=progress,
        )
        timings["average_s"] = time.perf_counter() - t0

    write_mrc(output_dir / f"{stem}.mrc", avg.average, pixel, float16=float16)
    write_mrc(output_dir / f"{stem}_noDW.mrc", avg.average_no_dw, pixel, float16=float16)
    if halves:
        write_mrc(output_dir / f"{stem}_odd.mrc", avg.average_odd, pixel, float16=float16)
        write_mrc(output_dir / f"{stem}_even.mrc", avg.average_even, pixel, float16=float16)
    record = {
        "movie": str(movie),
        "settings": settings.model_dump(mode="json"),
        "model": model.to_dict(),
        "average": avg.to_dict(),
        "timings": timings,
        "device": str(dev),
    }
    (output_dir / f"{stem}_motion.json").write_text(json.dumps(record, indent=1))
    plot_motion(model, output_dir / f"{stem}_motion.png", title=movie.name)

    n_f, h, w = frames.shape
    tracks = model.patch_tracks_a_yx().detach().cpu()  # (p, f, 2)
    centres_xy = model.patch_centers_px_yx.detach().cpu().flip(-1)
    tables = motion_to_star_tables(
        model.global_displacement_a_yx().detach().cpu(),
        pixel_size_a=pixel,
        movie_name=str(movie),
        image_size_xyz=(w, h, n_f),
        exposure_per_frame_e_per_a2=exposure_per_frame_e_per_a2,
        voltage_kv=voltage_kv,
        gain_name=str(gain) if gain else None,
        local_coords_px_xy=centres_xy.numpy(),
        local_displacement_a_yx=tracks.permute(1, 0, 2).numpy(),
    )
    write_star(output_dir / f"{stem}.star", tables)
    stats = model.stats()
    note = f" ({model.skipped_reason})" if model.skipped_reason else ""
    console.print(
        f"{movie.name}: {n_f} frames, mean frame movement {stats['mean_frame_movement_a']:.2f} Å, "
        f"max local deviation {stats['max_local_deviation_a']:.2f} Å, fit {timings['fit_s']:.1f} s, "
        f"average {timings['average_s']:.1f} s{note} → {output_dir}/"
    )


def register(app: typer.Typer) -> None:
    """Add ``cryowarp motion``."""
    app.command("motion", help=__doc__.split("\n\n")[0])(motion)
