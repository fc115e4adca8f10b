"""Template matching of a 3-D reference: `cryowarp match2d` (micrographs), `cryowarp match3d` (tomograms).

Every local maximum above a low floor is stored (JSON) with its orientation, so the STAR file can be
re-cut at another threshold without recomputing (``--threshold``). The score and orientation-index
maps are written as MRC, and a PNG shows the score map with the picks.

Examples::

    cryowarp match2d average.mrc --template emd_1234.map --ctf micrographs_ctf.star --angular-step 10 \\
        --matching-pixel-size 4 -o matches/
    cryowarp match2d average.mrc --template 5a1a.cif --pixel-size 1.0 --defocus 1.8 --angular-step 15 -o m/
    cryowarp match3d tomo.mrc --template 5a1a.cif --tilt-angles -60:60:3 --defocus 3.5 --angular-step 15 -o m/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cryowarp.cli.deconv import load_ctf_parameters


def map_from_atomic_model(path: Path, pixel_size_a: float, *, box_px: int | None = None):
    """3-D Coulomb potential of an atomic model file (.cif/.pdb), see :func:`map_from_atoms`."""
    from cryowarp.sim._atoms import read_atomic_model

    return map_from_atoms(read_atomic_model(path), pixel_size_a, box_px=box_px)


def map_from_atoms(cloud, pixel_size_a: float, *, box_px: int | None = None):
    """3-D Coulomb potential (V, relative to ice) of an ``AtomCloud`` on a cubic grid, centre at box // 2.

    Uses the simulator's per-element kernels (``cryowarp.sim``): atoms are splatted trilinearly on a
    grid, and each element's splat is convolved (in Fourier space) with its scattering kernel divided
    by the trilinear response.
    """
    import numpy as np
    import torch

    from cryowarp.sim._potential import atom_kernel_v_a3

    if box_px is None:
        box_px = int(np.ceil(2 * (cloud.radius_a + 10.0) / pixel_size_a / 2)) * 2
    coords = cloud.coords_a_xyz.to(torch.float64) / pixel_size_a + box_px // 2
    symbols, channel = np.unique(np.asarray(cloud.elements), return_inverse=True)
    channel = torch.from_numpy(channel.astype(np.int64))
    grid = torch.zeros(len(symbols), box_px, box_px, box_px, dtype=torch.float32)
    flat = grid.view(-1)
    base = torch.floor(coords).long()
    frac = coords - base
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                idx = base + torch.tensor([dx, dy, dz])
                wgt = (
                    (frac[:, 0] if dx else 1 - frac[:, 0])
                    * (frac[:, 1] if dy else 1 - frac[:, 1])
                    * (frac[:, 2] if dz else 1 - frac[:, 2])
                )
                ok = ((idx >= 0) & (idx < box_px)).all(1)
                lin = ((channel * box_px + idx[:, 2]) * box_px + idx[:, 1]) * box_px + idx[:, 0]
                flat.index_add_(0, lin[ok], wgt[ok].to(torch.float32))
    kz = torch.fft.fftfreq(box_px)[:, None, None]
    ky = torch.fft.fftfreq(box_px)[None, :, None]
    kx = torch.fft.rfftfreq(box_px)[None, None, :]
    freq_per_a = torch.sqrt(kz**2 + ky**2 + kx**2) / pixel_size_a
    response = (torch.sinc(kz) * torch.sinc(ky) * torch.sinc(kx)) ** 2
    spectrum = torch.zeros(box_px, box_px, box_px // 2 + 1, dtype=torch.complex64)
    for i, symbol in enumerate(symbols):
        spectrum += torch.fft.rfftn(grid[i]) * (atom_kernel_v_a3(str(symbol), freq_per_a) / response)
    return torch.fft.irfftn(spectrum, s=(box_px,) * 3) / pixel_size_a**3


def load_template(path: Path, pixel_size_a: float):
    """(volume, voxel size Å) from an MRC map or an atomic model simulated at ``pixel_size_a``."""
    from cryowarp.io.mrc import read_mrc

    if path.suffix.lower() in (".cif", ".pdb", ".mmcif", ".ent") or path.name.endswith(".cif.gz"):
        return map_from_atomic_model(path, pixel_size_a), pixel_size_a
    volume, voxel_a = read_mrc(path, as_tensor=True)
    if volume.ndim != 3:
        raise typer.BadParameter(f"{path}: expected a 3-D map, found shape {tuple(volume.shape)}")
    if not voxel_a:
        raise typer.BadParameter(f"{path}: the map header holds no voxel size")
    n = max(volume.shape)
    if len(set(volume.shape)) != 1:  # pad non-cubic maps to a cube
        import torch.nn.functional as F

        d, h, w = volume.shape
        volume = F.pad(volume, (0, n - w, 0, n - h, 0, n - d))
    return volume, float(voxel_a)


def local_defocus_from_ctf_json(path: Path, shape_yx: tuple[int, int]):
    """``f(coords_px_xy) -> defocus µm`` from the defocus grid of a cryowarp CTF model JSON, or None.

    The grid (``defocus_grid_um``, nested ``[t][y][x]``, a natural-cubic :class:`CubicGrid` as in
    ``CTFModel.local_defocus_um``) covers the fitted image (``image_shape_yx``); positions of a
    micrograph of another size (e.g. binned) are scaled to it. Time nodes are averaged. Returns None
    for a STAR file or a JSON without a grid.
    """
    import torch

    from cryowarp.base.grids import CubicGrid

    if path.suffix.lower() != ".json":
        return None
    data = json.loads(path.read_text())
    grid_values = data.get("defocus_grid_um")
    if not isinstance(grid_values, list):
        return None
    values = torch.tensor(grid_values, dtype=torch.float32)
    while values.ndim < 3:
        values = values[None]
    if values.ndim != 3:
        raise typer.BadParameter(f"{path}: defocus_grid_um must be nested [t][y][x], found {values.ndim} levels")
    grid = CubicGrid(tuple(values.shape), 1, values=values[None])
    fit_h, fit_w = (int(v) for v in data.get("image_shape_yx", shape_yx))
    h, w = shape_yx
    scale = torch.tensor([(fit_w - 1) / max(w - 1, 1), (fit_h - 1) / max(h - 1, 1)], dtype=torch.float64)
    norm = torch.tensor([max(fit_w - 1, 1), max(fit_h - 1, 1)], dtype=torch.float64)
    n_t = values.shape[0]
    times = torch.linspace(0, 1, n_t) if n_t > 1 else torch.zeros(1)

    def local_defocus_um(coords_px_xy):
        uv = (torch.as_tensor(coords_px_xy, dtype=torch.float64).reshape(-1, 2) * scale / norm).float()
        out = [grid.evaluate(torch.cat([torch.full_like(uv[:, :1], float(t)), uv.flip(-1)], -1))[:, 0] for t in times]
        return torch.stack(out).mean(0).detach()

    return local_defocus_um


def _progress():
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def _write_outputs(
    out_dir: Path,
    stem: str,
    name: str,
    matches,
    result,
    threshold: float | None,
    pixel_size_a: float,
    ndim: int,
) -> dict[str, Any]:
    import pandas as pd

    from cryowarp.io.mrc import write_mrc
    from cryowarp.io.star import write_star

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}_peaks.json").write_text(json.dumps(matches.to_dict()))
    picked = matches.above(threshold) if threshold is not None else matches
    columns: dict[str, Any] = {
        "rlnMicrographName": [name] * len(picked),
        "rlnCoordinateX": picked.coords_px[:, 0].tolist(),
        "rlnCoordinateY": picked.coords_px[:, 1].tolist(),
    }
    if ndim == 3:
        columns["rlnCoordinateZ"] = picked.coords_px[:, 2].tolist()
    columns.update(
        {
            "rlnAngleRot": picked.euler_deg[:, 0].tolist(),
            "rlnAngleTilt": picked.euler_deg[:, 1].tolist(),
            "rlnAnglePsi": picked.euler_deg[:, 2].tolist(),
            "rlnAutopickFigureOfMerit": picked.scores.tolist(),
        }
    )
    star = write_star(out_dir / f"{stem}_matches.star", {"particles": pd.DataFrame(columns)})
    write_mrc(out_dir / f"{stem}_scores.mrc", result.scores.cpu(), result.pixel_size_a)
    write_mrc(out_dir / f"{stem}_angleid.mrc", result.orientation_index.cpu().float(), result.pixel_size_a)
    png = None
    if ndim == 2:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 7))
        ax.imshow(result.scores.cpu().numpy(), cmap="magma")
        scale = result.pixel_size_a / pixel_size_a
        ax.scatter(
            picked.coords_px[:, 0] / scale,
            picked.coords_px[:, 1] / scale,
            s=40,
            facecolors="none",
            edgecolors="cyan",
            linewidths=0.8,
        )
        cut = threshold if threshold is not None else matches.floor
        ax.set_title(f"{name}: {len(picked)} matches (score > {cut:.2f})")
        ax.set_axis_off()
        png = out_dir / f"{stem}_scores.png"
        fig.savefig(png, dpi=100, bbox_inches="tight")
        plt.close(fig)
    return {"star": str(star), "n": len(picked), "png": str(png) if png else None}


def _read_searched(path: Path, ndim: int, pixel_size_a: float | None):
    """The micrograph (2-D) or tomogram (3-D) to search and its pixel size (the option, else the header)."""
    from cryowarp.io.mrc import read_mrc

    kind, unit = ("micrograph", "pixel") if ndim == 2 else ("tomogram", "voxel")
    data, header_px = read_mrc(path, as_tensor=True)
    if data.ndim != ndim:
        raise typer.BadParameter(f"{path}: expected a {ndim}-D {kind}, found shape {tuple(data.shape)}")
    pixel = pixel_size_a or header_px
    if not pixel:
        raise typer.BadParameter(f"{path}: no {unit} size in the header; give --pixel-size")
    return data, pixel


def match2d(
    micrograph: Path = typer.Argument(..., exists=True, dir_okay=False, help="Micrograph MRC (aligned average)."),
    template: Path = typer.Option(
        ...,
        "--template",
        exists=True,
        dir_okay=False,
        help="Reference: MRC map, or an atomic model (.cif/.pdb) simulated here.",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output directory."),
    pixel_size_a: float | None = typer.Option(None, "--pixel-size", help="Å/px; default: from the header."),
    ctf: Path | None = typer.Option(
        None,
        "--ctf",
        help="RELION micrographs STAR or cryowarp CTF model JSON (its defocus grid gives each tile's defocus).",
    ),
    defocus_um: float | None = typer.Option(None, "--defocus", help="Defocus in µm (if no --ctf)."),
    angular_step_deg: float = typer.Option(7.5, "--angular-step", help="Angular step in degrees (HEALPix)."),
    diameter_a: float | None = typer.Option(None, "--diameter", help="Particle diameter Å; default from map."),
    matching_pixel_size_a: float | None = typer.Option(
        None, "--matching-pixel-size", help="Bin the micrograph to this Å/px first."
    ),
    threshold: float | None = typer.Option(None, help="Write only matches above this score to the STAR."),
    whiten: bool = typer.Option(True, help="Spectral whitening."),
    invert: bool = typer.Option(True, help="Particles are dark (normal cryo-EM contrast)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Find a 3-D reference in a micrograph (warp-facts.md §4.2)."""
    from cryowarp.device import resolve_device
    from cryowarp.templates import CTFParameters, Match2DSettings, match_template_2d

    image, pixel = _read_searched(micrograph, 2, pixel_size_a)
    params: dict[str, float] = load_ctf_parameters(ctf, micrograph) if ctf is not None else {}
    if defocus_um is not None:
        params["defocus_um"] = defocus_um
    ctf_params = CTFParameters.from_model(params) if "defocus_um" in params else None
    # a CTF model JSON with a defocus grid: every tile uses the local defocus (not with --defocus)
    local = (
        local_defocus_from_ctf_json(ctf, tuple(image.shape))
        if ctf is not None and defocus_um is None and ctf_params is not None
        else None
    )
    volume, voxel = load_template(template, matching_pixel_size_a or pixel)
    dev = resolve_device(device)
    settings = Match2DSettings(
        angular_step_deg=angular_step_deg,
        diameter_a=diameter_a,
        matching_pixel_size_a=matching_pixel_size_a,
        whiten=whiten,
        invert_contrast=invert,
    )
    with _progress() as bar:
        task = bar.add_task(f"match2d {micrograph.name}", total=None)
        result = match_template_2d(
            image.to(dev),
            pixel,
            volume.to(dev),
            voxel,
            ctf_params,
            settings,
            local_defocus_um=local,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    info = _write_outputs(output, micrograph.stem, micrograph.name, result.matches, result, threshold, pixel, 2)
    typer.echo(
        f"{micrograph.name}: {len(result.matches)} peaks stored (floor {result.matches.floor:.2f}), "
        f"{info['n']} in {info['star']}"
    )


def _parse_tilts(spec: str):
    import torch

    path = Path(spec)
    if path.exists():
        values = [float(v) for v in path.read_text().split()]
        return torch.tensor(values, dtype=torch.float64)
    parts = [float(v) for v in spec.split(":")]
    if len(parts) != 3:
        raise typer.BadParameter(f"--tilt-angles: expected a .tlt file or MIN:MAX:STEP, found {spec!r}")
    lo, hi, step = parts
    return torch.arange(lo, hi + step / 2, step, dtype=torch.float64)


def match3d(
    tomogram: Path = typer.Argument(..., exists=True, dir_okay=False, help="Tomogram MRC."),
    template: Path = typer.Option(..., "--template", exists=True, dir_okay=False, help="MRC map or atomic model."),
    output: Path = typer.Option(..., "-o", "--output", help="Output directory."),
    tilt_angles: str = typer.Option(..., "--tilt-angles", help=".tlt file or MIN:MAX:STEP in degrees."),
    pixel_size_a: float | None = typer.Option(None, "--pixel-size", help="Å/voxel; default: from the header."),
    tilt_axis_deg: float = typer.Option(0.0, "--tilt-axis", help="Tilt-axis angle, degrees from +x."),
    defocus_um: float | None = typer.Option(None, "--defocus", help="Defocus µm (None: missing wedge only)."),
    angular_step_deg: float = typer.Option(7.5, "--angular-step", help="Angular step (WarpTools default 7.5)."),
    diameter_a: float | None = typer.Option(None, "--diameter", help="Particle diameter Å."),
    subvolume_size: int = typer.Option(192, "--subvolume-size", help="Sub-volume side (Warp 192)."),
    threshold: float | None = typer.Option(None, help="Write only matches above this score to the STAR."),
    invert: bool = typer.Option(True, help="Protein is dark in the tomogram (normal cryo-ET): invert it."),
    whiten: bool = typer.Option(True, help="Spectral whitening."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Find a 3-D reference in a tomogram (warp-facts.md §4.1); coordinates in voxels."""
    import functools

    from cryowarp.device import resolve_device
    from cryowarp.templates import Match3DSettings, match_template_3d
    from cryowarp.tomo import ctf_weight_3d, tilt_matrices

    volume, pixel = _read_searched(tomogram, 3, pixel_size_a)
    dev = resolve_device(device)
    mats = tilt_matrices(_parse_tilts(tilt_angles), tilt_axis_deg)
    weight = functools.partial(ctf_weight_3d, pixel_size_a=pixel, matrices=mats, defocus_um=defocus_um, device=dev)
    ref, voxel = load_template(template, pixel)
    settings = Match3DSettings(
        angular_step_deg=angular_step_deg,
        diameter_a=diameter_a,
        subvolume_size_px=subvolume_size,
        whiten=whiten,
    )
    data = -volume if invert else volume
    with _progress() as bar:
        task = bar.add_task(f"match3d {tomogram.name}", total=None)
        result = match_template_3d(
            data.to(dev),
            pixel,
            ref.to(dev),
            voxel,
            settings,
            fourier_weight=weight,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    info = _write_outputs(output, tomogram.stem, tomogram.name, result.matches, result, threshold, pixel, 3)
    typer.echo(
        f"{tomogram.name}: {len(result.matches)} peaks stored (floor {result.matches.floor:.2f}), {info['n']} in {info['star']}"
    )


def register(app: typer.Typer) -> None:
    """Add ``cryowarp match2d`` and ``cryowarp match3d``."""
    app.command("match2d", help=match2d.__doc__ + "\n\n" + __doc__.split("Examples::")[1])(match2d)
    app.command("match3d", help=match3d.__doc__)(match3d)
