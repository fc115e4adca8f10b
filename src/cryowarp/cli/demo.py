"""Demo: simulate a collection session (movies appear over time), process it live, serve the UI.

Movies of a known structure are simulated (``cryowarp.sim.simulate_session``) into
``DIR/session`` one after another, as from a microscope; ``cryowarp watch`` logic processes them
into ``DIR/project`` as they appear (motion, CTF, BoxNet, particles, STAR files) and the web UI shows
the project while it grows. Every third movie has ice contamination on it, which BoxNet masks
(and the default mask filter may set aside). Without ``--dir`` a temporary folder is used.

Example::

    cryowarp demo                      # 5 movies of 1024² × 10 frames, then serves http://127.0.0.1:8000/
    cryowarp demo --n-movies 3 --no-serve --dir /tmp/demo
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import typer


def demo_command(
    n_movies: int = typer.Option(5, "--n-movies", "-n", min=1, help="movies to simulate"),
    size_px: int = typer.Option(1024, "--size", min=256, help="movie side in px"),
    n_frames: int = typer.Option(10, "--frames", help="frames per movie"),
    interval_s: float = typer.Option(5.0, "--interval", help="seconds between movies (collection rate)"),
    directory: Path | None = typer.Option(None, "--dir", help="where to put session/ and project/"),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="serve the web UI (until Ctrl+C)"),
    host: str = typer.Option("127.0.0.1", "--host", help="UI bind address; non-loopback needs --token"),
    port: int = typer.Option(8000, "--port", help="UI port"),
    token: str | None = typer.Option(
        None, "--token", envvar="CRYOWARP_TOKEN", help="shared secret required by every UI request (open /?token=T)"
    ),
    true_picks: bool = typer.Option(
        False, "--true-picks", help="use the simulated coordinates instead of BoxNet"
    ),
    workers: int | None = typer.Option(None, "--workers", help="local worker processes (0 = in-process)"),
    seed: int = typer.Option(0, "--seed", help="session seed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no live display"),
) -> None:
    """Simulate, process and show a session (see `cryowarp demo --help`)."""
    from rich.console import Console

    from cryowarp.cli.process import run_pipeline
    from cryowarp.sim import MovieSimSettings
    from cryowarp.sim.session import simulate_session

    console = Console(stderr=True)
    if serve:
        from cryowarp.cli.serve import bind_ui_or_exit, ui_url

        sock = bind_ui_or_exit(console, host, port, token)  # before anything is written or simulated
    root = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="cryowarp-demo-"))
    session, project = root / "session", root / "project"
    session.mkdir(parents=True, exist_ok=True)
    pixel_size_a, diameter_a = 1.5, 180.0  # β-galactosidase (built-in model 5a1a) is ≈ 180 Å across
    sim_settings = MovieSimSettings(
        shape_yx=(size_px, size_px),
        n_frames=n_frames,
        pixel_size_a=pixel_size_a,
        exposure_per_frame_e_per_a2=40.0 / n_frames,
    )
    console.print(
        f"demo: simulating {n_movies} movies of {size_px}² × {n_frames} into [bold]{session}[/bold], "
        f"processing into [bold]{project}[/bold]"
    )
    sim_error: list[BaseException] = []

    def simulate() -> None:
        try:
            # every third movie has ice on it, so the demo shows BoxNet's artefact mask and the mask filter
            simulate_session(session, n_movies, sim_settings, seed=seed, interval_s=interval_s, contamination_every=3)
        except BaseException as exc:  # noqa: BLE001 - shown to the user below
            sim_error.append(exc)

    simulator = threading.Thread(target=simulate, daemon=True)
    simulator.start()
    options = {
        "pixel_size": pixel_size_a,
        "exposure": sim_settings.exposure_per_frame_e_per_a2,
        "gain": session / "gain.mrc",
        "diameter": diameter_a,
        "box_size": 128,
        "pattern": ["*.tif"],
        "ctf_window": min(512, size_px // 2 // 2 * 2),  # a CTF patch is 2 × window
        "workers": workers,
        "quiet": quiet,
        "device": "auto",
        "picks_star_dir": session / "truth" if true_picks else None,
    }
    # the gain is written first by simulate_session; wait for it before the settings name it
    while simulator.is_alive() and not (session / "gain.mrc").exists():
        simulator.join(0.1)

    def finished() -> bool:
        return not simulator.is_alive()

    if serve:
        from cryowarp.pipeline.store import ProjectStore

        ProjectStore(project).close()  # the UI needs the database to exist
        from cryowarp.web.app import serve as serve_ui

        threading.Thread(
            target=serve_ui, args=(project,), kwargs={"host": host, "port": port, "token": token, "sock": sock}, daemon=True
        ).start()
        console.print(f"UI: {ui_url(host, port, token)}")
    run_pipeline(session, project, options, watch=True, settings_file=None, stop_when_idle=finished)
    if sim_error:
        console.print(f"[red]simulation failed:[/red] {sim_error[0]}")
        raise typer.Exit(1)
    if serve:
        console.print(f"processing finished; the UI keeps running at {ui_url(host, port, token)} (Ctrl+C stops)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


def register(app: typer.Typer) -> None:
    """Add ``cryowarp demo``."""
    app.command("demo", help=__doc__)(demo_command)
