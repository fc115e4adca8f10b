"""Serve the web UI of a project: overview with filters, item views, pick editing, settings.

Binds 127.0.0.1 by default. Any other address makes the project reachable from other machines and
therefore needs a token, which the browser sends once as ``?token=...``.

Example::

    cryowarp serve session1                                  # open http://127.0.0.1:8000/
    cryowarp serve session1 --host 0.0.0.0 --port 8080 --token "$(openssl rand -hex 16)"
"""

from __future__ import annotations

import socket
from pathlib import Path

import typer
from rich.console import Console


def bind_ui_or_exit(console: Console, host: str, port: int, token: str | None) -> socket.socket:
    """The UI's socket, bound before anything else runs (``cryowarp serve``, ``process --ui``, ``demo``).

    A non-loopback address without a token, or a port in use, is one error line and exit code 2.
    """
    from cryowarp.web._security import check_bind
    from cryowarp.web.app import bind_port

    try:
        check_bind(host, token)
        return bind_port(host, port)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def ui_url(host: str, port: int, token: str | None) -> str:
    """The address to open in a browser (a wildcard bind is opened as 127.0.0.1; the token once in the URL)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


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
    from cryowarp.web.app import serve

    console = Console(stderr=True)
    if not (project / "cryowarp.sqlite").is_file():
        console.print(
            f"[red]error:[/red] {project}: no cryowarp.sqlite here; expected a cryowarp project folder "
            "(create one with `cryowarp watch` or `cryowarp process`)"
        )
        raise typer.Exit(2)
    sock = bind_ui_or_exit(console, host, port, token)  # before the URL is shown
    console.print(f"cryowarp UI for [bold]{project}[/bold] at {ui_url(host, port, token)}  (Ctrl+C stops)")
    serve(project, host=host, port=port, token=token, sock=sock)


def register(app: typer.Typer) -> None:
    """Add ``cryowarp serve``."""
    app.command("serve", help=__doc__)(serve_command)
