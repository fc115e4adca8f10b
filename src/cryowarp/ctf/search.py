"""1D exhaustive search over defocus (and phase shift) by Pearson correlation (warp-facts.md §2.4)."""

from __future__ import annotations

import torch

from cryowarp.base.optics import ctf_1d


def pearson_last_dim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of ``a`` and ``b`` along the last dimension (broadcasting)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    num = (a * b).sum(-1)
    den = torch.sqrt((a * a).sum(-1) * (b * b).sum(-1)).clamp_min(1e-20)
    return num / den


def alias_limit_per_a(
    defocus_um: torch.Tensor | float,
    *,
    voltage_kv: float,
    bin_width_per_a: float,
    min_period_bins: float = 2.5,
) -> torch.Tensor:
    """Highest frequency (1/Å) at which |CTF| lobes are still ``min_period_bins`` bins wide.

    Near frequency k the rings of a defocus D (Å) are 1 / (2 λ D k) apart, so the limit is
    k = 1 / (2 λ D · min_period_bins · bin width). Cs is ignored (it only widens the lobes there).
    """
    from cryowarp.base.optics import electron_wavelength_a

    defocus_a = torch.as_tensor(defocus_um).abs().clamp_min(1e-3) * 1e4
    return 1.0 / (2 * electron_wavelength_a(voltage_kv) * defocus_a * min_period_bins * bin_width_per_a)


def search_defocus_1d(
    spectrum_1d: torch.Tensor,
    freq_per_a: torch.Tensor,
    defocus_um: torch.Tensor,
    phase_shift_deg: torch.Tensor,
    *,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    envelope: torch.Tensor | None = None,
    max_freq_per_a: float | None = None,
    chunk: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score every (defocus, phase) pair against background-subtracted 1D spectra.

    Parameters
    ----------
    spectrum_1d : torch.Tensor
        `(s, r)` background-subtracted 1D spectra (one per patch, or one) over the fit range.
    freq_per_a : torch.Tensor
        `(r,)` frequencies of the bins, 1/Å.
    defocus_um : torch.Tensor
        `(d,)` candidate defocus values, µm (underfocus positive); or `(s, d)` per spectrum.
    phase_shift_deg : torch.Tensor
        `(p,)` candidate phase shifts, degrees.
    voltage_kv, cs_mm, amplitude_contrast : float
        Microscope.
    envelope : torch.Tensor, optional
        `(r,)` multiplies the simulated |CTF|.
    max_freq_per_a : float, optional
        Score only bins up to this frequency, the same for every candidate (a per-candidate limit
        would favour candidates scored on fewer, cleaner bins). See :func:`alias_limit_per_a`.
    chunk : int
        Defocus values scored at once.

    Returns
    -------
    best_defocus_um, best_phase_deg, best_score : torch.Tensor
        `(s,)` each: the arg-max of the Pearson correlation between ``spectrum_1d`` and |CTF|.
    """
    n_spectra = spectrum_1d.shape[0]
    n_used = (
        freq_per_a.numel() if max_freq_per_a is None else max(8, int((freq_per_a <= max_freq_per_a).sum()))
    )
    defocus = defocus_um if defocus_um.ndim == 2 else defocus_um.expand(n_spectra, -1)
    best_score = torch.full((n_spectra,), -2.0, device=spectrum_1d.device)
    best_d = torch.zeros(n_spectra, device=spectrum_1d.device)
    best_p = torch.zeros(n_spectra, device=spectrum_1d.device)
    phases = phase_shift_deg.to(spectrum_1d.device)
    for c0 in range(0, defocus.shape[1], chunk):
        d = defocus[:, c0 : c0 + chunk]  # (s, dc)
        sim = ctf_1d(
            freq_per_a,
            d[:, :, None, None],
            voltage_kv=voltage_kv,
            cs_mm=cs_mm,
            amplitude_contrast=amplitude_contrast,
            phase_shift_deg=phases[None, None, :, None],
        ).abs()  # (s, dc, p, r)
        if envelope is not None:
            sim = sim * envelope
        score = pearson_last_dim(sim[..., :n_used], spectrum_1d[:, None, None, :n_used])  # (s, dc, p)
        flat = score.reshape(n_spectra, -1)
        value, index = flat.max(-1)
        better = value > best_score
        d_index = index // phases.numel()
        p_index = index % phases.numel()
        best_score = torch.where(better, value, best_score)
        best_d = torch.where(better, d.gather(1, d_index[:, None])[:, 0], best_d)
        best_p = torch.where(better, phases[p_index], best_p)
    return best_d, best_p, best_score
