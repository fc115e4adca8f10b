"""Serve the web UI of a project: overview with filters, item views, pick editing, settings.

Binds 127.0.0.1 by default. Any other address makes the project reachable from other machines and
therefore needs a token, which the browser sends once as ``?token=...``.

Example::

    cryowarp serve session1                                  # open http://127.0.0.1:8000/
    cryowarp serve session1 --host 0.0.0.0 --port 8080 --token "$(openssl rand -hex 16)"
"""

from __future__ import annotations

from pathlib import Path

import typer


def serve_command(
    project: Path = typer.Argument(..., help="project folder (holds cryowarp.sqlite)"),
    port: int = typer.Option(8000, "--port", "-p", help="TCP port"),
    host: str = typer.Option("127.0.0.1", "--host", help="bind address; non-loopback needs --token"),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="CRYOWARP_TOKEN",
        help="shared secret required by every request (open /?token=T)",
    ),
) -> None:
    """Serve the web UI of PROJECT (see `cryowarp serve --help`)."""
    from rich.console import Console

    from cryowarp.web._security import check_bind
    from cryowarp.web.app import bind_port, serve

    console = Console(stderr=True)
    try:
        check_bind(host, token)
        if not (project / "cryowarp.sqlite").is_file():
            raise FileNotFoundError(
                f"{project}: no cryowarp.sqlite here; expected a cryowarp project folder "
                "(create one with `cryowarp watch` or `cryowarp process`)"
            )
        sock = bind_port(host, port)  # before the URL is shown: a port in use is one error line
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    suffix = f"?token={token}" if token else ""
    console.print(f"cryowarp UI for [bold]{project}[/bold] at http://{shown}:{port}/{suffix}  (Ctrl+C stops)")
    serve(project, host=host, port=port, token=token, sock=sock)


def register(app: typer.Typer) -> None:
    """Add ``cryowarp serve``."""
    app.command("serve", help=__doc__)(serve_command)
