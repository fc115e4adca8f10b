"""Preparing a movie for the motion fit: normalise, Fourier-bin, cut masked patches, weight spectra."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cryowarp.base.fourier import fourier_crop_or_pad_2d, soft_circular_mask
from cryowarp.motion.model import patch_centers_1d


def binned_shape(shape_yx: tuple[int, int], pixel_size_a: float, range_high_a: float) -> tuple[int, int]:
    """Smallest even frame shape whose Nyquist still reaches ``range_high_a`` (no upsampling)."""
    factor = min(1.0, 2.0 * pixel_size_a / range_high_a)
    return tuple(max(2, 2 * math.ceil(s * factor / 2)) if factor < 1 else s for s in shape_yx)


def raise_non_finite(frames: torch.Tensor, where: str) -> None:
    """Raise the ValueError for NaN/inf frames, naming how many values and the first frame."""
    bad = ~torch.isfinite(frames)
    count = int(bad.sum())
    first = int(torch.nonzero(bad.reshape(bad.shape[0], -1).any(-1))[0, 0])
    raise ValueError(
        f"{where}: frames must be finite, found {count} NaN/inf values (first in frame {first}); "
        "check the gain reference and the defect map"
    )


def normalise_and_bin(
    frames: torch.Tensor, shape_out_yx: tuple[int, int], progress=None, where: str = "fit_motion"
) -> torch.Tensor:
    """Each frame to mean 0 / s.d. 1, then Fourier-cropped to ``shape_out_yx``.

    Warp normalises the full-size frame (warp-facts.md §1.1); we divide the *binned* frame by its s.d.
    (a per-frame constant either way, and it saves a pass over the full frame). The mean is removed
    through the DC term, whose finiteness also checks the frame for NaN/inf at no cost. Works one frame
    at a time so that only the small output is allocated. Returns `(f, h', w')`.
    """
    n, h, w = frames.shape
    out = frames.new_empty((n, *shape_out_yx))
    # Pre-bin 2×2 in real space when the output keeps at most half of each axis: the FFT then runs on a
    # quarter of the pixels. Inside the kept band the 2×2 mean multiplies the spectrum by
    # cos(π k_y)·cos(π k_x) and shifts it by half a frame pixel (k in cycles per frame pixel; ≥ 0.81 below
    # half the new Nyquist); both are divided out below, so the band's content is exactly that of Fourier
    # cropping. What the 2×2 sum folds into the band comes from 0.5 − k, which the same filter attenuates
    # to ≤ 0.31 in amplitude there, and in a single frame that is shot noise only.
    pre = 2 if (h % 2 == 0 and w % 2 == 0 and 2 * shape_out_yx[0] <= h and 2 * shape_out_yx[1] <= w) else 1
    hp, wp = h // pre, w // pre
    scale = (shape_out_yx[0] * shape_out_yx[1]) / (hp * wp)
    # one reused buffer: a fresh 67 MB spectrum per 4096² frame costs ~30 ms of page faults alone
    spectrum = torch.empty((hp, wp // 2 + 1), dtype=torch.complex64, device=frames.device)
    compensation = torch.full((1, 1), scale, device=frames.device, dtype=torch.complex64)
    if pre == 2:
        ky = torch.fft.fftfreq(hp, device=frames.device)[:, None] / 2  # cycles per frame pixel
        kx = torch.fft.rfftfreq(wp, device=frames.device)[None, :] / 2
        # transfer of the 2-tap sum at pixels 2j, 2j + 1 (per axis): 1 + exp(2πi k) = 2·cos(π k)·exp(iπ k)
        box = torch.polar(4 * torch.cos(torch.pi * ky) * torch.cos(torch.pi * kx), torch.pi * (ky + kx))
        compensation = fourier_crop_or_pad_2d(scale / box, shape_out_yx, (hp, wp))
    for i in range(n):
        frame = frames[i]
        if pre == 2:  # 2×2 sum (the factor 4 is absorbed by the s.d. normalisation below)
            rows = frame[0::2] + frame[1::2]
            frame = rows[:, 0::2] + rows[:, 1::2]
        torch.fft.rfft2(frame, out=spectrum)
        if not bool(torch.isfinite(spectrum[0, 0])):
            raise_non_finite(frames, where)
        spectrum[0, 0] = 0
        cropped = fourier_crop_or_pad_2d(spectrum, shape_out_yx, (hp, wp))
        binned = torch.fft.irfft2(cropped * compensation, s=shape_out_yx)
        out[i] = binned / binned.std().clamp_min(1e-12)
        if progress is not None:
            progress("bin", i + 1, n)
    return out


@dataclass
class PatchSpectra:
    """Weighted patch spectra on a centred-row rfft box that holds every kept frequency.

    ``data`` is `(p, f, y, x)`; rows run over ky from −k to +k, columns over kx ≥ 0 (1/Å).
    """

    data: torch.Tensor
    ky_per_a: torch.Tensor
    kx_per_a: torch.Tensor
    centers_px_yx: torch.Tensor
    grid_shape_yx: tuple[int, int]
    k_low_per_a: float
    k_high_per_a: float

    def band(self, k_cap_per_a: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The sub-box holding frequencies below ``k_cap_per_a`` (outside the ring already zero-weighted
        except the corners, which are zeroed here). Returns contiguous ``(data, ky, kx)``."""
        if k_cap_per_a >= self.k_high_per_a:  # the whole band: already zero outside it, no copy
            return self.data, self.ky_per_a, self.kx_per_a
        rows = torch.nonzero(self.ky_per_a.abs() < k_cap_per_a).reshape(-1)
        cols = torch.nonzero(self.kx_per_a < k_cap_per_a).reshape(-1)
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        c1 = int(cols[-1]) + 1
        ky, kx = self.ky_per_a[r0:r1], self.kx_per_a[:c1]
        keep = (ky[:, None] ** 2 + kx[None, :] ** 2) < k_cap_per_a**2
        data = self.data[:, :, r0:r1, :c1] * keep
        return data.contiguous(), ky.contiguous(), kx.contiguous()


def patch_spectra(
    binned: torch.Tensor,
    *,
    full_shape_yx: tuple[int, int],
    binned_pixel_size_a_yx: tuple[float, float],
    patch_size_px: int,
    pixel_size_a: float,
    range_low_a: float,
    range_high_a: float,
    bfactor_a2: float,
) -> PatchSpectra:
    """Cut Warp's overlapping, soft-masked patches and keep their weighted spectra in the band.

    Layout, mask, band and B-factor follow warp-facts.md §1.1: patches of R px with 50 % overlap, a
    raised-cosine mask flat to R/4 and 0 at R/2, frequencies in [1/range_low, 1/range_high),
    weights exp(B k²/4), everything divided by the mean amplitude. Patch spectra are scaled by 1/R²; the
    rfft half-plane is weighted by √2 off the kx = 0 column so |.|² sums equal full-plane sums.
    """
    n_f, hb, wb = binned.shape
    h, w = full_shape_yx
    patch_full = min(patch_size_px, h, w)
    patch_full -= patch_full % 2
    cy = patch_centers_1d(h, patch_full)
    cx = patch_centers_1d(w, patch_full)
    by, bx = hb / h, wb / w
    rb = max(8, 2 * round(patch_full * min(by, bx) / 2))
    rb = min(rb, hb - hb % 2, wb - wb % 2)
    mask = soft_circular_mask((rb, rb), rb / 4, rb / 4, device=binned.device, dtype=binned.dtype)
    py_a, px_a = binned_pixel_size_a_yx
    ky = torch.fft.fftshift(torch.fft.fftfreq(rb, device=binned.device)) / py_a
    kx = torch.fft.rfftfreq(rb, device=binned.device) / px_a
    k_low, k_high = 1.0 / range_low_a, 1.0 / range_high_a
    k_high = min(k_high, 0.5 / max(py_a, px_a))  # strict '<' below leaves the ambiguous Nyquist out
    rows = torch.nonzero(ky.abs() < k_high).reshape(-1)
    cols = torch.nonzero(kx < k_high).reshape(-1)
    r0, r1, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
    ky, kx = ky[r0:r1].contiguous(), kx[:c1].contiguous()
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    inband = (k2 >= k_low**2) & (k2 < k_high**2)
    multiplicity = torch.where(kx[None, :] > 0, 2.0, 1.0).expand_as(k2)
    weight = torch.exp(bfactor_a2 / 4.0 * k2) * inband * multiplicity.sqrt() / (rb * rb)
    centers = [(y, x) for y in cy for x in cx]
    spectra = torch.empty((len(centers), n_f, r1 - r0, c1), dtype=torch.complex64, device=binned.device)
    for i, (y, x) in enumerate(centers):  # one patch at a time keeps the peak memory at the output's size
        y0 = min(max(0, int(round((y + 0.5) * by - rb / 2))), hb - rb)
        x0 = min(max(0, int(round((x + 0.5) * bx - rb / 2))), wb - rb)
        spectrum = torch.fft.rfft2(binned[:, y0 : y0 + rb, x0 : x0 + rb] * mask)
        spectrum = torch.fft.fftshift(spectrum, dim=-2)[..., r0:r1, :c1]
        spectra[i] = spectrum * weight
    mean_amplitude = spectra.abs().sum() / (inband.sum() * n_f * len(centers)).clamp_min(1)
    spectra /= mean_amplitude.clamp_min(1e-20)
    return PatchSpectra(
        data=spectra,
        ky_per_a=ky,
        kx_per_a=kx,
        centers_px_yx=torch.tensor(centers, dtype=torch.float32, device=binned.device),
        grid_shape_yx=(len(cy), len(cx)),
        k_low_per_a=k_low,
        k_high_per_a=k_high,
    )


def prealign_global(
    binned: torch.Tensor,
    binned_pixel_size_a_yx: tuple[float, float],
    *,
    range_low_a: float,
    range_high_a: float,
    bfactor_a2: float,
    iterations: int = 3,
) -> torch.Tensor:
    """Per-frame global displacement `(f, 2)` in Å by iterative whole-frame cross-correlation.

    Each frame is correlated with the aligned sum of all *other* frames (band-passed and B-weighted
    like the cost); the peak is refined with a parabola. Not part of Warp: it gives the spline fit a
    starting point inside the capture range of its lowest-frequency stage when drift is large or jumpy.
    """
    n_f, hb, wb = binned.shape
    py_a, px_a = binned_pixel_size_a_yx
    ky = torch.fft.fftfreq(hb, device=binned.device)[:, None] / py_a
    kx = torch.fft.rfftfreq(wb, device=binned.device)[None, :] / px_a
    k2 = ky**2 + kx**2
    band = (k2 >= (1 / range_low_a) ** 2) & (k2 < (1 / range_high_a) ** 2)
    weight = torch.exp(bfactor_a2 / 4 * k2) * band
    spectra = torch.fft.rfft2(binned) * weight  # (f, hb, wb/2+1)
    d = torch.zeros(n_f, 2, device=binned.device, dtype=binned.dtype)
    for _ in range(iterations):
        ramp_y = torch.polar(torch.ones_like(ky), 2 * math.pi * ky * d[:, 0, None, None])  # (f, hb, 1)
        ramp_x = torch.polar(torch.ones_like(kx), 2 * math.pi * kx * d[:, 1, None, None])  # (f, 1, wb/2+1)
        aligned = spectra * ramp_y * ramp_x
        total = aligned.sum(0)
        for f in range(n_f):
            ref = total - aligned[f]
            cc = torch.fft.irfft2(spectra[f].conj() * ref, s=(hb, wb))  # cc(s) = Σ frame(x) ref(x + s)
            peak = int(torch.argmax(cc))
            iy, ix = divmod(peak, wb)
            sy = _parabola(cc[(iy - 1) % hb, ix], cc[iy, ix], cc[(iy + 1) % hb, ix])
            sx = _parabola(cc[iy, (ix - 1) % wb], cc[iy, ix], cc[iy, (ix + 1) % wb])
            shift_y = ((iy + hb // 2) % hb - hb // 2) + sy
            shift_x = ((ix + wb // 2) % wb - wb // 2) + sx
            # the frame matches the reference moved by −d, so d = −(peak position), relative to the
            # reference's own alignment; references are built with the current d, hence the absolute
            d[f, 0] = -shift_y * py_a
            d[f, 1] = -shift_x * px_a
        d = d - d.mean(0, keepdim=True)
    return d


def _parabola(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor) -> float:
    denom = float(left - 2 * centre + right)
    if denom >= 0:
        return 0.0
    return max(-0.5, min(0.5, 0.5 * float(left - right) / denom))
