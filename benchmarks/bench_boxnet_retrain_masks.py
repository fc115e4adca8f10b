"""Does retraining from the UI keep BoxNet's artefact masking? (issue 5, retraining with masks)

Re-run (one command; takes the heavy-job lock itself around each timed retraining)::

    .venv/bin/python benchmarks/bench_boxnet_retrain_masks.py

Prints markdown and writes it to ``docs/benchmarks/picking_retrain_masks.md``.

The UI's *Retrain BoxNet* turns every corrected item into a training example. Until 24 Nov it gave those
examples no artefact labels, so contamination on the corrected micrographs was labelled background;
now it uses the item's mask (BoxNet's own, with the user's brush strokes). This measures what that
changes, through the UI's own code path (``cryowarp.web._retrain.RetrainJob`` on a real project store):

1. A project of 5 micrographs of a new specimen (``shell``, 3 MDa, as in ``bench_boxnet_retrain.py``),
   simulated by ``bench_boxnet_retrain.simulate`` (``cryowarp.sim.simulate_micrograph``) **with
   contamination in every micrograph** (1–3 ice blobs of 200–600 Å radius, a carbon edge in 30 %).
   Each item holds what the pipeline writes: the average, the shipped model's picks and its mask
   (``items/<name>/mask.tif``).
2. The user's corrections, done as a careful user would in the UI: every BoxNet pick that matches no
   true particle (0.25 D) is removed, every missed particle is added.
3. Retraining with the UI's defaults (20 epochs, 1:1 with the 12-micrograph built-in corpus) under
   three mask variants: *no mask* (the UI before this change), *BoxNet's mask* (the UI now, no strokes),
   *true mask* (the simulator's artefact mask, i.e. a user who painted the contamination exactly).
4. Scores on ``--n-test`` held-out contaminated micrographs of the specimen: F1 (``PickSettings()``,
   0.25 D), picks whose centre lies on true contamination, and the mask against the simulator's mask on
   BoxNet's 8 Å grid: recall (share of contaminated pixels masked) and false-mask share (share of clean
   pixels masked).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts"))

from bench_boxnet_retrain import SPECIMENS, HeavyLock, Specimen, simulate  # noqa: E402

from cryowarp.io.masks import write_mask_tif  # noqa: E402
from cryowarp.io.mrc import write_mrc  # noqa: E402
from cryowarp.picking import (  # noqa: E402
    PickSettings,
    TrainSettings,
    boxnet_from_state,
    load_pretrained_boxnet,
    match_picks,
    pick_particles,
)
from cryowarp.pipeline.results import ItemResult  # noqa: E402
from cryowarp.pipeline.store import ProjectStore  # noqa: E402
from cryowarp.sim.picking_corpus import on_mask  # noqa: E402
from cryowarp.web._project import ProjectView  # noqa: E402
from cryowarp.web._retrain import RetrainJob  # noqa: E402
from cryowarp.web.app import RETRAIN_DEFAULTS  # noqa: E402

VARIANTS = ("no mask (UI before)", "BoxNet's mask (UI now)", "true mask (painted exactly)")


def to_grid(mask: torch.Tensor, shape_yx: tuple[int, int]) -> torch.Tensor:
    """A full-size bool mask on BoxNet's 8 Å grid (area average > 0.5, as ``make_training_example``)."""
    return F.interpolate(mask.float()[None, None], size=shape_yx, mode="area")[0, 0] > 0.5


def build_project(spec: Specimen, seeds: list[int], project: Path, variant: str, model) -> int:
    """A project of corrected items as the UI sees them; returns the number of corrections."""
    settings_changes = {"input": {"pixel_size_a": spec.pixel_size_a}, "pick": {"particle_diameter_a": spec.diameter_a}}
    n_corrections = 0
    with ProjectStore(project) as store:
        store.put_settings(store.get_settings().updated(settings_changes))
        for seed in seeds:
            name = f"{spec.name}_{seed}"
            image, truth_xy, true_mask = simulate(spec, seed, contaminated=True)
            folder = project / "items" / name
            write_mrc(folder / "average.mrc", image.numpy(), spec.pixel_size_a)
            picks = pick_particles(image, spec.pixel_size_a, model, PickSettings(particle_diameter_a=spec.diameter_a))
            artifacts = {"average": f"items/{name}/average.mrc"}
            if variant != VARIANTS[0]:
                mask = picks.mask_8a if variant == VARIANTS[1] else to_grid(true_mask, tuple(picks.mask_8a.shape))
                write_mask_tif(folder / "mask.tif", mask)
                artifacts["mask"] = f"items/{name}/mask.tif"
            xy = picks.coords_px_xy.cpu()
            rows = [[x, y, s] for (x, y), s in zip(xy.tolist(), picks.scores.tolist(), strict=True)]
            store.add_item(name, str(folder / "average.mrc"))
            store.mark_running(name)
            store.record_result(
                ItemResult(
                    name=name,
                    path=str(folder / "average.mrc"),
                    stages_run=("motion", "pick"),
                    shape_yx=tuple(image.shape),
                    pixel_size_a=spec.pixel_size_a,
                    picks_px_xy_score=rows,
                    artifacts=artifacts,
                )
            )
            # the user's corrections: remove every pick that matches no particle, add every missed particle
            radius = 0.25 * spec.diameter_a / spec.pixel_size_a
            hit_truth = torch.zeros(len(truth_xy), dtype=torch.bool)
            for p in store.get_picks(name):
                dist = torch.hypot(truth_xy[:, 0] - p["x_px"], truth_xy[:, 1] - p["y_px"])
                if len(dist) and float(dist.min()) <= radius:
                    hit_truth |= dist <= radius
                else:
                    store.remove_pick(name, p["id"], radius_px=1.0)
                    n_corrections += 1
            for x, y in truth_xy[~hit_truth].tolist():
                store.add_pick(name, x, y)
                n_corrections += 1
    return n_corrections


def score(model, test_items, spec: Specimen) -> dict[str, float]:
    """Mean F1, picks on contamination (per micrograph), mask recall and false-mask share (%)."""
    f1, on_contam, recall, false_mask = [], [], [], []
    for image, truth_xy, true_mask in test_items:
        picks = pick_particles(image, spec.pixel_size_a, model, PickSettings(particle_diameter_a=spec.diameter_a))
        xy = picks.coords_px_xy.cpu()
        f1.append(match_picks(xy, truth_xy, 0.25 * spec.diameter_a / spec.pixel_size_a).f1)
        on_contam.append(float(on_mask(xy, true_mask).sum()))
        truth8 = to_grid(true_mask, tuple(picks.mask_8a.shape))
        ours = picks.mask_8a.cpu().bool()
        recall.append(100.0 * float((ours & truth8).sum()) / max(1, int(truth8.sum())))
        false_mask.append(100.0 * float((ours & ~truth8).sum()) / max(1, int((~truth8).sum())))
    return {
        "f1": statistics.mean(f1),
        "on_contamination": statistics.mean(on_contam),
        "mask_recall": statistics.mean(recall),
        "false_mask": statistics.mean(false_mask),
    }


def retrain(project: Path, seed: int, lock: Path | None, epochs: int) -> tuple[float, object]:
    """The UI's retraining (``RetrainJob``, UI defaults) on the project; returns (seconds, model)."""
    view = ProjectView(project)
    job = RetrainJob()
    with HeavyLock(lock):
        t0 = time.perf_counter()
        job.start(view, TrainSettings(**{**RETRAIN_DEFAULTS, "epochs": epochs}), seed=seed, auto_warmup=True)
        job.join()
        dt = time.perf_counter() - t0
    st = job.snapshot()
    view.close()
    if st["status"] != "done":
        raise RuntimeError(f"retraining failed: {st['message']}")
    return dt, boxnet_from_state(torch.load(st["model_path"], map_location="cpu", weights_only=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specimen", default="shell", choices=sorted(SPECIMENS))
    ap.add_argument("--runs", type=int, default=2, help="retrainings per variant, each on 5 other micrographs")
    ap.add_argument("--n-test", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=RETRAIN_DEFAULTS["epochs"], help="the UI's default unless testing")
    ap.add_argument("--lock", type=Path, default=Path("/tmp/cryowarp-heavy.lock"))
    ap.add_argument("--no-lock", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "docs/benchmarks/picking_retrain_masks.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec = SPECIMENS[args.specimen]
    lock = None if args.no_lock else args.lock
    started = time.strftime("%H:%M UTC %d %b", time.gmtime())
    test_items = [simulate(spec, 300 + i, contaminated=True) for i in range(args.n_test)]
    shipped = load_pretrained_boxnet()
    before = score(shipped, test_items, spec)
    print(f"shipped: {before}", file=sys.stderr, flush=True)
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="cw_retrain_masks_") as tmp:
        for r in range(args.runs):
            seeds = [400 + 10 * r + i for i in range(5)]
            for v_index, variant in enumerate(VARIANTS):
                project = Path(tmp) / f"run{r}_v{v_index}"
                n_corr = build_project(spec, seeds, project, variant, shipped)
                dt, model = retrain(project, seed=r, lock=lock, epochs=args.epochs)
                res = {**score(model, test_items, spec), "seconds": dt, "corrections": n_corr}
                print(f"run {r} {variant}: {res}", file=sys.stderr, flush=True)
                results[variant].append(res)

    def med(variant: str, key: str) -> float:
        return statistics.median(x[key] for x in results[variant])

    lines = [
        "## BoxNet retraining from the UI: artefact masks as training labels",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), torch {torch.__version__}, "
        f"{args.threads} threads. Command: `.venv/bin/python benchmarks/bench_boxnet_retrain_masks.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` ({started}; each retraining under the heavy-job lock).",
        "",
        f"Specimen `{spec.name}` ({spec.description}, D = {spec.diameter_a:.0f} Å, {spec.pixel_size_a} Å/px). "
        f"{args.runs} runs × {len(VARIANTS)} variants; each run retrains the shipped model through the UI's "
        f"`RetrainJob` (UI defaults: {args.epochs} epochs, 1:1 with the built-in 12-micrograph corpus) on 5 *contaminated* "
        "micrographs whose picks were corrected to the truth (wrong BoxNet picks removed, missed particles added). "
        f"Scored on {args.n_test} held-out contaminated micrographs with `PickSettings()` "
        f"(total {sum(len(t[1]) for t in test_items)} particles). Medians over the runs.",
        "",
        "| model | F1 | picks on contamination (per micrograph) | mask recall (% of contaminated px) "
        "| false mask (% of clean px) | retraining s | runs (F1 / recall) |",
        "|---|---|---|---|---|---|---|",
        f"| shipped | {before['f1']:.3f} | {before['on_contamination']:.1f} | {before['mask_recall']:.1f} "
        f"| {before['false_mask']:.2f} | — | — |",
    ]
    for v in VARIANTS:
        per_run = ", ".join(f"{x['f1']:.3f} / {x['mask_recall']:.1f}" for x in results[v])
        lines.append(
            f"| retrained, {v} | {med(v, 'f1'):.3f} | {med(v, 'on_contamination'):.1f} | {med(v, 'mask_recall'):.1f} "
            f"| {med(v, 'false_mask'):.2f} | {med(v, 'seconds'):.0f} | {per_run} |"
        )
    lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
