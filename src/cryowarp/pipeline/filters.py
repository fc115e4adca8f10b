"""Warp's quality filter over the processed items of a project (warp-facts.md §7.4).

An item passes if: ``defocus_min_um ≤ defocus_um ≤ defocus_max_um``; its astigmatism vector
``(ΔD cos 2φ, ΔD sin 2φ)`` lies within ``astigmatism_max_sigma`` standard deviations of the dataset
mean, where the s.d. is the RMS distance of all items' vectors to that mean (floored at 10⁻⁴ µm);
``resolution_a ≤ resolution_max_a``; the phase shift is in ``[phase_min_deg, phase_max_deg]`` when
``filter_phase``; ``mean_motion_a ≤ motion_max_a``; ``n_particles ≥ particles_min``;
``mask_percentage ≤ mask_percentage_max``. A value an item lacks (stage off or not run) does not
reject it. Manual include/exclude overrides the filter (see :func:`is_selected`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryowarp.pipeline.settings import FilterSettings

__all__ = ["FilterVerdict", "evaluate_filters", "is_selected", "astigmatism_vector_um"]

_MIN_SIGMA_UM = 1e-4  # Warp floors the astigmatism spread (§7.4)


@dataclass(frozen=True)
class FilterVerdict:
    """Result of the quality filter for one item.

    Attributes
    ----------
    passes : bool
        True when no criterion rejects the item.
    reasons : tuple of str
        One readable reason per failed criterion, e.g. ``"resolution 7.2 Å > 5 Å"``.
    """

    passes: bool
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"passes": self.passes, "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FilterVerdict:
        """Inverse of :meth:`to_dict`."""
        return cls(bool(d["passes"]), tuple(d.get("reasons", ())))


def astigmatism_vector_um(defocus_delta_um: float, astigmatism_angle_deg: float) -> tuple[float, float]:
    """``(ΔD cos 2φ, ΔD sin 2φ)`` in µm: astigmatism as a vector that is continuous across φ = ±90°."""
    angle_rad = math.radians(astigmatism_angle_deg)
    return defocus_delta_um * math.cos(2 * angle_rad), defocus_delta_um * math.sin(2 * angle_rad)


def _num(item: Mapping[str, Any], key: str) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def evaluate_filters(items: Sequence[Mapping[str, Any]], settings: FilterSettings) -> list[FilterVerdict]:
    """Apply the quality filter to every item (dataset-wide statistics for astigmatism).

    Parameters
    ----------
    items : sequence of mapping
        Items with the scalar keys of ``results.SCALAR_FIELDS`` (missing or None = not measured).
        Only processed items should be passed: the astigmatism mean is taken over all of them.
    settings : FilterSettings
        Thresholds.

    Returns
    -------
    verdicts : list of FilterVerdict
        One per item, in order.
    """
    vectors = []
    for item in items:
        delta, angle = _num(item, "defocus_delta_um"), _num(item, "astigmatism_angle_deg")
        vectors.append(astigmatism_vector_um(delta, angle or 0.0) if delta is not None else None)
    known = [v for v in vectors if v is not None]
    if known:
        mean_x = sum(v[0] for v in known) / len(known)
        mean_y = sum(v[1] for v in known) / len(known)
        sigma = math.sqrt(sum((v[0] - mean_x) ** 2 + (v[1] - mean_y) ** 2 for v in known) / len(known))
        sigma = max(sigma, _MIN_SIGMA_UM)
    s = settings
    verdicts = []
    for item, vector in zip(items, vectors, strict=True):
        reasons = []
        defocus = _num(item, "defocus_um")
        if defocus is not None and not (s.defocus_min_um <= defocus <= s.defocus_max_um):
            reasons.append(
                f"defocus {defocus:.3g} µm outside [{s.defocus_min_um:g}, {s.defocus_max_um:g}] µm"
            )
        if vector is not None:
            distance_sigma = math.hypot(vector[0] - mean_x, vector[1] - mean_y) / sigma
            if distance_sigma > s.astigmatism_max_sigma:
                reasons.append(
                    f"astigmatism {distance_sigma:.2f} s.d. from the mean > {s.astigmatism_max_sigma:g}"
                )
        resolution = _num(item, "resolution_a")
        if resolution is not None and resolution > s.resolution_max_a:
            reasons.append(f"resolution {resolution:.3g} Å > {s.resolution_max_a:g} Å")
        phase = _num(item, "phase_shift_deg")
        if s.filter_phase and phase is not None and not (s.phase_min_deg <= phase <= s.phase_max_deg):
            reasons.append(f"phase {phase:.3g}° outside [{s.phase_min_deg:g}, {s.phase_max_deg:g}]°")
        motion = _num(item, "mean_motion_a")
        if motion is not None and motion > s.motion_max_a:
            reasons.append(f"motion {motion:.3g} Å > {s.motion_max_a:g} Å")
        n_particles = _num(item, "n_particles")
        if n_particles is not None and n_particles < s.particles_min:
            reasons.append(f"{int(n_particles)} particles < {s.particles_min}")
        masked = _num(item, "mask_percentage")
        if masked is not None and masked > s.mask_percentage_max:
            reasons.append(f"masked {masked:.3g} % > {s.mask_percentage_max:g} %")
        verdicts.append(FilterVerdict(not reasons, tuple(reasons)))
    return verdicts


def is_selected(filter_passes: bool, manual: str | None) -> bool:
    """Whether an item goes into the STAR files: manual ``"include"``/``"exclude"`` win over the filter."""
    if manual == "exclude":
        return False
    if manual == "include":
        return True
    if manual is not None:
        raise ValueError(f"manual selection must be 'include', 'exclude' or None, got {manual!r}")
    return filter_passes
