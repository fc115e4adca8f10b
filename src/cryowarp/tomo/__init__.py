"""cryowarp.tomo: tilt geometry, weighted back-projection and 3-D CTF / missing-wedge weights (§6.1)."""

from cryowarp.tomo.geometry import tilt_matrices
from cryowarp.tomo.reconstruct import project_volume, ramp_filter, weighted_backprojection
from cryowarp.tomo.weights import ctf_weight_3d

__all__ = ["ctf_weight_3d", "project_volume", "ramp_filter", "tilt_matrices", "weighted_backprojection"]
