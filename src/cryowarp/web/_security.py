"""Access control for the web UI: a token for non-loopback binds, and paths confined to the project."""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from fastapi import HTTPException

TOKEN_COOKIE = "cryowarp_token"
TOKEN_QUERY = "token"
TOKEN_HEADER = "x-cryowarp-token"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve a project beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"binding to {host} makes the project reachable from other machines; "
            "give a token (--token T, then open http://HOST:PORT/?token=T) or bind to 127.0.0.1"
        )


def token_matches(expected: str, found: str | None) -> bool:
    """Constant-time comparison (None never matches)."""
    return found is not None and hmac.compare_digest(expected.encode(), found.encode())


def safe_path(root: Path, relative: str | Path) -> Path:
    """``root / relative`` if it is an existing file inside ``root`` (after resolving symlinks), else 404.

    Absolute paths, ``..`` components and symlinks that leave the project all end here.
    """
    root = root.resolve()
    rel = str(relative)
    if not rel or "\x00" in rel:
        raise HTTPException(404, f"{rel!r}: not a file in the project")
    candidate = (root / rel).resolve()
    if not candidate.is_relative_to(root):
        raise HTTPException(404, f"{rel!r}: outside the project folder")
    if not candidate.is_file():
        raise HTTPException(404, f"{rel!r}: no such file in the project")
    return candidate
