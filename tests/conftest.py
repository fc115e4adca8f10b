"""Shared fixtures: paths to ../shared/data, devices to test on, the Chromium launch for Playwright."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CRYOWARP_SHARED_DATA", REPO.parent / "shared" / "data"))
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CHROMIUM = os.environ.get("CRYOWARP_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real files from public sources, see its MANIFEST.md)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Drive Debian's chromium (Playwright cannot download its own browser here)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"],
    }
