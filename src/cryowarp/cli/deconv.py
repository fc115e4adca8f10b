"""Deconvolve a micrograph or a tomogram with Warp's Wiener-like CTF filter (warp-facts.md §5).

Example::

    cryowarp deconv average.mrc --defocus 1.8 -o average_deconv.mrc
    cryowarp deconv average.mrc --ctf micrographs_ctf.star -o average_deconv.mrc
    cryowarp deconv tomogram.mrc --pixel-size 10 --defocus 3.5 --highpass 300 -o tomogram_deconv.mrc
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

CTF_KEYS = (
    "defocus_um",
    "defocus_delta_um",
    "astigmatism_angle_deg",
    "phase_shift_deg",
    "voltage_kv",
    "cs_mm",
    "amplitude_contrast",
)


def load_ctf_parameters(path: Path, micrograph: Path | None = None) -> dict[str, float]:
    """CTF parameters (our names and units) from a RELION STAR file or a cryowarp CTF model JSON.

    In a STAR file, the row whose ``rlnMicrographName`` has the micrograph's file name (or stem) is
    used; a file with a single row is used as is. Optics values come from the row or from a
    ``data_optics`` block when present.
    """
    from cryowarp.io.star import read_star, star_row_to_ctf

    if not path.exists():
        raise typer.BadParameter(f"{path}: CTF file not found")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if "defocus_um" not in data:
            raise typer.BadParameter(
                f"{path}: expected a CTF model JSON with 'defocus_um', found keys {sorted(data)[:8]}"
            )
        out: dict[str, float] = {}
        for key in CTF_KEYS:
            value = data.get(key)
            if isinstance(value, list):  # a grid: take its mean (local values are not used here)
                flat = _flatten(value)
                value = sum(flat) / len(flat)
            if value is not None:
                out[key] = float(value)
        return out
    tables = read_star(path)
    rows = None
    optics: dict[str, Any] = {}
    for name, table in tables.items():
        if "rlnDefocusU" in table.columns:
            rows = table
        if name == "optics" and len(table):
            optics = table.iloc[0].to_dict()
    if rows is None or len(rows) == 0:
        raise typer.BadParameter(f"{path}: expected a table with rlnDefocusU, found blocks {list(tables)}")
    row = rows.iloc[0]
    if len(rows) > 1:
        if micrograph is None or "rlnMicrographName" not in rows.columns:
            raise typer.BadParameter(f"{path}: {len(rows)} CTF rows and no micrograph name to choose one")
        names = rows["rlnMicrographName"].astype(str).map(lambda s: Path(s).name)
        match = rows[(names == micrograph.name) | (names.map(lambda s: Path(s).stem) == micrograph.stem)]
        if len(match) == 0:
            raise typer.BadParameter(f"{path}: no rlnMicrographName row for {micrograph.name}")
        row = match.iloc[0]
    merged = {**optics, **row.to_dict()}
    return star_row_to_ctf(merged)


def _flatten(value: Any) -> list[float]:
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    return [float(value)]


def deconv(
    path: Path = typer.Argument(
        ..., help="Micrograph (2D) or tomogram (3D) MRC file.", exists=True, dir_okay=False
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output MRC file."),
    pixel_size_a: float | None = typer.Option(None, "--pixel-size", help="Å/px; default: from the header."),
    ctf: Path | None = typer.Option(
        None, "--ctf", help="RELION STAR row or cryowarp CTF JSON; overrides nothing given explicitly."
    ),
    defocus_um: float | None = typer.Option(None, "--defocus", help="Mean defocus, µm (+ = underfocus)."),
    defocus_delta_um: float | None = typer.Option(None, "--defocus-delta", help="Astigmatism U − V in µm."),
    astigmatism_angle_deg: float | None = typer.Option(
        None, "--astigmatism-angle", help="Angle of U, degrees."
    ),
    phase_shift_deg: float | None = typer.Option(None, "--phase-shift", help="Phase shift, degrees."),
    voltage_kv: float | None = typer.Option(None, "--voltage", help="kV (default 300)."),
    cs_mm: float | None = typer.Option(None, "--cs", help="Spherical aberration in mm (default 2.7)."),
    amplitude_contrast: float | None = typer.Option(None, "--amplitude-contrast", help="Default 0.07."),
    strength: float = typer.Option(1.0, help="Warp's deconvolution strength s (SNR 10^(3s))."),
    falloff: float = typer.Option(1.0, help="Warp's falloff f (SNR decays as exp(−200 f ν))."),
    highpass_a: float | None = typer.Option(
        None, "--highpass", help="High-pass in Å (default: 100 for micrographs, 300 for tomograms, as Warp)."
    ),
    highpass_convention: str | None = typer.Option(
        None,
        "--highpass-convention",
        help="warp_cpu | warp_gpu | stated (default: Warp's choice per product).",
    ),
    float16: bool = typer.Option(False, "--float16", help="Write mode 12 (half precision), as Warp does."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Deconvolve a micrograph or tomogram (Warp's filter, warp-facts.md §5)."""
    from cryowarp.deconv import deconvolve_2d, deconvolve_3d
    from cryowarp.device import resolve_device
    from cryowarp.io.mrc import read_mrc, write_mrc

    params: dict[str, float] = load_ctf_parameters(ctf, path) if ctf is not None else {}
    explicit = {
        "defocus_um": defocus_um,
        "defocus_delta_um": defocus_delta_um,
        "astigmatism_angle_deg": astigmatism_angle_deg,
        "phase_shift_deg": phase_shift_deg,
        "voltage_kv": voltage_kv,
        "cs_mm": cs_mm,
        "amplitude_contrast": amplitude_contrast,
    }
    params.update({k: v for k, v in explicit.items() if v is not None})
    if "defocus_um" not in params:
        raise typer.BadParameter("give --defocus (µm) or --ctf FILE")
    params = {k: v for k, v in params.items() if k in CTF_KEYS}
    data, header_pixel_a = read_mrc(path, as_tensor=True)
    pixel = pixel_size_a or header_pixel_a
    if not pixel:
        raise typer.BadParameter(f"{path}: the header holds no pixel size; give --pixel-size")
    dev = resolve_device(device)
    data = data.to(dev)
    kwargs: dict[str, Any] = {"strength": strength, "falloff": falloff}
    if highpass_a is not None:
        kwargs["highpass_a"] = highpass_a
    if highpass_convention is not None:
        kwargs["highpass_convention"] = highpass_convention
    if data.ndim == 2:
        out = deconvolve_2d(data, pixel, **params, **kwargs)
    else:
        params.pop("defocus_delta_um", None)
        params.pop("astigmatism_angle_deg", None)
        out = deconvolve_3d(data, pixel, **params, **kwargs)
    write_mrc(output, out.cpu(), pixel, float16=float16)
    typer.echo(
        f"{path.name} -> {output} ({'x'.join(map(str, out.shape))}, {pixel:.3f} Å/px, "
        f"defocus {params['defocus_um']:.3f} µm, strength {strength}, falloff {falloff})"
    )


def register(app: typer.Typer) -> None:
    """Add ``cryowarp deconv``."""
    app.command("deconv", help=__doc__)(deconv)
