"""Interpolating cubic-spline grids over 1–4 axes (space and time), as Warp's ``CubicGrid``.

Why our own and not teamtomo's ``torch-cubic-spline-grids``: that library's B-spline grids are
*approximating* (a grid with control values ``[0, 1, 0, 1, 0]`` evaluates to
``[0, .67, .33, .67, 0]`` at the nodes, toolchain.md §2), while Warp's grids *interpolate* their node
values and Warp's coarse-to-fine refinement (warp-facts.md §1.4) resamples a grid by evaluating it at
new node positions, which only round-trips with an interpolating spline. Its Catmull-Rom grids
interpolate but are only C¹. A natural cubic spline is separable and *linear* in the node values, so
evaluation is a contraction of the node values with one small weight matrix per axis. For the fixed
coordinates of a fit (patch centres × frames) those matrices are computed once and every cost
evaluation is a few tiny matmuls, with autograd for free.

Conventions
-----------
* ``values`` has shape ``(n_channels, *resolution)``; the axis order is the caller's, by convention
  ``(t, y, x)`` or ``(t, z, y, x)`` (time first, then array order).
* Coordinates are normalised to [0, 1] per axis (node i of n sits at i / (n − 1)); coordinates
  outside are clamped. An axis with one node is constant along it; with two nodes it is linear;
  with three or more it is a natural cubic spline (second derivative 0 at both ends).
"""

from __future__ import annotations

import torch


def natural_spline_weights_1d(n_nodes: int, coords: torch.Tensor) -> torch.Tensor:
    """Weights that map ``n_nodes`` node values to natural-cubic-spline values at ``coords``.

    Parameters
    ----------
    n_nodes : int
        Number of uniformly spaced nodes on [0, 1].
    coords : torch.Tensor
        `(n,)` positions in [0, 1] (clamped).

    Returns
    -------
    weights : torch.Tensor
        `(n, n_nodes)`; ``weights @ node_values`` interpolates. Rows sum to 1. Same device/dtype as
        ``coords`` (float32 if ``coords`` is an integer tensor).
    """
    if n_nodes < 1:
        raise ValueError(f"a spline axis needs at least 1 node, found {n_nodes}")
    dtype = coords.dtype if coords.is_floating_point() else torch.float32
    u = coords.to(dtype).clamp(0.0, 1.0)
    if n_nodes == 1:
        return torch.ones(u.shape + (1,), dtype=dtype, device=u.device)
    # work in float64 for the tridiagonal solve; it is n_nodes × n_nodes and cheap
    n = n_nodes
    h = 1.0 / (n - 1)
    pos = u.to(torch.float64) * (n - 1)
    left = pos.floor().clamp(0, n - 2).long()
    t = pos - left
    eye = torch.eye(n, dtype=torch.float64, device=u.device)
    lin = eye[left] * (1 - t)[..., None] + eye[left + 1] * t[..., None]
    if n == 2:
        return lin.to(dtype)
    # second derivatives M = S @ y for a natural spline: interior rows h/6 M_{i-1} + 2h/3 M_i + h/6 M_{i+1}
    # = (y_{i+1} − 2 y_i + y_{i−1}) / h, and M_0 = M_{n−1} = 0.
    a = torch.zeros(n, n, dtype=torch.float64, device=u.device)
    rhs = torch.zeros(n, n, dtype=torch.float64, device=u.device)
    a[0, 0] = a[-1, -1] = 1.0
    for i in range(1, n - 1):
        a[i, i - 1], a[i, i], a[i, i + 1] = h / 6, 2 * h / 3, h / 6
        rhs[i, i - 1], rhs[i, i], rhs[i, i + 1] = 1 / h, -2 / h, 1 / h
    second = torch.linalg.solve(a, rhs)  # (n, n): M = second @ y
    c_left = (h * h / 6) * ((1 - t) ** 3 - (1 - t))
    c_right = (h * h / 6) * (t**3 - t)
    curv = second[left] * c_left[..., None] + second[left + 1] * c_right[..., None]
    return (lin + curv).to(dtype)


class CubicGrid(torch.nn.Module):
    """Interpolating (natural) cubic spline over a regular grid, with learnable node values.

    Parameters
    ----------
    resolution : tuple of int
        Nodes per axis, e.g. ``(n_t, n_y, n_x)``; 1–4 axes.
    n_channels : int
        Values per node (e.g. 2 for a displacement ``(dy, dx)``).
    values : torch.Tensor, optional
        `(n_channels, *resolution)` initial node values; zeros if omitted.
    device, dtype
        Where to build the grid when ``values`` is not given.

    Notes
    -----
    ``values`` is an ``nn.Parameter``, so ``torch.optim`` optimisers take ``grid.parameters()``.
    References: Warp ``CubicGrid`` (warp-facts.md §1.2, §1.4).
    """

    def __init__(
        self,
        resolution: tuple[int, ...],
        n_channels: int = 1,
        *,
        values: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        resolution = tuple(int(r) for r in resolution)
        if not 1 <= len(resolution) <= 4 or min(resolution) < 1:
            raise ValueError(f"CubicGrid resolution must have 1-4 axes of >= 1 node, found {resolution}")
        if values is None:
            values = torch.zeros((n_channels,) + resolution, device=device, dtype=dtype)
        elif tuple(values.shape) != (n_channels,) + resolution:
            raise ValueError(
                f"CubicGrid values: expected shape {(n_channels,) + resolution}, found {tuple(values.shape)}"
            )
        self.resolution = resolution
        self.n_channels = n_channels
        self.values = torch.nn.Parameter(values.detach().clone())

    @property
    def ndim(self) -> int:
        """Number of grid axes."""
        return len(self.resolution)

    def axis_weights(self, axis_coords: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Per-axis weight matrices `(n_i, resolution[i])` for 1D coordinate lists (cache these)."""
        if len(axis_coords) != self.ndim:
            raise ValueError(f"expected {self.ndim} coordinate axes, found {len(axis_coords)}")
        return [
            natural_spline_weights_1d(r, torch.as_tensor(c, device=self.values.device).reshape(-1))
            for r, c in zip(self.resolution, axis_coords, strict=True)
        ]

    def evaluate_product(
        self,
        axis_coords: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None,
        *,
        weights: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Evaluate on the tensor product of 1D coordinate lists.

        Parameters
        ----------
        axis_coords : list of torch.Tensor
            One `(n_i,)` tensor of coordinates in [0, 1] per axis.
        weights : list of torch.Tensor, optional
            Precomputed ``axis_weights(axis_coords)``, to skip recomputing them.

        Returns
        -------
        values : torch.Tensor
            `(n_channels, n_0, n_1, ...)`.
        """
        if weights is None:
            weights = self.axis_weights(axis_coords)
        out = self.values
        for axis, w in enumerate(weights):
            # contract grid axis (1 + axis) with w: move it last, matmul, move back
            out = torch.movedim(torch.movedim(out, 1 + axis, -1) @ w.to(out.dtype).T, -1, 1 + axis)
        return out

    def evaluate(self, coords: torch.Tensor) -> torch.Tensor:
        """Evaluate at scattered points.

        Parameters
        ----------
        coords : torch.Tensor
            `(..., ndim)` coordinates in [0, 1], axis order as ``resolution``.

        Returns
        -------
        values : torch.Tensor
            `(..., n_channels)`.
        """
        if coords.shape[-1] != self.ndim:
            raise ValueError(
                f"CubicGrid.evaluate: expected coords (..., {self.ndim}), found {tuple(coords.shape)}"
            )
        batch = coords.shape[:-1]
        flat = coords.reshape(-1, self.ndim)
        ws = [
            natural_spline_weights_1d(r, flat[:, i]).to(self.values.dtype)
            for i, r in enumerate(self.resolution)
        ]
        letters = "ijkl"[: self.ndim]
        expr = "c" + letters + "," + ",".join("n" + ch for ch in letters) + "->nc"
        out = torch.einsum(expr, self.values, *ws)
        return out.reshape(batch + (self.n_channels,))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`evaluate`."""
        return self.evaluate(coords)

    def node_coords(self) -> list[torch.Tensor]:
        """Normalised node positions per axis."""
        return [
            torch.linspace(0.0, 1.0, r, device=self.values.device)
            if r > 1
            else torch.zeros(1, device=self.values.device)
            for r in self.resolution
        ]

    def resampled(self, resolution: tuple[int, ...]) -> CubicGrid:
        """A new grid with ``resolution`` nodes whose values are this spline at the new nodes.

        Used for Warp's coarse-to-fine temporal refinement (warp-facts.md §1.4). A 1-node axis of
        this grid stays constant; growing it evaluates the constant.
        """
        new = CubicGrid(resolution, self.n_channels, device=self.values.device, dtype=self.values.dtype)
        coords = new.node_coords()
        with torch.no_grad():
            new.values.copy_(self.evaluate_product(coords))
        return new

    def to_dict(self) -> dict:
        """Plain-JSON form: resolution, n_channels and nested lists of values."""
        return {
            "resolution": list(self.resolution),
            "n_channels": self.n_channels,
            "values": self.values.detach().cpu().tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict, *, device: torch.device | str | None = None) -> CubicGrid:
        """Inverse of :meth:`to_dict`."""
        values = torch.tensor(d["values"], dtype=torch.float32, device=device)
        return cls(tuple(d["resolution"]), int(d["n_channels"]), values=values)

    def extra_repr(self) -> str:  # noqa: D102
        return f"resolution={self.resolution}, n_channels={self.n_channels}"
