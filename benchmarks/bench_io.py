"""Benchmark: reading a 4096² × 40 movie (MRC uint16, TIFF LZW uint8, EER 200 raw frames → 40 groups).

Each read runs in a fresh subprocess so that its peak RSS (``ru_maxrss``) is its own. "Peer" is the
straightforward way with the same libraries (``mrcfile.read(...).astype(float32)``,
``tifffile.imread(...).astype(float32)``, tifffile's EER decoder per group) — what a script without
chunked reading does. Prints markdown and writes ``docs/benchmarks/io.md``.

Run (heavy: ~3 GB per read, one at a time)::

    flock /tmp/cryowarp-heavy.lock .venv/bin/python benchmarks/bench_io.py [--runs 3] [--dir /tmp/cwbench_io]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_SIZE = int(os.environ.get("CWBENCH_IO_SIZE", "4096"))  # smaller for a smoke test
SHAPE = (40, _SIZE, _SIZE)
N_RAW_EER = 200
REPO = Path(__file__).resolve().parents[1]


class _EerFrames:
    """200 raw 4096² EER frames at 0.0375 events/px each (1.5 e/px per group of 5), made on demand."""

    def __len__(self) -> int:
        return N_RAW_EER

    def __getitem__(self, i: int) -> np.ndarray:
        return (np.random.default_rng(1000 + i).random(SHAPE[1:], dtype=np.float32) < 0.0375).astype(np.uint8)


def make_inputs(folder: Path) -> dict[str, Path]:
    import mrcfile
    import tifffile

    from cryowarp.io.eer import write_eer

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "mrc": folder / "movie_u16.mrc",
        "tiff": folder / "movie_u8_lzw.tif",
        "eer": folder / "movie.eer",
    }
    rng = np.random.default_rng(0)
    if not paths["mrc"].exists() or not paths["tiff"].exists():
        tmp_mrc, tmp_tif = folder / ".tmp.mrc", folder / ".tmp.tif"
        mrc = mrcfile.new_mmap(tmp_mrc, shape=SHAPE, mrc_mode=6, overwrite=True)
        with tifffile.TiffWriter(tmp_tif) as tif:
            for f in range(SHAPE[0]):
                frame = rng.poisson(1.5, size=SHAPE[1:]).astype(np.uint16)
                mrc.data[f] = frame
                tif.write(frame.astype(np.uint8), compression="lzw", metadata=None, contiguous=False)
        mrc.set_image_stack()
        mrc.voxel_size = 0.83
        mrc.close()
        tmp_mrc.rename(paths["mrc"])
        tmp_tif.rename(paths["tiff"])
    if not paths["eer"].exists():
        write_eer(paths["eer"], _EerFrames(), metadata={"sensorPixelSize.width": 0.83e-10})
    return paths


def _one(impl: str, kind: str, path: str) -> dict[str, float]:
    """Run one read in this process and report seconds and peak RSS."""
    import mrcfile  # noqa: F401  (imports are outside the timed region for every reader)
    import tifffile
    import torch

    from cryowarp.io.movies import read_movie

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.perf_counter()
    if impl == "ours":
        movie = read_movie(path, eer_n_groups=40, pixel_size_a=0.83)
        shape = tuple(movie.frames.shape)
        checksum = float(movie.frames[:, ::97, ::89].sum())
    elif impl == "ours_bin2":
        movie = read_movie(path, eer_n_groups=40, pixel_size_a=0.83, bin_factor=2)
        shape = tuple(movie.frames.shape)
        checksum = float(movie.frames.mean() * 4)
    else:
        if kind == "mrc":
            frames = mrcfile.read(path).astype(np.float32)
        elif kind == "tiff":
            frames = tifffile.imread(path).astype(np.float32)
        else:  # tifffile decodes EER to bool pages; sum each group of 5 raw frames
            frames = np.empty(SHAPE, np.float32)
            with tifffile.TiffFile(path) as tif:
                for g in range(SHAPE[0]):
                    frames[g] = tif.asarray(key=range(g * 5, g * 5 + 5)).sum(0)
        shape = frames.shape
        checksum = float(frames[:, ::97, ::89].sum())
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    return {"seconds": seconds, "peak_rss_gb": peak_gb, "shape": list(shape), "checksum": checksum}


def _baseline_rss_gb() -> float:
    code = (
        "import resource, torch, numpy, cryowarp.io.movies; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out) * 1024 / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/cwbench_io"))
    parser.add_argument("--one", nargs=3, metavar=("IMPL", "KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=REPO / "docs/benchmarks/io.md")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(*args.one)))
        return
    paths = make_inputs(args.dir)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    results: dict[tuple[str, str], list[dict]] = {}
    jobs = [(impl, kind) for kind in ("mrc", "tiff", "eer") for impl in ("ours", "peer", "ours_bin2")]
    for run in range(args.runs):
        for impl, kind in jobs:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", impl, kind, str(paths[kind])],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode != 0:
                raise SystemExit(f"{impl} {kind} failed:\n{proc.stderr[-2000:]}")
            results.setdefault((impl, kind), []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(
                f"run {run + 1}/{args.runs} {impl:9s} {kind:4s} {results[(impl, kind)][-1]}", file=sys.stderr
            )
    base = _baseline_rss_gb()
    float32_gb = np.prod(SHAPE) * 4 / 1e9
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    load = os.getloadavg()[0]
    lines = [
        "# Reading movies (io)",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs ({platform.machine()}), "
        f"Python {platform.python_version()}, OMP_NUM_THREADS={threads}; shared with other jobs "
        f"(load average {load:.1f} at the end; wall-clock varies ~2× between runs).",
        "Command: `flock /tmp/cryowarp-heavy.lock .venv/bin/python benchmarks/bench_io.py "
        f"--runs {args.runs}`",
        "",
        f"Movie: {SHAPE[0]} frames of {SHAPE[2]}×{SHAPE[1]}; as float32 it takes **{float32_gb:.2f} GB**. "
        f"Importing torch + cryowarp alone peaks at {base:.2f} GB RSS. "
        "Each read runs in a fresh process; "
        f"median of {args.runs} runs. Peer = the same libraries without chunking "
        "(`mrcfile.read(...).astype(float32)`, `tifffile.imread(...).astype(float32)`, tifffile's EER "
        "decoder per group of 5 raw frames into a preallocated float32 array).",
        "",
        "| file | reader | seconds (median) | peak RSS GB | RSS − output − imports, GB | time vs peer |",
        "|---|---|---|---|---|---|",
    ]

    def size(kind: str) -> str:
        return f"{paths[kind].stat().st_size / 1e9:.2f} GB on disk"

    labels = {
        "mrc": f"MRC uint16 ({size('mrc')})",
        "tiff": f"TIFF LZW uint8 ({size('tiff')})",
        "eer": f"EER {N_RAW_EER} raw → 40 groups ({size('eer')})",
    }
    for kind in ("mrc", "tiff", "eer"):
        peer_t = statistics.median(r["seconds"] for r in results[("peer", kind)])
        for impl in ("ours", "peer", "ours_bin2"):
            rs = results[(impl, kind)]
            t = statistics.median(r["seconds"] for r in rs)
            rss = statistics.median(r["peak_rss_gb"] for r in rs)
            out_gb = float32_gb / (4 if impl == "ours_bin2" else 1)
            name = {
                "ours": "cryowarp `read_movie`",
                "peer": "peer (no chunking)",
                "ours_bin2": "cryowarp, Fourier bin 2 on read",
            }[impl]
            lines.append(
                f"| {labels[kind]} | {name} | {t:.2f} | {rss:.2f} | {rss - out_gb - base:+.2f} | "
                f"{t / peer_t:.2f}× |"
            )
    for kind in ("mrc", "tiff", "eer"):
        ours, peer = results[("ours", kind)][0], results[("peer", kind)][0]
        assert ours["shape"] == peer["shape"], (kind, ours["shape"], peer["shape"])
        assert abs(ours["checksum"] - peer["checksum"]) <= 1e-6 * abs(peer["checksum"]) + 1e-3, (
            kind,
            ours,
            peer,
        )
    lines += ["", "Both readers give identical frames (checksums of a pixel subsample agree)."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
