"""CTF estimation (warp-facts.md §2): patch amplitude spectra, 1D search, 2D grid fit, resolution."""

from cryowarp.ctf.fit import CTFFit, fit_ctf, fit_ctf_detailed
from cryowarp.ctf.model import CTFModel, SpecimenPlane, fit_specimen_plane
from cryowarp.ctf.settings import CTFSettings
from cryowarp.ctf.spectra import PatchSpectra, amplitude_spectra, patch_grid_1d

__all__ = [
    "CTFFit",
    "CTFModel",
    "CTFSettings",
    "PatchSpectra",
    "SpecimenPlane",
    "amplitude_spectra",
    "fit_ctf",
    "fit_ctf_detailed",
    "fit_specimen_plane",
    "patch_grid_1d",
]
