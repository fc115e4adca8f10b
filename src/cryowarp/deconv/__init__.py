"""cryowarp.deconv: Warp's deconvolution filter for micrographs and tomograms (warp-facts.md §5)."""

from cryowarp.deconv.filter import (
    DeconvSettings,
    HighpassConvention,
    deconvolution_filter_1d,
    deconvolution_filter_2d,
    deconvolution_filter_3d,
    deconvolution_snr,
    deconvolve_2d,
    deconvolve_3d,
    highpass_weight,
)

__all__ = [
    "DeconvSettings",
    "HighpassConvention",
    "deconvolution_filter_1d",
    "deconvolution_filter_2d",
    "deconvolution_filter_3d",
    "deconvolution_snr",
    "deconvolve_2d",
    "deconvolve_3d",
    "highpass_weight",
]
