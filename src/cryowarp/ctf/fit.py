"""Fit the CTF of a micrograph or movie: 1D search, local search, astigmatism search, 2D L-BFGS.

The stages follow warp-facts.md §2.2–2.7:

1. amplitude spectra of overlapping patches (:mod:`cryowarp.ctf.spectra`);
2. 1D rotational average of the mean spectrum, chunk-mean PCHIP background, exhaustive search over
   defocus (and phase) by Pearson correlation, background and envelope refined at the CTF zeros/peaks;
3. (ours, for tilted specimens) a per-patch 1D search around that defocus and a robust plane through
   the patch values, which initialises the defocus grid;
4. (ours, for large astigmatism) an exhaustive search over the astigmatism vector on the mean polar
   spectrum rescaled to a common defocus;
5. L-BFGS with autograd, maximising the summed normalised correlation of simulated CTF² × envelope
   with every background-subtracted spectrum over all pixels of the fit annulus (ours: Warp samples
   a polar grid). Pass 1 fits a *plane* through the defocus grid (mean defocus and gradient) with the
   astigmatism vector and phase nodes; then (ours) each patch's own defocus step away from that plane
   and its noise (from 8 disjoint groups of its pixels) decide, by empirical Bayes with a likelihood-ratio guard,
   how far the grid may leave the plane (:func:`_grid_prior_width`); pass 2 fits the grid nodes under
   that Gaussian prior, or the plane again if the data show no departure from it, or a single
   defocus if the plane's gradient is not significant either (:func:`_gradient_is_noise`, a test
   with a 10⁻³ false-alarm rate). The background and envelope are re-estimated between the passes;
6. the astigmatism-corrected 1D average at the mean defocus, its background, envelope, fit quality
   and the resolution estimate.

Every search and fit stops at the frequency where the Thon rings of the largest defocus it considers
are less than 2.5 spectrum bins apart (:func:`cryowarp.ctf.search.alias_limit_per_a`; ours, not
Warp's): beyond it the measured spectrum averages the rings away while a point-sampled model does not,
which at 3–5 µm and 4 Å otherwise pulls the 1D search to wrong defoci. All candidates of one search
share the same limit, so their correlations stay comparable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import scipy.stats
import torch

from cryowarp.base.grids import CubicGrid, natural_spline_weights_1d
from cryowarp.base.optics import ctf_1d, electron_wavelength_a
from cryowarp.base.units import ANGSTROM_PER_MM, ANGSTROM_PER_UM
from cryowarp.ctf.background import (
    bin_frequencies_per_a,
    ctf_zeros_and_peaks,
    initial_background,
    refine_background_and_envelope,
)
from cryowarp.ctf.model import CTFModel, ctf_chi_rad, fit_specimen_plane, normalized_coords_xy
from cryowarp.ctf.quality import (
    corrected_average_1d,
    fit_quality_1d,
    rescaled_frequency_sq,
    resolution_from_quality,
)
from cryowarp.ctf.search import alias_limit_per_a, pearson_last_dim, search_defocus_1d
from cryowarp.ctf.settings import CTFSettings
from cryowarp.ctf.spectra import (
    PatchSpectra,
    amplitude_spectra,
    check_image_input,
    patch_grid_1d,
    patch_overlap_correlation,
    polar_angles_rad,
    polar_spectra,
    radial_average_centered,
)

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class CTFFit:
    """:class:`CTFModel` plus the arrays behind it (for plots and diagnostics; not serialised).

    Attributes
    ----------
    model : CTFModel
    spectrum_2d : torch.Tensor
        `(window, window)` fftshifted mean amplitude spectrum minus its 1D background.
    patch_centers_px_xy : torch.Tensor
        `(n, 2)` patch centres.
    patch_defocus_um : torch.Tensor
        `(t, n)` defocus of each patch from the fitted grid.
    grid_prior : dict
        How far the defocus grid was allowed to leave the fitted plane: ``tau_um`` (prior s.d. of
        the nodes' departure; 0 = the plane was kept), ``noise_um`` (median s.d. of one patch's own
        defocus estimate), ``noise_scale`` (κ, see :func:`_grid_prior_width`).
    """

    model: CTFModel
    spectrum_2d: torch.Tensor
    patch_centers_px_xy: torch.Tensor
    patch_defocus_um: torch.Tensor
    grid_prior: dict = field(default_factory=dict)


def _fit_bins(settings: CTFSettings, pixel_size_a: float) -> tuple[int, int]:
    """First and last+1 radial bins of the fit range (Nyquist fraction f = 2 p / range, bin = f · w/2)."""
    n_bins = settings.window // 2
    bin_min = max(2, int(math.floor(2 * pixel_size_a / settings.range_min_a * n_bins)))
    bin_max = min(n_bins - 1, int(math.floor(2 * pixel_size_a / settings.range_max_a * n_bins)))
    if bin_max - bin_min < 8:
        raise ValueError(
            f"fit range {settings.range_min_a}–{settings.range_max_a} Å spans only "
            f"{bin_max - bin_min} radial "
            f"bins at {pixel_size_a} Å/px with window {settings.window}: expected at least 8; "
            "widen the range or "
            "the window"
        )
    return bin_min, bin_max


def _interp_bins(curve: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of a 1D curve `(..., n)` at fractional bins `(..., m)` (clamped)."""
    n = curve.shape[-1]
    bins = bins.clamp(0, n - 1)
    lower = bins.floor().long().clamp_max(n - 2)
    frac = bins - lower
    return curve.gather(-1, lower) * (1 - frac) + curve.gather(-1, lower + 1) * frac


def _robust_plane(values: torch.Tensor, design: torch.Tensor) -> torch.Tensor:
    """Least squares ``design @ x ≈ values``, twice dropping points beyond 3 scaled MADs (≥ 0.02 µm)."""
    keep = torch.ones_like(values, dtype=torch.bool)
    solution = torch.zeros(design.shape[1], dtype=values.dtype)
    for _ in range(3):
        solution = torch.linalg.lstsq(design[keep], values[keep, None]).solution[:, 0]
        residual = values - design @ solution
        mad = float((residual[keep] - residual[keep].median()).abs().median()) * 1.4826
        new_keep = residual.abs() <= max(3 * mad, 0.02)
        if new_keep.sum() < design.shape[1] + 1 or bool((new_keep == keep).all()):
            break
        keep = new_keep
    return solution


def _annulus_pixels(
    window: int, r_min: float, r_max: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels of a fftshifted `(window, window)` spectrum with r_min ≤ radius < r_max, one per Friedel pair.

    Returns flat indices `(m,)`, radii in Fourier px `(m,)` and angles θ ∈ [0, π) from +kx towards +ky.
    """
    c = window // 2
    coords = torch.arange(window, device=device, dtype=torch.float32) - c
    ky, kx = torch.meshgrid(coords, coords, indexing="ij")
    radius = torch.sqrt(kx**2 + ky**2)
    keep = (radius >= r_min) & (radius < r_max) & ((ky > 0) | ((ky == 0) & (kx > 0)))
    index = torch.nonzero(keep.reshape(-1))[:, 0]
    theta = torch.atan2(ky, kx).reshape(-1)[index] % math.pi
    return index, radius.reshape(-1)[index], theta


def _weighted_pearson(simulated: torch.Tensor, experimental: torch.Tensor, mask: torch.Tensor | None):
    """Pearson correlation along the last dim, optionally over the pixels where ``mask`` is true."""
    if mask is not None:
        simulated, experimental = simulated[..., mask], experimental[..., mask]
    a = simulated - simulated.mean(-1, keepdim=True)
    b = experimental - experimental.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (torch.sqrt((a * a).sum(-1) * (b * b).sum(-1)).clamp_min(1e-20))


def _grouped_pearson(
    simulated: torch.Tensor, experimental: torch.Tensor, groups: torch.Tensor, n_groups: int
) -> torch.Tensor:
    """Pearson correlation `(n_groups, s)` of `(s, m)` arrays over each group's pixels (``groups`` `(m,)`)."""

    def sums(x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], n_groups).index_add_(1, groups, x)

    count = torch.bincount(groups, minlength=n_groups).to(simulated.dtype)
    mean_a, mean_b = sums(simulated) / count, sums(experimental) / count
    a = simulated - mean_a[:, groups]
    b = experimental - mean_b[:, groups]
    correlation = sums(a * b) / torch.sqrt(sums(a * a) * sums(b * b)).clamp_min(1e-20)
    return correlation.T


def _plane_basis(grid_t: int, grid_y: int, grid_x: int, device: torch.device) -> torch.Tensor:
    """`(t·y·x, k)` columns 1, x − ½, y − ½, t − ½ at the grid nodes (only axes with > 1 node)."""
    axes = [
        torch.linspace(0, 1, n, device=device) if n > 1 else torch.zeros(1, device=device) for n in (grid_t, grid_y, grid_x)
    ]
    tt, yy, xx = (a.reshape(-1) for a in torch.meshgrid(*axes, indexing="ij"))
    columns = [torch.ones_like(tt)]
    for size, axis in ((grid_x, xx), (grid_y, yy), (grid_t, tt)):
        if size > 1:
            columns.append(axis - 0.5)
    return torch.stack(columns, -1)


#: Disjoint pixel groups per spectrum whose defocus steps calibrate the patch noise (:func:`_grid_prior_width`).
NOISE_GROUPS = 8

#: False-alarm rate of the two model-selection tests of the 2D fit (ours, not Warp's, which always fits
#: the whole grid): the probability that a level specimen is given a fitted plane
#: (:func:`_gradient_is_noise`) and that a planar one is given a curved grid (:func:`_grid_prior_width`).
LEVEL_FALSE_ALARM = 1e-3


def _gradient_is_noise(
    steps_um: torch.Tensor,
    curvature: torch.Tensor,
    choice: dict,
    plane_um: torch.Tensor,
    coords_xy: torch.Tensor,
    correlation: torch.Tensor | None = None,
    false_alarm: float = LEVEL_FALSE_ALARM,
) -> bool:
    """Whether the fitted plane's gradient is indistinguishable from zero (likelihood-ratio test).

    The patches' own defoci (plane + Newton step, noise σ_i² = κ/h_i as in :func:`_grid_prior_width`,
    correlated between overlapping patches as ``correlation``) are fitted by generalised least squares
    with and without a gradient. For a level specimen and a known noise scale κ the drop in χ² is
    χ²-distributed with 2 degrees of freedom; κ is itself estimated from the n patches' pixel groups,
    κ̂/κ ~ χ²_ν/ν (``choice["noise_dof"]``, :func:`_noise_scale_dof`), so Δχ²/2 follows F(2, ν). The
    gradient is kept only if Δχ²/2 exceeds the F(2, ν) quantile of 1 − ``false_alarm``: a level
    specimen gets a plane with probability ``false_alarm`` whatever n (Δχ² > 14.2 for 49 patches and
    10⁻³, > 15.9 for 9).

    Until 2026-11 this was a BIC test (Δχ²/2 > ln n) with κ taken as exact. Its false-alarm rate
    depended on n: 2.9 % with 49 patches (512-px spectra of 4096² px) and 18 % with 9 (the 1024-px
    spectra used above 2.5 µm), measured on simulated patch noise (tests/ctf); one flat 0.6 µm
    phase-plate micrograph of the benchmark kept a 2.5° plane (Δχ² = 12.7, local RMSE 51 Å). The
    price of the stricter test is a larger smallest detectable tilt (docs/benchmarks/ctf.md).
    """
    kappa = choice.get("noise_scale", 0.0)
    h = curvature.double().cpu()
    usable = h > 0.1 * float(h.median())
    n = int(usable.sum())
    if not (kappa > 0 and math.isfinite(kappa)) or n < 6:
        return False
    values = (plane_um.double().cpu() + steps_um.double().cpu())[usable]
    sigma = torch.sqrt(kappa / h[usable])
    corr = torch.eye(n, dtype=torch.float64) if correlation is None else correlation.double().cpu()[usable][:, usable]
    chol = torch.linalg.cholesky(sigma[:, None] * corr * sigma[None, :])
    xy = coords_xy.double().cpu()[usable] - 0.5
    design = torch.cat([torch.ones(n, 1, dtype=torch.float64), xy], 1)
    white_design = torch.linalg.solve_triangular(chol, design, upper=False)
    white_values = torch.linalg.solve_triangular(chol, values[:, None], upper=False)
    chi2 = []
    for columns in (3, 1):
        solution = torch.linalg.lstsq(white_design[:, :columns], white_values).solution
        chi2.append(float(((white_design[:, :columns] @ solution - white_values) ** 2).sum()))
    threshold = float(scipy.stats.f.isf(false_alarm, 2, choice["noise_dof"]))  # set with κ̂ (same `usable`)
    return 0.5 * (chi2[1] - chi2[0]) < threshold


def _noise_scale_dof(correlation: torch.Tensor | None, usable: torch.Tensor, n_groups: int) -> float:
    """Degrees of freedom ν of the noise scale κ̂ estimated from ``n_groups`` pixel groups per patch.

    Each usable patch contributes K − 1 = ``n_groups`` − 1 degrees of freedom (the spread of its K
    group steps about their mean); the patches' terms correlate as the patches overlap (R), so
    κ̂/κ ≈ χ²_ν/ν with ν = (K − 1) n² / Σ R_ij² (K = 8: ≈ 250 for 7 × 7 patches with 50 % overlap,
    ≈ 50 for 3 × 3; with K = 2 halves it would be ≈ 36 and ≈ 7).
    """
    n = int(usable.sum())
    if correlation is None:
        return float((n_groups - 1) * n)
    r = correlation.double().cpu()[usable][:, usable]
    return (n_groups - 1) * n * n / float((r**2).sum())


def _grid_prior_width(
    steps_um: torch.Tensor,
    curvature: torch.Tensor,
    group_steps_um: torch.Tensor,
    off_plane_weights: torch.Tensor,
    correlation: torch.Tensor | None = None,
    false_alarm: float = LEVEL_FALSE_ALARM,
) -> tuple[float, dict]:
    """Width τ of the Gaussian prior on the grid's departure from the plane, by empirical Bayes.

    Each spectrum i gives a Newton step e_i (µm) from the fitted plane towards its own best defocus.
    Its noise variance is σ_i² = κ / h_i, h_i the curvature of its score; κ is calibrated from the
    disagreement of the steps measured on K disjoint groups of every spectrum's pixels
    (``group_steps_um`` `(K, s)`; each group's step has K times the variance of the whole's, so
    κ = mean(h · s²_K / K), s²_K the groups' sample variance; K = 2 halves give
    mean(h (e_A − e_B)² / 4)), which also absorbs the correlation between neighbouring pixels.
    Overlapping patches see partly the same pixels, so their noise correlates (``correlation`` R,
    :func:`cryowarp.ctf.spectra.patch_overlap_correlation`). With node departures v ~ N(0, τ² I)
    projected off the plane, e ~ N(0, τ² A Aᵀ + S R S) (S = diag σ, A = spline weights × off-plane
    projector); τ maximises that marginal likelihood over 0 and a log grid 10 Å – 0.5 µm. Without R,
    2 of 12 flat 4096² specimens got a grid. τ > 0 is kept only if it beats τ = 0 by a likelihood
    ratio that a planar specimen exceeds with probability ~``false_alarm``. Returns the L-BFGS
    penalty weight κ / (2 τ²) on |off-plane part of the nodes|² (0 if τ = 0: keep the plane) and
    the numbers (``noise_dof``: degrees of freedom of κ̂, :func:`_noise_scale_dof`).
    """
    e = steps_um.double().cpu()
    h = curvature.double().cpu()
    groups = group_steps_um.double().cpu()
    n_groups = groups.shape[0]
    # spectra whose score is not clearly concave at the plane carry no usable local information
    usable = h > 0.1 * float(h.median())
    if int(usable.sum()) < 4:
        return 0.0, {"tau_um": 0.0, "noise_scale": 0.0}
    kappa = float((h * groups.var(0) / n_groups)[usable].mean())
    dof = _noise_scale_dof(correlation, usable, n_groups)
    if not math.isfinite(kappa) or kappa <= 0:
        return 0.0, {"tau_um": 0.0, "noise_scale": kappa, "noise_dof": dof}
    noise = torch.where(usable, kappa / h, torch.full_like(h, 1e6))
    e = torch.where(usable, e, torch.zeros_like(e))
    corr = torch.eye(len(e), dtype=torch.float64) if correlation is None else correlation.double().cpu().clone()
    corr = torch.where(usable[:, None] & usable[None, :], corr, torch.eye(len(e), dtype=torch.float64))
    noise_cov = noise.sqrt()[:, None] * corr * noise.sqrt()[None, :]
    a = off_plane_weights.double().cpu()
    gram = a @ a.T
    best_tau, best_ll, ll_plane = 0.0, None, None
    for tau in [0.0] + torch.logspace(-3, math.log10(0.5), 28).tolist():
        cov = tau**2 * gram + noise_cov
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info) != 0:
            continue
        z = torch.cholesky_solve(e[:, None], chol)[:, 0]
        ll = -0.5 * float(e @ z) - float(torch.log(torch.diagonal(chol)).sum())
        if tau == 0.0:
            ll_plane = ll
        if best_ll is None or ll > best_ll:
            best_tau, best_ll = tau, ll
    # the grid must beat the plane by a likelihood ratio that a planar specimen exceeds with
    # probability ~`false_alarm` (without a guard the maximum-likelihood τ is > 0 on about half of
    # all truly flat specimens). τ ≥ 0 sits on the boundary, so with κ known 2 ΔlnL would be
    # ½ χ²₀ + ½ χ²₁ under a plane; with κ̂ on ν degrees of freedom (:func:`_noise_scale_dof`)
    # P(2 ΔlnL > c) ≈ P(t_ν > √c), so the threshold is ½ t²: t the (1 − false_alarm) quantile of
    # Student's t_ν. Until 2026-11 this was BIC's ½ ln n.
    threshold = 0.5 * float(scipy.stats.t.isf(false_alarm, dof)) ** 2
    if ll_plane is not None and best_ll is not None and best_ll - ll_plane < threshold:
        best_tau = 0.0
    weight = 0.0 if best_tau == 0 else kappa / (2 * best_tau**2)
    return weight, {
        "tau_um": best_tau,
        "noise_scale": kappa,
        "noise_um": float(noise[usable].sqrt().median()),
        "noise_dof": dof,
    }


class _Cost:
    """Normalised correlation of simulated CTF² × envelope with every spectrum, pixel by pixel.

    Ours, not Warp's: Warp resamples the spectra on a polar grid with w/4 angles, which oversamples
    the low-frequency rings and drops about two thirds of the pixels at 4 Å, where the defocus
    information is; here every pixel of the fit annulus (one per Friedel pair) counts once.

    Also ours: the model is CTF², not Warp's |CTF|. The expected amplitude of a pixel is
    √(N + S·CTF²) ≈ √N + S·CTF²/(2√N) where the signal is weaker than the noise (nearly everywhere
    in the fit range), i.e. linear in CTF². |sin χ| adds harmonics of the rings that the measured,
    resampled spectrum does not have and that a point-sampled model aliases when rings are ~3 bins
    apart (3–4 µm at 4 Å). On 8 white-noise 4096² micrographs at 3–4 µm with U − V = 300–500 Å, CTF²
    lowered the RMS mean-defocus error from 30 to 19 Å and the RMS angle error from 3.9° to 2.4°; on
    6 at 0.5–2 µm from 18 to 15 Å (angles 0.5° → 0.9° RMS, all < 2°).
    """

    def __init__(
        self,
        experimental: torch.Tensor,
        freq_per_a: torch.Tensor,
        theta_rad: torch.Tensor,
        envelope: torch.Tensor,
        weights_defocus: torch.Tensor,
        weights_phase: torch.Tensor,
        settings: CTFSettings,
    ) -> None:
        experimental = experimental - experimental.mean(-1, keepdim=True)
        self.experimental = experimental / experimental.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        wavelength_a = electron_wavelength_a(settings.voltage_kv)
        cs_a = settings.cs_mm * ANGSTROM_PER_MM
        k2 = freq_per_a**2  # (m,)
        self.defocus_term = math.pi * wavelength_a * ANGSTROM_PER_UM * k2  # × defocus µm
        self.cs_term = -0.5 * math.pi * cs_a * wavelength_a**3 * k2 * k2
        self.cos2 = torch.cos(2 * theta_rad)
        self.sin2 = torch.sin(2 * theta_rad)
        self.envelope = envelope
        self.weights_defocus = weights_defocus
        self.weights_phase = weights_phase
        self.amp = settings.amplitude_contrast
        self.phase_amp = math.sqrt(1 - settings.amplitude_contrast**2)
        # √(1 − A²) sin χ + A cos χ = sin(χ + α), α = atan2(A, √(1 − A²)): one sine per pixel
        self.alpha = math.atan2(self.amp, self.phase_amp)

    def simulate(
        self, defocus: torch.Tensor, astig: torch.Tensor, phase: torch.Tensor, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """CTF² × envelope `(s, m)` for per-spectrum defocus `(s,)` (µm) and phase `(s,)` (rad).

        ``dtype`` (e.g. float64 for finite differences) converts the per-pixel terms; default: as stored.
        """
        terms = {name: getattr(self, name) for name in ("defocus_term", "cs_term", "cos2", "sin2", "envelope")}
        if dtype is not None:
            terms = {name: value.to(dtype) for name, value in terms.items()}
        chi = ctf_chi_rad(
            defocus,
            astig,
            phase,
            defocus_term=terms["defocus_term"],
            cs_term=terms["cs_term"],
            cos2=terms["cos2"],
            sin2=terms["sin2"],
            amplitude_phase_rad=self.alpha,
        )
        return torch.sin(chi).pow(2) * terms["envelope"]

    def per_spectrum(self, nodes: torch.Tensor, astig: torch.Tensor, phase_nodes_rad: torch.Tensor) -> torch.Tensor:
        simulated = self.simulate(self.weights_defocus @ nodes, astig, self.weights_phase @ phase_nodes_rad)
        simulated = simulated - simulated.mean(-1, keepdim=True)
        simulated = simulated / simulated.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return (simulated * self.experimental).sum(-1)

    def local_steps(
        self,
        nodes: torch.Tensor,
        astig: torch.Tensor,
        phase_nodes_rad: torch.Tensor,
        groups: torch.Tensor,
        n_groups: int,
        step_um: float = 0.005,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-spectrum Newton step of the defocus and its curvature, on all pixels and on pixel groups.

        ``groups`` `(m,)` assigns every pixel to one of ``n_groups`` disjoint groups. Returns
        ``step (s,)`` µm, ``curvature (s,)`` (−d² score / dD², per µm²) and ``group_steps (n_groups, s)``.
        """
        # float64: a 50 Å shift changes a correlation by ~10⁻⁴, too little for float32 differences
        experimental = self.experimental.double()
        defocus = (self.weights_defocus @ nodes).double()
        phase = (self.weights_phase @ phase_nodes_rad).double()
        astig = astig.double()
        scores = []
        for offset in (-step_um, 0.0, step_um):
            sim = self.simulate(defocus + offset, astig, phase, dtype=torch.float64)
            whole = _weighted_pearson(sim, experimental, None)
            scores.append(torch.cat([whole[None], _grouped_pearson(sim, experimental, groups, n_groups)]))
        minus, zero, plus = scores  # (3, s) each
        gradient = (plus - minus) / (2 * step_um)
        # a Pearson correlation is a mean, so each group has the same expected curvature as the whole;
        # the whole's (less noisy) curvature converts all three gradients into steps
        curvature = ((2 * zero[0] - plus[0] - minus[0]) / step_um**2).clamp_min(1e-12)
        steps = gradient / curvature
        return steps[0], curvature, steps[1:]


def _astigmatism_search(
    mean_polar: torch.Tensor,
    freq_per_a: torch.Tensor,
    angles_rad: torch.Tensor,
    envelope: torch.Tensor,
    defocus_um: float,
    phase_deg: float,
    settings: CTFSettings,
) -> tuple[float, float, float]:
    """Exhaustive search of (defocus offset, a₁, a₂), D(θ) = D + a₁ cos 2θ + a₂ sin 2θ, on polar spectra."""
    half = settings.max_astigmatism_um / 2
    step = 0.02
    values = torch.arange(-half, half + 1e-6, step, device=mean_polar.device)
    a1, a2 = torch.meshgrid(values, values, indexing="ij")
    a1, a2 = a1.reshape(-1), a2.reshape(-1)
    offsets = torch.arange(-0.04, 0.04 + 1e-6, 0.02, device=mean_polar.device)
    best = (-2.0, defocus_um, 0.0, 0.0)
    experimental = mean_polar.reshape(-1)
    cos2, sin2 = torch.cos(2 * angles_rad), torch.sin(2 * angles_rad)
    for offset in offsets.tolist():
        for c0 in range(0, a1.numel(), 256):
            local = defocus_um + offset + a1[c0 : c0 + 256, None] * cos2 + a2[c0 : c0 + 256, None] * sin2  # (c, a)
            sim = (
                ctf_1d(
                    freq_per_a[None, :, None],
                    local[:, None, :],
                    voltage_kv=settings.voltage_kv,
                    cs_mm=settings.cs_mm,
                    amplitude_contrast=settings.amplitude_contrast,
                    phase_shift_deg=phase_deg,
                ).abs()
                * envelope[None, :, None]
            )
            score = pearson_last_dim(sim.reshape(sim.shape[0], -1), experimental)
            value, index = score.max(0)
            if float(value) > best[0]:
                best = (float(value), defocus_um + offset, float(a1[c0 + index]), float(a2[c0 + index]))
    return best[1], best[2], best[3]


def fit_ctf_detailed(
    image_or_frames: torch.Tensor,
    pixel_size_a: float,
    settings: CTFSettings | None = None,
    progress: Progress | None = None,
) -> CTFFit:
    """Fit the CTF; like :func:`fit_ctf` but also returns the mean 2D spectrum and per-patch defoci."""
    settings = settings or CTFSettings()
    check_image_input(image_or_frames, pixel_size_a, settings.window)
    device = image_or_frames.device
    window = settings.window
    n_bins = window // 2
    bin_min, bin_max = _fit_bins(settings, pixel_size_a)
    n_frames = image_or_frames.shape[0] if image_or_frames.ndim == 3 else 1
    n_time = 1 if settings.use_movie_sum else max(1, min(settings.grid_xyt[2], n_frames))

    def report(message: str, fraction: float) -> None:
        if progress is not None:
            progress(message, fraction)

    spectra_fn = None if progress is None else (lambda m, f: report(m, 0.5 * f))
    patches: PatchSpectra = amplitude_spectra(
        image_or_frames,
        window=window,
        n_time_groups=n_time,
        use_movie_sum=settings.use_movie_sum,
        frames_per_spectrum=settings.frames_per_spectrum,
        progress=spectra_fn,
    )
    spectra = patches.spectra  # (t, n, w, w)
    n_time, n_patches = spectra.shape[:2]
    # fewer nodes than patches per axis: with as many nodes as patches the edge nodes (outside the
    # outermost patch centres) are fitted from single noisy spectra and tilt the fitted plane
    grid_x = max(1, min(settings.grid_xyt[0], patches.patch_grid_yx[1] - 1))
    grid_y = max(1, min(settings.grid_xyt[1], patches.patch_grid_yx[0] - 1))
    grid_t = n_time
    flat_spectra = spectra.reshape(n_time * n_patches, window, window)
    n_spectra = flat_spectra.shape[0]

    # coordinates of every spectrum in the (t, y, x) grid space
    uv = normalized_coords_xy(patches.centers_px_xy, patches.shape_yx).to(device)  # (n, 2) x, y
    if n_time > 1:
        centers_t = torch.tensor([((a + b - 1) / 2) / max(n_frames - 1, 1) for a, b in patches.group_frames], device=device)
    else:
        centers_t = torch.zeros(1, device=device)
    coord_t = centers_t[:, None].expand(n_time, n_patches).reshape(-1)
    coord_y = uv[:, 1][None].expand(n_time, n_patches).reshape(-1)
    coord_x = uv[:, 0][None].expand(n_time, n_patches).reshape(-1)
    w_t = natural_spline_weights_1d(grid_t, coord_t)
    w_y = natural_spline_weights_1d(grid_y, coord_y)
    w_x = natural_spline_weights_1d(grid_x, coord_x)
    weights_defocus = (w_t[:, :, None, None] * w_y[:, None, :, None] * w_x[:, None, None, :]).reshape(n_spectra, -1)
    weights_phase = w_t
    # noise correlation of the spectra: overlapping patches of the same time group share pixels
    noise_correlation = torch.kron(
        torch.eye(n_time, dtype=torch.float64), patch_overlap_correlation(patches.centers_px_xy, 2 * window)
    )

    # --- 1D: rotational average, background, exhaustive search ------------------------------------
    report("1D search", 0.5)
    freq = bin_frequencies_per_a(n_bins, window, pixel_size_a, device=device)
    mean_spectrum = flat_spectra.mean(0)
    ps1d = radial_average_centered(mean_spectrum)
    background = initial_background(ps1d, bin_min, bin_max)
    defocus_candidates = torch.arange(
        settings.defocus_min_um, settings.defocus_max_um + 1e-6, settings.defocus_step_um, device=device
    )
    phase_candidates = (
        torch.arange(0.0, 180.0 - 1e-6, settings.phase_step_deg, device=device)
        if settings.fit_phase
        else torch.zeros(1, device=device)
    )
    fit = slice(bin_min, bin_max)
    bin_width = 1.0 / (window * pixel_size_a)
    optics = {
        "voltage_kv": settings.voltage_kv,
        "cs_mm": settings.cs_mm,
        "amplitude_contrast": settings.amplitude_contrast,
    }
    envelope = None
    defocus_um = phase_deg = 0.0

    def alias_freq(defocus: float) -> float:
        return float(alias_limit_per_a(defocus, voltage_kv=settings.voltage_kv, bin_width_per_a=bin_width))

    for stage in range(2):
        # first over the whole defocus range on the bins where even its largest defocus has resolved
        # rings, then ±0.3 µm around the best value, on the bins resolved at that defocus
        if stage == 0:
            candidates, cap = defocus_candidates, alias_freq(settings.defocus_max_um)
        else:
            candidates = defocus_um + torch.arange(-0.3, 0.3 + 1e-6, settings.defocus_step_um, device=device)
            candidates = candidates[candidates > 0.05]
            cap = alias_freq(defocus_um + 0.3)
        d, p, _ = search_defocus_1d(
            (ps1d - background)[None, fit],
            freq[fit],
            candidates,
            phase_candidates,
            envelope=None if envelope is None else envelope[fit],
            max_freq_per_a=cap,
            **optics,
        )
        defocus_um, phase_deg = float(d[0]), float(p[0])
        zeros, peaks = ctf_zeros_and_peaks(
            n_bins, window, pixel_size_a, defocus_um, phase_shift_deg=phase_deg, device=device, **optics
        )
        background, envelope = refine_background_and_envelope(
            ps1d, zeros, peaks, max(5, bin_min // 2), bin_max, fallback_background=background
        )

    # high defocus: closely spaced rings near 4 Å need finer spectra to resolve the astigmatism
    # angle (settings.large_window_above_um); restart with 2 × window px spectra when the image still
    # holds ≥ 3 of the larger patches per axis, so the defocus grid stays ≥ 2 × 2
    if (
        settings.large_window_above_um is not None
        and defocus_um > settings.large_window_above_um
        and len(patch_grid_1d(min(image_or_frames.shape[-2:]), 4 * window)) >= 3
    ):
        larger = settings.model_copy(update={"window": 2 * window, "large_window_above_um": None})
        inner = None if progress is None else (lambda m, f: report(m, 0.55 + 0.45 * f))
        return fit_ctf_detailed(image_or_frames, pixel_size_a, larger, inner)

    # per-spectrum backgrounds: the global shape scaled to each spectrum's level in the fit range
    ps1d_each = radial_average_centered(flat_spectra)  # (s, bins)
    scale = (ps1d_each[:, fit] * background[fit]).sum(-1) / (background[fit] ** 2).sum().clamp_min(1e-20)
    backgrounds = scale[:, None] * background  # (s, bins)

    # --- local search and plane (initial grid) ------------------------------------------------
    report("local search", 0.6)
    spatial = grid_x * grid_y > 1 or grid_t > 1
    if spatial and settings.local_search_um > 0:
        offsets = torch.arange(
            -settings.local_search_um,
            settings.local_search_um + 1e-6,
            settings.defocus_step_um,
            device=device,
        )
        candidates = (defocus_um + offsets).clamp_min(0.05)
        local, _, _ = search_defocus_1d(
            (ps1d_each - backgrounds)[:, fit],
            freq[fit],
            candidates,
            torch.tensor([phase_deg], device=device),
            envelope=envelope[fit],
            max_freq_per_a=alias_freq(defocus_um + settings.local_search_um),
            **optics,
        )
        columns = [torch.ones(n_spectra, dtype=torch.float64)]
        if grid_x > 1:
            columns.append(coord_x.double().cpu() - 0.5)
        if grid_y > 1:
            columns.append(coord_y.double().cpu() - 0.5)
        if grid_t > 1:
            columns.append(coord_t.double().cpu() - 0.5)
        solution = _robust_plane(local.double().cpu(), torch.stack(columns, -1))
        node_t = torch.linspace(0, 1, grid_t) if grid_t > 1 else torch.zeros(1)
        node_y = torch.linspace(0, 1, grid_y) if grid_y > 1 else torch.zeros(1)
        node_x = torch.linspace(0, 1, grid_x) if grid_x > 1 else torch.zeros(1)
        tt, yy, xx = torch.meshgrid(node_t, node_y, node_x, indexing="ij")
        nodes_init = torch.full_like(tt, float(solution[0]), dtype=torch.float64)
        col = 1
        for size, axis in ((grid_x, xx), (grid_y, yy), (grid_t, tt)):
            if size > 1:
                nodes_init = nodes_init + float(solution[col]) * (axis.double() - 0.5)
                col += 1
        nodes_init = nodes_init.float().to(device)
    else:
        nodes_init = torch.full((grid_t, grid_y, grid_x), defocus_um, device=device)

    # --- polar spectra ---------------------------------------------------------------------------
    n_angles = max(32, window // 4)
    angles = polar_angles_rad(n_angles, device=device)
    radii = torch.arange(bin_min, bin_max, device=device, dtype=torch.float32)
    freq_fit = radii / (window * pixel_size_a)

    # --- astigmatism search on the mean polar spectrum at a common defocus ---------------------------
    report("astigmatism search", 0.65)
    spectrum_defocus = weights_defocus @ nodes_init.reshape(-1)  # (s,)
    reference_um = float(spectrum_defocus.mean())
    source_sq = rescaled_frequency_sq(
        freq_fit[None] ** 2,
        reference_um * ANGSTROM_PER_UM,
        spectrum_defocus[:, None] * ANGSTROM_PER_UM,
        **_optics_kv_cs(settings),
    )
    source_bins = torch.sqrt(source_sq) * window * pixel_size_a  # (s, r)
    polar_common = polar_spectra(flat_spectra, source_bins, n_angles) - _interp_bins(backgrounds, source_bins)[..., None]
    polar_common = polar_common - polar_common.mean(dim=(-2, -1), keepdim=True)
    polar_common = polar_common / polar_common.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    if settings.max_astigmatism_um > 0:
        coarse_angles = angles[:: max(1, n_angles // 64)]
        mean_polar = polar_common.mean(0)[:, :: max(1, n_angles // 64)]
        limit = float(
            alias_limit_per_a(
                reference_um + settings.max_astigmatism_um / 2,
                voltage_kv=settings.voltage_kv,
                bin_width_per_a=bin_width,
            )
        )
        n_r = max(8, int((freq_fit <= limit).sum()))
        reference_fit, a1, a2 = _astigmatism_search(
            mean_polar[:n_r],
            freq_fit[:n_r],
            coarse_angles,
            envelope[fit][:n_r],
            reference_um,
            phase_deg,
            settings,
        )
        nodes_init = nodes_init + (reference_fit - reference_um)
    else:
        a1 = a2 = 0.0

    # --- 2D fit range: stop where the rings of the largest local defocus get narrower than 2.5 bins ---
    largest_um = float(nodes_init.max()) + math.hypot(a1, a2)
    alias_bin = int(
        float(
            alias_limit_per_a(
                largest_um + 0.05,
                voltage_kv=settings.voltage_kv,
                bin_width_per_a=bin_width,
            )
        )
        / bin_width
    )
    fit_max_2d = max(bin_min + 8, min(bin_max, alias_bin))
    pixel_index, pixel_radius, pixel_theta = _annulus_pixels(window, bin_min, fit_max_2d, device)
    pixel_freq = pixel_radius / (window * pixel_size_a)
    pixels = flat_spectra.reshape(n_spectra, -1)[:, pixel_index]  # (s, m)
    # 8 disjoint pixel groups give each patch 8 independent defocus estimates, hence its noise (7
    # degrees of freedom per patch; 2 halves gave 1, too few to calibrate the noise of 9 patches):
    # 16 wedges of 11.25°, group g = wedges g and g + 8, 90° apart, so that an error of the fitted
    # astigmatism (∝ cos 2θ, sin 2θ) cancels within each group instead of separating the groups
    pixel_group = torch.floor(pixel_theta / (math.pi / 16)).long().clamp(0, 15) % NOISE_GROUPS

    # --- 2D refinement with L-BFGS ---------------------------------------------------------------
    # pass 1 fits a plane (mean defocus + gradient; + a linear drift in time) through the grid nodes;
    # pass 2 lets the nodes leave the plane under a Gaussian prior whose width τ is chosen from the
    # data (empirical Bayes, :func:`_grid_prior_width`); τ = 0 keeps the plane.
    plane_basis = _plane_basis(grid_t, grid_y, grid_x, device)  # (nodes, k)
    coeffs = torch.linalg.lstsq(plane_basis, nodes_init.reshape(-1, 1)).solution[:, 0]
    coeffs = coeffs.clone().requires_grad_(True)
    off_plane = torch.eye(plane_basis.shape[0], device=device) - plane_basis @ torch.linalg.pinv(plane_basis)
    nodes = (plane_basis @ coeffs).detach().clone()
    astig = torch.tensor([a1, a2], device=device, requires_grad=True)
    phase_nodes = torch.full((grid_t,), math.radians(phase_deg), device=device, requires_grad=settings.fit_phase)
    prior_weight = 0.0  # κ / (2 τ²); 0 means "plane only"
    grid_choice: dict = {"tau_um": 0.0, "noise_scale": 0.0}
    score = torch.zeros(n_spectra)
    for refinement in range(2):
        report("2D fit", 0.7 + 0.1 * refinement)
        cost = _Cost(
            pixels - _interp_bins(backgrounds, pixel_radius.expand(n_spectra, -1)),
            pixel_freq,
            pixel_theta,
            _interp_bins(envelope[None], pixel_radius[None])[0],
            weights_defocus,
            weights_phase,
            settings,
        )
        use_grid = refinement == 1 and prior_weight > 0
        if use_grid:
            nodes = nodes.detach().clone().requires_grad_(True)
            params = [nodes, astig]
        else:
            params = [coeffs, astig]
        params += [phase_nodes] if settings.fit_phase else []
        optimizer = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=settings.max_iterations,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
        )

        def closure(
            optimizer=optimizer,
            cost=cost,
            free=nodes if use_grid else None,
            coeffs=coeffs,
            phase_nodes=phase_nodes,
            weight=prior_weight,
            basis=plane_basis,
        ) -> torch.Tensor:
            optimizer.zero_grad()
            values = free if free is not None else basis @ coeffs
            loss = -cost.per_spectrum(values, astig, phase_nodes).sum()
            if weight > 0:
                loss = loss + weight * (off_plane @ values).pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            nodes = (nodes if use_grid else plane_basis @ coeffs).detach().clone()
            score = cost.per_spectrum(nodes, astig, phase_nodes)
            defocus_delta_um = 2 * float(torch.linalg.vector_norm(astig))
            angle_deg = math.degrees(0.5 * math.atan2(float(astig[1]), float(astig[0]))) % 180.0
            mean_defocus = float(nodes.mean())
            spectrum_defocus = weights_defocus @ nodes
            phase_mean_deg = math.degrees(float(phase_nodes.mean())) % 180.0
            if refinement == 0 and spatial and off_plane.abs().max() > 1e-6:
                steps_um, curvature, group_steps_um = cost.local_steps(
                    nodes, astig, phase_nodes, pixel_group, NOISE_GROUPS
                )
                prior_weight, grid_choice = _grid_prior_width(
                    steps_um, curvature, group_steps_um, weights_defocus @ off_plane, noise_correlation
                )
                if (
                    prior_weight == 0
                    and grid_t == 1
                    and _gradient_is_noise(
                        steps_um,
                        curvature,
                        grid_choice,
                        spectrum_defocus,
                        torch.stack([coord_x, coord_y], -1),
                        noise_correlation,
                    )
                ):
                    # a level specimen: the fitted gradient is no larger than its own noise, so
                    # keep a single defocus (the plane's value at the centre) for pass 2
                    plane_basis = plane_basis[:, :1]
                    coeffs = coeffs[:1].detach().clone().requires_grad_(True)
                    nodes = (plane_basis @ coeffs).detach().clone()
                    grid_choice["level"] = True
            # background and envelope again, from the astigmatism-corrected average
            corrected = corrected_average_1d(
                flat_spectra,
                spectrum_defocus,
                defocus_delta_um,
                angle_deg,
                mean_defocus,
                pixel_size_a=pixel_size_a,
                **_optics_kv_cs(settings),
            )
            if refinement == 0:
                # the corrected average has sharp rings out to high resolution: search (defocus, phase)
                # again around the 2D result, which breaks the defocus/phase trade-off that the
                # astigmatism-blurred rotational average leaves open
                zeros, peaks = ctf_zeros_and_peaks(
                    n_bins,
                    window,
                    pixel_size_a,
                    mean_defocus,
                    phase_shift_deg=phase_mean_deg,
                    device=device,
                    **optics,
                )
                background, envelope = refine_background_and_envelope(
                    corrected, zeros, peaks, max(5, bin_min // 2), bin_max, fallback_background=background
                )
                near = mean_defocus + torch.arange(-0.3, 0.3 + 1e-6, settings.defocus_step_um, device=device)
                d, p, _ = search_defocus_1d(
                    (corrected - background)[None, fit],
                    freq[fit],
                    near.clamp_min(0.05),
                    phase_candidates,
                    envelope=envelope[fit],
                    max_freq_per_a=alias_freq(mean_defocus + 0.3),
                    **optics,
                )
                shift = float(d[0]) - mean_defocus
                nodes += shift
                coeffs += shift * torch.linalg.pinv(plane_basis) @ torch.ones_like(nodes)
                if settings.fit_phase:
                    phase_nodes += math.radians(float(p[0])) - float(phase_nodes.mean())
                mean_defocus, phase_mean_deg = float(d[0]), float(p[0]) if settings.fit_phase else 0.0
            zeros, peaks = ctf_zeros_and_peaks(
                n_bins,
                window,
                pixel_size_a,
                mean_defocus,
                phase_shift_deg=phase_mean_deg,
                device=device,
                **optics,
            )
            background, envelope = refine_background_and_envelope(
                corrected, zeros, peaks, max(5, bin_min // 2), n_bins - 1, fallback_background=background
            )
            scale = (ps1d_each[:, fit] * background[fit]).sum(-1) / (background[fit] ** 2).sum().clamp_min(1e-20)
            backgrounds = scale[:, None] * background

    # --- fit quality and resolution ------------------------------------------------------------------
    report("resolution", 0.95)
    spectrum_1d = corrected - background
    simulated = ctf_1d(freq, mean_defocus, phase_shift_deg=phase_mean_deg, **optics).abs() * envelope
    quality = fit_quality_1d(spectrum_1d, simulated, zeros, bin_min, min_window=settings.quality_min_window)
    resolution_a, _ = resolution_from_quality(
        quality,
        bin_min,
        bin_max,
        pixel_size_a=pixel_size_a,
        window=window,
        threshold=settings.quality_threshold,
    )

    grid_values = nodes.detach().reshape(grid_t, grid_y, grid_x)
    grid = CubicGrid((grid_t, grid_y, grid_x), 1, values=grid_values[None].cpu())
    plane = fit_specimen_plane(grid, patches.shape_yx, pixel_size_a)
    # astigmatism angle: Warp truncates to whole degrees (warp-facts.md §2.5); we keep the fraction
    model = CTFModel(
        defocus_um=mean_defocus,
        defocus_delta_um=defocus_delta_um,
        astigmatism_angle_deg=angle_deg,
        phase_shift_deg=phase_mean_deg if settings.fit_phase else 0.0,
        resolution_a=resolution_a,
        figure_of_merit=float(score.mean()),
        voltage_kv=settings.voltage_kv,
        cs_mm=settings.cs_mm,
        amplitude_contrast=settings.amplitude_contrast,
        pixel_size_a=float(pixel_size_a),
        image_shape_yx=tuple(patches.shape_yx),
        defocus_grid_um=grid_values.cpu().tolist(),
        phase_grid_deg=[math.degrees(v) % 180.0 for v in phase_nodes.detach().cpu().tolist()]
        if settings.fit_phase
        else [0.0] * grid_t,
        fit_range_a=(settings.range_min_a, max(settings.range_max_a, 2 * pixel_size_a)),
        window=window,
        plane=plane,
        spectrum_1d=spectrum_1d.cpu().tolist(),
        background_1d=background.cpu().tolist(),
        envelope_1d=envelope.cpu().tolist(),
        simulated_1d=simulated.cpu().tolist(),
        quality_1d=quality.cpu().tolist(),
    )
    coords = torch.arange(window, device=device, dtype=torch.float32) - window // 2
    radius = torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)
    background_2d = _interp_bins(background[None].expand(window, -1), radius)
    report("done", 1.0)
    return CTFFit(
        model=model,
        spectrum_2d=(mean_spectrum - background_2d).detach(),
        patch_centers_px_xy=patches.centers_px_xy,
        patch_defocus_um=spectrum_defocus.detach().reshape(n_time, n_patches),
        grid_prior=grid_choice,
    )


def _optics_kv_cs(settings: CTFSettings) -> dict:
    return {"voltage_kv": settings.voltage_kv, "cs_mm": settings.cs_mm}


def fit_ctf(
    image_or_frames: torch.Tensor,
    pixel_size_a: float,
    settings: CTFSettings | None = None,
    progress: Progress | None = None,
) -> CTFModel:
    """Fit defocus (a spatial grid), astigmatism and phase shift of a micrograph or movie.

    Parameters
    ----------
    image_or_frames : torch.Tensor
        `(h, w)` micrograph or `(f, h, w)` frames (per-frame spectra are summed). Needs at least
        ``2 * settings.window`` px per side; finite values.
    pixel_size_a : float
        Pixel size, Å.
    settings : CTFSettings, optional
        Warp's defaults if omitted.
    progress : callable, optional
        ``progress(message, fraction)`` called as the stages advance.

    Returns
    -------
    CTFModel
        RELION conventions: positive underfocus, ``defocus_delta_um`` = U − V ≥ 0, angle of U from +x
        towards +y in [0, 180).

    Raises
    ------
    ValueError
        If the input is not `[H, W]`/`[F, H, W]`, is smaller than one patch, holds NaN/Inf, or the fit
        range spans too few bins.

    References
    ----------
    Tegunov & Cramer, Nat. Methods 16, 1146 (2019); warp-facts.md §2.
    """
    return fit_ctf_detailed(image_or_frames, pixel_size_a, settings, progress).model
