"""BoxNet particle picking with artefact masking, training and retraining (warp-facts.md §3).

Examples::

    cryowarp boxnet pick average_*.mrc --pixel-size 1.0 --diameter 150 -o picks/
    cryowarp boxnet train mics/*.mrc --picks picks/ --diameter 150 --out my_boxnet.pt
    cryowarp boxnet retrain mics/*.mrc --picks cleaned/ --diameter 150 --out retrained.pt --epochs 20

``pick`` writes ``DIR/<stem>_boxnet.star`` (rlnCoordinateX/Y in pixels of the micrograph,
rlnMicrographName, rlnAutopickFigureOfMerit), ``DIR/<stem>_mask.tif`` (8-bit artefact mask at BoxNet's
8 Å/px, not flipped) and ``DIR/<stem>_boxnet.png`` (picks and mask over the micrograph).
Training examples and general corpora are Warp-style 3-layer TIFFs at 8 Å/px (image, label 0/1/2,
certainty) — ``--save-examples`` writes them, ``--general`` reads a folder of them. ``train`` and
``retrain`` also take false positives (``--false-positives``: picks that are not particles, weighted 4×
as background) and uncertain picks (``--uncertain``: left out of the loss), as Warp's certainty layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

boxnet_app = typer.Typer(
    help="BoxNet: pick particles and mask artefacts; train and retrain models.", no_args_is_help=True
)

IMAGE_SUFFIXES = (".mrc", ".mrcs", ".tif", ".tiff", ".png", ".jpg")


def read_micrograph(path: Path, pixel_size_a: float | None):
    """Micrograph as a float32 tensor and its pixel size (the option wins over the header)."""
    import torch

    if not path.is_file():
        raise typer.BadParameter(f"{path}: no such file")
    suffix = path.suffix.lower()
    header_px = None
    if suffix in (".mrc", ".mrcs"):
        from cryowarp.io.mrc import read_mrc

        array, header_px = read_mrc(path, as_tensor=True)
        if array.ndim == 3 and array.shape[0] > 1:
            from cryowarp.io.errors import UnsupportedFormatError

            raise UnsupportedFormatError(
                path,
                f"holds {array.shape[0]} sections (a movie or a stack), expected one micrograph; "
                "motion-correct a movie first (`cryowarp motion`)",
            )
        image = array[0] if array.ndim == 3 else array
    elif suffix in (".tif", ".tiff"):
        from cryowarp.io.gain import read_image_2d

        image = read_image_2d(path)
    elif suffix in (".png", ".jpg"):
        from PIL import Image

        image = torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32))
    else:
        raise typer.BadParameter(
            f"{path}: expected a micrograph ({', '.join(IMAGE_SUFFIXES)}), found '{suffix}'"
        )
    px = pixel_size_a if pixel_size_a is not None else header_px
    if px is None or px <= 0:
        raise typer.BadParameter(
            f"{path}: no usable pixel size in the file (found {header_px}); give --pixel-size in Å"
        )
    return image.to(torch.float32), float(px)


def write_picks_star(path: Path, micrograph_name: str, coords_px_xy, scores) -> Path:
    """RELION coordinate STAR: rlnCoordinateX/Y, rlnMicrographName, rlnAutopickFigureOfMerit."""
    import pandas as pd

    from cryowarp.io.star import write_star

    c = np.asarray(coords_px_xy.detach().cpu(), dtype=np.float64).reshape(-1, 2)
    table = pd.DataFrame(
        {
            "rlnCoordinateX": c[:, 0],
            "rlnCoordinateY": c[:, 1],
            "rlnMicrographName": [micrograph_name] * len(c),
            "rlnAutopickFigureOfMerit": np.asarray(scores.detach().cpu(), dtype=np.float64).reshape(-1),
        }
    )
    return write_star(path, {"": table})


def read_picks_star(path: Path, micrograph_name: str | None = None) -> np.ndarray:
    """(n, 2) rlnCoordinateX/Y from a coordinate STAR.

    With ``micrograph_name`` and an rlnMicrographName column: the rows of that micrograph (matched by
    stem). A STAR of several micrographs without it gives no rows; a STAR of one micrograph is taken
    as this micrograph's whatever its name (coordinate files often name the movie, not the average).
    """
    from cryowarp.io.star import read_star

    for table in read_star(path).values():
        if "rlnCoordinateX" in table.columns and "rlnCoordinateY" in table.columns:
            if micrograph_name is not None and "rlnMicrographName" in table.columns:
                names = table["rlnMicrographName"].astype(str).map(lambda s: Path(s).stem)
                if (names == Path(micrograph_name).stem).any() or names.nunique() > 1:
                    table = table[names == Path(micrograph_name).stem]
            return table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(dtype=np.float64)
    raise typer.BadParameter(f"{path}: expected a table with rlnCoordinateX and rlnCoordinateY")


def save_overlay_png(
    path: Path, image, picks, diameter_a: float, pixel_size_a: float, title: str = ""
) -> Path:
    """PNG of the micrograph (binned for display) with pick circles and the artefact mask in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    import torch.nn.functional as F

    h, w = image.shape
    binning = max(1, int(np.ceil(max(h, w) / 1024)))
    shown = (
        F.avg_pool2d(image[None, None].float().cpu(), binning)[0, 0].numpy()
        if binning > 1
        else image.float().cpu().numpy()
    )
    lo, hi = np.percentile(shown, [1, 99])
    fig, ax = plt.subplots(figsize=(8, 8 * h / w), dpi=110)
    ax.imshow(shown, cmap="gray", vmin=lo, vmax=hi, extent=(0, w, h, 0), interpolation="bilinear")
    if bool(picks.mask_8a.any()):
        mask = picks.mask_8a.cpu().numpy().astype(float)
        rgba = np.zeros(mask.shape + (4,))
        rgba[..., 0] = 1.0
        rgba[..., 3] = 0.35 * mask
        ax.imshow(rgba, extent=(0, w, h, 0), interpolation="nearest")
    radius_px = diameter_a / 2 / pixel_size_a
    for (x, y), s in zip(picks.coords_px_xy.cpu().tolist(), picks.scores.cpu().tolist(), strict=True):
        ax.add_patch(plt.Circle((x, y), radius_px, fill=False, lw=0.8, color=plt.cm.viridis(float(s))))
    ax.set_title(title or f"{len(picks)} picks, mask {picks.mask_percentage:.1f} %", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    del torch
    return path


def _load_model(model_path: Path | None, device):
    import torch

    from cryowarp.picking import boxnet_from_state, load_pretrained_boxnet

    if model_path is None:
        return load_pretrained_boxnet(device)
    if not model_path.is_file():
        raise typer.BadParameter(f"{model_path}: no such model file")
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)
        return boxnet_from_state(state, device)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise typer.BadParameter(f"{model_path}: not a cryowarp BoxNet model ({exc})") from exc


@boxnet_app.command("pick")
def pick_command(
    micrographs: list[Path] = typer.Argument(..., help="aligned averages (MRC, TIFF or PNG)"),
    output: Path = typer.Option(..., "-o", "--output", help="output folder"),
    pixel_size: float | None = typer.Option(None, "--pixel-size", help="Å/px (default: from the MRC header)"),
    diameter: float = typer.Option(200.0, "--diameter", help="particle diameter in Å (Warp GUI default 200)"),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="fixed minimum particle score (default: the calibrated per-micrograph threshold of PickSettings; "
        "see docs/boxnet.md)",
    ),
    min_mask_distance: float = typer.Option(0.0, "--min-mask-distance", help="extra distance to the mask, Å"),
    blob_weight: float | None = typer.Option(
        None,
        "--blob-weight",
        help="weight of the dark-blob prior added to the network's score (default: the model's own, "
        "1.0 for the shipped model, 0 for models from boxnet train/retrain)",
    ),
    invert: bool = typer.Option(False, "--invert", help="negative stain: invert contrast"),
    model: Path | None = typer.Option(
        None, "--model", help="BoxNet .pt (default: the shipped general model)"
    ),
    png: bool = typer.Option(True, "--png/--no-png", help="write the overlay PNG"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Pick particles and mask artefacts; writes DIR/<stem>_boxnet.star, _mask.tif and _boxnet.png."""
    from rich.progress import Progress

    from cryowarp.device import resolve_device
    from cryowarp.picking import PickSettings, pick_particles

    dev = resolve_device(device)
    settings = PickSettings(
        particle_diameter_a=diameter,
        minimum_mask_distance_a=min_mask_distance,
        invert_contrast=invert,
        **({} if blob_weight is None else {"blob_weight": blob_weight}),
        # a user's threshold is a fixed one, not a cap on the per-micrograph threshold
        **({} if threshold is None else {"threshold": threshold, "relative_threshold": None}),
    )
    from cryowarp.io.errors import CryowarpIOError
    from cryowarp.io.masks import write_mask_tif

    net = _load_model(model, dev)
    output.mkdir(parents=True, exist_ok=True)
    total = 0
    failed: list[str] = []
    with Progress(transient=False) as progress:
        task = progress.add_task("BoxNet picking", total=len(micrographs))
        for path in micrographs:
            try:
                image, px = read_micrograph(path, pixel_size)
                picks = pick_particles(image.to(dev), px, net, settings)
            except (CryowarpIOError, ValueError) as exc:  # one bad file must not end a batch of hundreds
                message = str(exc) if path.name in str(exc) else f"{path.name}: {exc}"
                failed.append(message)
                progress.console.print(f"skipped {message}", markup=False)
                progress.advance(task)
                continue
            write_picks_star(output / f"{path.stem}_boxnet.star", path.name, picks.coords_px_xy, picks.scores)
            write_mask_tif(output / f"{path.stem}_mask.tif", picks.mask_8a)
            if png:
                save_overlay_png(
                    output / f"{path.stem}_boxnet.png",
                    image,
                    picks,
                    diameter,
                    px,
                    title=f"{path.name}: {len(picks)} picks, mask {picks.mask_percentage:.1f} %",
                )
            total += len(picks)
            progress.console.print(
                f"{path.name}: {len(picks)} particles, {picks.mask_percentage:.1f} % masked"
            )
            progress.advance(task)
    typer.echo(f"{total} particles in {len(micrographs) - len(failed)} micrographs -> {output}")
    if failed:
        typer.echo(f"{len(failed)} micrograph(s) could not be picked:", err=True)
        for message in failed:
            typer.echo(f"  {message}", err=True)
        raise typer.Exit(1)


def _find_companion(folder: Path | None, stem: str, patterns: tuple[str, ...]) -> Path | None:
    if folder is None:
        return None
    if folder.is_file():
        return folder
    for pattern in patterns:
        hits = sorted(folder.glob(pattern.format(stem=stem)))
        if hits:
            return hits[0]
    return None


def _train(
    *,
    micrographs,
    picks,
    masks,
    pixel_size,
    diameter,
    out,
    model,
    general,
    epochs,
    patch,
    batch,
    lr_start,
    lr_end,
    save_examples,
    checkpoint_every,
    device,
    retrain,
    false_positives=None,
    uncertain=None,
    sim_general=0,
    no_mask=False,
) -> None:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from cryowarp.device import resolve_device
    from cryowarp.picking import BoxNet, TrainSettings, boxnet_to_state, make_training_example, train_boxnet

    console = Console()
    dev = resolve_device(device)
    examples = []
    for path in micrographs:
        image, px = read_micrograph(path, pixel_size)
        star = _find_companion(
            picks, path.stem, ("{stem}.star", "{stem}_boxnet.star", "{stem}_*pick*.star", "{stem}_*.star")
        )
        if star is None:
            raise typer.BadParameter(
                f"{path.name}: no picks STAR for it in {picks} (looked for {path.stem}.star, "
                f"{path.stem}_boxnet.star, {path.stem}_*.star)"
            )
        coords = torch.from_numpy(read_picks_star(star, path.name)).float()
        extra, counts = {}, ""
        for key, label, folder in (
            ("false_positives_px_xy", "false positives", false_positives),
            ("uncertain_px_xy", "uncertain", uncertain),
        ):
            found = _find_companion(folder, path.stem, ("{stem}.star", "{stem}_*.star"))
            if found is not None:
                xy = torch.from_numpy(read_picks_star(found, path.name)).float()
                # a position cannot be a particle and not one: such entries are left out, with a warning
                clash = (torch.cdist(xy, coords).min(dim=1).values <= 0.25 * diameter / px) if len(coords) else None
                if clash is not None and bool(clash.any()):
                    console.print(
                        f"warning: {path.name}: {int(clash.sum())} of the {label} in {found} lie within "
                        f"D/4 of a pick in {star}; left out",
                        markup=False,
                    )
                    xy = xy[~clash]
                extra[key] = xy.to(dev)
                counts += f", {len(xy)} {label}"
        mask = None
        mask_path = _find_companion(masks, path.stem, ("{stem}_mask.tif", "{stem}.tif", "{stem}_mask.mrc"))
        if mask_path is not None and not no_mask:
            from cryowarp.io.gain import read_image_2d

            mask = read_image_2d(mask_path)
            mask = mask / max(float(mask.max()), 1e-6)
        ex = make_training_example(
            image.to(dev),
            px,
            coords.to(dev),
            diameter,
            mask=None if mask is None else mask.to(dev),
            name=path.stem,
            **extra,
        )
        examples.append(ex)
        console.print(f"{path.name}: {len(coords)} picks{counts}{' + mask' if mask is not None else ''}")
        if save_examples is not None:
            save_examples.mkdir(parents=True, exist_ok=True)
            from cryowarp.io.boxnet_examples import write_example_tiff

            write_example_tiff(save_examples / f"{path.stem}.tif", ex)
    general_examples = []
    if general is not None:
        files = sorted(general.glob("*.tif")) if general.is_dir() else [general]
        if not files:
            raise typer.BadParameter(f"{general}: no training TIFFs (*.tif) found")
        from cryowarp.io.boxnet_examples import read_example_tiff
        from cryowarp.io.errors import CryowarpIOError

        try:
            general_examples = [read_example_tiff(f) for f in files]
        except CryowarpIOError as exc:
            raise typer.BadParameter(str(exc)) from exc
        general_examples = [e.to(dev) for e in general_examples]
        console.print(f"general corpus: {len(general_examples)} examples from {general}")
    elif sim_general:
        from cryowarp.sim.picking_corpus import general_corpus

        with console.status(f"simulating the general corpus ({sim_general} micrographs)"):
            general_examples = [e.to(dev) for e in general_corpus(sim_general)]
        console.print(f"general corpus: {sim_general} simulated micrographs (cryowarp.sim training kinds)")
    if model is None and not retrain:
        from cryowarp.picking import BoxNetConfig

        net = BoxNet(BoxNetConfig.narrow())
    else:
        net = _load_model(model, dev)
    settings = TrainSettings(
        epochs=epochs,
        batch_size=batch,
        patch_px=patch,
        lr_start=lr_start,
        lr_end=lr_end,
        warmup_iterations=min(100, max(1, epochs * len(examples) // 10)),
    )
    out.parent.mkdir(parents=True, exist_ok=True)

    def checkpoint(m, report):
        if checkpoint_every and report.epoch % checkpoint_every == 0:
            torch.save(
                boxnet_to_state(m, epoch=report.epoch), out.with_name(f"{out.stem}_epoch{report.epoch}.pt")
            )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("training", total=None, loss=float("nan"))

        def on_progress(p):
            progress.update(task, total=p.n_iterations, completed=p.iteration, loss=p.loss)
            r = p.epoch_report
            if r is not None:
                old = (
                    ""
                    if r.accuracy_old_model_old_data is None
                    else f"  old data: old {r.accuracy_old_model_old_data:.3f} "
                    f"new {r.accuracy_new_model_old_data:.3f}"
                )
                progress.console.print(
                    f"epoch {r.epoch}/{r.n_epochs}: new data: old model "
                    f"{r.accuracy_old_model_new_data:.3f} new model "
                    f"{r.accuracy_new_model_new_data:.3f}{old}"
                )

        result = train_boxnet(
            net,
            examples,
            settings,
            general_examples=general_examples or None,
            progress=on_progress,
            checkpoint=checkpoint,
        )
    torch.save(
        boxnet_to_state(
            result.model,
            trained_on=[p.name for p in micrographs],
            history=[r.to_dict() for r in result.history],
        ),
        out,
    )
    typer.echo(f"wrote {out}")


_MICS = typer.Argument(..., help="micrographs (MRC, TIFF or PNG)")
_PICKS = typer.Option(..., "--picks", help="folder of <stem>*.star coordinate files, or one STAR for all")
_FP_HELP = (
    "folder of <stem>*.star (or one STAR) of picks that are NOT particles, e.g. the ones you deleted: "
    "background weighted 4× in the loss (Warp's certainty layer)"
)
_UNCERTAIN_HELP = "folder of <stem>*.star (or one STAR) of picks you are unsure of: left out of the loss"
_SIM_GENERAL_HELP = (
    "without --general: mix 1:1 with this many simulated micrographs of the shipped model's training kinds "
    "(cryowarp.sim, ~1 s each; 0 = the new micrographs alone)"
)


@boxnet_app.command("train")
def train_command(
    micrographs: list[Path] = _MICS,
    picks: Path = _PICKS,
    out: Path = typer.Option(..., "--out", help="model file to write (.pt)"),
    diameter: float = typer.Option(..., "--diameter", help="particle diameter, Å"),
    pixel_size: float | None = typer.Option(None, "--pixel-size", help="Å/px (default: MRC header)"),
    masks: Path | None = typer.Option(None, "--masks", help="folder of <stem>_mask.tif artefact masks"),
    false_positives: Path | None = typer.Option(None, "--false-positives", help=_FP_HELP),
    uncertain: Path | None = typer.Option(None, "--uncertain", help=_UNCERTAIN_HELP),
    model: Path | None = typer.Option(
        None, "--model", help="start from this model (default: a new narrow net)"
    ),
    general: Path | None = typer.Option(
        None, "--general", help="folder of 3-layer training TIFFs to mix 1:1"
    ),
    sim_general: int = typer.Option(0, "--sim-general", min=0, help=_SIM_GENERAL_HELP),
    epochs: int = typer.Option(
        20, "--epochs", help="iterations = epochs × micrographs × corpora (Warp: 100)"
    ),
    patch: int = typer.Option(128, "--patch", help="patch size at 8 Å/px"),
    batch: int = typer.Option(8, "--batch"),
    lr_start: float = typer.Option(1e-3, "--lr-start"),
    lr_end: float = typer.Option(1e-4, "--lr-end"),
    save_examples: Path | None = typer.Option(
        None, "--save-examples", help="write the examples as TIFFs here"
    ),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="save <out>_epochN.pt every N epochs"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Train a BoxNet on micrographs with picks (and optional artefact masks)."""
    _train(**locals(), retrain=False)  # the options, by name (their defaults differ per command)


@boxnet_app.command("retrain")
def retrain_command(
    micrographs: list[Path] = _MICS,
    picks: Path = _PICKS,
    out: Path = typer.Option(..., "--out", help="model file to write (.pt); give it a new name"),
    diameter: float = typer.Option(..., "--diameter", help="particle diameter, Å"),
    pixel_size: float | None = typer.Option(None, "--pixel-size", help="Å/px (default: MRC header)"),
    masks: Path | None = typer.Option(None, "--masks", help="folder of <stem>_mask.tif artefact masks"),
    false_positives: Path | None = typer.Option(None, "--false-positives", help=_FP_HELP),
    uncertain: Path | None = typer.Option(None, "--uncertain", help=_UNCERTAIN_HELP),
    model: Path | None = typer.Option(None, "--model", help="model to start from (default: the shipped one)"),
    general: Path | None = typer.Option(
        None, "--general", help="folder of 3-layer training TIFFs to mix 1:1"
    ),
    sim_general: int = typer.Option(12, "--sim-general", min=0, help=_SIM_GENERAL_HELP),
    epochs: int = typer.Option(20, "--epochs"),
    patch: int = typer.Option(128, "--patch"),
    batch: int = typer.Option(8, "--batch"),
    lr_start: float = typer.Option(3e-4, "--lr-start"),
    lr_end: float = typer.Option(3e-5, "--lr-end"),
    save_examples: Path | None = typer.Option(None, "--save-examples"),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every"),
    device: str = typer.Option("auto", "--device"),
) -> None:
    """Retrain an existing BoxNet (default: the shipped one) on a few corrected micrographs."""
    _train(**locals(), retrain=True)  # the options, by name (their defaults differ per command)


def register(app: typer.Typer) -> None:
    """Add ``cryowarp boxnet pick|train|retrain``."""
    app.add_typer(boxnet_app, name="boxnet")
