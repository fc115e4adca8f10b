"""cryowarp.export: 2-D particle extraction from movies (warp-facts.md §7.6)."""

from cryowarp.export.extract import (
    ParticleStack,
    check_normalization_area,
    extract_particles_2d,
    extraction_box_px,
    normalize_outside_radius,
)
from cryowarp.export.settings import ExportSettings

__all__ = [
    "ExportSettings",
    "ParticleStack",
    "check_normalization_area",
    "extract_particles_2d",
    "extraction_box_px",
    "normalize_outside_radius",
]
