"""The import-linter contracts in pyproject.toml hold: imports point down the layers and the compute
core never touches files, the store or the UI."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter not installed (pip install -e '.[test]')")
    out = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_ruff_is_clean():
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(exe).exists():
        pytest.skip("ruff not installed (pip install -e '.[test]')")
    out = subprocess.run([exe, "check", "src", "tests", "benchmarks", "scripts"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
