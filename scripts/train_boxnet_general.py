"""Train the general BoxNet shipped in ``src/cryowarp/picking/weights/boxnet_general.pt``.

Data: synthetic micrographs of the 12 training specimen kinds of ``scripts/boxnet_data.py``
(0.1–5 MDa; compact, rod, ring, dumbbell, multi-lobed; ice/ethane contaminants and carbon edges
labelled as mask), optionally micrographs from ``cryowarp.sim.simulate_micrograph`` (``--sim N``), and
the CryoPPP *train* micrographs in ``../shared/data/cryoppp_prompt_sam/*/train`` (masks → centres).
The CryoPPP *test* micrographs and the held-out kinds are never used here.

Run (on the shared machine, one heavy job at a time)::

    flock /tmp/cryowarp-heavy.lock .venv/bin/python scripts/train_boxnet_general.py \\
        --minutes 25 --out src/cryowarp/picking/weights/boxnet_general.pt

Time and data of the shipped run are recorded in the weights' metadata and in docs/boxnet.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boxnet_data import (  # noqa: E402
    CRYOPPP,
    TRAIN_KINDS,
    cryoppp_items,
    cryoppp_load,
    synth_micrograph,
)

from cryowarp.picking import (  # noqa: E402
    BoxNet,
    BoxNetConfig,
    TrainSettings,
    boxnet_to_state,
    make_training_example,
    train_boxnet,
)
from cryowarp.picking.pick import BLOB_WEIGHT_KEY  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def cryoppp_test_names(root: Path) -> set[str]:
    """Example names the CryoPPP *test* micrographs would get (they must never be in the corpus)."""
    return {f"cryoppp_{img.stem}" for _, img, _ in cryoppp_items(root, "test")}


def assert_no_test_images(examples, root: Path) -> None:
    """Fail if any CryoPPP *test* micrograph is among the training examples (by name)."""
    leaked = {ex.name for ex in examples} & cryoppp_test_names(root)
    if leaked:
        raise AssertionError(f"CryoPPP test micrographs in the training corpus: {sorted(leaked)}")


def cryoppp_train_examples(root: Path) -> list:
    """Examples of the CryoPPP *train* micrographs; asserts none of them is (a copy of) a test image."""
    import hashlib

    test_hashes = {hashlib.sha256(img.read_bytes()).hexdigest() for _, img, _ in cryoppp_items(root, "test")}
    test_stems = {img.stem for _, img, _ in cryoppp_items(root, "test")}
    out = []
    for ds, img_path, lab_path in cryoppp_items(root, "train"):
        assert img_path.parent.parent.name == "train", img_path
        assert img_path.stem not in test_stems, f"{img_path} has the name of a test micrograph"
        assert hashlib.sha256(img_path.read_bytes()).hexdigest() not in test_hashes, f"{img_path} is a test image"
        pixel_size_a, diameter_a = CRYOPPP[ds]
        img, coords, _ = cryoppp_load(img_path, lab_path)
        out.append(make_training_example(img, pixel_size_a, coords, diameter_a, name=f"cryoppp_{img_path.stem}"))
    return out


def sim_examples(n: int, seed0: int) -> list:
    """Examples from ``cryowarp.sim`` (training kinds only): the built-in general corpus, whose draws these are."""
    from cryowarp.sim.picking_corpus import general_corpus

    out = general_corpus(n, seed=seed0)
    for i, ex in enumerate(out):
        print(f"sim {i + 1}/{n}: {ex.name}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--blob-weight",
        type=float,
        default=1.0,
        help="dark-blob prior weight recorded in the weights' metadata (picking uses it by default); "
        "1.0 is what scripts/calibrate_boxnet_postprocess.py chose for the shipped model",
    )
    ap.add_argument("--out", type=Path, default=REPO / "src/cryowarp/picking/weights/boxnet_general.pt")
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget for the training loop")
    ap.add_argument("--per-kind", type=int, default=12, help="synthetic micrographs per specimen kind")
    ap.add_argument("--sim", type=int, default=0, help="extra micrographs from cryowarp.sim")
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--config", choices=["narrow", "warp2"], default="narrow")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", type=Path, default=None, help="fine-tune from these weights instead of from scratch")
    ap.add_argument(
        "--real-share",
        type=float,
        default=None,
        help="share of training draws from the CryoPPP train micrographs (default: as prepared, ~7 %%)",
    )
    ap.add_argument("--noise-sd", type=float, default=0.3, help="augmentation noise |N(0, s)| (Warp 0.3)")
    ap.add_argument("--lr-start", type=float, default=1e-3)
    ap.add_argument("--lr-end", type=float, default=5e-5)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--cryoppp", type=Path, default=REPO.parent / "shared/data/cryoppp_prompt_sam")
    ap.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="cache of the prepared examples: loaded if it exists, else written after preparing",
    )
    ap.add_argument(
        "--crowded",
        type=int,
        default=0,
        help="extra crowded synthetic micrographs per kind (neighbours 0.6-0.9 D apart, 2x density; "
        "seeds 1000 k + 500 + i), generated after loading --corpus",
    )
    ap.add_argument(
        "--small-contam",
        type=int,
        default=0,
        help="extra synthetic micrographs per kind with particle-sized dark ice crystals (artefacts; seeds "
        "1000 k + 700 + i), generated after loading --corpus",
    )
    ap.add_argument(
        "--sharp-contam",
        type=int,
        default=0,
        help="extra synthetic micrographs per kind with sharp-edged dark crystals of 40-400 Å (tight "
        "artefact labels) and a few darker particles (seeds 1000 k + 800 + i), generated after loading --corpus",
    )
    ap.add_argument("--prepare-only", action="store_true", help="prepare (and cache) the examples, then stop")
    ap.add_argument(
        "--export-corpus",
        type=Path,
        default=None,
        help="also write the examples as Warp-style 3-layer TIFFs (for `cryowarp boxnet retrain "
        "--general DIR`)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t0 = time.time()
    if args.corpus is not None and args.corpus.exists():
        cached = torch.load(args.corpus, weights_only=False)
        examples, n_synth, n_sim, n_real, t_data = (
            cached[k] for k in ("examples", "n_synth", "n_sim", "n_real", "t_data")
        )
        print(f"loaded {len(examples)} examples from {args.corpus}")
    else:
        examples, n_synth, n_sim, n_real, t_data = prepare(args, t0)
        if args.corpus is not None:
            torch.save(
                {
                    "examples": examples,
                    "n_synth": n_synth,
                    "n_sim": n_sim,
                    "n_real": n_real,
                    "t_data": t_data,
                },
                args.corpus,
            )
    if args.export_corpus is not None:
        from cryowarp.io.boxnet_examples import write_example_tiff

        args.export_corpus.mkdir(parents=True, exist_ok=True)
        seen = set()
        for ex in examples:
            if ex.name not in seen:
                seen.add(ex.name)
                write_example_tiff(args.export_corpus / f"{ex.name}.tif", ex)
        print(f"wrote {len(seen)} example TIFFs to {args.export_corpus}")
    if args.crowded:
        n_before = len(examples)
        examples += variant_examples(args.crowded, t0, "crowded")
        n_synth += len(examples) - n_before
    if args.small_contam:
        n_before = len(examples)
        examples += variant_examples(args.small_contam, t0, "smallcontam")
        n_synth += len(examples) - n_before
    if args.sharp_contam:
        n_before = len(examples)
        examples += variant_examples(args.sharp_contam, t0, "sharpcontam")
        n_synth += len(examples) - n_before
    assert_no_test_images(examples, args.cryoppp)
    if args.real_share is not None:
        examples = reweight_real(examples, args.real_share)
    if args.prepare_only:
        return
    train(args, examples, n_synth, n_sim, n_real, t_data)


def prepare(args, t0):
    """Generate and preprocess the training examples."""
    examples = []
    for k, kind in enumerate(TRAIN_KINDS):
        for i in range(args.per_kind):
            m = synth_micrograph(kind, seed=1000 * k + i)
            examples.append(
                make_training_example(
                    m.image, m.pixel_size_a, m.coords_px_xy, m.diameter_a, mask=m.mask, name=f"{kind}_{i}"
                )
            )
        print(f"synthetic {kind}: {args.per_kind} micrographs, {time.time() - t0:.0f} s", flush=True)
    n_synth = len(examples)
    examples += sim_examples(args.sim, seed0=50_000)
    n_sim = len(examples) - n_synth
    real = cryoppp_train_examples(args.cryoppp)
    # one real micrograph among ~150 synthetic ones: repeat it so that it is seen ~10 % of the time
    # (train() re-weights it with --real-share)
    for ex in real:
        examples += [ex] * max(1, n_synth // 10)
    n_real = len(real)
    t_data = time.time() - t0
    print(
        f"{n_synth} synthetic + {n_sim} sim + {n_real} CryoPPP train micrographs prepared in {t_data:.0f} s"
    )
    return examples, n_synth, n_sim, n_real, t_data


def variant_examples(per_kind: int, t0: float, variant: str) -> list:
    """``per_kind`` extra synthetic micrographs of each training kind in one variant of the generator:

    * ``crowded``: neighbours closer than the particle diameter (real data sets are often packed so;
      the base corpus never is);
    * ``smallcontam``: 3-15 particle-sized dark ice crystals labelled as artefacts (real micrographs
      have them; the base corpus's contamination is 150-700 Å);
    * ``sharpcontam``: 2-10 sharp-edged, very dark crystals of 40-400 Å radius with tight labels, and a
      few particles of stronger contrast labelled as particles (``synth_micrograph(small_contaminants=
      "sharp")``).
    """
    options = {
        "crowded": (500, {"min_sep_frac": (0.6, 0.9), "density_scale": 2.0}),
        "smallcontam": (700, {"small_contaminants": True}),
        "sharpcontam": (800, {"small_contaminants": "sharp"}),
    }
    seed_offset, synth_options = options[variant]
    out = []
    for k, kind in enumerate(TRAIN_KINDS):
        for i in range(per_kind):
            m = synth_micrograph(kind, seed=1000 * k + seed_offset + i, **synth_options)
            out.append(
                make_training_example(
                    m.image, m.pixel_size_a, m.coords_px_xy, m.diameter_a, mask=m.mask, name=f"{kind}_{variant}_{i}"
                )
            )
    print(f"{len(out)} {variant} synthetic micrographs, {time.time() - t0:.0f} s", flush=True)
    return out


def reweight_real(examples: list, share: float) -> list:
    """Repeat the CryoPPP (real) examples so that they make up ``share`` of the draws."""
    if not 0 <= share < 1:
        raise ValueError(f"--real-share must be in [0, 1), found {share}")
    real = {ex.name: ex for ex in examples if ex.name.startswith("cryoppp_")}
    other = [ex for ex in examples if not ex.name.startswith("cryoppp_")]
    if not real:
        return other
    n_rep = max(1, round(share * len(other) / (1 - share) / len(real)))
    out = other + [ex for ex in real.values() for _ in range(n_rep)]
    print(f"real share: {len(real)} CryoPPP train micrograph(s) x {n_rep} among {len(out)} draws")
    return out


def train(args, examples, n_synth, n_sim, n_real, t_data):
    """Train the narrow (or Warp 2) BoxNet within the wall-clock budget and save it."""

    config = BoxNetConfig.narrow() if args.config == "narrow" else BoxNetConfig.warp2()
    if args.init is not None:
        from cryowarp.picking import boxnet_from_state

        model = boxnet_from_state(torch.load(args.init, map_location="cpu", weights_only=True)).train()
    else:
        model = BoxNet(config)
    settings = TrainSettings(
        epochs=10_000,
        batch_size=args.batch,
        patch_px=args.patch,
        lr_start=args.lr_start,
        lr_end=args.lr_end,
        warmup_iterations=args.warmup,
        noise_sd=args.noise_sd,
        max_iterations=args.iterations,
        eval_crop_px=256,
        n_eval_general=8,
        n_eval_new=8,
    )
    deadline = time.time() + args.minutes * 60
    t1 = time.time()
    # evaluation "epochs" of 250 iterations keep the accuracy reports cheap
    eval_examples = examples[:: max(1, len(examples) // 24)]

    def progress(p):
        if p.iteration % 100 == 0:
            print(f"it {p.iteration}/{p.n_iterations} loss {p.loss:.4f} {time.time() - t1:.0f} s", flush=True)

    result = train_boxnet(model, examples, settings, progress=progress, stop=lambda: time.time() > deadline)
    t_train = time.time() - t1
    from cryowarp.picking import pixel_accuracy

    acc = pixel_accuracy(result.model, eval_examples, 256)
    n_it = result.history[-1].iteration
    print(f"trained {n_it} iterations in {t_train:.0f} s; balanced pixel accuracy {acc:.3f}")
    meta = {
        "command": " ".join(sys.argv),
        "data": f"{n_synth} synthetic micrographs ({len(TRAIN_KINDS)} kinds x {args.per_kind}"
        + (f" + {args.crowded} crowded" if args.crowded else "")
        + (f" + {args.small_contam} with small contaminants" if args.small_contam else "")
        + f"), {n_sim} sim, "
        f"{n_real} CryoPPP train"
        + (f" (share {args.real_share})" if args.real_share is not None else "")
        + (f"; fine-tuned from {args.init.name}" if args.init is not None else ""),
        "iterations": n_it,
        "batch": args.batch,
        "patch_px": args.patch,
        "train_seconds": round(t_train, 1),
        "data_seconds": round(t_data, 1),
        "balanced_pixel_accuracy": round(acc, 4),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        BLOB_WEIGHT_KEY: args.blob_weight,  # what picking reads (cryowarp.picking.pick.model_blob_weight)
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(boxnet_to_state(result.model, **meta), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
