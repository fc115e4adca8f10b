"""Simulated micrographs with picking truth, and the general corpus that BoxNet retraining mixes in.

Warp retrains BoxNet on a user's few corrected micrographs mixed 1:1 with its general training corpus
(warp-facts.md §3.6), so the new model learns the new specimen without forgetting the others. Warp
ships that corpus; we generate ours instead: micrographs of :func:`cryowarp.sim.simulate_micrograph`
with random specimen kind, mass, pixel size, defocus, ice, contamination and carbon, the same draws as
the simulated part of the shipped model's training set (``scripts/train_boxnet_general.py``), so a
corpus of ~1 s per micrograph needs no download and no files in the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cryowarp.picking import TrainingExample, make_training_example
from cryowarp.sim._atoms import _DALTON_PER_A3
from cryowarp.sim.micrograph import MicrographSimSettings, simulate_micrograph

#: ``cryowarp.sim`` protein kinds the shipped BoxNet was trained on, and the ones held out for benchmarks.
SIM_TRAIN_KINDS = ("globule", "prolate", "oblate", "rod", "dumbbell", "ring")
SIM_HELDOUT_KINDS = ("tetrahedron", "l_shape", "y_shape", "shell", "octahedron", "filament")
_ELONGATED = ("prolate", "rod", "dumbbell", "filament", "l_shape", "y_shape")


def nominal_diameter_a(mass_kda: float, kind: str) -> float:
    """Picking diameter of a generated protein: the sphere of its volume (0.81 Da/Å³), ×1.3 if elongated."""
    d = 2 * (mass_kda * 1e3 / _DALTON_PER_A3 * 3 / (4 * math.pi)) ** (1 / 3)
    return d * (1.3 if kind in _ELONGATED else 1.0)


@dataclass(frozen=True)
class PickingMicrograph:
    """A simulated micrograph with its picking truth (particles on artefacts are not counted)."""

    image: torch.Tensor  # (h, w)
    pixel_size_a: float
    coords_px_xy: torch.Tensor  # (n, 2) particle centres, px of image
    mask: torch.Tensor  # (h, w) bool artefact mask (contamination, carbon)
    diameter_a: float
    kind: str


def on_mask(coords_px_xy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`(n,)` bool: whether each (x, y) position (px, rounded, clamped to the image) lies on ``mask`` `(h, w)`."""
    h, w = mask.shape
    ix = coords_px_xy[:, 0].round().long().clamp(0, w - 1)
    iy = coords_px_xy[:, 1].round().long().clamp(0, h - 1)
    return mask[iy, ix].bool()


def simulate_picking_micrograph(seed: int, *, heldout: bool = False, size_px: int = 1024) -> PickingMicrograph:
    """One micrograph of a random kind (:data:`SIM_TRAIN_KINDS`, or the held-out ones), 0.1–5 MDa,
    2–5 Å/px, defocus 0.8–3 µm, 200–600 Å ice, 20–60 e/Å², contamination in half and carbon in 30 %."""
    rng = np.random.default_rng(seed)
    kinds = SIM_HELDOUT_KINDS if heldout else SIM_TRAIN_KINDS
    kind = kinds[int(rng.integers(len(kinds)))]
    mass = float(np.exp(rng.uniform(np.log(100), np.log(5000))))
    px = float(rng.uniform(2.0, 5.0))
    s = MicrographSimSettings(
        shape_yx=(size_px, size_px),
        pixel_size_a=px,
        particle_models=(),
        protein_kinds=(kind,),
        protein_masses_kda=(mass,),
        particle_area_fraction=float(rng.uniform(0.1, 0.4)),
        defocus_um=float(rng.uniform(0.8, 3.0)),
        ice_thickness_a=float(rng.uniform(200, 600)),
        n_contamination_blobs=int(rng.integers(0, 3)) if rng.uniform() < 0.5 else 0,
        contamination_radius_a=float(rng.uniform(200, 800)),
        carbon_edge=bool(rng.uniform() < 0.3),
        total_exposure_e_per_a2=float(rng.uniform(20, 60)),
    )
    m = simulate_micrograph(s, seed=seed)
    mask = m.artifact_mask.bool()
    coords = m.coords_px_xy
    return PickingMicrograph(
        image=m.image,
        pixel_size_a=px,
        coords_px_xy=coords[~on_mask(coords, mask)].float(),
        mask=mask,
        diameter_a=nominal_diameter_a(mass, kind),
        kind=f"sim_{kind}_{mass:.0f}kDa",
    )


#: Seeds of the general corpus: the shipped model's simulated training micrographs start at seed 50 000
#: (``scripts/train_boxnet_general.py``), so the corpus is drawn from its training set.
GENERAL_CORPUS_SEED = 50_000


def general_corpus(n: int = 12, *, seed: int = GENERAL_CORPUS_SEED, size_px: int = 1024) -> list[TrainingExample]:
    """``n`` BoxNet training examples (8 Å/px, labels and artefact masks) of :data:`SIM_TRAIN_KINDS`."""
    examples = []
    for i in range(n):
        m = simulate_picking_micrograph(seed + i, size_px=size_px)
        examples.append(
            make_training_example(
                m.image, m.pixel_size_a, m.coords_px_xy, m.diameter_a, mask=m.mask.float(), name=m.kind
            )
        )
    return examples


__all__ = [
    "GENERAL_CORPUS_SEED",
    "SIM_HELDOUT_KINDS",
    "SIM_TRAIN_KINDS",
    "PickingMicrograph",
    "general_corpus",
    "nominal_diameter_a",
    "on_mask",
    "simulate_picking_micrograph",
]
