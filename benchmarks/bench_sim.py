"""Benchmark the simulator: a 4096²×40 movie, and a 4096² micrograph beside ASPIRE's MicrographSimulation.

Run (heavy: hold the machine's lock)::

    OMP_NUM_THREADS=1 flock /tmp/cryowarp-heavy.lock .venv/bin/python benchmarks/bench_sim.py \
        --runs 3 --out docs/benchmarks/sim.md

Each measurement runs in a fresh subprocess (so peak memory is per run); the table gives the median of
``--runs`` runs. The peer is ASPIRE 0.14 (``aspire.source.MicrographSimulation``) from the peers venv
(``../shared/peers``), fed the β-galactosidase potential that cryowarp renders from ``5a1a`` at the same
pixel size, with the same number of particles, a CTF and white noise. The two do different amounts of
physics (cryowarp: atoms, ice, per-particle defocus, damage, Poisson counts; ASPIRE: one volume,
Gaussian noise), so the ratio says what the richer model costs, not who is faster at the same job.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from _peers import PEERS_PY  # noqa: E402

MOVIE = """
import json, resource, time, torch
from cryowarp.sim import MovieSimSettings, simulate_movie
s = MovieSimSettings(shape_yx=({size}, {size}), n_frames={frames})
t = time.perf_counter()
m = simulate_movie(s, seed={seed})
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                  "n_particles": len(m.truth.particles.coords_px_xy),
                  "movie_gb": m.frames.numel() * 4 / 1e9}}))
"""

MICROGRAPH = """
import json, resource, time, torch
from cryowarp.sim import MicrographSimSettings, simulate_micrograph
s = MicrographSimSettings(shape_yx=({size}, {size}), n_particles={n}, defocus_delta_um=0.0,
                          specimen_tilt_deg={tilt})
t = time.perf_counter()
m = simulate_micrograph(s, seed={seed})
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                  "n_particles": len(m.coords_px_xy)}}))
"""

VOLUME = """
import numpy as np, torch
from cryowarp.sim import builtin_model
from cryowarp.sim.tilt_series import render_volume
cloud = builtin_model("5a1a")
vol = render_volume([cloud], torch.zeros(1, 3, dtype=torch.float64), torch.eye(3)[None],
                    torch.zeros(1, dtype=torch.long),
                    voxel_size_a=1.0, shape_zyx=(200, 200, 200), bfactor_a2=30.0)
np.save("{path}", vol.numpy().astype(np.float32))
"""

ASPIRE = """
import json, resource, time, numpy as np
from aspire.source import MicrographSimulation
from aspire.volume import Volume
from aspire.operators import RadialCTFFilter
from aspire.noise import WhiteNoiseAdder
vol = Volume(np.load("{path}")[None], pixel_size=1.0)
t = time.perf_counter()
src = MicrographSimulation(vol, micrograph_size={size}, particles_per_micrograph={n}, seed={seed},
                           ctf_filters=[RadialCTFFilter(voltage=300, defocus=15000, Cs=2.7, alpha=0.07)],
                           pixel_size=1.0,
                           noise_adder=WhiteNoiseAdder(var=1.0))
img = src.images[0].asnumpy()
dt = time.perf_counter() - t
print(json.dumps({{"seconds": dt, "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                  "n_particles": {n}}}))
"""


def _run(python: str, code: str, env: dict | None = None) -> dict:
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine() -> str:
    import torch

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return (
        f"{platform.node()}: {os.cpu_count()} × {cpu}, Python {platform.python_version()}, "
        f"torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), load average at start {load[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--particles", type=int, default=100, help="particles in the micrograph comparison")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args()

    py = sys.executable
    rows = []
    movie_runs = [
        _run(py, MOVIE.format(size=args.size, frames=args.frames, seed=i)) for i in range(args.runs)
    ]
    mic_runs = [
        _run(py, MICROGRAPH.format(size=args.size, n=args.particles, seed=i, tilt=0.0))
        for i in range(args.runs)
    ]
    tilted_runs = [
        _run(py, MICROGRAPH.format(size=args.size, n=args.particles, seed=i, tilt=60.0))
        for i in range(args.runs)
    ]
    peer_runs = []
    peer_note = "not run"
    if not args.no_peer and PEERS_PY.exists():
        with tempfile.TemporaryDirectory() as tmp:
            vol = Path(tmp) / "bgal.npy"
            _run(py, VOLUME.format(path=vol) + "\nprint('{}')")
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
            try:
                peer_runs = [
                    _run(
                        str(PEERS_PY), ASPIRE.format(path=vol, size=args.size, n=args.particles, seed=i), env
                    )
                    for i in range(args.runs)
                ]
                peer_note = "ASPIRE MicrographSimulation"
            except RuntimeError as err:
                peer_note = f"ASPIRE failed: {str(err).splitlines()[-1]}"
    elif not args.no_peer:
        peer_note = f"peers venv missing ({PEERS_PY})"

    med = lambda runs, key="seconds": statistics.median(r[key] for r in runs)  # noqa: E731
    movie_s = med(movie_runs)
    rows.append(
        f"| cryowarp `simulate_movie` {args.size}²×{args.frames} (5a1a, local motion, damage, Poisson) | "
        f"{movie_s:.1f} s | {med(movie_runs, 'maxrss_gb'):.2f} GB "
        f"(movie {movie_runs[0]['movie_gb']:.2f} GB) | "
        f"{movie_runs[0]['n_particles']} | — |"
    )
    mic_s = med(mic_runs)
    ratio = f"{mic_s / med(peer_runs):.2f}× the peer's time" if peer_runs else "—"
    rows.append(
        f"| cryowarp `simulate_micrograph` {args.size}² | {mic_s:.1f} s | "
        f"{med(mic_runs, 'maxrss_gb'):.2f} GB | "
        f"{mic_runs[0]['n_particles']} | {ratio} |"
    )
    rows.append(
        f"| cryowarp `simulate_micrograph` {args.size}², specimen tilted 60° (exact space-variant CTF) | "
        f"{med(tilted_runs):.1f} s | {med(tilted_runs, 'maxrss_gb'):.2f} GB | "
        f"{tilted_runs[0]['n_particles']} | — |"
    )
    if peer_runs:
        rows.append(
            f"| ASPIRE 0.14 `MicrographSimulation` {args.size}² (one volume, CTF, white noise) | "
            f"{med(peer_runs):.1f} s | {med(peer_runs, 'maxrss_gb'):.2f} GB | {args.particles} | 1 |"
        )
    if args.size == 4096 and args.frames == 40:
        target = "met" if movie_s <= 120 else "not met"
    else:
        target = f"not measured at this size ({args.size}²×{args.frames})"
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    md = "\n".join(
        [
            "# Simulator benchmark",
            "",
            f"Machine: {_machine()}.",
            f"Command: `{threads}"
            f"flock /tmp/cryowarp-heavy.lock .venv/bin/python benchmarks/bench_sim.py --runs {args.runs}"
            f" --size {args.size} --frames {args.frames} --particles {args.particles}`",
            f"Median of {args.runs} runs, each in a fresh process; peer: {peer_note}.",
            "",
            "| job | time (median) | peak RSS | particles | ratio |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Target (4096²×40 movie in ≤ 2 min): **{target}** ({movie_s:.0f} s). All runs (s): movie "
            f"{[round(r['seconds'], 1) for r in movie_runs]}, "
            f"micrograph {[round(r['seconds'], 1) for r in mic_runs]}"
            + (f", ASPIRE {[round(r['seconds'], 1) for r in peer_runs]}" if peer_runs else "")
            + ".",
            "",
            "The machine is shared (2 vCPU, several engineers): treat the numbers as upper bounds.",
            "",
        ]
    )
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"(benchmark took {time.time() - started:.0f} s)", file=sys.stderr)
