"""Benchmark: cryowarp motion correction vs simulator truth and vs RELION 3.1's own motioncorr.

Run (heavy; one at a time on the shared machine)::

    flock /tmp/cryowarp-heavy.lock .venv/bin/python benchmarks/bench_motion.py \
        --size 4096 --frames 40 --exposures 1.0 0.5 2.0 --repeats 3 --out docs/benchmarks/motion.md

Simulated movies (cryowarp.sim.simulate_movie: particles in ice, CTF, dose damage, Poisson counts;
global drift ≈ 50 Å path with a jump, local deformation up to ≈ 5 Å) are cached under ``--data``.
For each movie and method: total-shift RMSE (global + local, Å) against the truth at our patch centres
and at the true particle positions, after removing each position's mean over frames (the gauge no
method can see: a displacement constant in time); FRC of the aligned average against the noise-free,
motion-free image; wall time of fit + dose-weighted average (our ``cryowarp motion`` core, the movie
already in memory) and peak RSS of the whole process (read + fit + average). RELION runs
``relion_run_motioncorr --use_own`` with 5×5 patches and 2 threads via
../shared/peers/run_relion_motioncorr.py (its wall time includes reading the movie and writing the
micrographs). RELION's total shift at a point is its global shift plus its patch (local) shift
given by its third-order polynomial local model (rlnMotionModelVersion 1).
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

REPO = Path(__file__).resolve().parents[1]
from _peers import PEERS  # noqa: E402


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def make_movie(directory: Path, size: int, n_frames: int, exposure: float, seed: int) -> Path:
    """Simulate (once) and write movie.mrc, movie_clean.mrc, movie_truth.json into ``directory``."""
    if (directory / "movie_truth.json").exists():
        return directory
    import torch

    from cryowarp.sim.movie import MovieSimSettings, simulate_movie

    torch.set_num_threads(2)
    settings = MovieSimSettings(
        shape_yx=(size, size),
        pixel_size_a=1.0,
        n_frames=n_frames,
        exposure_per_frame_e_per_a2=exposure,
        initial_motion_a=12.0,
        drift_a_per_frame=0.6,
        n_jumps=1,
        jump_a=12.0,
        local_amplitude_a=2.5,
        local_n_modes=4,
        defocus_um=1.5,
        particle_area_fraction=0.25,
    )
    t0 = time.perf_counter()
    movie = simulate_movie(settings, seed=seed)
    print(
        f"simulated {size}²×{n_frames} at {exposure} e/Å²/frame in {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    movie.to_files(directory, formats=("mrc",))
    return directory


# ------------------------------------------------------------------------------------------------
# one cryowarp run (in a subprocess, so peak RSS is this run's)
# ------------------------------------------------------------------------------------------------
def run_ours_child(movie_dir: Path, exposure: float, out_json: Path) -> None:
    import torch

    from cryowarp.io.movies import read_movie
    from cryowarp.io.mrc import write_mrc
    from cryowarp.motion import average_frames, fit_motion

    torch.set_num_threads(2)
    import torch._dynamo  # noqa: F401  (torch.optim imports it on first use: ~4 s once per process)

    t0 = time.perf_counter()
    movie = read_movie(movie_dir / "movie.mrc", pixel_size_a=1.0)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = fit_motion(movie.frames, 1.0, exposure)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    avg = average_frames(
        movie.frames,
        model,
        pixel_size_a=1.0,
        exposure_per_frame_e_per_a2=exposure,
        dose_weighted=True,
        also_unweighted=True,
    )
    t_avg = time.perf_counter() - t0
    # the high-water mark of read + fit + average (before the benchmark's own plain sum below)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    write_mrc(out_json.with_suffix(".dw.mrc"), avg.average, 1.0)
    plain = movie.frames.mean(0)
    write_mrc(out_json.with_suffix(".plain.mrc"), plain, 1.0)
    out_json.write_text(
        json.dumps(
            {
                "model": model.to_dict(),
                "read_s": t_read,
                "fit_s": t_fit,
                "average_s": t_avg,
                "n_resamplings": avg.n_resamplings,
                "peak_rss_gb": peak_gb,
                "movie_float32_gb": movie.frames.numel() * 4 / 1024**3,
            }
        )
    )


def run_ours(movie_dir: Path, exposure: float, work: Path, tag: str) -> dict:
    out = work / f"ours_{tag}.json"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(movie_dir),
        "--child-exposure",
        str(exposure),
        "--child-out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out.read_text())


def run_relion(movie_dir: Path, exposure: float, work: Path, tag: str) -> dict | None:
    wrapper = PEERS / "run_relion_motioncorr.py"
    if not wrapper.exists():
        return None
    out = work / f"relion_{tag}.json"
    wd = work / f"relion_{tag}"
    cmd = [
        "python3",
        str(wrapper),
        str(movie_dir / "movie.mrc"),
        "--apix",
        "1.0",
        "--voltage",
        "300",
        "--dose-per-frame",
        str(exposure),
        "--patches",
        "5",
        "5",
        "--threads",
        "2",
        "--workdir",
        str(wd),
        "--out",
        str(out),
    ]
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        print(f"RELION failed: {err}", file=sys.stderr)
        return None
    return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------------
# scoring
# ------------------------------------------------------------------------------------------------
def _centred_rmse(est: np.ndarray, truth: np.ndarray) -> float:
    """RMSE (Å) of `(n_points, n_frames, 2)` tracks after removing each point's mean over frames."""
    e = est - est.mean(1, keepdims=True)
    t = truth - truth.mean(1, keepdims=True)
    return float(np.sqrt(((e - t) ** 2).sum(-1).mean()))


def truth_tracks(truth, coords_px_yx: np.ndarray, n_frames: int) -> np.ndarray:
    import torch

    c = torch.as_tensor(coords_px_yx, dtype=torch.float64)
    return np.stack([truth.displacement_a_yx(c, f).numpy() for f in range(n_frames)], axis=1)


def ours_tracks(model_dict: dict, coords_px_yx: np.ndarray) -> np.ndarray:
    import torch

    from cryowarp.motion import MotionModel

    model = MotionModel.from_dict(model_dict)
    c = torch.as_tensor(coords_px_yx, dtype=torch.float32)
    return np.stack([model.displacement_a_yx(c, f).numpy() for f in range(model.n_frames)], axis=1)


def relion_tracks(
    result: dict,
    coords_px_yx: np.ndarray,
    pixel_size_a: float,
    shape_yx: tuple[int, int],
    use_local: bool = True,
) -> np.ndarray:
    """RELION's total displacement (Å, yx) = −(global shift + local polynomial model) × pixel size.

    RELION's ThirdOrderPolynomialModel (src/micrograph_model.cpp): for z = frame − 1 and
    x = X/width − 0.5, y = Y/height − 0.5 the local shift is Σ_t (c_t,1 z + c_t,2 z² + c_t,3 z³)·t with
    t ∈ (1, x, x², y, y², xy), 18 coefficients per axis.
    """
    import starfile

    r = result["result"]
    g = -np.asarray(r["shifts_px"], dtype=float)[:, ::-1] * pixel_size_a  # (f, 2) yx
    n_f = g.shape[0]
    tracks = np.repeat(g[None], len(coords_px_yx), axis=0)
    tables = starfile.read(r["movie_star"], always_dict=True)
    if use_local and "local_motion_model" in tables:
        coeffs = (
            tables["local_motion_model"]
            .sort_values("rlnMotionModelCoeffsIdx")["rlnMotionModelCoeff"]
            .to_numpy()
        )
        h, w = shape_yx
        x = coords_px_yx[:, 1] / w - 0.5
        y = coords_px_yx[:, 0] / h - 0.5
        terms = np.stack([np.ones_like(x), x, x * x, y, y * y, x * y])  # (6, n)
        for f in range(n_f):
            z = np.array([f, f**2, f**3], dtype=float)
            sx = (coeffs[:18].reshape(6, 3) @ z) @ terms
            sy = (coeffs[18:].reshape(6, 3) @ z) @ terms
            tracks[:, f, 0] -= sy * pixel_size_a
            tracks[:, f, 1] -= sx * pixel_size_a
    return tracks


def frc(a: np.ndarray, b: np.ndarray, pixel_size_a: float, bands_a: list[tuple[float, float]]) -> list[float]:
    fa, fb = np.fft.rfft2(a - a.mean()), np.fft.rfft2(b - b.mean())
    ky = np.fft.fftfreq(a.shape[0])[:, None]
    kx = np.fft.rfftfreq(a.shape[1])[None, :]
    k = np.sqrt(ky**2 + kx**2) / pixel_size_a
    out = []
    for low, high in bands_a:
        m = (k >= 1 / low) & (k < 1 / high)
        num = (fa[m] * fb[m].conj()).real.sum()
        out.append(float(num / np.sqrt((np.abs(fa[m]) ** 2).sum() * (np.abs(fb[m]) ** 2).sum())))
    return out


def shift_image(image: np.ndarray, shift_px_yx: np.ndarray) -> np.ndarray:
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.rfftfreq(image.shape[1])[None, :]
    ramp = np.exp(-2j * np.pi * (ky * shift_px_yx[0] + kx * shift_px_yx[1]))
    return np.fft.irfft2(np.fft.rfft2(image) * ramp, s=image.shape)


# ------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--exposures", type=float, nargs="+", default=[1.0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--relion-repeats", type=int, default=1)
    ap.add_argument("--data", type=Path, default=Path("/tmp/cwbench_motion"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--make-only", action="store_true")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-exposure", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        run_ours_child(a.child, a.child_exposure, a.child_out)
        return

    import mrcfile

    from cryowarp.sim.movie import MovieTruth

    bands = [(50.0, 20.0), (20.0, 10.0), (10.0, 5.0), (5.0, 3.0)]
    lines = [
        "# Motion correction benchmark",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), {platform.python_version()}; "
        f"load average at start {os.getloadavg()[0]:.1f}. "
        f"Date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Command: `flock /tmp/cryowarp-heavy.lock .venv/bin/python benchmarks/bench_motion.py "
        + " ".join(sys.argv[1:])
        + "`",
        "",
        f"Movies: cryowarp.sim, {a.size}²×{a.frames}, 1 Å/px, global path ≈ 50 Å with a 12 Å jump, local "
        "deformation (4 modes, up to ≈ 5 Å). Ours: Warp defaults (auto grid, 768-px patches, 500–10 Å, "
        "B −500). RELION 3.1.3 `--use_own`, 5×5 patches, B 150, 2 threads. RMSE of the total displacement "
        "after removing each point's mean over frames; times are medians.",
        "",
        "| e/Å²/frame | method | RMSE patches (Å) | RMSE particles (Å) | FRC 50–20 / 20–10 / 10–5 / 5–3 Å "
        "| fit+avg wall (s) | peak RSS (GB) |",
        "|---|---|---|---|---|---|---|",
    ]
    work = a.data / "runs"
    work.mkdir(parents=True, exist_ok=True)
    for exposure in a.exposures:
        movie_dir = make_movie(
            a.data / f"s{a.size}_f{a.frames}_e{exposure:g}", a.size, a.frames, exposure, seed=7
        )
        if a.make_only:
            continue
        truth = MovieTruth.from_dict(json.loads((movie_dir / "movie_truth.json").read_text()))
        clean = mrcfile.read(movie_dir / "movie_clean.mrc").astype(np.float32)
        particles_yx = truth.particles.coords_px_xy.numpy()[:, ::-1].astype(float)
        runs = [run_ours(movie_dir, exposure, work, f"e{exposure:g}_{i}") for i in range(a.repeats)]
        best = runs[0]
        centres = np.asarray(best["model"]["patch_centers_px_yx"], dtype=float)
        n_f = best["model"]["n_frames"]
        t_patch = truth_tracks(truth, centres, n_f)
        t_part = truth_tracks(truth, particles_yx, n_f)
        loc = best["model"]["local_values_a_yx"]
        n_global = len(best["model"]["global_values_a_yx"][0])
        grid = f"{len(loc[0][0][0])}×{len(loc[0][0])}×{len(loc[0])} local, {n_global} global"
        wall = statistics.median(r["fit_s"] + r["average_s"] for r in runs)
        fit_med = statistics.median(r["fit_s"] for r in runs)
        avg_med = statistics.median(r["average_s"] for r in runs)
        read_med = statistics.median(r["read_s"] for r in runs)
        wall_io = statistics.median(r["read_s"] + r["fit_s"] + r["average_s"] for r in runs)
        peak = max(r["peak_rss_gb"] for r in runs)
        ours_dw = mrcfile.read(work / f"ours_e{exposure:g}_0.dw.mrc").astype(np.float32)
        plain = mrcfile.read(work / f"ours_e{exposure:g}_0.plain.mrc").astype(np.float32)
        rm_patch = _centred_rmse(ours_tracks(best["model"], centres), t_patch)
        rm_part = _centred_rmse(ours_tracks(best["model"], particles_yx), t_part)
        f_ours = frc(ours_dw, clean, 1.0, bands)
        f_plain = frc(plain, clean, 1.0, bands)
        fmt = lambda v: " / ".join(f"{x:.3f}" for x in v)  # noqa: E731
        lines.append(
            f"| {exposure:g} | cryowarp (read {read_med:.1f} s; fit {fit_med:.1f} s + average {avg_med:.1f} s, "
            f"{best.get('n_resamplings', '?')} resamplings, grid {grid}, {a.repeats} runs) "
            f"| {rm_patch:.3f} | {rm_part:.3f} | {fmt(f_ours)} | {wall:.1f} | {peak:.2f} |"
        )
        lines.append(f"| {exposure:g} | plain sum | – | – | {fmt(f_plain)} | – | – |")
        rel_runs = [
            run_relion(movie_dir, exposure, work, f"e{exposure:g}_{i}") for i in range(a.relion_repeats)
        ]
        rel_runs = [r for r in rel_runs if r is not None]
        if rel_runs:
            r0 = rel_runs[0]
            rwall = statistics.median(r["wall_s"] for r in rel_runs)
            rp = _centred_rmse(relion_tracks(r0, centres, 1.0, clean.shape), t_patch)
            rq = _centred_rmse(relion_tracks(r0, particles_yx, 1.0, clean.shape), t_part)
            rimg = mrcfile.read(r0["result"]["aligned_sum"]).astype(np.float32)
            # RELION aligns to frame 1; move its sum to the mean position with its own estimate
            d_rel = -np.asarray(r0["result"]["shifts_px"], dtype=float)[:, ::-1]
            rimg = shift_image(rimg, d_rel.mean(0))
            f_rel = frc(rimg, clean, 1.0, bands)
            lines.append(
                f"| {exposure:g} | RELION 3.1.3 own ({len(rel_runs)} run) | {rp:.3f} | {rq:.3f} | "
                f"{fmt(f_rel)} | {rwall:.1f} (incl. I/O) | – |"
            )
            gp = _centred_rmse(relion_tracks(r0, centres, 1.0, clean.shape, use_local=False), t_patch)
            gq = _centred_rmse(relion_tracks(r0, particles_yx, 1.0, clean.shape, use_local=False), t_part)
            lines.append(f"| {exposure:g} | RELION, global shifts only | {gp:.3f} | {gq:.3f} | – | – | – |")
            lines.append(f"| {exposure:g} | ratio RELION / cryowarp wall | | | | {rwall / wall:.2f} | |")
            lines.append(
                f"| {exposure:g} | ratio RELION / cryowarp incl. reading ({wall_io:.1f} s) | | | | "
                f"{rwall / wall_io:.2f} | |"
            )
        print("\n".join(lines[-5:]), file=sys.stderr)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)


if __name__ == "__main__":
    main()
