"""Fit the CTF of one movie or micrograph as Warp does: patch spectra, 1D search, 2D defocus grid.

Writes ``DIR/<stem>_ctf.json`` (the model, settings, timings), ``DIR/<stem>_ctf.star`` (RELION 3.1
micrographs STAR: rlnDefocusU/V/Angle, rlnCtfAstigmatism, rlnPhaseShift, rlnCtfMaxResolution,
rlnCtfFigureOfMerit), ``DIR/<stem>_ps.png`` (2D amplitude spectrum, simulated CTF on the right half)
and ``DIR/<stem>_ps1d.png`` (1D spectrum with fit, background and resolution mark). With
``--at COORDS.star`` the coordinates (rlnCoordinateX/Y, px of INPUT) are written back to
``DIR/<coords stem>_ctf.star`` with their local rlnDefocusU/V/Angle and rlnPhaseShift.

Example::

    cryowarp ctf average.mrc --pixel-size 0.834 --grid 5 5 1 -o ctf/
    cryowarp ctf movie.tif --pixel-size 0.834 --fit-phase --at picks.star -o ctf/
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import typer


def plot_power_spectrum_2d(fit, path: Path, *, title: str = "") -> Path:
    """PNG of the background-subtracted 2D amplitude spectrum (left) and the fitted |CTF| × envelope
    (right half), in the fftshifted layout shown as an image (x → right, y ↓). Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from cryowarp.base.optics import ctf_2d

    model = fit.model
    window = model.window
    experimental = fit.spectrum_2d.detach().cpu().numpy()
    simulated = (
        torch.fft.fftshift(
            ctf_2d(
                model.defocus_um,
                model.defocus_delta_um,
                model.astigmatism_angle_deg,
                voltage_kv=model.voltage_kv,
                cs_mm=model.cs_mm,
                amplitude_contrast=model.amplitude_contrast,
                pixel_size_a=model.pixel_size_a,
                shape_yx=(window, window),
                phase_shift_deg=model.phase_shift_deg,
                rfft=False,
            )
        )
        .abs()
        .numpy()
    )
    coords = np.arange(window) - window // 2
    radius = np.hypot(coords[:, None], coords[None, :])
    # both halves divided by the envelope, so outer rings show with the contrast of inner ones
    envelope = np.interp(radius, np.arange(window // 2), np.asarray(model.envelope_1d))
    experimental = experimental / np.maximum(envelope, 1e-12)
    low_bin = 2 * model.pixel_size_a / model.fit_range_a[0] * window / 2
    ring = (radius >= low_bin) & (radius < window // 2)

    def scaled(a: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(a[ring], [2, 98])
        out = np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1)
        out[radius < low_bin] = 0
        return out

    shown = scaled(experimental)
    right = coords[None, :].repeat(window, 0) > 0
    shown[right] = scaled(simulated)[right]
    # show up to a little beyond the fit range: further out the rings are finer than the pixels
    high_bin = min(
        window // 2, int(math.ceil(1.15 * 2 * model.pixel_size_a / model.fit_range_a[1] * window / 2))
    )
    crop = slice(window // 2 - high_bin, window // 2 + high_bin)
    shown = shown[crop, crop]
    freq_max = high_bin / (window * model.pixel_size_a)
    fig, ax = plt.subplots(figsize=(6.4, 6.4), dpi=110)
    ax.imshow(shown, cmap="gray", extent=(-freq_max, freq_max, freq_max, -freq_max), interpolation="nearest")
    ax.axvline(0, color="tab:orange", lw=0.8)
    ax.set_xlabel("kx (1/Å)")
    ax.set_ylabel("ky (1/Å)")
    ax.set_title(
        (title + "\n" if title else "")
        + f"measured | fitted  ·  U {model.defocus_u_um:.3f} µm, V {model.defocus_v_um:.3f} µm, "
        f"{model.astigmatism_angle_deg:.1f}°",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_spectrum_1d(model, path: Path, *, title: str = "") -> Path:
    """PNG of the astigmatism-corrected 1D spectrum: raw + background (top), background-subtracted with
    the fitted |CTF| × envelope, fit quality and the resolution estimate (bottom). Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    freq = model.frequencies_1d_per_a().numpy()
    spectrum = np.asarray(model.spectrum_1d)
    background = np.asarray(model.background_1d)
    simulated = np.asarray(model.simulated_1d)
    quality = np.asarray(model.quality_1d, dtype=float)
    lo, hi = 1 / model.fit_range_a[0], 1 / model.fit_range_a[1]
    shown = (freq >= lo * 0.7) & (freq <= 1 / (2 * model.pixel_size_a))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 6.4), dpi=110, sharex=True, gridspec_kw={"height_ratios": [1, 1.4]}
    )
    top.plot(freq[shown], (spectrum + background)[shown], color="0.3", lw=0.9, label="spectrum (corrected)")
    top.plot(freq[shown], background[shown], color="tab:red", lw=1.2, label="background")
    top.set_ylabel("amplitude")
    top.legend(fontsize=8, loc="upper right")
    scale = np.nanmax(np.abs(spectrum[(freq >= lo) & (freq <= hi)])) or 1.0
    bottom.plot(freq[shown], spectrum[shown] / scale, color="0.2", lw=0.9, label="spectrum − background")
    bottom.plot(
        freq[shown],
        simulated[shown] / (np.nanmax(simulated[shown]) or 1.0) * 0.9,
        color="tab:blue",
        lw=0.9,
        alpha=0.8,
        label="fit |CTF| × envelope",
    )
    bottom.plot(freq[shown], quality[shown], color="tab:green", lw=1.2, label="fit quality")
    bottom.axhline(0.3, color="tab:green", ls=":", lw=0.8)
    for ax in (top, bottom):
        ax.axvspan(lo, hi, color="tab:orange", alpha=0.07)
        ax.axvline(1 / model.resolution_a, color="tab:purple", ls="--", lw=1.0)
    bottom.text(
        1 / model.resolution_a,
        1.02,
        f" {model.resolution_a:.1f} Å",
        color="tab:purple",
        fontsize=8,
        va="bottom",
    )
    bottom.set_ylim(-1.1, 1.15)
    bottom.set_xlabel("spatial frequency (1/Å)  ·  shaded: fit range")
    bottom.legend(fontsize=8, loc="lower left")
    phase = f", phase {model.phase_shift_deg:.0f}°" if model.phase_shift_deg else ""
    top.set_title(
        (title + "  ·  " if title else "")
        + f"defocus {model.defocus_um:.3f} µm, astig {model.defocus_delta_um * 1e4:.0f} Å at "
        f"{model.astigmatism_angle_deg:.1f}°{phase}, fit to {model.resolution_a:.1f} Å",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def local_ctf_rows(model, coords_px_xy) -> list[dict]:
    """RELION CTF columns at each coordinate: local defocus ± ΔD/2, the global angle and phase."""
    from cryowarp.io.star import ctf_to_star_row

    local = model.local_defocus_um(coords_px_xy)
    return [
        ctf_to_star_row(
            {
                "defocus_um": float(d),
                "defocus_delta_um": model.defocus_delta_um,
                "astigmatism_angle_deg": model.astigmatism_angle_deg,
                "phase_shift_deg": model.phase_shift_deg,
            }
        )
        for d in local.tolist()
    ]


def _read_input(path: Path, pixel_size_a: float | None):
    """Frames `(f, h, w)` or an image `(h, w)` and the pixel size (option, else the file's header)."""
    from cryowarp.io.movies import read_movie

    movie = read_movie(path, pixel_size_a=pixel_size_a)
    pixel = pixel_size_a or movie.pixel_size_a
    if not pixel:
        raise typer.BadParameter(
            f"{path}: the header holds no pixel size; pass --pixel-size", param_hint="--pixel-size"
        )
    frames = movie.frames
    return (frames[0] if frames.shape[0] == 1 else frames), float(pixel), movie.header


def ctf(
    input_path: Path = typer.Argument(
        ..., metavar="INPUT", help="Movie or micrograph (MRC, TIFF, EER).", exists=True, dir_okay=False
    ),
    output_dir: Path = typer.Option(..., "-o", "--output", help="Output folder (created)."),
    pixel_size_a: float | None = typer.Option(
        None, "--pixel-size", help="Pixel size, Å (default: the header's)."
    ),
    voltage_kv: float = typer.Option(300.0, "--voltage", help="Acceleration voltage, kV."),
    cs_mm: float = typer.Option(2.7, "--cs", help="Spherical aberration, mm."),
    amplitude_contrast: float = typer.Option(
        0.07, "--amplitude-contrast", help="Amplitude contrast, fraction."
    ),
    fit_phase: bool = typer.Option(False, "--fit-phase", help="Also fit a phase-plate shift."),
    grid: tuple[int, int, int] = typer.Option((5, 5, 1), "--grid", help="Defocus grid nodes X Y T."),
    window: int = typer.Option(512, "--window", help="Spectrum size, px (patches are twice that)."),
    range_low_a: float = typer.Option(30.0, "--range-low", help="Low-resolution end of the fit, Å."),
    range_high_a: float = typer.Option(4.0, "--range-high", help="High-resolution end of the fit, Å."),
    defocus_min_um: float = typer.Option(0.5, "--defocus-min", help="Search range start, µm."),
    defocus_max_um: float = typer.Option(5.0, "--defocus-max", help="Search range end, µm."),
    use_movie_sum: bool = typer.Option(
        False, "--use-sum", help="Movies: spectra of the frame sum, not per frame."
    ),
    frames_per_spectrum: int = typer.Option(
        4, "--frames-per-spectrum", help="Movies: frames summed before each spectrum (1 = Warp, per frame)."
    ),
    at: Path | None = typer.Option(
        None, "--at", help="STAR with rlnCoordinateX/Y: write local CTF per row.", exists=True, dir_okay=False
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """Fit Warp's CTF model to INPUT and write the model, RELION STAR and spectrum plots."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from cryowarp.ctf import CTFSettings, fit_ctf_detailed
    from cryowarp.device import resolve_device
    from cryowarp.io.star import micrographs_star_tables, read_star, write_star

    console = Console(stderr=True)
    try:
        settings = CTFSettings(
            voltage_kv=voltage_kv,
            cs_mm=cs_mm,
            amplitude_contrast=amplitude_contrast,
            fit_phase=fit_phase,
            grid_xyt=tuple(grid),
            window=window,
            range_min_a=range_low_a,
            range_max_a=range_high_a,
            defocus_min_um=defocus_min_um,
            defocus_max_um=defocus_max_um,
            use_movie_sum=use_movie_sum,
            frames_per_spectrum=frames_per_spectrum,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = input_path.stem
    dev = resolve_device(device)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data, pixel, header = _read_input(input_path, pixel_size_a)
    timings["read_s"] = time.perf_counter() - t0
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("CTF", total=1.0)

        def progress(message: str, fraction: float) -> None:
            bar.update(task, completed=fraction, description=f"CTF: {message}")

        t0 = time.perf_counter()
        try:
            fit = fit_ctf_detailed(data.to(dev), pixel, settings, progress=progress)
        except ValueError as exc:
            raise typer.BadParameter(f"{input_path}: {exc}", param_hint="INPUT") from exc
        timings["fit_s"] = time.perf_counter() - t0
    model = fit.model

    fei = header.get("fei") or {}
    nominal = {
        k: fei[k] for k in ("defocus_um", "applied_defocus_um", "voltage_kv", "exposure_e_per_a2") if k in fei
    }
    record = {
        "input": str(input_path),
        "pixel_size_a": pixel,
        "n_frames": int(data.shape[0]) if data.ndim == 3 else 1,
        "settings": settings.model_dump(mode="json"),
        "model": model.to_dict(),
        "timings": timings,
        "device": str(dev),
        "header": nominal,
    }
    (output_dir / f"{stem}_ctf.json").write_text(json.dumps(record, indent=1))
    tables = micrographs_star_tables(
        [str(input_path)],
        pixel_size_a=pixel,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        ctf=[model],
        extra_columns={"rlnCtfFigureOfMerit": [model.figure_of_merit]},
    )
    write_star(output_dir / f"{stem}_ctf.star", tables)
    plot_power_spectrum_2d(fit, output_dir / f"{stem}_ps.png", title=input_path.name)
    plot_spectrum_1d(model, output_dir / f"{stem}_ps1d.png", title=input_path.name)

    if at is not None:
        import torch

        coords_tables = read_star(at)
        name = next(
            (k for k, t in coords_tables.items() if {"rlnCoordinateX", "rlnCoordinateY"} <= set(t.columns)),
            None,
        )
        if name is None:
            raise typer.BadParameter(
                f"{at}: expected a table with rlnCoordinateX and rlnCoordinateY, found "
                f"blocks {list(coords_tables)}",
                param_hint="--at",
            )
        table = coords_tables[name].copy()
        coords = torch.tensor(
            table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(dtype="float64"), dtype=torch.float32
        )
        rows = local_ctf_rows(model, coords)
        for label in ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnPhaseShift"):
            table[label] = [r[label] for r in rows]
        coords_tables[name] = table
        write_star(output_dir / f"{at.stem}_ctf.star", coords_tables)

    plane = model.plane
    console.print(
        f"{input_path.name}: defocus {model.defocus_um:.3f} µm "
        f"(U {model.defocus_u_um:.3f}, V {model.defocus_v_um:.3f}), "
        f"astigmatism {model.defocus_delta_um * 1e4:.0f} Å at {model.astigmatism_angle_deg:.1f}°"
        + (f", phase {model.phase_shift_deg:.1f}°" if fit_phase else "")
        + f", resolution {model.resolution_a:.1f} Å, FOM {model.figure_of_merit:.3f}, "
        f"plane {plane.inclination_deg:.1f}° "
        f"about {plane.axis_deg:.0f}°, fit {timings['fit_s']:.1f} s"
        + (f" (EPU header defocus {nominal['defocus_um']:.3f} µm)" if "defocus_um" in nominal else "")
        + f" → {output_dir}/"
    )


def register(app: typer.Typer) -> None:
    """Add ``cryowarp ctf``."""
    app.command("ctf", help=__doc__.split("\n\n")[0])(ctf)
