"""cryowarp.templates: template matching of 3-D references in micrographs and tomograms (warp-facts §4)."""

from cryowarp.templates.match2d import Match2DResult, Match2DSettings, match_template_2d, tile_layout
from cryowarp.templates.match3d import Match3DResult, Match3DSettings, match_template_3d
from cryowarp.templates.orientations import (
    healpix_directions,
    healpix_nside_for_step,
    orientation_grid,
    orientation_matrices,
)
from cryowarp.templates.peaks import find_peaks, parabolic_offsets, thin_peaks
from cryowarp.templates.projector import (
    FourierProjector,
    make_projector,
    project_images,
    project_spectra,
    rotate_spectra,
    rotate_volumes,
)
from cryowarp.templates.refine import RefinedPeak, local_rotation_offsets, refine_levels, refine_peak
from cryowarp.templates.results import CTFParameters, TemplateMatches
from cryowarp.templates.template import (
    PreparedTemplate,
    estimate_diameter_a,
    fourier_rescale_3d,
    prepare_template,
    soft_sphere_mask,
)

__all__ = [
    "CTFParameters",
    "FourierProjector",
    "Match2DResult",
    "Match2DSettings",
    "Match3DResult",
    "Match3DSettings",
    "match_template_3d",
    "PreparedTemplate",
    "RefinedPeak",
    "TemplateMatches",
    "estimate_diameter_a",
    "find_peaks",
    "fourier_rescale_3d",
    "healpix_directions",
    "healpix_nside_for_step",
    "local_rotation_offsets",
    "make_projector",
    "match_template_2d",
    "orientation_grid",
    "orientation_matrices",
    "parabolic_offsets",
    "prepare_template",
    "project_images",
    "project_spectra",
    "refine_levels",
    "refine_peak",
    "rotate_spectra",
    "rotate_volumes",
    "soft_sphere_mask",
    "thin_peaks",
    "tile_layout",
]
