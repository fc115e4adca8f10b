"""Process every movie in a folder once (motion, CTF, BoxNet, particles, STAR files), then exit.

Settings come from ``--settings FILE`` (JSON, see docs/pipeline.md), else from the project if it
exists, else Warp's defaults; the options below override single values. Rerunning on the same
project processes only new movies and the stages outdated by changed settings.

Example::

    cryowarp process /data/session1 --project proc1 --pixel-size 0.834 --exposure 1.0 \\
        --gain /data/gain.mrc --diameter 150 --box-size 256
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

PROCESS_HELP = __doc__


def settings_from_options(project: Path, settings_file: Path | None, options: dict[str, Any]) -> Any:
    """Start from FILE / the project's settings / defaults, then apply the options that were given."""
    from cryowarp.pipeline.settings import ProcessingSettings, load_settings
    from cryowarp.pipeline.store import DB_NAME, ProjectStore

    if settings_file is not None:
        settings = load_settings(settings_file)
    elif (project / DB_NAME).is_file():
        store = ProjectStore(project)
        settings = store.get_settings()
        store.close()
    else:
        settings = ProcessingSettings()
    changes: dict[str, Any] = {}

    def put(section: str | None, key: str, value: Any) -> None:
        if value is None:
            return
        if section is None:
            changes[key] = value
        else:
            changes.setdefault(section, {})[key] = value

    o = options
    put("input", "pixel_size_a", o.get("pixel_size"))
    put("input", "exposure_per_frame_e_per_a2", o.get("exposure"))
    put("input", "gain_path", str(Path(o["gain"]).resolve()) if o.get("gain") else None)
    put("input", "defects_path", str(Path(o["defects"]).resolve()) if o.get("defects") else None)
    if o.get("pattern"):
        put("input", "patterns", list(o["pattern"]))
    put("ctf", "voltage_kv", o.get("voltage"))
    put("ctf", "cs_mm", o.get("cs"))
    put("ctf", "window", o.get("ctf_window"))
    put("ctf", "fit_phase", o.get("fit_phase"))
    if o.get("diameter") is not None:
        put("pick", "particle_diameter_a", o["diameter"])
        put("export", "particle_diameter_a", o["diameter"])
    if o.get("threshold") is not None:  # a fixed threshold, as `boxnet pick --threshold`: not a cap on
        put("pick", "threshold", o["threshold"])  # the per-micrograph one (min(threshold, α·q) ignores raising it)
        changes["pick"]["relative_threshold"] = None
    put("export", "box_size_px", o.get("box_size"))
    put("export", "output_pixel_size_a", o.get("output_pixel_size"))
    put("export", "flip_phases", o.get("flip_phases"))
    put("export", "float16", o.get("float16"))
    put(None, "boxnet_model_path", str(Path(o["boxnet"]).resolve()) if o.get("boxnet") else None)
    put(None, "picks_star_dir", str(Path(o["picks_star_dir"]).resolve()) if o.get("picks_star_dir") else None)
    if o.get("no_pick"):
        put(None, "do_pick", False)
    if o.get("no_export"):
        put(None, "do_export", False)
    return settings.updated(changes) if changes else settings


def check_setting_paths(settings: Any) -> None:
    """Refuse settings that would fail every movie, before any is processed.

    ``FileNotFoundError`` if the gain reference, defect map or BoxNet model is missing (a mistyped
    ``--gain``); ``ValueError`` if, at a known pixel size, the particle diameter leaves no room in the box
    for the export's normalisation (the defaults D = 200 Å, box 128 px below ~1.1 Å/px).
    """
    paths = {
        "gain reference (--gain)": settings.input.gain_path,
        "defect map (--defects)": settings.input.defects_path,
        "BoxNet model (--boxnet)": settings.boxnet_model_path if settings.do_pick else None,
    }  # not --picks-from: its folder may be created while the session is collected (e.g. the demo)
    for what, path in paths.items():
        if path and not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file; expected the {what}")
    export = settings.export
    pixel = export.output_pixel_size_a or settings.input.pixel_size_a
    if pixel and export.normalize and "export" in settings.enabled_stages():
        # the export's own rule, known before any movie is read
        from cryowarp.export import check_normalization_area

        radius_px = export.particle_diameter_a / 2.0 / pixel
        try:
            check_normalization_area(export.box_size_px, radius_px)
        except ValueError as exc:
            raise ValueError(
                f"particle diameter {export.particle_diameter_a:g} Å is {2 * radius_px:.0f} px at {pixel:g} Å/px, "
                f"too large for the {export.box_size_px}-px box (normalisation needs the area outside it: {exc}); "
                "give a larger --box-size, a smaller --diameter or --output-pixel-size"
            ) from exc


def run_pipeline(
    input_dir: Path | None,
    project: Path,
    options: dict[str, Any],
    *,
    watch: bool,
    settings_file: Path | None,
    ui: bool = False,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    stop: Any = None,
    stop_when_idle: Any = None,
) -> dict[str, int]:
    """Shared body of ``process``, ``watch`` and ``demo``: settings → Coordinator → live display."""
    import threading

    from rich.console import Console
    from rich.markup import escape

    from cryowarp.pipeline.display import LiveDisplay, summary_table
    from cryowarp.pipeline.schedule import Coordinator

    console = Console(stderr=True)
    try:
        settings = settings_from_options(project, settings_file, options)
        check_setting_paths(settings)
        if input_dir is not None and not input_dir.is_dir():
            raise FileNotFoundError(f"{input_dir}: input folder does not exist")
        coordinator = Coordinator(
            project,
            settings,
            n_workers=options.get("workers"),
            scheduler_address=options.get("scheduler"),
            dask_workers=options.get("dask_workers"),
            device=options.get("device") or "auto",
        )
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if ui:
        from cryowarp.cli.serve import bind_ui_or_exit, ui_url
        from cryowarp.web.app import serve

        try:
            sock = bind_ui_or_exit(console, host, port, token)
        except typer.Exit:
            coordinator.close()
            raise
        threading.Thread(
            target=serve,
            args=(project,),
            kwargs={"host": host, "port": port, "token": token, "sock": sock},
            daemon=True,
        ).start()
        console.print(f"UI at {ui_url(host, port, token)}")
    display = LiveDisplay(
        f"cryowarp — {project}",
        enabled=not options.get("quiet") and console.is_terminal,
        plain=not options.get("quiet"),  # not a terminal (a log file): one line per finished item
        console=console,
    )
    coordinator.on_update = display.update
    try:
        with display:
            counts = coordinator.run(
                input_dir,
                watch=watch,
                use_polling=bool(options.get("polling")),
                stop=stop,
                stop_when_idle=stop_when_idle,
            )
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: finished items are recorded; rerun to resume")
        counts = coordinator.store.counts()
        interrupted = True
    else:
        interrupted = False
    summary = summary_table(coordinator)
    failed = coordinator.store.list_items(status="failed")
    coordinator.close(wait=not interrupted)
    console.print(summary)
    for item in failed[:20]:
        console.print(f"[red]failed[/red] {escape(item['name'])}: {escape(item['error'])}", soft_wrap=True)
    if len(failed) > 20:
        console.print(f"… and {len(failed) - 20} more failures (see the UI or the store)")
    console.print(f"STAR files in {project}: particles.star, micrographs.star, goodparticles_cryowarp.star")
    return counts


def _options(
    project: Path = typer.Option(..., "--project", "-p", help="project folder (created if missing)"),
    settings_file: Path | None = typer.Option(None, "--settings", help="settings JSON (docs/pipeline.md)"),
    pixel_size: float | None = typer.Option(
        None, "--pixel-size", help="movie pixel size, Å/px (default: header)"
    ),
    exposure: float | None = typer.Option(None, "--exposure", help="exposure per frame, e⁻/Å²"),
    gain: Path | None = typer.Option(None, "--gain", help="gain reference (MRC/TIFF)"),
    defects: Path | None = typer.Option(None, "--defects", help="defect map"),
    pattern: list[str] | None = typer.Option(None, "--pattern", help="movie name pattern(s), e.g. '*.tif'"),
    voltage: float | None = typer.Option(None, "--voltage", help="kV (default 300)"),
    cs: float | None = typer.Option(None, "--cs", help="spherical aberration, mm (default 2.7)"),
    ctf_window: int | None = typer.Option(None, "--ctf-window", help="CTF spectrum size, px (default 512)"),
    fit_phase: bool | None = typer.Option(None, "--fit-phase/--no-fit-phase", help="fit a phase-plate shift"),
    diameter: float | None = typer.Option(
        None, "--diameter", help="particle diameter, Å (picking + normalisation)"
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="fixed BoxNet score threshold (default: the calibrated per-micrograph threshold of PickSettings)",
    ),
    box_size: int | None = typer.Option(None, "--box-size", help="particle box, px of the output (even)"),
    output_pixel_size: float | None = typer.Option(
        None, "--output-pixel-size", help="particle pixel size, Å"
    ),
    flip_phases: bool | None = typer.Option(
        None, "--flip-phases/--no-flip-phases", help="phase-flip particles"
    ),
    float16: bool | None = typer.Option(
        None, "--float16/--float32", help="stack precision (RELION 3.1: float32)"
    ),
    boxnet: Path | None = typer.Option(None, "--boxnet", help="BoxNet model .pt (default: the shipped one)"),
    picks_star_dir: Path | None = typer.Option(
        None, "--picks-from", help="take picks from <DIR>/<movie>*.star"
    ),
    no_pick: bool = typer.Option(False, "--no-pick", help="no picking (and no particles)"),
    no_export: bool = typer.Option(False, "--no-export", help="pick but do not extract particles"),
    workers: int | None = typer.Option(None, "--workers", help="local worker processes (0 = in-process)"),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler, tcp://HOST:PORT"),
    dask_workers: int | None = typer.Option(
        None, "--dask-workers", help="start a Dask LocalCluster of N workers"
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    polling: bool = typer.Option(False, "--polling", help="poll the folder (network file systems)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no live display"),
) -> dict[str, Any]:
    return dict(locals())


def _make_command(watch: bool):
    import inspect
    import typing

    base = inspect.signature(_options)
    hints = typing.get_type_hints(_options)
    params = [
        inspect.Parameter(
            "input_dir",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            annotation=Path,
            default=typer.Argument(..., help="folder with movies"),
        )
    ]
    params += [p.replace(annotation=hints[p.name]) for p in base.parameters.values()]
    if watch:
        params += [
            inspect.Parameter(
                "ui",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=bool,
                default=typer.Option(False, "--ui", help="also serve the web UI"),
            ),
            inspect.Parameter(
                "host",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=str,
                default=typer.Option("127.0.0.1", "--host", help="UI bind address"),
            ),
            inspect.Parameter(
                "port",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=int,
                default=typer.Option(8000, "--port", help="UI port"),
            ),
            inspect.Parameter(
                "token",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=typing.Optional[str],  # noqa: UP045 - typer reads this annotation at runtime
                default=typer.Option(
                    None, "--token", envvar="CRYOWARP_TOKEN", help="UI secret (needed off loopback)"
                ),
            ),
        ]

    def command(**kw: Any) -> None:
        input_dir = kw.pop("input_dir")
        project, settings_file = kw.pop("project"), kw.pop("settings_file")
        ui, host, port = kw.pop("ui", False), kw.pop("host", "127.0.0.1"), kw.pop("port", 8000)
        token = kw.pop("token", None)
        counts = run_pipeline(
            input_dir,
            project,
            kw,
            watch=watch,
            settings_file=settings_file,
            ui=ui,
            host=host,
            port=port,
            token=token,
        )
        if not watch and counts.get("failed"):
            raise typer.Exit(1)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = "watch" if watch else "process"
    return command


def dump_settings_command(
    project: Path = typer.Argument(..., help="project folder"),
) -> None:
    """Print a project's settings as JSON (edit and pass back with --settings)."""
    from cryowarp.pipeline.store import ProjectStore

    store = ProjectStore(project, read_only=True)
    typer.echo(json.dumps(store.get_settings().to_dict(), indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    """Add ``cryowarp process`` and ``cryowarp settings``."""
    app.command("process", help=PROCESS_HELP)(_make_command(watch=False))
    app.command("settings", help="Print a project's settings as JSON (edit, then pass with --settings).")(
        dump_settings_command
    )
