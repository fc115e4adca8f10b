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


def find_particles(
    probabilities: torch.Tensor,
    *,
    particle_diameter_a: float,
    threshold: float = 0.5,
    minimum_mask_distance_a: float = 0.0,
    mask_min_component_px: int = 20,
    pixel_size_a: float = PIXEL_SIZE_A,
) -> PickCandidates:
    """Apply Warp's post-processing rules to a `(3, h, w)` softmax map (warp-facts.md §3.5).

    1. Particle map = p₁ where argmax = 1 and p₁ ≥ ``threshold``, else 0; mask = argmax = 2 with
       4-connected components < ``mask_min_component_px`` removed.
    2. Peaks = local maxima of the particle map (neighbourhood radius round(D/px/4)), > 10⁻⁶, not
       closer than round(0.8·D/px) to the border.
    3. Each peak's 4-connected component of non-zero particle pixels gives a centroid (mean pixel
       position) and an extent (pixel count); one centroid per component.
    4. A centroid survives only if its distance to the nearest masked pixel exceeds
       floor((D/2 + ``minimum_mask_distance_a``)/px).
    5. Of two centroids closer than D/1.5 Å, the one with the smaller component is deleted.

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
    device = probabilities.device
    probs = probabilities.detach().float().cpu()
    h, w = probs.shape[-2:]
    argmax = probs.argmax(dim=0)
    p1 = probs[1]
    particle = torch.where((argmax == 1) & (p1 >= threshold), p1, torch.zeros_like(p1)).numpy()
    mask = clean_mask(argmax == 2, mask_min_component_px).numpy()

    d_px = particle_diameter_a / pixel_size_a
    radius = max(int(round(d_px / 4)), 1)
    footprint = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    local_max = ndimage.maximum_filter(particle, footprint=footprint, mode="constant", cval=0.0)
    peaks = (particle == local_max) & (particle > 1e-6)
    border = int(round(0.8 * d_px))
    if border > 0:
        peaks[:border, :] = False
        peaks[-border:, :] = False
        peaks[:, :border] = False
        peaks[:, -border:] = False

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

    if mask.any():
        distance = ndimage.distance_transform_edt(~mask)
        min_dist = np.floor((particle_diameter_a / 2 + minimum_mask_distance_a) / pixel_size_a)
        iy = np.clip(np.round(centroids_yx[:, 0]).astype(int), 0, h - 1)
        ix = np.clip(np.round(centroids_yx[:, 1]).astype(int), 0, w - 1)
        keep = distance[iy, ix] > min_dist
        centroids_yx, extents = centroids_yx[keep], extents[keep]

    # overlap suppression: larger components win (greedy in order of decreasing extent)
    order = np.argsort(-extents, kind="stable")
    min_sep = d_px / 1.5
    kept: list[int] = []
    for i in order:
        if all(np.hypot(*(centroids_yx[i] - centroids_yx[j])) >= min_sep for j in kept):
            kept.append(i)
    kept = sorted(kept, key=lambda i: (centroids_yx[i, 0], centroids_yx[i, 1]))
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
