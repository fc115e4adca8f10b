"""Local motion accuracy at the true particle positions, against the simulator's truth (issue 6).

Fits our motion model on N movies of the end-to-end session (bench_endtoend.py's ``--workdir``; the
movies, gain and per-movie truth JSON are reused as they are, no reconstruction) and reports the
frame-to-frame error of the total displacement at every true particle centre:

    e_f(p) = d_ours,f(p) − d_true,f(p),   minus its mean over frames (a per-particle constant offset is a
                                          pure translation of the particle, which refinement absorbs),

as an RMS over particles and frames of |e| (2-D, Å), split into the global part (our global track −
the true global track, which is the spatial mean of the true field) and the local part (the rest). It
also reports how well the model family itself can represent the truth: the least-squares best
displacement of the form "free per-frame global track + natural cubic spline grid X × Y × T" (the
family of ``MotionModel``) fitted directly to the true displacements at the particle positions, and
its residual by the same measure (``--representability``).

Run (single-threaded exploration; not a timing)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_motion_local.py --movies 6
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_motion_local.py --movies 6 --grid 3 3 16 \\
        --local-temporal-nodes 8 --representability
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def load_movie(movies: Path, stem: str, n_frames: int | None = None):
    """Gain-corrected frames and the truth of one movie of the session (the first ``n_frames``: a
    lower total exposure with the same motion)."""
    from cryowarp.io.movies import read_movie
    from cryowarp.sim.movie import MovieTruth

    movie = read_movie(movies / f"{stem}.mrc", gain=movies / "gain.mrc")
    truth = MovieTruth.from_dict(json.loads((movies / "truth" / f"{stem}_truth.json").read_text()))
    frames = movie.frames
    if n_frames is not None and n_frames < frames.shape[0]:
        frames = frames[:n_frames].contiguous()
        m = truth.motion
        motion = type(m)(
            m.shape_yx,
            m.global_a_yx[:n_frames],
            m.mode_cycles_yx,
            m.mode_phase_rad,
            m.mode_amplitude_a_yx,
            tuple(p[:n_frames] for p in m.mode_profile),
        )
        truth = dataclasses.replace(truth, motion=motion)
    return frames, float(movie.pixel_size_a or truth.pixel_size_a), truth


def true_tracks(truth) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True particle centres `(P, 2)` yx px, total `(P, F, 2)` and global `(F, 2)` displacements, Å."""
    coords_yx = truth.coords_px_xy.flip(-1).to(torch.float64)
    n_p, n_f = coords_yx.shape[0], truth.n_frames
    c = coords_yx[:, None, :].expand(n_p, n_f, 2).reshape(-1, 2)
    f = torch.arange(n_f)[None, :].expand(n_p, n_f).reshape(-1)
    total = truth.displacement_a_yx(c, f).reshape(n_p, n_f, 2)
    return coords_yx, total, truth.motion.global_displacement_a_yx()


def model_tracks(model, coords_yx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our total `(P, F, 2)` and global `(F, 2)` displacements at ``coords_yx``, Å (float64)."""
    n_p, n_f = coords_yx.shape[0], model.n_frames
    c = coords_yx[:, None, :].expand(n_p, n_f, 2).reshape(-1, 2).float()
    f = torch.arange(n_f)[None, :].expand(n_p, n_f).reshape(-1)
    total = model.displacement_a_yx(c, f).reshape(n_p, n_f, 2).double()
    return total, model.global_displacement_a_yx().double()


def rms_frame_to_frame(err: torch.Tensor) -> float:
    """RMS of |e| (2-D) over particles and frames after removing each particle's mean over frames."""
    e = err - err.mean(-2, keepdim=True)
    return float(e.square().sum(-1).mean().sqrt())


def errors(model, truth) -> dict:
    """Frame-to-frame RMS error (Å) of ``model`` at the true particle positions: total, global, local."""
    coords, d_true, g_true = true_tracks(truth)
    d_ours, g_ours = model_tracks(model, coords)
    err = d_ours - d_true
    g_err = (g_ours - g_true)[None].expand_as(err)
    offset = err.mean(-2)
    return {
        "total": rms_frame_to_frame(err),
        "global": rms_frame_to_frame(g_err),
        "local": rms_frame_to_frame(err - g_err),
        "offset": float(offset.square().sum(-1).mean().sqrt()),
        "true_local": rms_frame_to_frame(d_true - g_true[None]),
        "n_particles": int(coords.shape[0]),
    }


def representability(truth, grid_xyt: tuple[int, int, int]) -> float:
    """Residual frame-to-frame RMS (Å) of the best "per-frame global + X×Y×T spline" fit to the truth.

    Least squares over the true particle positions and all frames, per component; the global track is
    free per frame (the best any global model can do), the local grid is a natural cubic spline with
    nodes spanning the whole frame, as in ``MotionModel``.
    """
    from cryowarp.base.grids import natural_spline_weights_1d

    coords, d_true, _ = true_tracks(truth)
    n_p, n_f = coords.shape[0], truth.n_frames
    h, w = truth.shape_yx
    gx, gy, gt = grid_xyt
    wt = natural_spline_weights_1d(gt, torch.arange(n_f, dtype=torch.float32) / (n_f - 1)).double()
    wy = natural_spline_weights_1d(gy, (coords[:, 0] / (h - 1)).float()).double()
    wx = natural_spline_weights_1d(gx, (coords[:, 1] / (w - 1)).float()).double()
    local = torch.einsum("ft,py,px->pftyx", wt, wy, wx).reshape(n_p * n_f, -1)
    glob = torch.eye(n_f, dtype=torch.float64)[None].expand(n_p, n_f, n_f).reshape(n_p * n_f, n_f)
    # per-particle constant offsets are free too (the measure ignores them)
    const = torch.eye(n_p, dtype=torch.float64)[:, None, :].expand(n_p, n_f, n_p).reshape(n_p * n_f, n_p)
    design = torch.cat([local, glob, const], 1)
    target = d_true.reshape(n_p * n_f, 2)
    solution = torch.linalg.lstsq(design, target, driver="gelsd").solution
    residual = (target - design @ solution).reshape(n_p, n_f, 2)
    return rms_frame_to_frame(residual)


def summarise(rows: list[dict]) -> dict:
    """Pooled RMS over movies (weighted by particle count) of each error column."""
    n = np.array([r["n_particles"] for r in rows], dtype=float)
    out = {}
    for key in ("total", "global", "local", "offset", "true_local"):
        v = np.array([r[key] for r in rows])
        out[key] = float(np.sqrt((n * v**2).sum() / n.sum()))
    if rows and "fit_s" in rows[0]:
        out["fit_s_median"] = statistics.median(r["fit_s"] for r in rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/e2e/final"), help="bench_endtoend workdir")
    ap.add_argument("--movies", type=int, default=6, help="number of movies (the first N)")
    ap.add_argument("--frames", type=int, default=None, help="use only the first N frames (lower exposure)")
    ap.add_argument("--grid", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"), help="grid_xyt")
    ap.add_argument("--patch", type=int, default=None, help="patch_size_px")
    ap.add_argument("--local-temporal-nodes", type=int, default=None)
    ap.add_argument("--bfactor", type=float, default=None)
    ap.add_argument("--range-high", type=float, default=None)
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--small-field-patches", type=int, default=None, help="0 = Warp's layout at any size")
    ap.add_argument("--representability", action="store_true", help="also fit the model family to the truth")
    ap.add_argument("--repr-grids", default="2,2,4 3,3,4 2,2,8 3,3,8 3,3,16 4,4,16 5,5,16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="write per-movie rows and the summary here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from cryowarp.motion import MotionSettings, fit_motion

    overrides = {
        k: v
        for k, v in dict(
            grid_xyt=tuple(args.grid) if args.grid else None,
            patch_size_px=args.patch,
            local_temporal_nodes=args.local_temporal_nodes,
            bfactor_a2=args.bfactor,
            range_high_a=args.range_high,
            max_iterations=args.iterations,
            small_field_patches=args.small_field_patches,
        ).items()
        if v is not None
    }
    settings = MotionSettings(**overrides)
    movies = args.workdir / "movies"
    session = json.loads((movies / "session.json").read_text())
    stems = [Path(m["path"]).stem for m in session["movies"]][: args.movies]
    exposure = session["settings"]["exposure_per_frame_e_per_a2"]
    print(f"settings: {settings.model_dump()}", flush=True)
    rows, repr_rows = [], {g: [] for g in args.repr_grids.split()}
    for stem in stems:
        frames, pixel, truth = load_movie(movies, stem, args.frames)
        t0 = time.perf_counter()
        model = fit_motion(frames, pixel, exposure, settings)
        fit_s = time.perf_counter() - t0
        row = {"movie": stem, "fit_s": fit_s, "grid": list(model.local_values_a_yx.shape[1:]), **errors(model, truth)}
        rows.append(row)
        line = " ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float))
        print(f"{stem}: local grid (t, y, x) {row['grid']}; {line}", flush=True)
        if args.representability:
            for g in repr_rows:
                x, y, z = (int(s) for s in g.split(","))
                repr_rows[g].append({"n_particles": row["n_particles"], "residual": representability(truth, (x, y, z))})
    summary = summarise(rows)
    print("pooled RMS over movies (Å): " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
    if args.representability:
        summary["representability"] = {}
        for g, rr in repr_rows.items():
            n = np.array([r["n_particles"] for r in rr], float)
            v = np.array([r["residual"] for r in rr])
            res = float(np.sqrt((n * v**2).sum() / n.sum()))
            summary["representability"][g] = res
            print(f"best fit of the truth by X,Y,T = {g} (+ free global per frame): residual {res:.3f} Å")
    if args.json:
        args.json.write_text(
            json.dumps({"settings": settings.model_dump(mode="json"), "rows": rows, "summary": summary}, indent=1)
        )


if __name__ == "__main__":
    main()
