"""Where the peer tools live and how a CTF peer wrapper is run (shared by the benchmarks).

``../shared/peers/`` holds the wrappers; ``install.sh`` there puts topaz, ASPIRE, teamtomo's torch
packages and abTEM into their own venv (``PEERS_VENV``, default ``~/.cache/cwbench/peers/venv``); RELION
3.1 comes from Debian. Each wrapper writes RELION-convention JSON: ``{"result": {...}, "wall_s": s}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS = Path(os.environ.get("CRYOWARP_PEERS", REPO.parent / "shared" / "peers"))
PEERS_PY = Path(os.environ.get("PEERS_VENV", Path.home() / ".cache/cwbench/peers/venv")) / "bin" / "python"


def run_ctf_peer(
    script: str,
    mrc: Path | str,
    *,
    pixel_a: float,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    extra: list[str] | None = None,
) -> dict | None:
    """One CTF wrapper (``run_tce_ctf.py``, ``run_aspire_ctf.py``) on one micrograph with one thread.

    Returns the wrapper's JSON (``result`` with defocus_u_A, defocus_v_A, astig_angle_deg, …, and the
    peer's own ``wall_s``), ``{"error": <last lines of its output>}`` if it failed, or None without the
    peers venv.
    """
    if not PEERS_PY.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [str(PEERS_PY), str(PEERS / script), str(mrc), "--apix", f"{pixel_a:.5f}"]
        cmd += ["--voltage", f"{voltage_kv:.0f}", "--cs", str(cs_mm), "--ac", str(amplitude_contrast)]
        cmd += ["--out", str(out), *(extra or [])]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if proc.returncode != 0 or not out.exists():
            return {"error": proc.stdout[-400:]}
        return json.loads(out.read_text())
