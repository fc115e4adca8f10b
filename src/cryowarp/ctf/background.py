"""Background and envelope curves of 1D amplitude spectra (warp-facts.md §2.3), PCHIP in torch."""

from __future__ import annotations

import math

import torch

from cryowarp.base.optics import ctf_1d
from cryowarp.ctf._pchip import pchip_interpolate


def bin_frequencies_per_a(
    n_bins: int, window: int, pixel_size_a: float, *, oversample: int = 1, device: torch.device | None = None
) -> torch.Tensor:
    """Spatial frequency (1/Å) of radial bins ``0, 1/oversample, …`` of a ``window`` px spectrum."""
    bins = torch.arange(n_bins * oversample, device=device, dtype=torch.float32) / oversample
    return bins / (window * pixel_size_a)


def ctf_zeros_and_peaks(
    n_bins: int,
    window: int,
    pixel_size_a: float,
    defocus_um: float,
    *,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    phase_shift_deg: float = 0.0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fractional bin positions of the zeros and of the |CTF| maxima (one per lobe) below ``n_bins``.

    The CTF is evaluated on a grid 16× finer than the bins; zeros are its sign changes (linearly
    interpolated), peaks the largest |CTF| between two consecutive zeros (and before the first).
    """
    oversample = 16
    freq = bin_frequencies_per_a(n_bins, window, pixel_size_a, oversample=oversample, device=device)
    ctf = ctf_1d(
        freq.double(),
        defocus_um,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        phase_shift_deg=phase_shift_deg,
    )
    bins = freq.double() * window * pixel_size_a
    sign_change = torch.nonzero(ctf[:-1] * ctf[1:] <= 0).flatten()
    sign_change = sign_change[ctf[sign_change] != 0] if sign_change.numel() else sign_change
    c0, c1 = ctf[sign_change], ctf[sign_change + 1]
    frac = c0 / (c0 - c1)
    zeros = bins[sign_change] + frac * (bins[1] - bins[0])
    edges = torch.cat(
        [
            torch.zeros(1, dtype=torch.long, device=ctf.device),
            sign_change + 1,
            torch.tensor([ctf.numel()], device=ctf.device),
        ]
    )
    peaks = []
    magnitude = ctf.abs()
    for start, stop in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        if stop - start < 2:
            continue
        peaks.append(bins[start + int(torch.argmax(magnitude[start:stop]))])
    peak_tensor = torch.stack(peaks) if peaks else bins.new_zeros(0)
    return zeros.float(), peak_tensor.float()


def initial_background(ps1d: torch.Tensor, bin_min: int, bin_max: int) -> torch.Tensor:
    """PCHIP through chunk means of ``ps1d[bin_min:bin_max]`` (warp-facts.md §2.3), on all bins.

    The range is cut into max(3, floor(5 (f_max − f_min))) chunks (f in Nyquist fractions), each chunk's
    mean placed at its centre.
    """
    n_bins = ps1d.shape[-1]
    span_nyquist = (bin_max - bin_min) / n_bins
    n_chunks = max(3, int(math.floor(span_nyquist * 5)))
    edges = torch.linspace(bin_min, bin_max, n_chunks + 1).round().long().tolist()
    xs, ys = [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b > a:
            xs.append((a + b - 1) / 2.0)
            ys.append(ps1d[a:b].mean())
    x_nodes = torch.tensor(xs, dtype=ps1d.dtype, device=ps1d.device)
    return pchip_interpolate(
        x_nodes, torch.stack(ys), torch.arange(n_bins, device=ps1d.device, dtype=ps1d.dtype)
    )


def _extrema_near(
    values: torch.Tensor, positions: torch.Tensor, lo: int, hi: int, *, minimum: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Value and bin of the min (or max) of ``values`` within ±1 bin of each position inside [lo, hi)."""
    xs, ys = [], []
    for pos in positions.tolist():
        center = int(round(pos))
        a, b = max(lo, center - 1), min(hi, center + 2)
        if center < lo or center >= hi or b <= a:
            continue
        segment = values[a:b]
        idx = int(torch.argmin(segment) if minimum else torch.argmax(segment))
        if xs and xs[-1] == a + idx:
            continue
        xs.append(a + idx)
        ys.append(segment[idx])
    if not xs:
        return values.new_zeros(0), values.new_zeros(0)
    return torch.tensor(xs, dtype=values.dtype, device=values.device), torch.stack(ys)


def refine_background_and_envelope(
    ps1d: torch.Tensor,
    zeros_bins: torch.Tensor,
    peaks_bins: torch.Tensor,
    bin_start: int,
    bin_end: int,
    fallback_background: torch.Tensor | None = None,
    ctf_abs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Background through the spectrum's minima at the CTF zeros, envelope through its maxima at the peaks.

    Warp's ``Cubic1D.FitCTF`` (warp-facts.md §2.3): minima within ±1 bin of each zero → PCHIP →
    subtract → minima of the residual at the zeros → PCHIP correction added. The envelope is the
    PCHIP through the maxima (±1 bin) of the background-subtracted spectrum at the |CTF| peaks,
    each at least 0.05 × the largest envelope node found so far.

    Parameters
    ----------
    ps1d : torch.Tensor
        `(n_bins,)` 1D amplitude spectrum.
    zeros_bins, peaks_bins : torch.Tensor
        Fractional bin positions of the CTF zeros and peaks.
    bin_start, bin_end : int
        Data range used for the nodes.
    fallback_background : torch.Tensor, optional
        Used when fewer than two zeros fall in the range.
    ctf_abs : torch.Tensor, optional
        `(n_bins,)` the simulated |CTF| on the bins. If given, one more pass removes the bias of
        sampling minima on whole bins (the nearest bin to a zero still holds up to
        envelope × sin(π/2 / lobe width) of signal): the background nodes become
        spectrum − envelope × |CTF| at the same bins, and the envelope is fitted again (ours, not
        Warp's; it matters where lobes are only a few bins wide). :func:`cryowarp.ctf.fit_ctf` does
        not use it: where the envelope is overestimated (beyond the signal) the correction imprints
        the CTF into the background and the resolution estimate believes it.

    Returns
    -------
    background, envelope : torch.Tensor
        `(n_bins,)` each; the envelope is positive.
    """
    n_bins = ps1d.shape[-1]
    all_bins = torch.arange(n_bins, device=ps1d.device, dtype=ps1d.dtype)
    x_min, y_min = _extrema_near(ps1d, zeros_bins, bin_start, bin_end, minimum=True)
    if x_min.numel() >= 2:
        background = pchip_interpolate(x_min, y_min, all_bins)
        x_res, y_res = _extrema_near(ps1d - background, zeros_bins, bin_start, bin_end, minimum=True)
        if x_res.numel() >= 2:
            background = background + pchip_interpolate(x_res, y_res, all_bins)
    elif fallback_background is not None:
        background = fallback_background
    else:
        background = initial_background(ps1d, bin_start, bin_end)
    residual = ps1d - background
    x_max, y_max = _extrema_near(residual, peaks_bins, bin_start, bin_end, minimum=False)
    if x_max.numel() >= 1:
        floor = torch.cummax(y_max.clamp_min(0), 0).values * 0.05
        y_max = torch.maximum(y_max, floor.clamp_min(1e-6))
        envelope = pchip_interpolate(x_max, y_max, all_bins)
    else:
        envelope = residual[bin_start:bin_end].std().expand(n_bins).clone()
    envelope = envelope.clamp_min(float(envelope.max()) * 1e-3 + 1e-12)
    if ctf_abs is not None and x_min.numel() >= 2:
        idx = x_min.long()
        nodes = ps1d[idx] - envelope[idx] * ctf_abs[idx]
        background = pchip_interpolate(x_min, nodes, all_bins)
        x_max, y_max = _extrema_near(ps1d - background, peaks_bins, bin_start, bin_end, minimum=False)
        if x_max.numel() >= 1:
            idx = x_max.long()
            y_max = y_max / ctf_abs[idx].clamp_min(0.5)
            floor = torch.cummax(y_max.clamp_min(0), 0).values * 0.05
            y_max = torch.maximum(y_max, floor.clamp_min(1e-6))
            envelope = pchip_interpolate(x_max, y_max, all_bins)
            envelope = envelope.clamp_min(float(envelope.max()) * 1e-3 + 1e-12)
    return background, envelope
