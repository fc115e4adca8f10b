"""BoxNet picking benchmark: accuracy vs truth, masking, speed, retraining; side by side with peers.

Run (one heavy job at a time on the shared machine)::

    flock /tmp/cryowarp-heavy.lock .venv/bin/python benchmarks/bench_picking.py [--quick] [--no-peers]

Prints markdown and writes it to ``docs/benchmarks/picking.md``. Sections:

(a) CryoPPP *test* micrographs (``../shared/data/cryoppp_prompt_sam/*/test``; truth = disc centres of
    the curated masks); (b) simulated micrographs of specimens not used in training
    (``cryowarp.sim`` kinds tetrahedron, l_shape, y_shape, shell, octahedron, filament, plus our own
    held-out generator kinds), with contamination and carbon; (c) masking on
    ``../shared/data/micrograph_cleaner_em/`` (RELION autopicks on / off the contaminant);
    (d) time per 4096² micrograph at 1 Å/px (narrow = shipped vs Warp 2 width); (e) retraining on 5
    micrographs of a new specimen. A pick is correct within 0.25 × diameter of an unmatched true
    centre (one-to-one matching). Peers: topaz-em 0.3.20 pretrained resnet16 and RELION 3.1 LoG, via
    ``../shared/peers/run_*.py``.
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

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
from _peers import PEERS, PEERS_PY  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))

from boxnet_data import (  # noqa: E402
    CRYOPPP,
    HELDOUT_KINDS,
    TRAIN_KINDS,
    cryoppp_items,
    cryoppp_load,
    sim_micrograph,
    synth_micrograph,
)

from cryowarp.io.mrc import write_mrc  # noqa: E402
from cryowarp.picking import (  # noqa: E402
    BoxNet,
    BoxNetConfig,
    PickSettings,
    TrainSettings,
    find_particles,
    load_pretrained_boxnet,
    make_training_example,
    match_picks,
    model_blob_weight,
    pick_particles,
    predict_probabilities,
    prepare_boxnet_input,
    train_boxnet,
)

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4)
DEFAULTS = PickSettings()
WARP_RULES = {"method": "warp", "mask_threshold": None, "mask_min_component_px": 20, "border_frac": 0.8}


def _candidates(probs, x8, diameter_a, pixel_size_8a, threshold, blob_weight, warp=False, relative=True):
    """Picks on one probability map: the default ``PickSettings`` rules with dark-blob prior weight
    ``blob_weight`` (the model's own by default), or with the per-micrograph threshold
    (``relative=False``: fixed ``threshold``) switched off, or Warp's §3.5 rules."""
    if warp:
        return find_particles(
            probs, particle_diameter_a=diameter_a, threshold=threshold, pixel_size_a=pixel_size_8a, **WARP_RULES
        )
    return find_particles(
        probs,
        particle_diameter_a=diameter_a,
        threshold=threshold,
        pixel_size_a=pixel_size_8a,
        method=DEFAULTS.peak_method,
        smooth_sigma_frac=DEFAULTS.smooth_sigma_frac,
        border_frac=DEFAULTS.border_frac,
        mask_threshold=DEFAULTS.mask_threshold,
        mask_min_component_px=DEFAULTS.mask_min_component_px,
        image_8a=x8,
        blob_weight=blob_weight,
        blob_sigma_frac=DEFAULTS.blob_sigma_frac,
        relative_threshold=DEFAULTS.relative_threshold if relative else None,
        relative_quantile=DEFAULTS.relative_quantile,
    )


def boxnet_scores(model, image, pixel_size_a, diameter_a, truth_xy):
    """F1 with the default PickSettings, the best fixed threshold over THRESHOLDS (an oracle), the
    network alone (no blob prior, fixed threshold 0.35: the previous default) and Warp's rules at 0.5.

    Probabilities are computed once. Returns (default, best, best threshold, net only, warp rules).
    """
    x8, scale_xy = prepare_boxnet_input(image, pixel_size_a)
    probs = predict_probabilities(model, x8, single_tile_max_px=DEFAULTS.single_tile_max_px)
    px8 = pixel_size_a * scale_xy[0]
    radius = 0.25 * diameter_a / pixel_size_a
    scale = torch.tensor(scale_xy)

    def score(t, blob_weight=model_blob_weight(model), **kw):
        cand = _candidates(probs, x8, diameter_a, px8, t, blob_weight, **kw)
        return match_picks(cand.coords_px_xy * scale, truth_xy, radius)

    fixed = {t: score(t, relative=False) for t in THRESHOLDS}
    best_t = max(fixed, key=lambda t: fixed[t].f1)
    return (
        score(DEFAULTS.threshold),
        fixed[best_t],
        best_t,
        score(0.35, blob_weight=0.0, relative=False),
        score(0.5, warp=True),
    )


def _run_peer(cmd: list[str]) -> dict | None:
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"peer failed: {exc}", file=sys.stderr)
        return None
    if p.returncode:
        print(f"peer failed: {' '.join(cmd)}\n{p.stdout[-1500:]}", file=sys.stderr)
        return None
    return None


def peer_picks(kind: str, mrc: Path, pixel_size_a: float, diameter_a: float, workdir: Path):
    """(coords [n, 2], scores [n], seconds) from topaz or RELION LoG, or None when unavailable."""
    out = workdir / f"{mrc.stem}_{kind}.json"
    if kind == "topaz":
        if not PEERS_PY.exists():
            return None
        cmd = [
            str(PEERS_PY),
            str(PEERS / "run_topaz_pick.py"),
            str(mrc),
            "--apix",
            f"{pixel_size_a}",
            "--diameter",
            f"{diameter_a}",
            "--threads",
            "2",
            "--workdir",
            str(workdir / f"tz_{mrc.stem}"),
            "--out",
            str(out),
        ]
    else:
        cmd = [
            "python3",
            str(PEERS / "run_relion_autopick.py"),
            str(mrc),
            "--apix",
            f"{pixel_size_a}",
            "--diam-min",
            f"{0.8 * diameter_a}",
            "--diam-max",
            f"{1.2 * diameter_a}",
            "--workdir",
            str(workdir / f"rl_{mrc.stem}"),
            "--out",
            str(out),
        ]
    t0 = time.perf_counter()
    _run_peer(cmd)
    dt = time.perf_counter() - t0
    if not out.exists():
        return None
    res = json.loads(out.read_text())["result"]
    c = np.asarray(res["coords_px"], dtype=np.float64).reshape(-1, 3)
    return torch.from_numpy(c[:, :2]).float(), torch.from_numpy(c[:, 2]).float(), dt


def peer_scores(coords, scores, truth_xy, radius_px):
    """Default (all picks returned by the wrapper) and best F1 over score cut-offs."""
    default = match_picks(coords, truth_xy, radius_px)
    best = default
    if len(scores) > 1:
        for q in np.linspace(0, 0.95, 20):
            cut = float(np.quantile(scores.numpy(), q))
            s = match_picks(coords[scores >= cut], truth_xy, radius_px)
            if s.f1 > best.f1:
                best = s
    return default, best


def accuracy_table(rows: list[dict], title: str) -> list[str]:
    lines = [
        f"### {title}",
        "",
        "| micrograph | D (Å) | px (Å) | truth | BoxNet F1 default (P/R) | BoxNet best fixed thr. F1 (thr) | "
        "BoxNet net only @0.35 (P/R) | BoxNet Warp rules @0.5 | topaz F1 (P/R) | topaz best F1 | LoG F1 (P/R) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(s):
        return "n/a" if s is None else f"{s.f1:.3f} ({s.precision:.2f}/{s.recall:.2f})"

    for r in rows:
        tz_best = "n/a" if r.get("tz_best") is None else f"{r['tz_best'].f1:.3f}"
        lines.append(
            f"| {r['name']} | {r['diameter']:.0f} | {r['px']:.2f} | {r['n_true']} | {fmt(r['bx'])} | "
            f"{r['bx_best'].f1:.3f} ({r['bx_thr']}) | {fmt(r['bx_net'])} | {fmt(r['bx_warp'])} | "
            f"{fmt(r.get('tz'))} | "
            f"{tz_best} | {fmt(r.get('lg'))} |"
        )
    means = {}
    for key in ("bx", "bx_best", "bx_net", "bx_warp", "tz", "tz_best", "lg"):
        vals = [r[key].f1 for r in rows if r.get(key) is not None]
        means[key] = statistics.mean(vals) if vals else float("nan")
    lines.append(
        f"| **mean** | | | | **{means['bx']:.3f}** | {means['bx_best']:.3f} | {means['bx_net']:.3f} | "
        f"{means['bx_warp']:.3f} | "
        f"**{means['tz']:.3f}** | "
        f"{means['tz_best']:.3f} | **{means['lg']:.3f}** |"
    )
    lines.append("")
    return lines, means


def evaluate_set(model, items, workdir: Path, peers: bool) -> list[dict]:
    rows = []
    for name, image, px, truth, diameter in items:
        bx, bx_best, thr, bx_net, bx_warp = boxnet_scores(model, image, px, diameter, truth)
        row = {
            "name": name,
            "diameter": diameter,
            "px": px,
            "n_true": len(truth),
            "bx": bx,
            "bx_best": bx_best,
            "bx_thr": thr,
            "bx_net": bx_net,
            "bx_warp": bx_warp,
        }
        if peers:
            mrc = workdir / f"{name}.mrc"
            write_mrc(mrc, image.numpy().astype(np.float32), px)
            radius = 0.25 * diameter / px
            tz = peer_picks("topaz", mrc, px, diameter, workdir)
            if tz is not None:
                row["tz"], row["tz_best"] = peer_scores(tz[0], tz[1], truth, radius)
            lg = peer_picks("relion", mrc, px, diameter, workdir)
            if lg is not None:
                row["lg"] = match_picks(lg[0], truth, radius)
        rows.append(row)
        tz_f1 = row["tz"].f1 if "tz" in row else float("nan")
        lg_f1 = row["lg"].f1 if "lg" in row else float("nan")
        print(
            f"  {name}: BoxNet {bx.f1:.3f} (best {bx_best.f1:.3f}@{thr}) topaz {tz_f1:.3f} LoG {lg_f1:.3f}",
            file=sys.stderr,
            flush=True,
        )
    return rows


def masking_section(model) -> list[str]:
    from cryowarp.io.mrc import read_mrc
    from cryowarp.io.star import read_star

    base = SHARED / "data" / "micrograph_cleaner_em"
    image, _ = read_mrc(base / "mics/Ucsf_stack_1142_DW.mrc", as_tensor=True)
    ref_mask, _ = read_mrc(base / "masks/Ucsf_stack_1142_DW.mrc")
    table = next(iter(read_star(base / "coords_relion/Ucsf_stack_1142_DW_autopick.star").values()))
    xy = table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(dtype=np.float64)
    on = ref_mask[np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)] > 0.5
    lines = [
        "### (c) Masking: micrograph_cleaner_em Ucsf_stack_1142_DW",
        "",
        f"{int(on.sum())} of {len(xy)} RELION autopicks lie on the contaminant "
        "(MicrographCleaner mask > 0.5). "
        "The micrograph is binned by an unrecorded factor; particles are ~20 px, so we run at assumed pixel "
        "sizes. Two readings of \"removed by the mask\": *Warp's rule* — BoxNet would reject the pick "
        "(distance to the 8 Å mask ≤ floor(D/2/8) px; the test BoxNet applies to its own picks); *at the "
        "pick* — the mask covers the pick's position (the same test that defines \"on the contaminant\" "
        "with the reference mask).",
        "",
        "| assumed px (Å) | D (Å) | mask rule | mask % | Warp's rule: on-contaminant removed | Warp's rule: "
        "others kept | at the pick: on-contaminant removed | at the pick: others kept | BoxNet picks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    from scipy import ndimage

    def removed_by(mask: np.ndarray, mask_px_xy: tuple[float, float], px: float, diameter: float):
        """(Warp's test: distance to the 8 Å mask ≤ floor(D/2/8) px, the mask covers the pick) per pick."""
        dist = ndimage.distance_transform_edt(~mask) if mask.any() else np.full(mask.shape, np.inf)
        sx, sy = mask_px_xy[0] / px, mask_px_xy[1] / px
        iy = np.clip(np.round(xy[:, 1] / sy).astype(int), 0, mask.shape[0] - 1)
        ix = np.clip(np.round(xy[:, 0] / sx).astype(int), 0, mask.shape[1] - 1)
        return dist[iy, ix] <= np.floor(diameter / 2 / mask_px_xy[0]), dist[iy, ix] == 0

    def shares(removed: np.ndarray) -> str:
        return (
            f"{int(removed[on].sum())}/{int(on.sum())} ({100 * removed[on].mean():.0f} %) | "
            f"{int((~removed[~on]).sum())}/{int((~on).sum())} ({100 * (~removed[~on]).mean():.0f} %)"
        )

    def row(px, diameter, rule, pct, removed, n_picks):
        warp_rule, at_pick = removed
        return f"| {px:.1f} | {diameter:.0f} | {rule} | {pct:.1f} | {shares(warp_rule)} | {shares(at_pick)} | {n_picks} |"

    rules = (
        (f"ours: p₂ ≥ {DEFAULTS.mask_threshold}, components ≥ {DEFAULTS.mask_min_component_px} px", {}),
        ("Warp: argmax = 2, components ≥ 20 px", {"mask_threshold": None, "mask_min_component_px": 20}),
    )
    for px in (4.0, 6.0, 8.0):
        diameter = 20 * px
        for rule, extra in rules:
            picks = pick_particles(image, px, model, PickSettings(particle_diameter_a=diameter, **extra))
            mask = picks.mask_8a.numpy()
            removed = removed_by(mask, picks.mask_pixel_size_xy_a, px, diameter)
            lines.append(row(px, diameter, rule, picks.mask_percentage, removed, len(picks)))
        # ceiling: the reference (MicrographCleaner) mask itself, sampled on the same 8 Å grid, same test
        sx, sy = picks.mask_pixel_size_xy_a[0] / px, picks.mask_pixel_size_xy_a[1] / px
        gy = np.clip(np.round((np.arange(mask.shape[0]) + 0.5) * sy - 0.5).astype(int), 0, ref_mask.shape[0] - 1)
        gx = np.clip(np.round((np.arange(mask.shape[1]) + 0.5) * sx - 0.5).astype(int), 0, ref_mask.shape[1] - 1)
        ref8 = ref_mask[np.ix_(gy, gx)] > 0.5
        removed = removed_by(ref8, picks.mask_pixel_size_xy_a, px, diameter)
        ref_rule = "*reference: MicrographCleaner mask > 0.5 (ceiling)*"
        lines.append(row(px, diameter, ref_rule, 100 * ref8.mean(), removed, "—"))
    lines.append("")
    png = masking_crops_png(image.numpy(), ref_mask, xy, on, REPO / "docs/benchmarks/picking_c_blobs.png")
    lines += [
        f"![{png.name}]({png.name})",
        "",
        f"`{png.name}`: every on-contaminant pick off the big contaminant (top row) and every other pick "
        "where the reference probability is borderline (0.3–0.5; bottom rows), 100 px crops of the "
        "micrograph (Gaussian σ = 1 px, same grey scale), reference mask > 0.5 in cyan. Both kinds are dark, "
        "round, ~1.5–2 D across and most have a bright Fresnel fringe; the reference draws its 0.5 line "
        "between them.",
        "",
    ]
    return lines


def masking_crops_png(image, ref_mask, xy, on, out: Path) -> Path:
    """Crops around the small-contaminant picks and the borderline others (reference p in 0.3–0.5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage

    iy, ix = np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)
    ref_at = ref_mask[iy, ix]
    labels, _ = ndimage.label(ref_mask > 0.5)
    sizes = np.bincount(labels.ravel())
    at_label = labels[iy, ix]
    small = np.flatnonzero(on & (sizes[at_label] < 0.1 * sizes[1:].max()))
    borderline = np.flatnonzero(~on & (ref_at > 0.3))
    smooth = ndimage.gaussian_filter(image - ndimage.gaussian_filter(image, 60), 1.0)
    lo, hi = np.percentile(smooth[ref_mask < 0.1], [0.5, 99.5])
    ncol = max(len(small), 4)
    nrow = 1 + -(-len(borderline) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.2 * ncol, 2.4 * nrow), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    r = 50
    padded = np.pad(smooth, r, mode="constant", constant_values=np.median(smooth))
    padded_ref = np.pad(ref_mask, r)
    for row, picks in ((0, small), (1, borderline)):
        for k, i in enumerate(picks):
            ax = axes.flat[row * ncol + k]
            x, y = np.round(xy[i]).astype(int) + r
            ax.imshow(padded[y - r : y + r, x - r : x + r], cmap="gray", vmin=lo, vmax=hi)
            ax.contour(padded_ref[y - r : y + r, x - r : x + r], levels=[0.5], colors="cyan", linewidths=0.8)
            ax.plot(r, r, "+", color="yellow", ms=8)
            kind = "on contaminant" if on[i] else "other"
            ax.set_title(f"#{i} {kind}\nreference p {ref_at[i]:.2f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def timing_section(repeats: int, peers: bool, workdir: Path) -> list[str]:
    torch.manual_seed(0)
    m = synth_micrograph("globular_1m", 777, size_px=4096, pixel_size_a=1.0)
    image = m.image
    lines = [
        "### (d) Time per 4096² micrograph at 1 Å/px "
        "(end to end: rescale, high-pass, tiles, post-processing)",
        "",
        f"torch threads: {torch.get_num_threads()}",
        "",
        "| model | parameters | single_tile_max_px | median s (of " + str(repeats) + ") | runs |",
        "|---|---|---|---|---|",
    ]
    shipped = load_pretrained_boxnet()
    warp2 = BoxNet(BoxNetConfig.warp2()).eval()
    candidates = [
        ("narrow (shipped), one 640² tile (default)", shipped, 1024),
        ("narrow (shipped), Warp tiling 4 × 512²", shipped, 0),
        ("Warp 2 width (untrained), one 640² tile", warp2, 1024),
        ("Warp 2 width (untrained), Warp tiling 4 × 512²", warp2, 0),
    ]
    medians = {}
    for name, model, tile in candidates:
        settings = PickSettings(particle_diameter_a=200.0, single_tile_max_px=tile)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            pick_particles(image, 1.0, model, settings)
            runs.append(time.perf_counter() - t0)
        n_par = sum(p.numel() for p in model.parameters())
        medians[(name, tile)] = statistics.median(runs)
        lines.append(
            f"| {name} | {n_par / 1e6:.2f} M | {tile} | {statistics.median(runs):.2f} | "
            f"{', '.join(f'{r:.2f}' for r in runs)} |"
        )
    if peers:
        mrc = workdir / "timing_4096.mrc"
        write_mrc(mrc, image.numpy(), 1.0)
        runs = []
        for _ in range(repeats):
            res = peer_picks("topaz", mrc, 1.0, 200.0, workdir)
            if res is None:
                break
            runs.append(res[2])
        if runs:
            t_tz = statistics.median(runs)
            lines.append(
                f"| topaz resnet16 (wrapper, incl. process start) | | | {t_tz:.2f} | "
                f"{', '.join(f'{r:.2f}' for r in runs)} |"
            )
            lines.append("")
            lines.append(
                f"Ratio topaz / BoxNet (shipped, default): {t_tz / medians[(candidates[0][0], 1024)]:.1f}×"
            )
    # training cost per iteration (batch 8 of 128² patches, forward + backward + AdamW step)
    lines += [
        "",
        "| model | training s / iteration (batch 8 × 128², median of 3 after 1 warm-up) |",
        "|---|---|",
    ]
    for name, model in (("narrow", BoxNet(BoxNetConfig.narrow())), ("Warp 2 width", warp2)):
        model.train()
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        x = torch.randn(8, 1, 128, 128)
        y = torch.randint(0, 3, (8, 128, 128))
        runs = []
        for i in range(4):
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:
                runs.append(time.perf_counter() - t0)
        lines.append(f"| {name} | {statistics.median(runs):.2f} |")
        model.eval()
    lines.append("")
    lines.append("")
    return lines


def retrain_section(model, quick: bool, epochs: int | None = None) -> list[str]:
    """Retrain on 5 micrographs of a new specimen (held-out kind), score on 3 others, before/after."""
    kind = "heldout_ring_300k"
    train_m = [synth_micrograph(kind, 9000 + i) for i in range(5)]
    test_m = [synth_micrograph(kind, 9100 + i) for i in range(3)]
    new = [
        make_training_example(m.image, m.pixel_size_a, m.coords_px_xy, m.diameter_a, mask=m.mask)
        for m in train_m
    ]
    general = []
    for k, gk in enumerate(TRAIN_KINDS):
        m = synth_micrograph(gk, 70_000 + k)
        general.append(
            make_training_example(m.image, m.pixel_size_a, m.coords_px_xy, m.diameter_a, mask=m.mask)
        )

    def f1(mdl):
        vals = []
        for m in test_m:
            s, _, _, _, _ = boxnet_scores(mdl, m.image, m.pixel_size_a, m.diameter_a, m.coords_px_xy)
            vals.append(s.f1)
        return statistics.mean(vals)

    before = f1(model)
    epochs = epochs or (10 if quick else 40)
    settings = TrainSettings(
        epochs=epochs,
        batch_size=8,
        patch_px=128,
        lr_start=3e-4,
        lr_end=3e-5,
        warmup_iterations=20,
        eval_crop_px=256,
        n_eval_general=6,
    )
    t0 = time.perf_counter()
    result = train_boxnet(model, new, settings, general_examples=general, seed=0)
    dt = time.perf_counter() - t0
    after = f1(result.model)
    h = result.history[-1]
    return [
        "### (e) Retraining on 5 micrographs of a new specimen",
        "",
        f"Specimen: `{kind}` (a 0.3 MDa ring, never in the general training set), 5 training micrographs, "
        f"3 test micrographs; retrained from the shipped model mixed 1:1 with {len(general)} general "
        f"micrographs, {h.iteration} iterations (batch 8, 128² patches, Adam 3e-4→3e-5).",
        "",
        "| F1 before | F1 after | gain | retraining time (s) | pixel acc. old/new model on new data | "
        "on old data |",
        "|---|---|---|---|---|---|",
        f"| {before:.3f} | {after:.3f} | {after - before:+.3f} | {dt:.0f} | "
        f"{h.accuracy_old_model_new_data:.3f} / {h.accuracy_new_model_new_data:.3f} | "
        f"{h.accuracy_old_model_old_data:.3f} / {h.accuracy_new_model_old_data:.3f} |",
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer simulated micrographs and retraining epochs")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--retrain-epochs", type=int, default=None, help="(e): default 10 with --quick, else 40")
    ap.add_argument("--sections", default="abcde")
    ap.add_argument("--out", type=Path, default=REPO / "docs/benchmarks/picking.md")
    args = ap.parse_args()
    peers = not args.no_peers
    workdir = Path(tempfile.mkdtemp(prefix="bench_picking_"))
    model = load_pretrained_boxnet()
    meta = getattr(model, "metadata", {})
    lines = [
        "## BoxNet picking",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs), torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads. Command: "
        "`flock /tmp/cryowarp-heavy.lock .venv/bin/python benchmarks/bench_picking.py "
        f"{' '.join(sys.argv[1:])}`"
        f". Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Shipped model: narrow BoxNet "
        f"({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters), "
        f"trained with `{meta.get('command', '?')}` on {meta.get('data', '?')}, "
        f"{meta.get('iterations', '?')} "
        f"iterations in {meta.get('train_seconds', '?')} s.",
        "",
        "F1: a pick is correct within 0.25 × D of an unmatched true centre. "
        f"*default* = BoxNet with the default `PickSettings` ({DEFAULTS.peak_method} peaks, "
        f"σ = {DEFAULTS.smooth_sigma_frac} D, blob prior weight {model_blob_weight(model)} (the shipped model's own; LoG at "
        f"{DEFAULTS.blob_sigma_frac} D), threshold min({DEFAULTS.threshold}, {DEFAULTS.relative_threshold} × "
        f"q{DEFAULTS.relative_quantile:g} of the micrograph's peak scores), border {DEFAULTS.border_frac} D, "
        f"mask p₂ ≥ {DEFAULTS.mask_threshold}, "
        f"mask components ≥ {DEFAULTS.mask_min_component_px} px; calibrated on the CryoPPP *train* micrograph and "
        "training-kind synthetic and simulated micrographs only); *best fixed thr.* = the same score with the best fixed "
        f"threshold of {THRESHOLDS[0]}–{THRESHOLDS[-1]} (an oracle, not used for any choice); *net only @0.35* = "
        "no blob prior, fixed threshold 0.35 (the previous default); *Warp rules @0.5* = the same "
        "probabilities through Warp's §3.5 rules "
        "(argmax-gated components, mask = argmax 2 with components ≥ 20 px, border 0.8 D). "
        "topaz: pretrained "
        "resnet16 via the peers wrapper (threshold −3; *best* = best score cut-off); LoG: RELION 3.1 "
        "`relion_autopick --LoG` with diameters 0.8–1.2 D and default threshold.",
        "",
    ]
    summary = {}
    if "a" in args.sections:
        items = []
        for ds, img_path, lab_path in cryoppp_items(SHARED / "data/cryoppp_prompt_sam", "test"):
            px, diameter = CRYOPPP[ds]
            img, truth, _ = cryoppp_load(img_path, lab_path)
            items.append((f"cryoppp_{ds}", img, px, truth, diameter))
        rows = evaluate_set(model, items, workdir, peers)
        block, summary["a"] = accuracy_table(rows, "(a) CryoPPP test micrographs (real, curated)")
        lines += block
    if "b" in args.sections:
        items = []
        n_sim = 3 if args.quick else 6
        for i in range(n_sim):
            m = sim_micrograph(20_000 + i, heldout=True)
            items.append((f"sim_{m.kind}", m.image, m.pixel_size_a, m.coords_px_xy, m.diameter_a))
        for i, kind in enumerate(HELDOUT_KINDS):
            m = synth_micrograph(kind, 30_000 + i)
            items.append((f"gen_{kind}", m.image, m.pixel_size_a, m.coords_px_xy, m.diameter_a))
        rows = evaluate_set(model, items, workdir, peers)
        block, summary["b"] = accuracy_table(
            rows,
            "(b) Simulated micrographs of held-out specimens (cryowarp.sim kinds not in training; "
            "our generator's held-out kinds), with contamination/carbon",
        )
        lines += block
    if "c" in args.sections:
        lines += masking_section(model)
    if "d" in args.sections:
        lines += timing_section(args.repeats, peers, workdir)
    if "e" in args.sections:
        lines += retrain_section(model, args.quick, args.retrain_epochs)
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
