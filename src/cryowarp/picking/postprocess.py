"""Turn BoxNet probabilities into picks and an artefact mask (warp-facts.md §3.5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from cryowarp.picking.model import PIXEL_SIZE_A

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class PickCandidates:
    """Centroids found on an 8 Å/px probability map (before conversion to input pixels).

    Attributes
    ----------
    coords_px_xy : torch.Tensor
        `(n, 2)` centroids in 8 Å/px pixels, (x, y).
    scores : torch.Tensor
        `(n,)` particle probability at the centroid.
    extents_px : torch.Tensor
        `(n,)` pixel count of each centroid's component.
    mask : torch.Tensor
        `(h, w)` bool artefact mask after small-component removal.
    """

    coords_px_xy: torch.Tensor
    scores: torch.Tensor
    extents_px: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str) -> PickCandidates:
        """The same candidates on ``device``."""
        return PickCandidates(
            self.coords_px_xy.to(device), self.scores.to(device), self.extents_px.to(device), self.mask.to(device)
        )


def clean_mask(mask: torch.Tensor, min_component_px: int = 20) -> torch.Tensor:
    """Remove 4-connected components with fewer than ``min_component_px`` pixels from a bool mask."""
    m = mask.detach().cpu().numpy().astype(bool)
    labels, n = ndimage.label(m, structure=_FOUR_CONNECTED)
    if n == 0:
        return mask.to(torch.bool).clone()
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_component_px
    keep[0] = False
    return torch.from_numpy(keep[labels]).to(mask.device)


def _greedy_nms(yx: np.ndarray, score: np.ndarray, min_sep: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (highest score first, ties by position)."""
    from scipy.spatial import cKDTree

    if len(yx) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((yx[:, 1], yx[:, 0], -score))
    tree = cKDTree(yx)
    alive = np.ones(len(yx), dtype=bool)
    kept = []
    for i in order:
        if not alive[i]:
            continue
        kept.append(i)
        alive[tree.query_ball_point(yx[i], np.nextafter(min_sep, 0))] = False
    return np.asarray(kept, dtype=np.int64)


def smoothed_particle_score(p1: np.ndarray, d_px: float, sigma_frac: float) -> np.ndarray:
    """Particle probability smoothed by a Gaussian of s.d. ``sigma_frac``·D, scaled so that a perfectly
    predicted training label (a disc of radius max(1.5, D/8) px of probability 1) scores 1 at its centre.
    """
    sigma = max(sigma_frac * d_px, 0.5)
    r_label = max(1.5, d_px / 8)
    half = int(np.ceil(max(4 * sigma, r_label) + 1))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    disc = (np.hypot(yy, xx) <= r_label).astype(np.float64)
    ref = float(ndimage.gaussian_filter(disc, sigma, mode="constant")[half, half])
    return ndimage.gaussian_filter(p1.astype(np.float64), sigma, mode="nearest") / max(ref, 1e-12)


def blob_prior(image_8a: np.ndarray, d_px: float, sigma_frac: float = 0.8) -> np.ndarray:
    """Dark-blob response of the network input: robust z-score of σ²·∇²(G_σ * image).

    σ = ``sigma_frac``·D/(2√2) (a Laplacian of Gaussian tuned to a disc of radius ``sigma_frac``·D/2,
    as in RELION's LoG picker); positive on dark blobs (cryo contrast). The z-score uses the median
    and 1.4826 × the median absolute deviation of the whole map, so it is comparable between
    micrographs of any contrast or noise level.
    """
    sigma = max(sigma_frac * d_px / (2 * np.sqrt(2)), 0.7)
    lap = sigma * sigma * ndimage.gaussian_laplace(np.asarray(image_8a, dtype=np.float64), sigma, mode="nearest")
    med = float(np.median(lap))
    mad = 1.4826 * float(np.median(np.abs(lap - med)))
    return (lap - med) / max(mad, 1e-12)


def _disc_local_maxima(values: np.ndarray, radius_px: int, border_px: int) -> np.ndarray:
    """Pixels that are the maximum of the disc of ``radius_px`` around them (and > 1e-6), none within
    ``border_px`` of the edge."""
    footprint = np.hypot(*np.mgrid[-radius_px : radius_px + 1, -radius_px : radius_px + 1]) <= radius_px
    local_max = ndimage.maximum_filter(values, footprint=footprint, mode="constant", cval=0.0)
    peaks = (values == local_max) & (values > 1e-6)
    if border_px > 0:
        peaks[:border_px, :] = False
        peaks[-border_px:, :] = False
        peaks[:, :border_px] = False
        peaks[:, -border_px:] = False
    return peaks


def find_particles(
    probabilities: torch.Tensor,
    *,
    particle_diameter_a: float,
    threshold: float = 0.5,
    minimum_mask_distance_a: float = 0.0,
    mask_min_component_px: int = 20,
    pixel_size_a: float = PIXEL_SIZE_A,
    method: str = "warp",
    smooth_sigma_frac: float = 0.2,
    border_frac: float = 0.8,
    mask_threshold: float | None = None,
    image_8a: torch.Tensor | None = None,
    blob_weight: float = 0.0,
    blob_sigma_frac: float = 0.8,
    relative_threshold: float | None = None,
    relative_quantile: float = 97.0,
) -> PickCandidates:
    """Turn a `(3, h, w)` softmax map into picks (warp-facts.md §3.5) and an artefact mask.

    ``method="warp"`` applies Warp's rules:

    1. Particle map = p₁ where argmax = 1 and p₁ ≥ ``threshold``, else 0; mask = argmax = 2 with
       4-connected components < ``mask_min_component_px`` removed.
    2. Peaks = local maxima of the particle map (neighbourhood radius round(D/px/4)), > 10⁻⁶, not
       closer than round(0.8·D/px) to the border.
    3. Each peak's 4-connected component of non-zero particle pixels gives a centroid (mean pixel
       position) and an extent (pixel count); one centroid per component.
    4. A centroid survives only if its distance to the nearest masked pixel exceeds
       floor((D/2 + ``minimum_mask_distance_a``)/px).
    5. Of two centroids closer than D/1.5 Å, the one with the smaller component is deleted.

    ``method="smoothed"`` (ours, the :class:`PickSettings` default) keeps the mask rules (1, 4) but finds
    particles as peaks of the particle probability p₁ smoothed by a Gaussian of s.d.
    ``smooth_sigma_frac``·D (no argmax gate), scaled so that a perfectly predicted label disc scores 1
    (:func:`smoothed_particle_score`); peaks ≥ ``threshold``, not closer than
    round(``border_frac``·D/px) to the border, greedy suppression at D/1.5 keeping the higher score.
    The score (figure of merit) is the smoothed value, clipped to [0, 1]; the extent is the pixel
    count of the peak's 4-connected component of score ≥ ``threshold``. On real micrographs the net's
    particle blobs are fragmented and often below the argmax gate; smoothing integrates them
    (docs/boxnet.md, "Post-processing on real data").

    Two further options of ``method="smoothed"`` (ours, both on in :class:`PickSettings`):
    ``blob_weight`` w > 0 adds a dark-blob prior computed on ``image_8a`` (the network input):
    score = smoothed p₁ + w·z/10 with z from :func:`blob_prior`; ``relative_threshold`` α sets a
    per-micrograph threshold min(``threshold``, α·q) where q is the ``relative_quantile`` percentile of
    the scores of all candidate peaks (local maxima off the border and the mask) of this micrograph, so
    micrographs on which the network is uniformly unsure still get picks. With either option the
    figure of merit is the score clipped to ≥ 0 (it can exceed 1).

    ``border_frac`` = 0.8 is Warp's border. ``mask_threshold`` = None is Warp's artefact rule (argmax = 2);
    a number masks pixels whose artefact probability p₂ is ≥ it instead (ours: 0.7, see
    :class:`PickSettings`), before the small-component removal.

    Parameters
    ----------
    probabilities : torch.Tensor
        `(3, h, w)` probabilities (background, particle, artefact) at ``pixel_size_a``.
    particle_diameter_a : float
        Expected particle diameter D in Å.

    Returns
    -------
    PickCandidates
        On the device of ``probabilities``; coordinates in pixels of the map.
    """
    if probabilities.ndim != 3 or probabilities.shape[0] != 3:
        raise ValueError(f"expected probabilities of shape (3, h, w), found {tuple(probabilities.shape)}")
    if particle_diameter_a <= 0:
        raise ValueError(f"particle_diameter_a must be > 0 Å, found {particle_diameter_a}")
    if method not in ("warp", "smoothed"):
        raise ValueError(f"method must be 'warp' or 'smoothed', found {method!r}")
    if blob_weight > 0 and image_8a is None:
        raise ValueError("blob_weight > 0 needs image_8a (the network input at the map's pixel size)")
    if image_8a is not None and tuple(image_8a.shape[-2:]) != tuple(probabilities.shape[-2:]):
        raise ValueError(
            f"image_8a {tuple(image_8a.shape)} does not match the probabilities {tuple(probabilities.shape)}"
        )
    device = probabilities.device
    probs = probabilities.detach().float().cpu()
    h, w = probs.shape[-2:]
    argmax = probs.argmax(dim=0)
    p1 = probs[1]
    raw_mask = argmax == 2 if mask_threshold is None else probs[2] >= mask_threshold
    if method == "smoothed":
        return _find_smoothed(
            probs,
            raw_mask,
            particle_diameter_a=particle_diameter_a,
            threshold=threshold,
            minimum_mask_distance_a=minimum_mask_distance_a,
            mask_min_component_px=mask_min_component_px,
            pixel_size_a=pixel_size_a,
            smooth_sigma_frac=smooth_sigma_frac,
            border_frac=border_frac,
            image_8a=None if image_8a is None or blob_weight <= 0 else image_8a.detach().float().cpu().numpy(),
            blob_weight=blob_weight,
            blob_sigma_frac=blob_sigma_frac,
            relative_threshold=relative_threshold,
            relative_quantile=relative_quantile,
        ).to(device)
    particle = torch.where((argmax == 1) & (p1 >= threshold), p1, torch.zeros_like(p1)).numpy()
    mask = clean_mask(raw_mask, mask_min_component_px).numpy()

    d_px = particle_diameter_a / pixel_size_a
    peaks = _disc_local_maxima(particle, max(int(round(d_px / 4)), 1), int(round(border_frac * d_px)))

    components, _ = ndimage.label(particle > 0, structure=_FOUR_CONNECTED)
    peak_components = np.unique(components[peaks])
    peak_components = peak_components[peak_components > 0]
    empty = PickCandidates(
        torch.zeros(0, 2, device=device),
        torch.zeros(0, device=device),
        torch.zeros(0, dtype=torch.long, device=device),
        torch.from_numpy(mask).to(device),
    )
    if len(peak_components) == 0:
        return empty
    centroids_yx = np.asarray(
        ndimage.center_of_mass(np.ones_like(particle), components, peak_components), dtype=np.float64
    ).reshape(-1, 2)
    extents = np.asarray(
        ndimage.sum(np.ones_like(particle), components, peak_components), dtype=np.int64
    ).reshape(-1)

    keep = _mask_distance_keep(
        mask, centroids_yx, np.floor((particle_diameter_a / 2 + minimum_mask_distance_a) / pixel_size_a)
    )
    centroids_yx, extents = centroids_yx[keep], extents[keep]

    # overlap suppression: larger components win (greedy in order of decreasing extent; equal extents
    # by position, where Warp takes its list order)
    kept = sorted(
        _greedy_nms(centroids_yx, extents.astype(np.float64), d_px / 1.5).tolist(),
        key=lambda i: (centroids_yx[i, 0], centroids_yx[i, 1]),
    )
    centroids_yx, extents = centroids_yx[kept].reshape(-1, 2), extents[kept]
    if len(kept) == 0:
        return empty
    iy = np.clip(np.round(centroids_yx[:, 0]).astype(int), 0, h - 1)
    ix = np.clip(np.round(centroids_yx[:, 1]).astype(int), 0, w - 1)
    scores = p1.numpy()[iy, ix]
    coords_xy = torch.from_numpy(centroids_yx[:, ::-1].copy()).float()
    return PickCandidates(
        coords_xy.to(device),
        torch.from_numpy(scores.copy()).float().to(device),
        torch.from_numpy(extents).to(device),
        torch.from_numpy(mask).to(device),
    )


def _mask_distance_keep(mask: np.ndarray, yx: np.ndarray, min_dist: float) -> np.ndarray:
    """Bool per centre: distance to the nearest masked pixel > ``min_dist`` (all True without a mask)."""
    if not mask.any() or len(yx) == 0:
        return np.ones(len(yx), dtype=bool)
    distance = ndimage.distance_transform_edt(~mask)
    iy = np.clip(np.round(yx[:, 0]).astype(int), 0, mask.shape[0] - 1)
    ix = np.clip(np.round(yx[:, 1]).astype(int), 0, mask.shape[1] - 1)
    return distance[iy, ix] > min_dist


def _find_smoothed(
    probs: torch.Tensor,
    raw_mask: torch.Tensor,
    *,
    particle_diameter_a: float,
    threshold: float,
    minimum_mask_distance_a: float,
    mask_min_component_px: int,
    pixel_size_a: float,
    smooth_sigma_frac: float,
    border_frac: float,
    image_8a: np.ndarray | None = None,
    blob_weight: float = 0.0,
    blob_sigma_frac: float = 0.8,
    relative_threshold: float | None = None,
    relative_quantile: float = 97.0,
) -> PickCandidates:
    """``find_particles(method="smoothed")`` on CPU tensors."""
    mask = clean_mask(raw_mask, mask_min_component_px).numpy()
    d_px = particle_diameter_a / pixel_size_a
    score = smoothed_particle_score(probs[1].numpy(), d_px, smooth_sigma_frac)
    plain = image_8a is None and relative_threshold is None
    if image_8a is not None:
        score = score + blob_weight * blob_prior(image_8a, d_px, blob_sigma_frac) / 10.0
    min_sep = d_px / 1.5
    peaks = _disc_local_maxima(score, max(int(round(min_sep / 2)), 1), int(round(border_frac * d_px)))
    yx = np.argwhere(peaks).astype(np.float64).reshape(-1, 2)
    values = score[peaks]
    keep = _mask_distance_keep(
        mask, yx, np.floor((particle_diameter_a / 2 + minimum_mask_distance_a) / pixel_size_a)
    )
    yx, values = yx[keep], values[keep]
    # greedy suppression before the threshold (equivalent: a peak is only suppressed by higher ones);
    # the relative threshold is taken over the surviving candidates
    kept = _greedy_nms(yx, values, min_sep)
    yx, values = yx[kept].reshape(-1, 2), values[kept]
    if relative_threshold is not None and len(values):
        threshold = min(threshold, relative_threshold * float(np.percentile(values, relative_quantile)))
    kept = sorted(np.flatnonzero(values >= threshold).tolist(), key=lambda i: (yx[i, 0], yx[i, 1]))
    yx, values = yx[kept].reshape(-1, 2), values[kept]
    components, _ = ndimage.label(score >= max(threshold, 1e-6), structure=_FOUR_CONNECTED)
    sizes = np.bincount(components.ravel())
    iy, ix = yx[:, 0].astype(int), yx[:, 1].astype(int)
    extents = sizes[components[iy, ix]] if len(yx) else np.zeros(0, dtype=np.int64)
    return PickCandidates(
        torch.from_numpy(yx[:, ::-1].copy()).float(),
        torch.from_numpy(np.clip(values, 0.0, 1.0 if plain else None)).float(),
        torch.from_numpy(np.asarray(extents, dtype=np.int64)),
        torch.from_numpy(mask),
    )
