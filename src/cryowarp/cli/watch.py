"""Watch a folder and process movies as they arrive (until Ctrl+C), keeping the STAR files current.

A file is taken once its size is stable and it can be read for more than 1 s (Warp's rule), so
half-written movies are never processed. ``--polling`` scans instead of using inotify (network file
systems). ``--ui`` also serves the web UI of the project. Options as for ``cryowarp process``.

Example::

    cryowarp watch /data/session1 --project proc1 --pixel-size 0.834 --exposure 1.0 \\
        --gain /data/gain.mrc --diameter 150 --box-size 256 --ui
    cryowarp watch /data/session1 --project proc1 --scheduler tcp://10.0.0.5:8786
"""

from __future__ import annotations

import typer

from cryowarp.cli.process import _make_command


def register(app: typer.Typer) -> None:
    """Add ``cryowarp watch``."""
    app.command("watch", help=__doc__)(_make_command(watch=True))
