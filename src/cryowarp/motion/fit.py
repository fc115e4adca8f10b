"""Fitting Warp's motion model (warp-facts.md §1.1–1.4) with L-BFGS and exact gradients."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cryowarp.base.grids import CubicGrid, natural_spline_weights_1d
from cryowarp.motion._cost import alignment_cost
from cryowarp.motion._patches import binned_shape, normalise_and_bin, patch_spectra, prealign_global
from cryowarp.motion.model import MotionModel
from cryowarp.motion.settings import MotionSettings, auto_grid_xyt, fit_layout

ProgressCallback = Callable[[str, int, int], None]


def _check_frames(frames: torch.Tensor) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"fit_motion: expected frames as a tensor (n_frames, h, w), found {shape}")


def n_stages_for(global_nodes: int) -> int:
    """Warp's number of coarse-to-fine stages, max(1, ceil(log₃(Z − 0.01))) (warp-facts.md §1.4)."""
    if global_nodes <= 1:
        return 1
    return max(1, math.ceil(math.log(global_nodes - 0.01, 3)))


def detect_jumps(track_a_yx: torch.Tensor, *, min_jump_a: float = 3.0, n_sigma: float = 8.0) -> torch.Tensor:
    """The piecewise-constant part `(f, 2)` of a per-frame global track: sudden stage jumps.

    A step between two frames is a jump when it differs from the median of its neighbouring steps (two
    on each side) by more than ``n_sigma`` robust standard deviations of that difference and by more
    than ``min_jump_a``. Beam-induced drift changes smoothly from frame to frame; a stage jump moves
    the specimen by Ångströms within one frame, which a spline with fewer nodes than frames (Warp's
    ceil(total exposure) nodes) would smear over several frames. Returns the cumulative sum of the jumps'
    excess over the expected step, so that ``track − jumps`` is smooth.
    """
    n_f = track_a_yx.shape[0]
    jumps = torch.zeros_like(track_a_yx)
    if n_f < 4:
        return jumps
    steps = track_a_yx[1:] - track_a_yx[:-1]  # (f − 1, 2)
    expected = torch.empty_like(steps)
    for i in range(steps.shape[0]):
        around = torch.cat([steps[max(0, i - 2) : i], steps[i + 1 : i + 3]])
        expected[i] = around.median(0).values
    excess = steps - expected
    size = torch.linalg.vector_norm(excess, dim=-1)
    noise = 1.4826 * float(size.median())
    is_jump = size > max(n_sigma * noise, min_jump_a)
    jumps[1:] = torch.cumsum(torch.where(is_jump[:, None], excess, torch.zeros_like(excess)), dim=0)
    return jumps


def _displacements(
    glob: CubicGrid,
    local: CubicGrid | None,
    offset: torch.Tensor,
    weights_g: torch.Tensor,
    local_weights: list[torch.Tensor],
    n_patches: int,
) -> torch.Tensor:
    """Per-patch, per-frame displacement `(p, f, 2)` in Å from the grids (differentiable)."""
    track = offset + weights_g @ glob.values.T  # (f, 2)
    d = track[None, :, :].expand(n_patches, track.shape[0], 2)
    if local is not None:
        field = local.evaluate_product(weights=local_weights)  # (2, f, py, px)
        d = d + field.permute(2, 3, 1, 0).reshape(n_patches, track.shape[0], 2)
    return d


def _fit_stage(
    glob: CubicGrid,
    local: CubicGrid | None,
    offset: torch.Tensor,
    weights_g: torch.Tensor,
    local_weights: list[torch.Tensor],
    data: torch.Tensor,
    ky: torch.Tensor,
    kx: torch.Tensor,
    *,
    max_iterations: int,
) -> float:
    """One coarse-to-fine stage: L-BFGS on the grid values; returns the final normalised cost."""
    n_patches = data.shape[0]
    power = torch.view_as_real(data).square().sum(-1)  # (p, f, y, x) |P|²
    norm = float(power.sum().clamp_min(1e-20))
    # Precondition: scale the cost so that moving one frame's global displacement by 1 Å costs ≈ ½, i.e.
    # unit curvature, ∂²E/∂g_f² ≈ 4π² Σ_p Σ_k |k|²|P|² (k in 1/Å). Unscaled, the curvature is ~1e-4 of
    # that and L-BFGS's first steps (length ≤ 1/|g|₁) barely move the grids within Warp's 10 iterations.
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    curvature = float((4 * math.pi**2 * (power * k2).sum() / data.shape[1]).clamp_min(1e-20))
    del power
    params = [glob.values] + ([local.values] if local is not None else [])
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iterations,
        max_eval=3 * max_iterations,
        history_size=10,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        d = _displacements(glob, local, offset, weights_g, local_weights, n_patches)
        cost = alignment_cost(d, data, ky, kx) / curvature
        cost.backward()
        return cost

    optimizer.step(closure)
    with torch.no_grad():
        d = _displacements(glob, local, offset, weights_g, local_weights, n_patches)
        return float(alignment_cost(d, data, ky, kx)) / norm


def fit_motion(
    frames: torch.Tensor,
    pixel_size_a: float,
    exposure_per_frame_e_per_a2: float,
    settings: MotionSettings | None = None,
    progress: ProgressCallback | None = None,
) -> MotionModel:
    """Fit global and local motion of a movie.

    Parameters
    ----------
    frames : torch.Tensor
        `(n_frames, h, w)` gain-corrected frames (counts); any real dtype, computed in float32.
    pixel_size_a : float
        Pixel size in Å.
    exposure_per_frame_e_per_a2 : float
        Exposure per frame in e⁻/Å² (sets the automatic grid size).
    settings : MotionSettings, optional
        Warp's defaults if omitted.
    progress : callable, optional
        ``progress(step, done, total)`` after each frame binned and each stage.

    Returns
    -------
    MotionModel
        Displacements in Å (frame_f(x) = specimen(x − d_f(x)), docs/api-contracts.md). A single frame
        gives an all-zero model with ``skipped_reason`` set, as Warp skips estimation.

    Notes
    -----
    The movie is first Fourier-binned so that its Nyquist frequency equals the highest frequency used
    (``range_high_a``): the cost only ever looks below it, so nothing is lost and the patches shrink
    (768 px at 1 Å become 154 px at 5 Å). A whole-frame cross-correlation pre-alignment (``prealign``)
    starts the coarse-to-fine fit near the answer; each stage then fits a correction with
    min(Z, 3^(m+1)) global nodes and the last stage refits the full Z-node spline. Fields too small
    for Warp's patch layout (fewer than ``small_field_patches`` patches across) use smaller patches, a
    local grid with one node per patch and a wider band (:func:`~cryowarp.motion.settings.fit_layout`).
    """
    settings = settings or MotionSettings()
    _check_frames(frames)
    if pixel_size_a <= 0 or exposure_per_frame_e_per_a2 <= 0:
        raise ValueError(
            f"fit_motion: pixel_size_a and exposure_per_frame_e_per_a2 must be > 0, found "
            f"{pixel_size_a} and {exposure_per_frame_e_per_a2}"
        )
    n_f, h, w = frames.shape
    if n_f < 2:
        return MotionModel.zeros(
            (h, w), pixel_size_a, n_f, skipped_reason="single frame: motion estimation skipped (as Warp)"
        )
    device = frames.device
    layout = fit_layout((h, w), settings)
    grid_x, grid_y, grid_z = settings.grid_xyt or auto_grid_xyt(
        (h, w), pixel_size_a, n_f, exposure_per_frame_e_per_a2
    )
    if layout.small_field and settings.grid_xyt is None:
        grid_x, grid_y = layout.local_grid_xy
    range_high_a, bfactor_a2 = layout.range_high_a, layout.bfactor_a2

    shape_b = binned_shape((h, w), pixel_size_a, range_high_a)
    frames32 = frames if frames.dtype == torch.float32 else frames.float()
    binned = normalise_and_bin(frames32, shape_b, progress)
    pixel_b_yx = (pixel_size_a * h / shape_b[0], pixel_size_a * w / shape_b[1])
    spectra = patch_spectra(
        binned,
        full_shape_yx=(h, w),
        binned_pixel_size_a_yx=pixel_b_yx,
        patch_size_px=layout.patch_size_px,
        pixel_size_a=pixel_size_a,
        range_low_a=settings.range_low_a,
        range_high_a=range_high_a,
        bfactor_a2=bfactor_a2,
    )
    if settings.prealign:
        base = prealign_global(
            binned,
            pixel_b_yx,
            range_low_a=settings.range_low_a,
            range_high_a=range_high_a,
            bfactor_a2=bfactor_a2,
        )
    else:
        base = torch.zeros(n_f, 2, device=device)
    del binned

    n_py, n_px = spectra.grid_shape_yx
    x_local, y_local = min(n_px, grid_x), min(n_py, grid_y)
    z_local = min(n_f, settings.local_temporal_nodes) if x_local * y_local > 1 else 1
    z_global = max(1, min(n_f, grid_z))
    t = torch.arange(n_f, device=device, dtype=torch.float32) / (n_f - 1)
    centers = spectra.centers_px_yx
    v = torch.unique(centers[:, 0]) / max(1, h - 1)
    u = torch.unique(centers[:, 1]) / max(1, w - 1)
    local = CubicGrid((z_local, y_local, x_local), 2, device=device)
    local_weights = [
        natural_spline_weights_1d(z_local, t),
        natural_spline_weights_1d(y_local, v),
        natural_spline_weights_1d(x_local, u),
    ]
    use_local = x_local * y_local > 1

    n_stages = n_stages_for(z_global)
    costs: list[float] = []
    glob = CubicGrid((1,), 2, device=device)
    for stage in range(n_stages):
        last = stage == n_stages - 1
        nodes = z_global if last else min(z_global, 3 ** (stage + 1))
        weights_g = natural_spline_weights_1d(nodes, t)  # (f, nodes)
        if last:
            # refit the whole global track as one Z-node spline (least squares through the per-frame track)
            # plus the detected stage jumps, which stay per frame
            jumps = detect_jumps(base) if nodes < n_f else torch.zeros_like(base)
            values = torch.linalg.lstsq(weights_g.cpu(), (base - jumps).cpu()).solution.T.to(device)
            glob = CubicGrid((nodes,), 2, values=values.contiguous())
            offset = jumps
        else:
            glob = CubicGrid((nodes,), 2, device=device)
            offset = base
        k_cap = spectra.k_low_per_a + (spectra.k_high_per_a - spectra.k_low_per_a) * (stage + 1) / n_stages
        k_cap = spectra.k_high_per_a if last else k_cap
        data, ky, kx = spectra.band(k_cap)
        costs.append(
            _fit_stage(
                glob,
                local if use_local else None,
                offset,
                weights_g,
                local_weights,
                data,
                ky,
                kx,
                max_iterations=settings.max_iterations,
            )
        )
        with torch.no_grad():
            base = (offset + weights_g @ glob.values.T).detach()
        if progress is not None:
            progress("fit", stage + 1, n_stages)

    with torch.no_grad():
        # gauge: the mean of the global displacement over frames is 0 (docs/api-contracts.md)
        weights_g = natural_spline_weights_1d(z_global, t)
        mean = (weights_g @ glob.values.T + offset).mean(0)  # a natural spline reproduces constants
        global_values = (glob.values - mean[:, None]).detach().clone()
        has_jumps = bool(offset.abs().max() > 0)
    return MotionModel(
        shape_yx=(h, w),
        pixel_size_a=float(pixel_size_a),
        n_frames=n_f,
        global_values_a_yx=global_values,
        local_values_a_yx=local.values.detach().clone(),
        patch_centers_px_yx=centers.detach().clone(),
        cost_per_stage=costs,
        binned_pixel_size_a=float(max(pixel_b_yx)),
        global_jumps_a_yx=offset.detach().clone() if has_jumps else None,
    )
