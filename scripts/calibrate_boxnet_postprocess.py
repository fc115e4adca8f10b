"""Calibrate BoxNet's post-processing defaults (``PickSettings``) on *training* data only.

Calibration set: the CryoPPP *train* micrograph(s) (``../shared/data/cryoppp_prompt_sam/*/train``) and
one synthetic micrograph per *training* specimen kind of ``scripts/boxnet_data.py`` (seeds 80 000+, not
used in the general corpus). The CryoPPP *test* micrographs and the held-out kinds of the benchmark are
never loaded here (asserted).

1. Artefact mask: for each rule (Warp's argmax = 2, or p₂ ≥ t) and minimum component size, the share
   of true particles a mask would remove (distance ≤ floor(D/2/8) px: the picking rule) and the share
   of points inside the synthetic artefacts it removes.
2. Peaks: F1 (0.25 D) of ``find_particles`` over smoothing widths and thresholds, with the chosen mask
   rule; objective = ½ mean F1(CryoPPP train as is and with added noise) + ½ mean F1(synthetic).

Run::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/calibrate_boxnet_postprocess.py [--model weights.pt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boxnet_data import CRYOPPP, TRAIN_KINDS, cryoppp_items, cryoppp_load, synth_micrograph  # noqa: E402

from cryowarp.picking import (  # noqa: E402
    boxnet_from_state,
    clean_mask,
    find_particles,
    load_pretrained_boxnet,
    match_picks,
    predict_probabilities,
    prepare_boxnet_input,
)

REPO = Path(__file__).resolve().parents[1]
CRYOPPP_ROOT = REPO.parent / "shared/data/cryoppp_prompt_sam"


def calibration_items() -> list[dict]:
    """(name, image, px, D, truth, artefact mask or None) of the calibration set; never a test image."""
    test_paths = {img.resolve() for _, img, _ in cryoppp_items(CRYOPPP_ROOT, "test")}
    items = []
    for ds, img_path, lab_path in cryoppp_items(CRYOPPP_ROOT, "train"):
        assert img_path.resolve() not in test_paths and img_path.parent.parent.name == "train", img_path
        px, diameter = CRYOPPP[ds]
        img, truth, _ = cryoppp_load(img_path, lab_path)
        items.append(dict(name=f"cryoppp_train_{ds}", real=True, image=img, px=px, d=diameter, truth=truth))
        # the same micrograph at a lower dose: white noise of twice the image's s.d. added (a fixed,
        # a-priori level; real data is often much noisier than this ribosome micrograph)
        gen = torch.Generator().manual_seed(0)
        noisy = img + 2.0 * img.std() * torch.randn(img.shape, generator=gen)
        items.append(
            dict(name=f"cryoppp_train_{ds}_noisy", real=True, image=noisy, px=px, d=diameter, truth=truth)
        )
    for k, kind in enumerate(TRAIN_KINDS):
        assert not kind.startswith("heldout"), kind
        m = synth_micrograph(kind, 80_000 + k)
        items.append(
            dict(
                name=f"synth_{kind}",
                real=False,
                image=m.image,
                px=m.pixel_size_a,
                d=m.diameter_a,
                truth=m.coords_px_xy,
                mask=m.mask,
            )
        )
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="weights (default: the shipped model)")
    args = ap.parse_args()
    if args.model is None:
        model = load_pretrained_boxnet()
    else:
        model = boxnet_from_state(torch.load(args.model, map_location="cpu", weights_only=True))
    items = calibration_items()
    for it in items:
        x8, scale = prepare_boxnet_input(it["image"], it["px"])
        it["probs"] = predict_probabilities(model, x8, single_tile_max_px=1024)
        it["scale"] = scale
        it["px8"] = it["px"] * scale[0]
    print(f"calibration set: {[it['name'] for it in items]}")

    rng = np.random.default_rng(0)
    print("\n## mask rule: true particles kept (all / CryoPPP train) | synthetic artefact points removed")
    mask_rules = [(None, 20), (None, 50)] + [(t, mc) for t in (0.5, 0.6, 0.7, 0.8) for mc in (20, 50, 100)]
    for t, mc in mask_rules:
        kept = total = kept_real = total_real = removed = n_art = 0
        for it in items:
            probs = it["probs"]
            raw = probs.argmax(0) == 2 if t is None else probs[2] >= t
            mask = clean_mask(raw, mc).numpy()
            dist = ndimage.distance_transform_edt(~mask) if mask.any() else np.full(mask.shape, np.inf)
            lim = np.floor(it["d"] / 2 / it["px8"])
            tr = it["truth"].numpy() / np.asarray(it["scale"])
            iy = np.clip(np.round(tr[:, 1]).astype(int), 0, mask.shape[0] - 1)
            ix = np.clip(np.round(tr[:, 0]).astype(int), 0, mask.shape[1] - 1)
            ok = dist[iy, ix] > lim
            kept, total = kept + int(ok.sum()), total + len(ok)
            if it["real"]:
                kept_real, total_real = kept_real + int(ok.sum()), total_real + len(ok)
            if it.get("mask") is not None:
                tm = F.interpolate(it["mask"].float()[None, None], size=mask.shape, mode="area")[0, 0].numpy() > 0.5
                yy, xx = np.nonzero(tm)
                if len(yy):
                    sel = rng.choice(len(yy), min(200, len(yy)), replace=False)
                    removed, n_art = removed + int((dist[yy[sel], xx[sel]] <= lim).sum()), n_art + len(sel)
        rule = "argmax=2" if t is None else f"p2>={t}"
        print(
            f"{rule:9s} min {mc:3d} px: kept {kept / total:.3f} / {kept_real / max(total_real, 1):.3f} | "
            f"removed {removed / max(n_art, 1):.3f}"
        )

    print("\n## peaks (mask p2 >= 0.7, components >= 50 px): objective, F1 CryoPPP train, mean F1 synthetic")
    results = []
    for sigma in (0.15, 0.2, 0.25):
        for thr in (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7):
            f1_real, f1_syn = [], []
            for it in items:
                cand = find_particles(
                    it["probs"],
                    particle_diameter_a=it["d"],
                    threshold=thr,
                    pixel_size_a=it["px8"],
                    method="smoothed",
                    smooth_sigma_frac=sigma,
                    border_frac=0.5,
                    mask_threshold=0.7,
                    mask_min_component_px=50,
                )
                s = match_picks(
                    cand.coords_px_xy * torch.tensor(it["scale"]), it["truth"], 0.25 * it["d"] / it["px"]
                )
                (f1_real if it["real"] else f1_syn).append(s.f1)
            obj = 0.5 * float(np.mean(f1_real)) + 0.5 * float(np.mean(f1_syn))
            results.append((obj, sigma, thr))
            print(f"sigma {sigma:.2f} D, threshold {thr:.2f}: {obj:.3f}  {np.mean(f1_real):.3f}  {np.mean(f1_syn):.3f}")
    best = max(results)
    print(f"\nbest: smooth_sigma_frac {best[1]}, threshold {best[2]} (objective {best[0]:.3f})")


if __name__ == "__main__":
    main()
