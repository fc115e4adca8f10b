"""Inspect files: ``cryowarp info`` summarises a movie, MRC, STAR, cryoSPARC .cs or .mdoc header;
``cryowarp gain-check`` tells whether a gain reference is oriented wrongly and which flip fixes it.

Example::

    cryowarp info movie_0001.tif
    cryowarp info particles.star --json
    cryowarp gain-check movie_0001.tif --gain gain.mrc --png gain_check.png
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def describe_file(path: Path) -> dict[str, Any]:
    """A plain-JSON summary of any file ``cryowarp`` reads (header only for images)."""
    from cryowarp.io.errors import format_bytes

    suffix = path.suffix.lower()
    out: dict[str, Any] = {
        "path": str(path),
        "bytes": path.stat().st_size,
        "size": format_bytes(path.stat().st_size),
    }
    if suffix == ".star":
        from cryowarp.io.star import read_star, star_flavour

        tables = read_star(path)
        out["kind"] = "star"
        out["flavour"] = star_flavour(path)
        out["blocks"] = {
            name: {
                "rows": len(df),
                "columns": list(map(str, df.columns)),
                "key_value": bool(df.attrs.get("star_pairs", False)),
            }
            for name, df in tables.items()
        }
        return out
    if suffix == ".cs":
        from cryowarp.io.star import read_cryosparc_cs

        tables = read_cryosparc_cs(path)
        out["kind"] = "cryosparc"
        out["n_particles"] = len(tables.particles)
        out["optics"] = tables.optics.to_dict(orient="records")
        out["columns"] = list(tables.particles.columns)
        return out
    if suffix == ".mdoc":
        from cryowarp.io.mdoc import mdoc_tilt_series, read_mdoc

        mdoc = read_mdoc(path)
        out["kind"] = "mdoc"
        out["global"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in mdoc.global_data.items()}
        out["n_sections"] = len(mdoc.sections)
        if "TiltAngle" in mdoc.sections.columns:
            ts = mdoc_tilt_series(mdoc)
            out["tilt_range_deg"] = [min(ts.tilt_deg), max(ts.tilt_deg)]
            out["tilt_axis_deg"] = ts.tilt_axis_deg
            out["pixel_size_a"] = ts.pixel_size_a
        return out
    from cryowarp.io.movies import movie_info

    info = movie_info(path)
    f, h, w = info.shape_fyx
    out.update(
        kind=info.format,
        n_frames=f,
        width=w,
        height=h,
        dtype=info.dtype,
        pixel_size_a=info.pixel_size_a,
        float32_size=format_bytes(info.float32_bytes),
        header=info.header,
    )
    return out


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{summary['path']} ({summary['size']})", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    kind = summary["kind"]
    table.add_row("kind", kind)
    if kind == "star":
        table.add_row("flavour", summary["flavour"])
        for name, block in summary["blocks"].items():
            cols = ", ".join(block["columns"][:8]) + (" ..." if len(block["columns"]) > 8 else "")
            layout = "key-value" if block["key_value"] else f"{block['rows']} rows"
            table.add_row(f"data_{name}", f"{layout}: {cols}")
    elif kind == "cryosparc":
        table.add_row("particles", str(summary["n_particles"]))
        for row in summary["optics"]:
            table.add_row(
                f"optics group {row['rlnOpticsGroup']}",
                ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "rlnOpticsGroup"),
            )
    elif kind == "mdoc":
        for key in ("n_sections", "tilt_range_deg", "tilt_axis_deg", "pixel_size_a"):
            if key in summary:
                table.add_row(key, _fmt(summary[key]))
        for key, value in summary["global"].items():
            table.add_row(key, _fmt(value))
    else:
        table.add_row(
            "frames × height × width", f"{summary['n_frames']} × {summary['height']} × {summary['width']}"
        )
        table.add_row("dtype", summary["dtype"])
        table.add_row(
            "pixel size", "unknown" if summary["pixel_size_a"] is None else f"{summary['pixel_size_a']:.5g} Å"
        )
        table.add_row("as float32", summary["float32_size"])
        header = dict(summary["header"])
        if "is_stack" in header:  # the header's ispg convention (0 = image or image stack), not "nz > 1"
            n = summary["n_frames"]
            layout = ("single image" if n == 1 else f"stack of {n} images") if header.pop("is_stack") else (
                f"volume of {n} section{'s' if n != 1 else ''}"
            )
            table.add_row("MRC layout", layout)
        fei = header.pop("fei", None)
        meta = header.pop("eer_metadata", None)
        for key, value in header.items():
            table.add_row(key, _fmt(value))
        for key, value in (fei or {}).items():
            table.add_row(f"EPU {key}", _fmt(value))
        for key, value in (meta or {}).items():
            table.add_row(f"EER {key}", _fmt(value))
    console.print(table)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


def info_command(
    path: Path = typer.Argument(
        ..., help="Movie (MRC/TIFF/EER), MRC image, STAR, cryoSPARC .cs or .mdoc file."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise a file's header: size, frames, dtype, pixel size, EPU/EER metadata, STAR blocks."""
    from cryowarp.io.errors import CryowarpIOError

    if not path.is_file():
        _fail(FileNotFoundError(f"{path}: no such file"))
    try:
        summary = describe_file(path)
    except (CryowarpIOError, FileNotFoundError) as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)


def _plot_gain_check(path: Path, raw_sum: Any, gain: Any, report: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from cryowarp.io.gain import GainTransform, _highpass

    names = sorted(report.correlations, key=lambda n: abs(report.correlations[n]))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    axes[0].barh(
        names,
        [abs(report.correlations[n]) for n in names],
        color=[
            "tab:green" if n == report.best.name else ("tab:red" if n == "identity" else "tab:gray")
            for n in names
        ],
    )
    axes[0].axvline(5 * report.noise_level, color="k", ls="--", lw=1, label="5 × noise level")
    axes[0].set_xlabel("|correlation| of corrected sum with gain pattern")
    axes[0].legend(loc="lower right")
    raw = torch.as_tensor(raw_sum, dtype=torch.float32)
    crop = (slice(0, min(256, raw.shape[0])), slice(0, min(256, raw.shape[1])))
    for ax, transform, title in (
        (axes[1], GainTransform(), "gain as given"),
        (axes[2], report.best, f"with {report.best.name}"),
    ):
        g = transform.apply(gain.gain)
        corrected = raw / g if gain.convention == "divide" else raw * g
        hp = _highpass(corrected)[crop].numpy()
        lim = 3 * hp.std()
        ax.imshow(hp, cmap="gray", vmin=-lim, vmax=lim)
        ax.set_title(f"corrected sum, high-passed ({title})")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def gain_check_command(
    movie: Path = typer.Argument(..., help="A raw (not gain-corrected) movie: MRC, TIFF or EER."),
    gain: Path = typer.Option(..., "--gain", help="Gain reference (MRC or TIFF)."),
    gain_flip_x: bool = typer.Option(
        False, "--gain-flip-x", help="Flip the gain in x first (as you would process)."
    ),
    gain_flip_y: bool = typer.Option(False, "--gain-flip-y", help="Flip the gain in y."),
    gain_transpose: bool = typer.Option(False, "--gain-transpose", help="Transpose the gain (after flips)."),
    max_frames: int = typer.Option(0, "--max-frames", help="Sum at most this many frames (0 = all)."),
    png: Path | None = typer.Option(
        None, "--png", help="Write a PNG of the correlations and corrected sums."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    fail_if_wrong: bool = typer.Option(
        False, "--fail-if-wrong", help="Exit with code 1 if the orientation looks wrong."
    ),
) -> None:
    """Check a gain reference's orientation against a movie; name the flip/transpose that fixes it."""
    from rich.progress import Progress

    from cryowarp.io.errors import CryowarpIOError
    from cryowarp.io.gain import detect_gain_orientation, load_gain
    from cryowarp.io.movies import movie_info, sum_movie_frames

    try:
        info = movie_info(movie)
        convention = "divide" if info.format == "eer" else "multiply"
        reference = load_gain(
            gain, flip_x=gain_flip_x, flip_y=gain_flip_y, transpose=gain_transpose, convention=convention
        )
        frames = slice(0, max_frames) if max_frames > 0 else None
        with Progress(transient=True, disable=as_json) as progress:
            task = progress.add_task(f"summing {movie.name}", total=None)
            raw_sum, n = sum_movie_frames(
                movie,
                frames=frames,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        report = detect_gain_orientation(raw_sum.float(), reference)
    except (CryowarpIOError, FileNotFoundError) as exc:
        _fail(exc)
        return
    if png is not None:
        _plot_gain_check(png, raw_sum, reference, report)
    if as_json:
        typer.echo(
            json.dumps(
                {"movie": str(movie), "gain": str(gain), "n_frames_summed": n, **report.to_dict()}, indent=2
            )
        )
    else:
        typer.echo(f"{movie.name}: summed {n} frames; " + report.summary())
        if png is not None:
            typer.echo(f"plot: {png}")
    if fail_if_wrong and report.looks_wrong:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``info`` and ``gain-check`` to the ``cryowarp`` app."""
    app.command("info")(info_command)
    app.command("gain-check")(gain_check_command)
