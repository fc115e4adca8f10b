"""Tensor primitives: optics (CTF, wavelength, dose), Fourier helpers, B-spline grids, geometry."""
