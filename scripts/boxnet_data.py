"""Training/benchmark data for BoxNet: a fast specimen-variety micrograph generator and CryoPPP loaders.

Used by ``scripts/train_boxnet_general.py`` and ``benchmarks/bench_picking.py``. The generator is
self-contained so that the general model can be re-trained without the full simulator; the
benchmark uses ``cryowarp.sim`` micrographs (an independent generator) for held-out specimens.

Specimen kinds (``KINDS``): mass in MDa and a shape family. Density = N points uniform inside the
shape, each a 3D Gaussian; projected along z after a random rotation; weak-phase image through the
CTF (``cryowarp.base.optics.ctf_2d``), ice-thickness background, Poisson noise. Artefacts: dark ice
balls / ethane blobs and carbon film beyond a hole edge, both labelled as mask (class 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryowarp.base.optics import ctf_2d

# name: (mass_mda, shape)
KINDS: dict[str, tuple[float, str]] = {
    "globular_100k": (0.1, "compact"),
    "globular_200k": (0.2, "compact"),
    "dimer_300k": (0.3, "dumbbell"),
    "globular_500k": (0.5, "compact"),
    "rod_400k": (0.4, "rod"),
    "ring_800k": (0.8, "ring"),
    "globular_1m": (1.0, "compact"),
    "lobed_1_5m": (1.5, "lobed"),
    "rod_2m": (2.0, "rod"),
    "ribosome_like_3m": (3.0, "lobed"),
    "globular_4m": (4.0, "compact"),
    "dumbbell_5m": (5.0, "dumbbell"),
    # held out from training (benchmark only)
    "heldout_ring_300k": (0.3, "ring"),
    "heldout_rod_1m": (1.0, "rod"),
    "heldout_lobed_2_5m": (2.5, "lobed"),
}
TRAIN_KINDS = [k for k in KINDS if not k.startswith("heldout")]
HELDOUT_KINDS = [k for k in KINDS if k.startswith("heldout")]
PROTEIN_A3_PER_DA = 1.21


@dataclass
class SynthMicrograph:
    """A generated micrograph with its truth."""

    image: torch.Tensor  # (h, w) counts
    pixel_size_a: float
    coords_px_xy: torch.Tensor  # (n, 2) particle centres, input px
    mask: torch.Tensor  # (h, w) bool artefact mask, input px
    diameter_a: float
    kind: str


def _shape_points(shape: str, volume_a3: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """N points uniform inside a shape of the given volume, centred at 0, (n, 3) in Å."""
    if shape == "compact":
        axes = np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.65, 0.9)])
    elif shape == "rod":
        axes = np.array([rng.uniform(2.5, 4.0), rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)])
    else:
        axes = np.ones(3)
    if shape in ("compact", "rod"):
        r = (volume_a3 * 3 / (4 * math.pi * axes.prod())) ** (1 / 3)
        p = rng.normal(size=(n * 3, 3))
        p = p / np.linalg.norm(p, axis=1, keepdims=True) * rng.uniform(0, 1, (n * 3, 1)) ** (1 / 3)
        return p[:n] * axes * r
    if shape == "dumbbell":
        r = (volume_a3 * 3 / (4 * math.pi * 2)) ** (1 / 3)
        p = rng.normal(size=(n, 3))
        p = p / np.linalg.norm(p, axis=1, keepdims=True) * rng.uniform(0, 1, (n, 1)) ** (1 / 3) * r
        p[: n // 2, 0] += r * 0.95
        p[n // 2 :, 0] -= r * 0.95
        return p
    if shape == "ring":
        # torus with major radius R = 2.2 a (minor radius a): volume 2 π² R a²
        a = (volume_a3 / (2 * math.pi**2 * 2.2)) ** (1 / 3)
        t = rng.uniform(0, 2 * math.pi, n)
        rr = a * np.sqrt(rng.uniform(0, 1, n))
        s = rng.uniform(0, 2 * math.pi, n)
        big = 2.2 * a + rr * np.cos(s)
        return np.stack([big * np.cos(t), big * np.sin(t), rr * np.sin(s)], 1)
    if shape == "lobed":
        n_lobes = rng.integers(2, 5)
        sizes = rng.uniform(0.5, 1.0, n_lobes)
        sizes /= sizes.sum()
        pts = []
        centres = rng.normal(size=(n_lobes, 3))
        r_tot = (volume_a3 * 3 / (4 * math.pi)) ** (1 / 3)
        centres = centres / np.linalg.norm(centres, axis=1, keepdims=True) * r_tot * 0.45
        for c, s in zip(centres, sizes, strict=True):
            k = max(int(n * s), 4)
            r = (volume_a3 * s * 3 / (4 * math.pi)) ** (1 / 3)
            p = rng.normal(size=(k, 3))
            p = p / np.linalg.norm(p, axis=1, keepdims=True) * rng.uniform(0, 1, (k, 1)) ** (1 / 3) * r
            pts.append(p + c)
        allp = np.concatenate(pts)
        return allp[rng.integers(0, len(allp), n)] if len(allp) < n else allp[:n]
    raise ValueError(f"unknown shape {shape!r}")


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _splat(shape_yx, pts_yx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    h, w = shape_yx
    out = torch.zeros(h * w, dtype=torch.float64)
    pts = torch.from_numpy(pts_yx)
    wts = torch.from_numpy(weights).double()
    y0, x0 = torch.floor(pts[:, 0]).long(), torch.floor(pts[:, 1]).long()
    fy, fx = pts[:, 0] - y0, pts[:, 1] - x0
    for dy, dx, ww in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        out.index_add_(0, yy[ok] * w + xx[ok], (wts * ww)[ok])
    return out.reshape(h, w).numpy()


def _gaussian_blur_fft(img: np.ndarray, sigma_px: float) -> np.ndarray:
    h, w = img.shape
    ky = np.fft.fftfreq(h)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    g = np.exp(-2 * (math.pi * sigma_px) ** 2 * (ky**2 + kx**2))
    return np.fft.irfft2(np.fft.rfft2(img) * g, s=(h, w))


def _smooth_noise(shape_yx, scale_px: float, rng: np.random.Generator) -> np.ndarray:
    n = _gaussian_blur_fft(rng.normal(size=shape_yx), scale_px)
    return n / (n.std() + 1e-12)


def specimen_diameter_a(kind: str) -> float:
    """Nominal particle diameter: that of a sphere of the specimen's volume, ×1.2 for elongated shapes."""
    mass_mda, shape = KINDS[kind]
    d = 2 * (mass_mda * 1e6 * PROTEIN_A3_PER_DA * 3 / (4 * math.pi)) ** (1 / 3)
    return d * (1.3 if shape in ("rod", "dumbbell", "ring") else 1.0)


def _crystal_radius(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, radius_a: tuple[float, float], px: float, wobble: float
) -> np.ndarray:
    """r / R(θ) over the image for one ice crystal or ethane ball at a random place: a disc whose radius,
    drawn from ``radius_a`` (Å), varies by ±``wobble`` with 2–5 lobes around it (< 1 inside)."""
    h, w = yy.shape
    r = rng.uniform(*radius_a) / px
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    lobes = 1 + wobble * np.sin(rng.integers(2, 6) * np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 6))
    return np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / (r * lobes)


def _through_ice(amplitude: np.ndarray, phase: np.ndarray, thickness_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude and phase of the exit wave after ``thickness_a`` (Å) of extra ice."""
    return amplitude * np.exp(-thickness_a / 1500), phase + 0.002 * thickness_a


def synth_micrograph(
    kind: str,
    seed: int,
    *,
    size_px: int = 1024,
    pixel_size_a: float | None = None,
    artefacts: bool = True,
    min_sep_frac: tuple[float, float] = (0.9, 1.2),
    density_scale: float = 1.0,
    small_contaminants: bool | str = False,
) -> SynthMicrograph:
    """Generate one micrograph of specimen ``kind`` (see module docstring).

    ``min_sep_frac`` is the range of the minimum centre distance in units of D (drawn once per
    micrograph) and ``density_scale`` multiplies the particle count: (0.6, 0.9) and 2 give crowded
    micrographs like many real data sets (neighbours closer than D). The defaults reproduce the
    original corpus draw for draw. ``small_contaminants`` adds 3-15 small, very dark ice crystals
    (radius 40-150 Å, about particle size; labelled as artefacts) from a separate random stream.
    ``small_contaminants="sharp"`` draws 2-10 crystals of radius 40-400 Å instead, with a flat,
    sharp-edged thickness profile (so the phase step makes Fresnel fringes through the CTF), much
    darker on average (transmission 0.05-0.8), labelled only inside 0.85 of the radius (tight labels: the artefact
    class should not bleed onto neighbouring particles), and 0-3 of the micrograph's particles made
    1.5-2.5× darker (protein, still labelled as particles: dark but not contaminant-dark).
    """
    rng = np.random.default_rng(seed)
    mass_mda, shape = KINDS[kind]
    px = pixel_size_a if pixel_size_a is not None else float(rng.uniform(2.0, 5.0))
    h = w = size_px
    volume = mass_mda * 1e6 * PROTEIN_A3_PER_DA
    diameter = specimen_diameter_a(kind)
    # particle positions: random sequential addition with a minimum distance
    density = rng.uniform(0.15, 0.6)
    n_target = int(density * h * w * px * px / (math.pi * (diameter / 2) ** 2) * 0.6 * density_scale)
    n_target = max(n_target, 3) if rng.uniform() > 0.05 else 0
    min_sep = diameter * rng.uniform(*min_sep_frac) / px
    centres: list[tuple[float, float]] = []
    cand = rng.uniform(0, 1, (n_target * 20, 2)) * [h, w]
    occupied = np.zeros((int(h / min_sep) + 2, int(w / min_sep) + 2), dtype=object)
    for cy, cx in cand:
        if len(centres) >= n_target:
            break
        gy, gx = int(cy / min_sep) + 1, int(cx / min_sep) + 1
        near = [q for row in occupied[gy - 1 : gy + 2, gx - 1 : gx + 2] for cell in row if cell for q in cell]
        if all((cy - q[0]) ** 2 + (cx - q[1]) ** 2 >= min_sep**2 for q in near):
            centres.append((cy, cx))
            occupied[gy, gx] = (occupied[gy, gx] or []) + [(cy, cx)]
    n_pts = 300
    sigma_a = (volume / n_pts) ** (1 / 3) * 0.6
    base_pts = _shape_points(shape, volume, n_pts, rng)
    base_pts -= base_pts.mean(0)
    all_pts, all_w = [], []
    for cy, cx in centres:
        rot = _random_rotation(rng)
        p = base_pts @ rot.T  # (x, y, z) Å
        all_pts.append(np.stack([cy + p[:, 1] / px, cx + p[:, 0] / px], 1))
        all_w.append(np.full(n_pts, volume / n_pts / (px * px)))  # thickness·area / px² -> Å of protein
    thickness = np.zeros((h, w))
    if all_pts:
        thickness = _gaussian_blur_fft(
            _splat((h, w), np.concatenate(all_pts), np.concatenate(all_w)), sigma_a / px
        )
    # phase (rad) = kappa * protein thickness (Å); ice excluded volume folded into kappa
    kappa = rng.uniform(0.003, 0.008)
    phase = kappa * thickness
    mask = np.zeros((h, w), bool)
    amplitude = np.ones((h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    if artefacts and rng.uniform() < 0.3:  # carbon beyond a hole edge
        r_hole = rng.uniform(0.5, 1.0) * max(h, w)
        ang = rng.uniform(0, 2 * math.pi)
        dist_c = r_hole - rng.uniform(0.15, 0.45) * max(h, w)  # edge crosses 15-45 % from the centre
        cy, cx = h / 2 + dist_c * math.sin(ang), w / 2 + dist_c * math.cos(ang)
        carbon = (yy - cy) ** 2 + (xx - cx) ** 2 > r_hole**2
        t_c = rng.uniform(100, 300)
        phase = phase + carbon * (0.004 * t_c + 0.15 * _smooth_noise((h, w), 1.5, rng))
        amplitude = amplitude * np.where(carbon, math.exp(-t_c / 1000), 1.0)
        mask |= carbon
    if artefacts and rng.uniform() < 0.45:  # ice balls / ethane contamination
        for _ in range(rng.integers(1, 4)):
            rr = _crystal_radius(rng, yy, xx, (150, 700), px, 0.15)
            t_ice = rng.uniform(800, 3000) * np.sqrt(np.clip(1 - rr**2, 0, 1))
            amplitude, phase = _through_ice(amplitude, phase, t_ice)
            mask |= rr < 1
    if small_contaminants == "sharp":  # sharp-edged, very dark crystals of many sizes, tight labels
        rng2 = np.random.default_rng(seed + 20_000_000)
        for _ in range(rng2.integers(2, 11)):
            rr = _crystal_radius(rng2, yy, xx, (40, 400), px, 0.15)
            t_ice = rng2.uniform(300, 4500) * np.clip(1 - rr**8, 0, 1) ** 0.5
            amplitude, phase = _through_ice(amplitude, phase, t_ice)
            mask |= rr < 0.85
        if all_pts and len(centres):
            # a few particles of stronger contrast (e.g. denser or thicker); still particles
            n_dark = int(rng2.integers(0, 4))
            for i in rng2.choice(len(centres), size=min(n_dark, len(centres)), replace=False):
                cy, cx = centres[i]
                rr = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / max(diameter / 2 / px, 1.0)
                boost = rng2.uniform(0.5, 1.5) * np.exp(-0.5 * (rr / 0.6) ** 2)
                phase = phase + boost * kappa * thickness
    elif small_contaminants:  # particle-sized ice crystals: darker than any protein
        rng2 = np.random.default_rng(seed + 10_000_000)
        for _ in range(rng2.integers(3, 16)):
            rr = _crystal_radius(rng2, yy, xx, (40, 150), px, 0.2)
            t_ice = rng2.uniform(500, 2000) * np.sqrt(np.clip(1 - rr**2, 0, 1))
            amplitude, phase = _through_ice(amplitude, phase, t_ice)
            mask |= rr < 1
    # particles under artefacts are not positives
    keep = [i for i, (cy, cx) in enumerate(centres) if not mask[min(int(cy), h - 1), min(int(cx), w - 1)]]
    coords = np.array([[centres[i][1], centres[i][0]] for i in keep]).reshape(-1, 2)
    # image formation: I = A (1 - 2 CTF ⊛ φ), underfocus gives dark protein at low frequency
    defocus = rng.uniform(0.6, 3.5)
    ctf = (
        ctf_2d(
            defocus,
            rng.uniform(0, 0.1),
            rng.uniform(0, 180),
            pixel_size_a=px,
            shape_yx=(h, w),
            bfactor_a2=-rng.uniform(30, 150),
            phase_shift_deg=0.0,
        )
        .numpy()
        .astype(np.float64)
    )
    contrast = np.fft.irfft2(np.fft.rfft2(phase) * ctf, s=(h, w))
    ice = 1 + 0.05 * _smooth_noise((h, w), h / 6, rng)
    intensity = np.clip(amplitude * ice * (1 - 2 * contrast), 0, None)
    dose = rng.uniform(15, 50) * px * px
    counts = rng.poisson(intensity * dose).astype(np.float32)
    return SynthMicrograph(
        image=torch.from_numpy(counts),
        pixel_size_a=px,
        coords_px_xy=torch.from_numpy(coords).float(),
        mask=torch.from_numpy(mask),
        diameter_a=diameter,
        kind=kind,
    )


# ---- CryoPPP (PNG micrographs with particle masks) ----
CRYOPPP = {
    # dataset: (pixel size of the 1024² PNG in Å, particle diameter in Å); pixel size from the EMPIAR
    # entry and the down-sampling to 1024 px, diameter from the mask discs (see docs/boxnet.md)
    "10028": (5.36, 300.0),
    "10059": (4.5, 145.0),
    "10947": (3.0, 190.0),
}


def cryoppp_items(root: Path, split: str) -> list[tuple[str, Path, Path]]:
    """(dataset, image, label) triples of one split ('train' or 'test')."""
    out = []
    for ds in sorted(CRYOPPP):
        for img in sorted((root / ds / split / "images").glob("*.png")):
            out.append((ds, img, root / ds / split / "labels" / img.name))
    return out


def cryoppp_load(image_path: Path, label_path: Path, disc_diameter_px: float | None = None):
    """Image (float32, 1024²) and particle centres (x, y) from a CryoPPP mask of (possibly overlapping) discs.

    Centres = local maxima of the distance transform of the thresholded mask (> 127), scaled to the
    image size, at least one disc radius apart; the disc radius is estimated as the median of the
    distance-transform local maxima unless given.
    """
    from PIL import Image
    from scipy import ndimage

    img = np.asarray(Image.open(image_path).convert("L"), dtype=np.float32)
    lab = np.asarray(Image.open(label_path).convert("L")) > 127
    scale = img.shape[1] / lab.shape[1]
    edt = ndimage.distance_transform_edt(lab)
    if disc_diameter_px is None:
        loc = (edt == ndimage.maximum_filter(edt, size=5)) & (edt > 2)
        r_est = float(np.median(edt[loc]))
    else:
        r_est = disc_diameter_px / 2 / scale
    size = max(int(round(r_est * 0.5)) * 2 + 1, 3)
    peaks = (edt == ndimage.maximum_filter(edt, size=size)) & (edt >= 0.7 * r_est)
    lab_peaks, n = ndimage.label(peaks)
    centres_yx = np.array(ndimage.center_of_mass(peaks, lab_peaks, range(1, n + 1))).reshape(-1, 2)
    # greedy non-maximum suppression at 1 radius
    vals = edt[np.round(centres_yx[:, 0]).astype(int), np.round(centres_yx[:, 1]).astype(int)]
    kept: list[int] = []
    for i in np.argsort(-vals):
        if all(np.hypot(*(centres_yx[i] - centres_yx[j])) >= 1.0 * r_est for j in kept):
            kept.append(i)
    c = centres_yx[kept]
    coords_xy = np.stack([(c[:, 1] + 0.5) * scale - 0.5, (c[:, 0] + 0.5) * scale - 0.5], 1)
    return torch.from_numpy(img), torch.from_numpy(coords_xy).float(), 2 * r_est * scale


# ---- cryowarp.sim micrographs (the team's physics simulator) ----
# re-exported for the scripts and benchmarks; the package is the one source of truth
from cryowarp.sim.picking_corpus import (  # noqa: E402, F401
    SIM_HELDOUT_KINDS,
    SIM_TRAIN_KINDS,
)
from cryowarp.sim.picking_corpus import nominal_diameter_a as sim_diameter_a  # noqa: E402, F401


def sim_micrograph(seed: int, *, heldout: bool, size_px: int = 1024) -> SynthMicrograph:
    """A ``cryowarp.sim.simulate_micrograph`` micrograph: random kind, mass, pixel size, defocus
    (:func:`cryowarp.sim.picking_corpus.simulate_picking_micrograph`)."""
    from cryowarp.sim.picking_corpus import simulate_picking_micrograph

    m = simulate_picking_micrograph(seed, heldout=heldout, size_px=size_px)
    return SynthMicrograph(m.image, m.pixel_size_a, m.coords_px_xy, m.mask, m.diameter_a, m.kind)
