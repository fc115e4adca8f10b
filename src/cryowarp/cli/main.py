"""cryowarp command line: one console script, one module per command.

Every module in ``cryowarp.cli`` (other than this one and private ``_*`` modules) defines
``register(app: typer.Typer) -> None`` that adds its command(s); they are discovered here so that
adding a command never means editing this file.

Example::

    cryowarp --help
    cryowarp demo
"""

from __future__ import annotations

import importlib
import pkgutil

import click
import typer
from typer.core import TyperGroup

import cryowarp.cli as _cli_pkg
from cryowarp.io.errors import CryowarpIOError


class _Group(TyperGroup):
    """Reports a bad input file (``CryowarpIOError``, a missing file) as one line and exit code 2.

    These errors already name the file and the problem; a traceback would only hide the message.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (CryowarpIOError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc


app = typer.Typer(
    name="cryowarp",
    cls=_Group,
    help="On-the-fly cryo-EM preprocessing (a re-implementation of Warp). `cryowarp COMMAND --help` for details.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(_cli_pkg.__path__), key=lambda m: m.name):
        if info.name == "main" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"cryowarp.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


@app.command("version")
def version() -> None:
    """Print the cryowarp version, torch version and the device ``auto`` resolves to."""
    import torch

    import cryowarp
    from cryowarp.device import resolve_device

    typer.echo(f"cryowarp {cryowarp.__version__}, torch {torch.__version__}, device auto -> {resolve_device('auto')}")


if __name__ == "__main__":
    app()
