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

import typer

import cryowarp.cli as _cli_pkg

app = typer.Typer(
    name="cryowarp",
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
