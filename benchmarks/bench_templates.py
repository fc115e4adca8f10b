"""Benchmark template matching: recall / angular error on simulated data, and time at real sizes.

Parts (results are cached as JSON in ``--results-dir``; ``report`` writes docs/benchmarks/templates.md)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_templates.py acc2d     # accuracy, micrographs
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_templates.py acc3d     # accuracy, tomograms
    flock /tmp/cryowarp-heavy.lock .venv/bin/python benchmarks/bench_templates.py time   # timings
    .venv/bin/python benchmarks/bench_templates.py report

* 2-D accuracy: ``cryowarp.sim.simulate_micrograph`` (1024² at 2 Å/px, 40 e/Å², Poisson counts, 300 Å
  ice with thickness variation, defocus 1.5 µm, astigmatism 0.1 µm at 30°, radiation damage) of
  β-galactosidase (5a1a, 465 kDa, D2) and of its chain A alone (the monomer, ~116 kDa, C1: a smaller
  known structure from the same entry, since ``../shared/data/pdb`` holds only 5a1a and the EMDB maps in
  ``../shared/data/mrcfile`` are a 20³ map at 11.4 Å and a MicroED peptide). Particles at uniformly
  random orientations (RELION ZYZ truth from the simulator); the true CTF is given. Template: the same
  atoms as a 3-D potential map (``cli.match.map_from_atoms``), matched at 4 Å/px.
* 3-D accuracy: ``cryowarp.sim.simulate_tilt_series`` of 5a1a (256² at 5 Å/px, ±60° every 3°,
  dose-symmetric, 3 e/Å² per tilt, 500 Å slab, defocus 3 µm ± 0.1 µm per tilt), binned to 10 Å/px and
  reconstructed by weighted back-projection (``cryowarp.tomo``), matched with the 3-D CTF /
  missing-wedge / exposure weight of the true tilt geometry.
* Scoring: the stored peaks of all images are pooled and sorted by score; a peak is a true positive
  when it lies within 0.2 × diameter of a not yet matched true particle (greedy, best score first);
  peaks matched to particles inside the zeroed border are ignored, and recall counts only the
  particles outside it. "Recall at precision ≥ 0.9" is the highest recall over all thresholds (the
  sweep over the stored peaks) at which precision is still ≥ 0.9. Angular error: geodesic angle
  between rotation matrices, minimised over the symmetry mates (D2 operators from the principal axes
  of 5a1a, checked on the atoms), median over the true positives at that threshold; "coarse" is the
  grid orientation at the peak, "refined" the local refinement (step/3 then step/9).
* Time: wall clock of the real size (4096² micrograph at 1 Å/px matched at 4 Å/px; 512³ tomogram in
  192³ sub-volumes) for two orientation subsets, median of 3 runs each; the cost per orientation (slope)
  and the fixed cost (intercept) are extrapolated linearly to the full grid and labelled as such.
* Peer: pytom-match-pick; see ``peer_note`` (measured by trying to install and run it here).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
OUT_MD = REPO / "docs" / "benchmarks" / "templates.md"

from cryowarp.base.fourier import fourier_rescale_2d  # noqa: E402
from cryowarp.base.geometry import angular_distance_deg, euler_zyz_to_matrix  # noqa: E402
from cryowarp.cli.match import map_from_atoms  # noqa: E402
from cryowarp.templates import (  # noqa: E402
    CTFParameters,
    Match2DSettings,
    Match3DSettings,
    match_template_2d,
    match_template_3d,
    orientation_grid,
    tile_layout,
)
from cryowarp.tomo import ctf_weight_3d, weighted_backprojection  # noqa: E402

MATCH_PX_2D = 4.0
VOXEL_3D = 10.0


def machine() -> str:
    """One line describing the machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average {load:.1f} at start"
    )


# -- structures ------------------------------------------------------------------------------------


def monomer_model(directory: Path) -> Path:
    """Chain A of 5a1a (protein only) written as PDB: the β-galactosidase monomer."""
    import gemmi

    path = directory / "5a1a_chainA.pdb"
    if not path.exists():
        st = gemmi.read_structure(str(REPO.parent / "shared" / "data" / "pdb" / "5a1a.cif"))
        st.remove_ligands_and_waters()
        st.remove_hydrogens()
        model = st[0]
        for name in [ch.name for ch in model if ch.name != "A"]:
            model.remove_chain(name)
        st.write_pdb(str(path))
    return path


def mass_kda(cloud) -> float:
    """Mass without hydrogens (heavy atoms only), kDa; add ~8 % for the implicit H."""
    weights = {"C": 12.011, "N": 14.007, "O": 15.999, "S": 32.06, "P": 30.974, "MG": 24.305, "NA": 22.99}
    return sum(weights.get(e.upper(), 12.0) for e in cloud.elements) / 1000.0


def symmetry_operators(cloud, symmetry: str) -> tuple[torch.Tensor, float]:
    """`(n, 3, 3)` operators S (model = S·model) and the worst RMSD (Å) of S·atoms to the nearest atom."""
    eye = torch.eye(3, dtype=torch.float64)[None]
    if symmetry == "C1":
        return eye, 0.0
    x = cloud.coords_a_xyz.to(torch.float64)
    x = x - x.mean(0)
    _, vectors = torch.linalg.eigh(x.T @ x)
    ops = []
    for signs in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)):
        ops.append(vectors @ torch.diag(torch.tensor(signs, dtype=torch.float64)) @ vectors.T)
    ops = torch.stack(ops)
    # check: every operator maps the CA-like subset onto atoms of the model (nearest-neighbour RMSD)
    sub = x[:: max(1, len(x) // 2000)]
    worst = 0.0
    for s in ops[1:]:
        moved = sub @ s.T
        d = torch.cdist(moved, x).min(1).values
        worst = max(worst, float(d.pow(2).mean().sqrt()))
    return ops, worst


# -- scoring ---------------------------------------------------------------------------------------


def score_picks(coords, scores, euler_refined, euler_coarse, truth_xy, truth_euler, findable, radius, sym):
    """Greedy matching of one image's picks (best first). Returns rows (score, status, err_ref, err_coarse).

    status: 1 true positive, 0 false positive, −1 ignored (matched a particle in the border).
    """
    order = torch.argsort(scores, descending=True)
    used = torch.zeros(len(truth_xy), dtype=torch.bool)
    rows = []
    for i in order.tolist():
        d = (truth_xy - coords[i]).norm(dim=1)
        d[used] = float("inf")
        j = int(d.argmin()) if len(d) else -1
        if j >= 0 and d[j] <= radius:
            used[j] = True
            true = euler_zyz_to_matrix(*truth_euler[j])[None] @ sym
            err_r = float(angular_distance_deg(euler_zyz_to_matrix(*euler_refined[i])[None], true).min())
            err_c = float(angular_distance_deg(euler_zyz_to_matrix(*euler_coarse[i])[None], true).min())
            rows.append((float(scores[i]), 1 if bool(findable[j]) else -1, err_r, err_c))
        else:
            rows.append((float(scores[i]), 0, math.nan, math.nan))
    return rows


def summarise(rows: list, n_findable: int) -> dict:
    """Recall at precision ≥ 0.9 over the pooled, score-sorted picks, and the angular errors there."""
    rows = sorted((r for r in rows if r[1] >= 0), key=lambda r: -r[0])
    tp = 0
    best = dict(recall=0.0, precision=math.nan, k=0, threshold=math.nan)
    for k, r in enumerate(rows, 1):
        tp += r[1]
        if tp / k >= 0.9 and tp / n_findable >= best["recall"]:
            best = dict(recall=tp / n_findable, precision=tp / k, k=k, threshold=r[0])
    chosen = [r for r in rows[: best["k"]] if r[1] == 1]
    err_r = [r[2] for r in chosen]
    err_c = [r[3] for r in chosen]
    all_tp = [r for r in rows if r[1] == 1]
    return dict(
        best,
        n_findable=n_findable,
        n_tp=len(chosen),
        median_error_refined=statistics.median(err_r) if err_r else math.nan,
        median_error_coarse=statistics.median(err_c) if err_c else math.nan,
        p90_error_refined=sorted(err_r)[int(0.9 * (len(err_r) - 1))] if err_r else math.nan,
        recall_any_threshold=len(all_tp) / n_findable,
    )


# -- 2-D accuracy ----------------------------------------------------------------------------------


def accuracy_2d(species: str, symmetry: str, seeds: list[int], steps: list[float], area: float) -> dict:
    """Simulate micrographs of ``species`` and match each at every step (refinement on)."""
    from cryowarp.sim import MicrographSimSettings, simulate_micrograph
    from cryowarp.sim._atoms import resolve_model

    cloud = resolve_model(species)
    sym, sym_rmsd = symmetry_operators(cloud, symmetry)
    template = map_from_atoms(cloud, 2.0)
    per_step = {step: [] for step in steps}
    n_findable = 0
    info = {}
    for seed in seeds:
        s = MicrographSimSettings(
            shape_yx=(1024, 1024),
            pixel_size_a=2.0,
            particle_models=(species,),
            defocus_um=1.5,
            defocus_delta_um=0.1,
            astigmatism_angle_deg=30.0,
            total_exposure_e_per_a2=40.0,
            particle_area_fraction=area,
        )
        mic = simulate_micrograph(s, seed=seed)
        truth = mic.truth
        ctf = CTFParameters(truth.defocus_um, truth.defocus_delta_um, truth.astigmatism_angle_deg)
        for step in steps:
            settings = Match2DSettings(angular_step_deg=step, matching_pixel_size_a=MATCH_PX_2D, border_fraction=0.5)
            t0 = time.perf_counter()
            result = match_template_2d(mic.image, 2.0, template, 2.0, ctf, settings)
            elapsed = time.perf_counter() - t0
            m = result.matches
            edge_px = 0.5 * m.diameter_a / 2.0  # the zeroed border (0.5 × diameter) in input pixels
            xy = truth.particles.coords_px_xy
            findable = ((xy >= edge_px) & (xy <= 1023 - edge_px)).all(1)
            scale = result.pixel_size_a / 2.0
            grid_yx = (m.coords_px.flip(-1) / scale).round().long()
            grid_yx[:, 0] = grid_yx[:, 0].clamp(0, result.scores.shape[0] - 1)
            grid_yx[:, 1] = grid_yx[:, 1].clamp(0, result.scores.shape[1] - 1)
            coarse = result.orientations_deg[result.orientation_index[grid_yx[:, 0], grid_yx[:, 1]]]
            rows = score_picks(
                m.coords_px,
                m.scores,
                m.euler_deg,
                coarse,
                xy,
                truth.particles.euler_deg,
                findable,
                0.2 * m.diameter_a / 2.0,
                sym,
            )
            per_step[step].append(dict(rows=rows, seconds=elapsed, n_orient=len(result.orientations_deg)))
            info = dict(diameter_a=m.diameter_a, n_refined=m.meta["n_refined"])
            print(
                f"  2D {species} seed {seed} step {step}: {len(xy)} particles ({int(findable.sum())} "
                f"findable), {len(m)} peaks, {elapsed:.0f} s",
                flush=True,
            )
        n_findable += int(findable.sum())
    out = dict(
        species=species,
        symmetry=symmetry,
        symmetry_rmsd_a=sym_rmsd,
        mass_kda=mass_kda(cloud),
        n_micrographs=len(seeds),
        area_fraction=area,
        **info,
        steps={},
    )
    for step, runs in per_step.items():
        rows = [r for run in runs for r in run["rows"]]
        out["steps"][str(step)] = dict(
            summarise(rows, n_findable),
            seconds=[run["seconds"] for run in runs],
            n_orient=runs[0]["n_orient"],
        )
        print(f"  2D {species} step {step}: {out['steps'][str(step)]}", flush=True)
    return out


# -- 3-D accuracy ----------------------------------------------------------------------------------


def simulate_tomogram(seed: int, area: float):
    """Tilt series (cryowarp.sim) → binned to 10 Å → WBP tomogram; returns (tomogram, truth, weight)."""
    from cryowarp.sim.tilt_series import TiltSeriesSimSettings, simulate_tilt_series

    s = TiltSeriesSimSettings(
        shape_yx=(256, 256),
        pixel_size_a=5.0,
        particle_models=("5a1a",),
        ice_thickness_a=500.0,
        defocus_um=3.0,
        defocus_delta_um=0.0,
        exposure_per_tilt_e_per_a2=3.0,
        particle_area_fraction=area,
        volume_binning=2,
    )
    ts = simulate_tilt_series(s, seed=seed)
    truth = ts.truth
    binned = torch.stack([fourier_rescale_2d(img.float(), (128, 128)) for img in ts.images])
    binned = binned / binned.mean(dim=(-2, -1), keepdim=True) - 1.0  # contrast per tilt
    mats = truth.tilt_matrices()
    shape = (64, 128, 128)
    tomogram = -weighted_backprojection(binned, mats, shape)  # protein positive
    weight = functools.partial(
        ctf_weight_3d,
        pixel_size_a=VOXEL_3D,
        matrices=mats,
        defocus_um=truth.defocus_um.float(),
        exposure_e_per_a2=truth.prior_exposure_e_per_a2.float(),
    )
    # true positions in tomogram voxels: image pixel (w − 1)/2 is the specimen origin; after 2× Fourier
    # binning that is pixel 63.5, and WBP puts voxel 64 (= w // 2) there, so x, y shift by −0.5
    xyz = truth.particles_xyz_a / VOXEL_3D + torch.tensor([63.5, 63.5, shape[0] // 2], dtype=torch.float64)
    return tomogram, xyz, truth.euler_deg, weight, shape, s.exposure_per_tilt_e_per_a2 * len(mats)


def accuracy_3d(seeds: list[int], steps: list[float], area: float) -> dict:
    """Match 5a1a in WBP tomograms of simulated tilt series."""
    from cryowarp.sim._atoms import resolve_model

    cloud = resolve_model("5a1a")
    sym, sym_rmsd = symmetry_operators(cloud, "D2")
    template = map_from_atoms(cloud, VOXEL_3D)
    per_step = {step: [] for step in steps}
    n_findable = 0
    total_exposure = 0.0
    for seed in seeds:
        tomogram, xyz, euler, weight, shape, total_exposure = simulate_tomogram(seed, area)
        for step in steps:
            settings = Match3DSettings(angular_step_deg=step, border_fraction=0.5)
            t0 = time.perf_counter()
            result = match_template_3d(tomogram, VOXEL_3D, template, VOXEL_3D, settings, fourier_weight=weight)
            elapsed = time.perf_counter() - t0
            m = result.matches
            edge = 0.5 * m.diameter_a / VOXEL_3D
            size = torch.tensor([shape[2], shape[1], shape[0]], dtype=torch.float64)
            inside_box = ((xyz >= 0) & (xyz <= size - 1)).all(1)
            findable = ((xyz >= edge) & (xyz <= size - 1 - edge)).all(1)
            idx = m.coords_px.flip(-1).round().long()
            for a in range(3):
                idx[:, a] = idx[:, a].clamp(0, result.scores.shape[a] - 1)
            coarse = result.orientations_deg[result.orientation_index[idx[:, 0], idx[:, 1], idx[:, 2]].long()]
            rows = score_picks(
                m.coords_px,
                m.scores,
                m.euler_deg,
                coarse,
                xyz[inside_box],
                euler[inside_box],
                findable[inside_box],
                0.2 * m.diameter_a / VOXEL_3D,
                sym,
            )
            per_step[step].append(dict(rows=rows, seconds=elapsed, n_orient=len(result.orientations_deg)))
            print(
                f"  3D seed {seed} step {step}: {int(inside_box.sum())} particles in the box "
                f"({int(findable.sum())} findable), {len(m)} peaks, {elapsed:.0f} s",
                flush=True,
            )
        n_findable += int(findable.sum())
    out = dict(
        species="5a1a",
        symmetry_rmsd_a=sym_rmsd,
        shape=list(shape),
        n_tomograms=len(seeds),
        seeds=list(seeds),
        area_fraction=area,
        total_exposure=total_exposure,
        steps={},
    )
    for step, runs in per_step.items():
        rows = [r for run in runs for r in run["rows"]]
        out["steps"][str(step)] = dict(
            summarise(rows, n_findable),
            seconds=[r["seconds"] for r in runs],
            n_orient=runs[0]["n_orient"],
            rows=rows,
        )
        print(f"  3D step {step}: {out['steps'][str(step)]}", flush=True)
    return out


# -- timings ---------------------------------------------------------------------------------------


CPU_TIMES: list[tuple[float, float]] = []


def _median_time(fn, runs: int) -> float:
    """Median wall-clock time of ``runs`` calls; the (wall, process CPU) pairs go to CPU_TIMES."""
    times = []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        CPU_TIMES.append((times[-1], time.process_time() - c0))
    return statistics.median(times)


def time_2d(runs: int) -> dict:
    """4096² at 1 Å/px matched at 4 Å/px (one 1024² tile), 10° grid; two subsets → slope, intercept."""
    from cryowarp.sim._atoms import resolve_model

    image = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0)) + 40.0
    template = map_from_atoms(resolve_model("5a1a"), MATCH_PX_2D)
    ctf = CTFParameters(1.5, 0.1, 30.0)
    subsets = []
    for psi in (360.0, 120.0):  # 432 directions × 1 or 3 psi of the 10° grid would be too slow: 60° grid
        settings = Match2DSettings(
            angular_step_deg=60.0,
            psi_step_deg=psi,
            matching_pixel_size_a=MATCH_PX_2D,
            refine_orientations=False,
        )
        n = len(orientation_grid(60.0, psi_step_deg=psi))
        t = _median_time(lambda s=settings: match_template_2d(image, 1.0, template, MATCH_PX_2D, ctf, s), runs)
        subsets.append((n, t))
        print(f"  time 2D: {n} orientations {t:.2f} s", flush=True)
    (n1, t1), (n2, t2) = subsets
    slope = (t2 - t1) / (n2 - n1)
    intercept = t1 - slope * n1
    # refinement: the 12-orientation search again with the 50 best peaks refined; the local lattice has
    # 123 orientations per level whatever the step, so the cost per peak does not depend on the step
    refine_settings = Match2DSettings(
        angular_step_deg=60.0, psi_step_deg=360.0, matching_pixel_size_a=MATCH_PX_2D, refine_max_peaks=50
    )

    def refine_run():
        return match_template_2d(image, 1.0, template, MATCH_PX_2D, ctf, refine_settings)

    t_ref = _median_time(refine_run, runs)
    per_peak = (t_ref - t1) / 50.0
    full = len(orientation_grid(10.0))
    return dict(
        subsets=subsets,
        slope_s=slope,
        intercept_s=intercept,
        full=full,
        extrapolated_s=intercept + slope * full,
        refine_per_peak_s=per_peak,
        runs=runs,
    )


def time_3d(runs: int) -> dict:
    """One 192³ sub-volume, 12 and 24 orientations → 512³ at 15° (27 sub-volumes) extrapolated."""
    from cryowarp.sim._atoms import resolve_model

    template = map_from_atoms(resolve_model("5a1a"), VOXEL_3D)
    sub = torch.randn(192, 192, 192, generator=torch.Generator().manual_seed(0))
    from cryowarp.tomo import tilt_matrices

    mats = tilt_matrices(torch.arange(-60.0, 61.0, 3.0))
    weight = functools.partial(ctf_weight_3d, pixel_size_a=VOXEL_3D, matrices=mats, defocus_um=3.0)
    subsets = []
    box = 0
    for psi in (360.0, 180.0):
        settings = Match3DSettings(angular_step_deg=60.0, psi_step_deg=psi, refine_orientations=False)
        n = len(orientation_grid(60.0, psi_step_deg=psi))

        def run(s=settings):
            return match_template_3d(sub, VOXEL_3D, template, VOXEL_3D, s, fourier_weight=weight)

        box = run().template.box_px
        t = _median_time(run, runs)
        subsets.append((n, t))
        print(f"  time 3D: one 192³ sub-volume, {n} orientations {t:.2f} s", flush=True)
    (n1, t1), (n2, t2) = subsets
    slope = (t2 - t1) / (n2 - n1)
    intercept = t1 - slope * n1
    n_blocks = len(tile_layout(512, 192, box // 2 + 2)) ** 3
    full = len(orientation_grid(15.0))
    return dict(
        subsets=subsets,
        slope_s=slope,
        intercept_s=intercept,
        full=full,
        n_blocks=n_blocks,
        box=box,
        extrapolated_s=n_blocks * (intercept + slope * full),
        runs=runs,
    )


# -- report ----------------------------------------------------------------------------------------


def healpix_step(step) -> float:
    """The step actually searched: 60° / N_side for a requested step."""
    from cryowarp.templates import healpix_nside_for_step

    return 60.0 / healpix_nside_for_step(float(step))


def fmt(v, spec=".2f") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def report(results_dir: Path) -> str:
    def load(name):
        p = results_dir / f"{name}.json"
        return json.loads(p.read_text()) if p.exists() else None

    a2 = load("acc2d")
    a3 = load("acc3d")
    # further 3-D runs (other tomograms or steps), e.g. acc3d_10.json, each shown as its own rows
    a3_all = [a3] if a3 else []
    a3_all += [json.loads(p.read_text()) for p in sorted(results_dir.glob("acc3d_*.json"))]
    tm = load("time")
    peer = load("peer")
    lines = [
        "# Template matching (cryowarp.templates)",
        "",
        "2-D (warp-facts §4.2) and 3-D (§4.1) template matching with a 3-D reference, every peak stored with",
        "its orientation; then **local orientation refinement** of the best peaks (step/3 lattice within one",
        "step, then step/9 within step/3, re-correlating only a box around each peak with the same filters",
        "and normalisation as the search), and for micrographs the **local defocus of each tile** from the",
        "CTF model's defocus grid (`match2d --ctf model.json`; tiles shrink to 384 px when the grid varies by",
        "more than 0.02 µm).",
        "",
    ]
    for name, r in (("2-D accuracy", a2), *(("3-D accuracy", r) for r in a3_all), ("timings", tm)):
        if r:
            lines.append(f"* {name}: {r['date']}, {r['machine']}.  ")
            prefix = (
                "flock /tmp/cryowarp-heavy.lock .venv/bin/python "
                if name == "timings"
                else "OMP_NUM_THREADS=1 .venv/bin/python "
            )
            lines.append(f"  Command: `{prefix}{r['command']}`")
    lines += [
        "",
        "Targets (issue 8): recall ≥ 0.9 at precision ≥ 0.9 for a ≥ 300 kDa particle at 40 e/Å²; median",
        "angular error ≤ the sampling step. Each accuracy number is a single run (one set of simulated",
        "images per species; the images differ per seed, the threshold is swept over all stored peaks).",
        "",
    ]
    if a2:
        lines += [
            "## Accuracy, 2-D (simulated micrographs, 1024² at 2 Å/px, 40 e/Å², matched at 4 Å/px)",
            "",
            "| structure | micrographs | particles (findable) | step | orientations | recall @ precision ≥ 0.9 "
            "| precision there | median angular error: coarse → refined | 90th pct refined | time per micrograph |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in a2["results"]:
            r["species_label"] = r["species_label"].replace(" (monomer)", ", the monomer")
            for step, s in r["steps"].items():
                lines.append(
                    f"| {r['species_label']} ({r['mass_kda']:.0f} kDa heavy atoms, {r['symmetry']}, "
                    f"D {r['diameter_a']:.0f} Å) | {r['n_micrographs']} | {s['n_findable']} "
                    f"| {healpix_step(step):.0f}° | {s['n_orient']} | **{fmt(s['recall'])}** | {fmt(s['precision'])} "
                    f"| {fmt(s['median_error_coarse'], '.1f')}° → **{fmt(s['median_error_refined'], '.1f')}°** "
                    f"(n = {s['n_tp']}) | {fmt(s['p90_error_refined'], '.1f')}° "
                    f"| {', '.join(f'{t:.0f}' for t in s['seconds'])} s |"
                )
        lines += [
            "",
            "Time per micrograph here is wall clock with 1 thread on the shared machine (load 8–12, not under",
            "the lock), search + refinement of up to 300 peaks, one value per micrograph; see the timing table",
            "for the real size. (The 1376 s run includes ~14 min during which the process was paused with",
            "SIGSTOP while the locked timing run held the machine.)",
            "",
        ]
    if a3:
        lines += [
            "## Accuracy, 3-D (WBP tomograms of simulated tilt series, 10 Å/voxel)",
            "",
            f"Tomogram {'×'.join(map(str, a3['shape']))} voxels (z, y, x) from 41 tilts (±60°, 3°), "
            f"{a3['total_exposure']:.0f} e/Å² in total (3 e/Å² per tilt, a usual cryo-ET dose; the 40 e/Å²"
            " target is a single-particle number).",
            "",
            "| structure | tomograms | particles (findable) | step | orientations | recall @ precision ≥ 0.9 "
            "| precision there | median angular error: coarse → refined | 90th pct refined | time per tomogram |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for step, s, run in [(k, v, x) for x in a3_all for k, v in x["steps"].items()]:
            seeds = ", ".join(str(v) for v in run.get("seeds", [1]))
            lines.append(
                f"| 5a1a (D2) | {run['n_tomograms']} (seed {seeds}) | {s['n_findable']} | {healpix_step(step):.0f}° "
                f"| {s['n_orient']} "
                f"| **{fmt(s['recall'])}** | {fmt(s['precision'])} "
                f"| {fmt(s['median_error_coarse'], '.1f')}° → **{fmt(s['median_error_refined'], '.1f')}°** "
                f"(n = {s['n_tp']}) | {fmt(s['p90_error_refined'], '.1f')}° "
                f"| {', '.join(f'{t:.0f}' for t in s['seconds'])} s |"
            )
        lines += [
            "",
            "Time per tomogram: wall clock of the search + refinement, 1 thread, shared machine (load 2–12,",
            "see the run headers), not under the lock.",
            "",
        ]
    if tm:
        t2, t3 = tm["t2"], tm["t3"]
        lines += [
            "## Time at real sizes (CPU; **extrapolated** from measured orientation subsets)",
            "",
            "| task | measured (median of 3 runs each) | per orientation | full search | **extrapolated** |",
            "|---|---|---|---|---|",
            f"| 4096² micrograph at 1 Å/px, matched at 4 Å/px (one 1024² tile), 10° "
            f"| {t2['subsets'][0][1]:.1f} s for {t2['subsets'][0][0]} and {t2['subsets'][1][1]:.1f} s for "
            f"{t2['subsets'][1][0]} orientations | {t2['slope_s'] * 1000:.0f} ms "
            f"| {t2['full']} orientations + {t2['intercept_s']:.1f} s fixed "
            f"| **{t2['extrapolated_s'] / 60:.0f} min** (+ {t2['refine_per_peak_s'] * 1000:.0f} ms per refined "
            f"peak) |",
            f"| 512³ tomogram at 10 Å/voxel, 15°, 192³ sub-volumes (template box {t3['box']}) "
            f"| one sub-volume: {t3['subsets'][0][1]:.1f} s for {t3['subsets'][0][0]} and "
            f"{t3['subsets'][1][1]:.1f} s for {t3['subsets'][1][0]} orientations "
            f"| {t3['slope_s']:.2f} s | {t3['n_blocks']} sub-volumes × ({t3['full']} orientations + "
            f"{t3['intercept_s']:.1f} s fixed) | **{t3['extrapolated_s'] / 3600:.1f} h** |",
            "",
            "Extrapolation: time = fixed + n × per-orientation, fitted through the two measured subsets (the",
            "per-orientation cost does not depend on which orientations are searched). Only 12 + 36",
            "(micrograph) and 12 + 24 (one 192³ sub-volume) orientations were timed, not the full grid; the",
            f"512³ figure multiplies one sub-volume by the {t3['n_blocks']} overlapping sub-volumes of the",
            "tiling. Refinement per peak: the 12-orientation search with and without 50 refined peaks.",
            f"Load: the machine's load average was {tm['machine'].split('load average ')[-1]} and "
            f"{tm.get('load_end', float('nan')):.1f} at the end; the timed process got "
            f"{tm.get('cpu_over_wall', float('nan')):.2f} CPU-seconds per wall-second with 2 threads"
            + (
                " (nearly the whole machine)."
                if tm.get("cpu_over_wall", 0.0) >= 1.5
                else ", so on an idle 2-core machine these wall times should be several times shorter."
            ),
            "",
        ]
    earlier = load("time_run1")
    if tm and earlier and earlier["date"] != tm["date"]:
        lines += [
            f"An earlier locked run ({earlier['date']}, {earlier['machine'].split(', ')[-1]}, "
            f"{earlier.get('cpu_over_wall', float('nan')):.2f} CPU-s per wall-s) gave "
            f"{earlier['t2']['slope_s'] * 1000:.0f} ms per orientation → "
            f"{earlier['t2']['extrapolated_s'] / 60:.0f} min per micrograph and "
            f"{earlier['t3']['slope_s']:.2f} s per orientation and sub-volume → "
            f"{earlier['t3']['extrapolated_s'] / 3600:.1f} h per tomogram: the spread is the machine's load.",
            "",
        ]
    if peer:
        lines += ["## Peer: pytom-match-pick", "", peer["text"], ""]
    lines += ["## Targets", ""]
    verdicts = []
    for r in a2["results"] if a2 else []:
        for step, st in r["steps"].items():
            verdicts.append((f"2-D {r['species_label']} at {healpix_step(step):.0f}°", st, healpix_step(step), r["mass_kda"]))
    for step, st, run in [(k, v, x) for x in a3_all for k, v in x["steps"].items()]:
        seeds = ", ".join(str(v) for v in run.get("seeds", [1]))
        verdicts.append(
            (f"3-D 5a1a at {healpix_step(step):.0f}° (tomogram seed {seeds})", st, healpix_step(step), 450.0)
        )
    for name, st, step, mass in verdicts:
        recall_ok = st["recall"] >= 0.9 and st["precision"] >= 0.9
        angle_ok = st["median_error_refined"] <= step
        if mass >= 300:
            verdict = "meets the recall target" if recall_ok else "misses the recall target"
        else:
            verdict = (
                "reaches recall ≥ 0.9 at precision ≥ 0.9 too" if recall_ok else "below 0.9"
            ) + " (the target asks it only for ≥ 300 kDa)"
        lines.append(
            f"* {name}: recall {st['recall']:.2f} at precision {st['precision']:.2f} — "
            + verdict
            + f"; median refined angular error {st['median_error_refined']:.1f}° "
            + ("≤" if angle_ok else ">")
            + f" step {step:.0f}° (coarse grid alone: {st['median_error_coarse']:.1f}°)."
        )
    if a3 and not any("10.0" in r["steps"] for r in a3_all):
        lines.append(
            "* 3-D at 10° (15 552 orientations) was **not run** for accuracy: on this shared machine one such"
            " search of the 64×128×128 tomogram would take ~1.5 h; see the timing table for the extrapolation."
        )
    lines += [
        "",
        "Not measured: accuracy on real data (no curated template-matching truth in ../shared/data); a full",
        "4096² / 512³ search end to end (the real-size times are extrapolated from orientation subsets);",
        "times on an idle machine.",
        "",
        "Caveats: the template is made from the same atoms as the simulated particles (no model error) and",
        "the CTF is the simulator's, so these are upper bounds for real data; the simulator's noise is",
        "Poisson shot noise with ice, damage and a B-factor of 30 Å², without detector MTF or drift.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run one part and store its JSON; ``report`` writes the markdown."""
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["acc2d", "acc3d", "time", "report"])
    parser.add_argument("--results-dir", type=Path, default=Path("/tmp/cwbench-templates"))
    parser.add_argument("--steps", type=float, nargs="+", default=[15.0, 10.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--species", nargs="+", default=["5a1a", "monomer"])
    args = parser.parse_args()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    if args.part == "report":
        text = report(args.results_dir)
        print(text)
        OUT_MD.write_text(text)
        return
    header = machine()
    print(header, flush=True)
    stamp = dict(
        machine=header,
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        command=" ".join(["benchmarks/bench_templates.py"] + sys.argv[1:]),
    )
    if args.part == "acc2d":
        out = []
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.species:
                if name == "5a1a":
                    r = accuracy_2d("5a1a", "D2", args.seeds, args.steps, area=0.3)
                    r["species_label"] = "β-galactosidase 5a1a"
                else:
                    r = accuracy_2d(str(monomer_model(Path(tmp))), "C1", args.seeds[:1], args.steps, area=0.3)
                    r["species_label"] = "5a1a chain A, the monomer"
                out.append(r)
        data = dict(stamp, results=out)
    elif args.part == "acc3d":
        r = accuracy_3d(args.seeds, args.steps, area=0.35)
        data = dict(r, **stamp)
    else:
        data = dict(stamp, t2=time_2d(3), t3=time_3d(3))
        data["cpu_over_wall"] = sum(c for _, c in CPU_TIMES) / sum(w for w, _ in CPU_TIMES)
        data["load_end"] = os.getloadavg()[0]
    (args.results_dir / f"{args.part}.json").write_text(json.dumps(data))
    print(json.dumps(data)[:2000])


if __name__ == "__main__":
    main()
