"""Exceptions raised by ``cryowarp.io``: each names the file, what was expected and what was found."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CryowarpIOError",
    "CorruptFileError",
    "TruncatedFileError",
    "UnsupportedFormatError",
    "ShapeMismatchError",
    "InvalidDataError",
    "format_bytes",
]


class CryowarpIOError(ValueError):
    """Base class of every error ``cryowarp.io`` raises about a file's content."""

    def __init__(self, path: str | Path | None, message: str):
        self.path = None if path is None else Path(path)
        prefix = f"{self.path.name}: " if self.path is not None else ""
        super().__init__(prefix + message)


class CorruptFileError(CryowarpIOError):
    """The file cannot be parsed: wrong header, wrong magic number, inconsistent sizes."""


class TruncatedFileError(CorruptFileError):
    """The file is shorter than its header says: truncated, or still being written (retry later)."""


class UnsupportedFormatError(CryowarpIOError):
    """The file is valid but uses a feature we do not read (e.g. MRC mode 4, a complex map)."""


class ShapeMismatchError(CryowarpIOError):
    """Two arrays that must agree do not (e.g. gain reference vs. movie frames)."""


class InvalidDataError(CryowarpIOError):
    """The pixel values are unusable (NaN or infinity)."""


def format_bytes(n_bytes: float) -> str:
    """Human-readable size with decimal units, e.g. ``2.68 GB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n_bytes) >= scale:
            return f"{n_bytes / scale:.2f} {unit}"
    return f"{int(n_bytes)} bytes"
