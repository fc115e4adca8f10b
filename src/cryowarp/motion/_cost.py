"""Warp's Fourier-space alignment cost with its exact gradient, fused in one pass over the spectra.

For patch p, frame f and frequency k (1/Å) the aligned spectrum is Q = P·exp(+2πi k·d) (undoing the
displacement d in Å) and A = mean_f Q is the aligned average including the frame itself. Warp's cost
(warp-facts.md §1.3) is E = Σ_p Σ_f Σ_k |Q − A|² = Σ|P|² − N Σ_p Σ_k |A|², whose exact derivative is

    ∂E/∂d_f = 4π Σ_k k · Im(conj(A)·Q_f).

(Warp uses a finite difference that treats A as constant and is not divided by its step; the exact
gradient differs from Warp's only by a positive scale, warp-facts.md §10.2.) The gradient comes almost
for free once Q and A exist, so the forward pass computes it and ``backward`` only scales it; everything
upstream of the per-patch displacements (the spline grids) is ordinary autograd.
"""

from __future__ import annotations

import math

import torch

from cryowarp.motion._kernels import alignment_cost_and_grad_cpu


def _chunk(n_patches: int, per_patch: int, budget: int = 4_000_000) -> int:
    return max(1, min(n_patches, budget // max(1, per_patch)))


def alignment_cost_and_grad(
    spectra: torch.Tensor, ky_per_a: torch.Tensor, kx_per_a: torch.Tensor, displacement_a_yx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cost Σ|Q − A|² and its gradient w.r.t. the displacements.

    Parameters
    ----------
    spectra : torch.Tensor
        `(p, f, y, x)` complex weighted patch spectra on a (cropped, centred-row) rfft box.
    ky_per_a, kx_per_a : torch.Tensor
        `(y,)` and `(x,)` frequencies of the rows and columns in 1/Å.
    displacement_a_yx : torch.Tensor
        `(p, f, 2)` displacements in Å.

    Returns
    -------
    cost : torch.Tensor
        Scalar.
    grad : torch.Tensor
        `(p, f, 2)` ∂cost/∂displacement.
    """
    n_p, n_f, n_y, n_x = spectra.shape
    d = displacement_a_yx.detach().to(spectra.real.dtype)
    two_pi = 2.0 * math.pi
    # the phase ramp exp(+2πi k·d) per axis, (p, f, y) and (p, f, x): separable, so never built in full
    ramp_y = torch.polar(torch.ones_like(d[:, :, 0:1]).expand(-1, -1, n_y), two_pi * d[:, :, 0:1] * ky_per_a)
    ramp_x = torch.polar(torch.ones_like(d[:, :, 1:2]).expand(-1, -1, n_x), two_pi * d[:, :, 1:2] * kx_per_a)
    if spectra.device.type == "cpu" and spectra.dtype == torch.complex64:
        # fused two-pass loop (numba): no (p, f, y, x) temporaries, ~2× less memory traffic
        grad64 = torch.empty((n_p, n_f, 2), dtype=torch.float64)
        partial = alignment_cost_and_grad_cpu(
            spectra.contiguous().numpy(),
            ramp_y.contiguous().numpy(),
            ramp_x.contiguous().numpy(),
            ky_per_a.to(torch.float32).contiguous().numpy(),
            kx_per_a.to(torch.float32).contiguous().numpy(),
            grad64.numpy(),
        )
        cost = torch.tensor(partial, dtype=d.dtype) + spectra_power(spectra)
        return cost, grad64.to(d.dtype)
    grad = torch.empty_like(d)
    cost = torch.zeros((), dtype=d.dtype, device=d.device)
    step = _chunk(n_p, spectra[0].numel())
    ones_f = torch.full((1, n_f), 1.0 / n_f, dtype=d.dtype, device=d.device)
    k_yx = torch.stack(torch.broadcast_tensors(ky_per_a[:, None], kx_per_a[None, :]), dim=-1)  # (y, x, 2)
    k_yx = k_yx.reshape(n_y * n_x, 1, 2)
    for start in range(0, n_p, step):
        sl = slice(start, start + step)
        n_c = spectra[sl].shape[0]
        q = spectra[sl] * (ramp_y[sl, :, :, None] * ramp_x[sl, :, None, :])  # (c, f, y, x)
        q_real = torch.view_as_real(q).reshape(n_c, n_f, n_y * n_x * 2)  # interleaved re, im
        avg = ones_f @ q_real  # (c, 1, y*x*2): the mean over frames as one matmul pass
        cost = cost - n_f * avg.square().sum()
        # Im(conj(A) Q) = A_re Q_im − A_im Q_re; weight by k and sum over k with one matmul pass over Q
        a = avg.reshape(n_c, n_y * n_x, 1, 2)
        vec = torch.empty(n_c, n_y * n_x, 2, 2, dtype=d.dtype, device=d.device)  # (c, k, re/im, yx)
        vec[:, :, 0, :] = -a[..., 1] * k_yx[:, 0, :]
        vec[:, :, 1, :] = a[..., 0] * k_yx[:, 0, :]
        grad[sl] = 2 * two_pi * (q_real @ vec.reshape(n_c, n_y * n_x * 2, 2))
    cost = cost + spectra_power(spectra)
    return cost, grad


def spectra_power(spectra: torch.Tensor) -> torch.Tensor:
    """Σ|P|² (the constant part of the cost), cached on the tensor object per stage."""
    cached = getattr(spectra, "_cw_power", None)
    if cached is None:
        cached = torch.view_as_real(spectra).square().sum()
        spectra._cw_power = cached
    return cached


class _AlignmentCost(torch.autograd.Function):
    @staticmethod
    def forward(ctx, displacement_a_yx, spectra, ky_per_a, kx_per_a):  # noqa: D102
        cost, grad = alignment_cost_and_grad(spectra, ky_per_a, kx_per_a, displacement_a_yx)
        ctx.save_for_backward(grad)
        return cost

    @staticmethod
    def backward(ctx, grad_output):  # noqa: D102
        (grad,) = ctx.saved_tensors
        return grad_output * grad.to(grad_output.dtype), None, None, None


def alignment_cost(
    displacement_a_yx: torch.Tensor, spectra: torch.Tensor, ky_per_a: torch.Tensor, kx_per_a: torch.Tensor
) -> torch.Tensor:
    """Differentiable Warp alignment cost (see module docstring); gradient flows to the displacements."""
    return _AlignmentCost.apply(displacement_a_yx, spectra, ky_per_a, kx_per_a)
