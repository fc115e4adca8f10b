"""Fused CPU kernels for the aligned average (numba).

Why hand-written loops: on CPU, ``torch.nn.functional.grid_sample(mode="bicubic")`` spends ~15 ns per
pixel and needs a dense `(h, w, 2)` sampling grid (134 MB at 4096²), and accumulating a phase-shifted,
dose-weighted spectrum takes four full passes (ramp, weight, product, sum) with temporaries. These
kernels do each in one pass without temporaries, which is what makes a 4096² × 40 average take seconds.
On CUDA the torch formulation in :mod:`cryowarp.motion.average` is used instead.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always", fastmath=True)
def _catmull_rom(t):
    """Weights of the four taps at −1, 0, 1, 2 for a fractional position ``t`` in [0, 1)."""
    t2 = t * t
    t3 = t2 * t
    return (
        np.float32(-0.5) * t3 + t2 - np.float32(0.5) * t,
        np.float32(1.5) * t3 - np.float32(2.5) * t2 + np.float32(1.0),
        np.float32(-1.5) * t3 + np.float32(2.0) * t2 + np.float32(0.5) * t,
        np.float32(0.5) * t3 - np.float32(0.5) * t2,
    )


@numba.njit(inline="always", fastmath=True)
def _field_row(field_px_yx, component, row_position, sy, out):
    """Interpolate one component of the coarse field along y at ``row_position`` (pixels) into ``out``
    `(gx,)`; positions outside the node range are clamped."""
    gy = field_px_yx.shape[1]
    fy = min(max(row_position * sy, 0.0), gy - 1.0)
    i0 = min(int(fy), max(0, gy - 2))
    i1 = min(i0 + 1, gy - 1)
    t = fy - i0
    for j in range(field_px_yx.shape[2]):
        out[j] = (1 - t) * field_px_yx[component, i0, j] + t * field_px_yx[component, i1, j]


@numba.njit(parallel=True, fastmath=True, cache=True)
def warp_by_field(
    image: np.ndarray,
    field_px_yx: np.ndarray,
    offset_px_yx: np.ndarray,
    out: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """``out(y, x) = image(y + f_y(y − o_y, x − o_x), x + f_x(…))`` with Catmull-Rom interpolation.

    Done as two 1D passes (along x into ``scratch``, then along y), 8 taps per pixel instead of 16. The
    x pass takes the x-displacement at the *source* row rather than the output row, an error of
    |∂f_x/∂y|·|f_y| ≈ 0.002 · 2 px = 0.004 px for beam-induced fields (smooth over hundreds of pixels,
    a few pixels in size); a constant field is resampled exactly as the 2D tensor-product kernel.

    Parameters
    ----------
    image : ndarray
        `(h, w)` float32.
    field_px_yx : ndarray
        `(2, gy, gx)` float32 displacement in pixels on a grid whose nodes span the image corners
        (node i at pixel i·(h − 1)/(gy − 1)); bilinearly interpolated per pixel, clamped outside.
    offset_px_yx : ndarray
        `(2,)` where the field is looked up relative to the output pixel (the field is evaluated at
        ``(y, x) − offset``), so that a constant shift applied *after* this warp leaves the field at the
        right place.
    out, scratch : ndarray
        `(h, w)` float32; ``out`` is written, ``scratch`` is work space. Samples outside the image take
        the nearest edge value.
    """
    h, w = image.shape
    gy, gx = field_px_yx.shape[1], field_px_yx.shape[2]
    sy = (gy - 1) / max(1, h - 1)
    sx = (gx - 1) / max(1, w - 1)
    # the lerp position along x is the same for every row: node index and weight per column
    col_node = np.empty(w, np.int64)
    col_t = np.empty(w, np.float32)
    for x in range(w):
        fx = min(max((x - offset_px_yx[1]) * sx, 0.0), gx - 1.0)
        col_node[x] = min(int(fx), max(0, gx - 2))
        col_t[x] = fx - col_node[x]
    col_next = np.minimum(col_node + 1, gx - 1)
    for axis in range(2):  # 0: along x (image → scratch), 1: along y (scratch → out)
        source = image if axis == 0 else scratch
        target = scratch if axis == 0 else out
        for y in numba.prange(h):
            row = np.empty(gx, np.float32)
            _field_row(field_px_yx, 1 - axis, y - offset_px_yx[0], sy, row)
            shift = np.empty(w, np.float32)
            for x in range(w):
                shift[x] = (1 - col_t[x]) * row[col_node[x]] + col_t[x] * row[col_next[x]]
            s_min, s_max = shift.min(), shift.max()
            if axis == 0:
                # columns whose four taps are inside the row for sure: a branch-free (vectorisable) loop
                lo = min(w, max(0, int(3.0 - s_min)))
                hi = max(lo, min(w, int(w - 4.0 - s_max)))
                for x in range(lo, hi):
                    pos = np.float32(x) + shift[x]
                    j = int(pos)  # pos ≥ 1 here, so truncation is the floor
                    a0, a1, a2, a3 = _catmull_rom(pos - np.float32(j))
                    target[y, x] = a0 * source[y, j - 1] + a1 * source[y, j] + a2 * source[y, j + 1] + a3 * source[y, j + 2]
                for x in list(range(0, lo)) + list(range(hi, w)):
                    pos = np.float32(x) + shift[x]
                    j = int(np.floor(pos))
                    a0, a1, a2, a3 = _catmull_rom(pos - np.float32(j))
                    target[y, x] = (
                        a0 * source[y, min(max(j - 1, 0), w - 1)]
                        + a1 * source[y, min(max(j, 0), w - 1)]
                        + a2 * source[y, min(max(j + 1, 0), w - 1)]
                        + a3 * source[y, min(max(j + 2, 0), w - 1)]
                    )
            elif y + s_min >= 3.0 and y + s_max <= h - 4.0:  # all four source rows inside for sure
                for x in range(w):
                    pos = np.float32(y) + shift[x]
                    j = int(pos)
                    a0, a1, a2, a3 = _catmull_rom(pos - np.float32(j))
                    target[y, x] = a0 * source[j - 1, x] + a1 * source[j, x] + a2 * source[j + 1, x] + a3 * source[j + 2, x]
            else:
                for x in range(w):
                    pos = np.float32(y) + shift[x]
                    j = int(np.floor(pos))
                    a0, a1, a2, a3 = _catmull_rom(pos - np.float32(j))
                    target[y, x] = (
                        a0 * source[min(max(j - 1, 0), h - 1), x]
                        + a1 * source[min(max(j, 0), h - 1), x]
                        + a2 * source[min(max(j + 1, 0), h - 1), x]
                        + a3 * source[min(max(j + 2, 0), h - 1), x]
                    )


@numba.njit(parallel=True, fastmath=True, cache=True)
def accumulate_spectrum(
    spectrum: np.ndarray,
    ramp_y: np.ndarray,
    ramp_x: np.ndarray,
    weight_y: np.ndarray,
    weight_x: np.ndarray,
    weighted: np.ndarray,
    plain: np.ndarray,
    with_plain: bool,
) -> None:
    """``weighted += S·r_y·r_x·w_y·w_x`` and (if ``with_plain``) ``plain += S·r_y·r_x``, in one pass.

    ``S`` is an `(h, w//2+1)` complex64 rfft spectrum; the phase ramps and the (Gaussian, hence
    separable) dose weights are given per row and per column.
    """
    h, wc = spectrum.shape
    for i in numba.prange(h):
        ry = ramp_y[i]
        wy = weight_y[i]
        for j in range(wc):
            v = spectrum[i, j] * ry * ramp_x[j]
            weighted[i, j] += v * (wy * weight_x[j])
            if with_plain:
                plain[i, j] += v


@numba.njit(parallel=True, fastmath=True, cache=True)
def alignment_cost_and_grad_cpu(
    spectra: np.ndarray,
    ramp_y: np.ndarray,
    ramp_x: np.ndarray,
    ky_per_a: np.ndarray,
    kx_per_a: np.ndarray,
    grad: np.ndarray,
) -> float:
    """The frame-dependent part of Warp's cost, −N Σ_p Σ_k |A|², and its gradient, in two passes.

    Same quantities as :func:`cryowarp.motion._cost.alignment_cost_and_grad` (see there): ``spectra``
    `(p, f, y, x)` complex64, ``ramp_y`` `(p, f, y)` and ``ramp_x`` `(p, f, x)` the phase ramps
    exp(+2πi k·d) per axis; ``grad`` `(p, f, 2)` float64 is written with ∂E/∂d = 4π Σ_k k·Im(conj(A)·Q_f).
    Q = P·ramp is recomputed in the second pass instead of stored, so memory traffic is two reads of
    the spectra and nothing of their size is allocated.
    """
    n_p, n_f, n_y, n_x = spectra.shape
    partial = np.zeros(n_p)
    four_pi = 4.0 * np.pi
    for p in numba.prange(n_p):
        avg = np.zeros((n_y, n_x), np.complex64)
        for f in range(n_f):
            for i in range(n_y):
                r = ramp_y[p, f, i]
                for j in range(n_x):
                    avg[i, j] += spectra[p, f, i, j] * (r * ramp_x[p, f, j])
        scale = np.float32(1.0 / n_f)
        power = 0.0
        for i in range(n_y):
            for j in range(n_x):
                a = avg[i, j] * scale
                avg[i, j] = a
                power += a.real * a.real + a.imag * a.imag
        partial[p] = -n_f * power
        for f in range(n_f):
            gy = 0.0
            gx = 0.0
            for i in range(n_y):
                r = ramp_y[p, f, i]
                row = np.float32(0.0)
                for j in range(n_x):
                    q = spectra[p, f, i, j] * (r * ramp_x[p, f, j])
                    a = avg[i, j]
                    im = a.real * q.imag - a.imag * q.real
                    row += im
                    gx += kx_per_a[j] * im
                gy += ky_per_a[i] * row
            grad[p, f, 0] = four_pi * gy
            grad[p, f, 1] = four_pi * gx
    return partial.sum()
