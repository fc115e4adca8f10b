"""The fitted motion model: a global temporal spline plus a local X×Y×T spline, both in Å.

Convention (docs/api-contracts.md): frame f is the specimen displaced by d_f(x),
``frame_f(x) = specimen(x − d_f(x))``; d is in Å, array order (y, x). Spline coordinates: time
t = f / (n_frames − 1); space u = x / (w − 1), v = y / (h − 1) over the full-size movie in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from cryowarp.base.grids import natural_spline_weights_1d


def patch_centers_1d(size_px: int, patch_px: int) -> list[float]:
    """Centres of patches along one axis as Warp's ``GetEqualGridSpacing`` with 50 % overlap.

    n = ceil((size − R + R/2) / (R/2)) patches, spacing floor((size − R)/(n − 1)), the set centred in the
    image (warp-facts.md §1.1); 4096 px with R = 768 gives 10 patches.
    """
    if patch_px >= size_px:
        return [(size_px - 1) / 2.0]
    step = patch_px / 2
    n = max(1, math.ceil((size_px - patch_px + step) / step))
    if n == 1:
        return [(size_px - 1) / 2.0]
    spacing = math.floor((size_px - patch_px) / (n - 1))
    span = (n - 1) * spacing + patch_px
    origin = (size_px - span) / 2.0
    return [origin + patch_px / 2.0 - 0.5 + i * spacing for i in range(n)]


def _frame_coords(frame_index: torch.Tensor | int, n_frames: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(frame_index, dtype=torch.float32, device=device).reshape(-1)
    return t / max(1, n_frames - 1)


@dataclass(frozen=True)
class MotionModel:
    """Result of :func:`cryowarp.motion.fit_motion`.

    Attributes
    ----------
    shape_yx : tuple of int
        Full-size movie frame shape ``(h, w)`` in pixels.
    pixel_size_a : float
        Pixel size of the movie in Å.
    n_frames : int
        Frames in the movie.
    global_values_a_yx : torch.Tensor
        `(2, z_global)` node values of the global track, Å (mean over frames is 0).
    local_values_a_yx : torch.Tensor
        `(2, z_local, y_local, x_local)` node values of the local grid, Å.
    patch_centers_px_yx : torch.Tensor
        `(n_patches, 2)` patch centres in full-size pixels (row-major over the patch grid).
    skipped_reason : str or None
        Why no motion was fitted (e.g. a single frame); the model is then all zeros.
    cost_per_stage : list of float
        Normalised cost (0 = all frames agree) after each coarse-to-fine stage.
    binned_pixel_size_a : float or None
        Pixel size (Å) of the binned movie the fit ran on.
    global_jumps_a_yx : torch.Tensor or None
        `(n_frames, 2)` piecewise-constant part of the global track, Å: the sum of the sudden stage jumps
        detected before each frame (none: zeros). Added to the spline, which with fewer nodes than
        frames could not follow a step between two frames.
    """

    shape_yx: tuple[int, int]
    pixel_size_a: float
    n_frames: int
    global_values_a_yx: torch.Tensor
    local_values_a_yx: torch.Tensor
    patch_centers_px_yx: torch.Tensor
    skipped_reason: str | None = None
    cost_per_stage: list[float] = field(default_factory=list)
    binned_pixel_size_a: float | None = None
    global_jumps_a_yx: torch.Tensor | None = None

    # ---- evaluation -----------------------------------------------------------------------------
    def global_displacement_a_yx(self, frame_index: torch.Tensor | int | None = None) -> torch.Tensor:
        """Global displacement `(n, 2)` in Å at ``frame_index`` (default: every frame)."""
        if frame_index is None:
            frame_index = torch.arange(self.n_frames)
        t = _frame_coords(frame_index, self.n_frames, self.global_values_a_yx.device)
        w = natural_spline_weights_1d(self.global_values_a_yx.shape[1], t)
        track = w @ self.global_values_a_yx.T
        if self.global_jumps_a_yx is not None:
            index = torch.as_tensor(frame_index, device=track.device).reshape(-1).round().long()
            track = track + self.global_jumps_a_yx.to(track.device)[index.clamp(0, self.n_frames - 1)]
        return track

    def local_displacement_a_yx(
        self, coords_px_yx: torch.Tensor, frame_index: torch.Tensor | int
    ) -> torch.Tensor:
        """Local part `(n, 2)` in Å at scattered ``coords_px_yx`` `(n, 2)` and frames (int or `(n,)`)."""
        coords = torch.as_tensor(coords_px_yx, dtype=torch.float32, device=self.local_values_a_yx.device)
        coords = coords.reshape(-1, 2)
        t = _frame_coords(frame_index, self.n_frames, coords.device).expand(coords.shape[0])
        h, w = self.shape_yx
        v = coords[:, 0] / max(1, h - 1)
        u = coords[:, 1] / max(1, w - 1)
        _, zt, zy, zx = self.local_values_a_yx.shape
        wt = natural_spline_weights_1d(zt, t)
        wy = natural_spline_weights_1d(zy, v)
        wx = natural_spline_weights_1d(zx, u)
        return torch.einsum("ctyx,nt,ny,nx->nc", self.local_values_a_yx, wt, wy, wx)

    def displacement_a_yx(self, coords_px_yx: torch.Tensor, frame_index: torch.Tensor | int) -> torch.Tensor:
        """Total (global + local) displacement `(n, 2)` in Å.

        Parameters
        ----------
        coords_px_yx : torch.Tensor
            `(n, 2)` positions in full-size pixels (row, column).
        frame_index : int or torch.Tensor
            A frame for all points, or `(n,)` one per point.
        """
        local = self.local_displacement_a_yx(coords_px_yx, frame_index)
        glob = self.global_displacement_a_yx(frame_index)
        return local + glob.expand_as(local)

    def displacement_field_a_yx(
        self, frame_index: int, grid_shape_yx: tuple[int, int] = (16, 16)
    ) -> torch.Tensor:
        """Total displacement `(2, gy, gx)` in Å on a regular grid spanning the frame (Warp: 16×16)."""
        gy, gx = grid_shape_yx
        t = _frame_coords(frame_index, self.n_frames, self.local_values_a_yx.device)
        _, zt, zy, zx = self.local_values_a_yx.shape
        wt = natural_spline_weights_1d(zt, t)
        dev = self.local_values_a_yx.device
        wy = natural_spline_weights_1d(zy, torch.linspace(0, 1, gy, device=dev))
        wx = natural_spline_weights_1d(zx, torch.linspace(0, 1, gx, device=dev))
        local = torch.einsum("ctyx,nt,Yy,Xx->cYX", self.local_values_a_yx, wt, wy, wx)
        return local + self.global_displacement_a_yx(frame_index)[0][:, None, None]

    def patch_tracks_a_yx(self) -> torch.Tensor:
        """Total displacement `(n_patches, n_frames, 2)` in Å at every patch centre."""
        n = self.patch_centers_px_yx.shape[0]
        frames = torch.arange(self.n_frames)
        coords = self.patch_centers_px_yx[:, None, :].expand(n, self.n_frames, 2).reshape(-1, 2)
        idx = frames[None, :].expand(n, self.n_frames).reshape(-1)
        return self.displacement_a_yx(coords, idx).reshape(n, self.n_frames, 2)

    # ---- statistics (warp-facts.md §1.8) --------------------------------------------------------
    @property
    def mean_frame_movement_a(self) -> float:
        """Warp's MeanFrameMovement: mean frame-to-frame step (Å) of the track at the image centre over
        the first max(1, floor((n − 1)/3)) steps."""
        if self.n_frames < 2:
            return 0.0
        h, w = self.shape_yx
        centre = torch.tensor([[(h - 1) / 2.0, (w - 1) / 2.0]]).expand(self.n_frames, 2)
        track = self.displacement_a_yx(centre, torch.arange(self.n_frames))
        steps = torch.linalg.vector_norm(track[1:] - track[:-1], dim=-1)
        n = max(1, (self.n_frames - 1) // 3)
        return float(steps[:n].mean())

    @property
    def max_local_deviation_a(self) -> float:
        """Largest local deviation (Å): max over patches and frames of |local − its mean over frames|."""
        if self.n_frames < 2 or self.patch_centers_px_yx.shape[0] == 0:
            return 0.0
        tracks = self.patch_tracks_a_yx() - self.global_displacement_a_yx()[None]
        tracks = tracks - tracks.mean(1, keepdim=True)
        return float(torch.linalg.vector_norm(tracks, dim=-1).max())

    @property
    def total_drift_a(self) -> float:
        """Path length (Å) of the global track over all frames."""
        if self.n_frames < 2:
            return 0.0
        g = self.global_displacement_a_yx()
        return float(torch.linalg.vector_norm(g[1:] - g[:-1], dim=-1).sum())

    def stats(self) -> dict:
        """Scalar statistics as plain JSON."""
        return {
            "mean_frame_movement_a": self.mean_frame_movement_a,
            "max_local_deviation_a": self.max_local_deviation_a,
            "total_drift_a": self.total_drift_a,
        }

    # ---- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain-JSON form (tensors as nested lists), including the statistics for readers."""
        return {
            "shape_yx": list(self.shape_yx),
            "pixel_size_a": self.pixel_size_a,
            "n_frames": self.n_frames,
            "global_values_a_yx": self.global_values_a_yx.detach().cpu().tolist(),
            "local_values_a_yx": self.local_values_a_yx.detach().cpu().tolist(),
            "patch_centers_px_yx": self.patch_centers_px_yx.detach().cpu().tolist(),
            "skipped_reason": self.skipped_reason,
            "cost_per_stage": list(self.cost_per_stage),
            "binned_pixel_size_a": self.binned_pixel_size_a,
            **(
                {"global_jumps_a_yx": self.global_jumps_a_yx.detach().cpu().tolist()}
                if self.global_jumps_a_yx is not None
                else {}
            ),
            "stats": self.stats(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> MotionModel:
        """Inverse of :meth:`to_dict` (the ``stats`` entry is recomputed, not read)."""
        centers = torch.tensor(d["patch_centers_px_yx"], dtype=torch.float32).reshape(-1, 2)
        return cls(
            shape_yx=(int(d["shape_yx"][0]), int(d["shape_yx"][1])),
            pixel_size_a=float(d["pixel_size_a"]),
            n_frames=int(d["n_frames"]),
            global_values_a_yx=torch.tensor(d["global_values_a_yx"], dtype=torch.float32),
            local_values_a_yx=torch.tensor(d["local_values_a_yx"], dtype=torch.float32),
            patch_centers_px_yx=centers,
            skipped_reason=d.get("skipped_reason"),
            cost_per_stage=[float(c) for c in d.get("cost_per_stage", [])],
            binned_pixel_size_a=d.get("binned_pixel_size_a"),
            global_jumps_a_yx=(
                torch.tensor(d["global_jumps_a_yx"], dtype=torch.float32).reshape(-1, 2)
                if d.get("global_jumps_a_yx") is not None
                else None
            ),
        )

    @classmethod
    def zeros(
        cls,
        shape_yx: tuple[int, int],
        pixel_size_a: float,
        n_frames: int,
        *,
        skipped_reason: str | None = None,
    ) -> MotionModel:
        """A model with no motion (used when estimation is skipped)."""
        return cls(
            shape_yx=tuple(shape_yx),
            pixel_size_a=pixel_size_a,
            n_frames=n_frames,
            global_values_a_yx=torch.zeros(2, 1),
            local_values_a_yx=torch.zeros(2, 1, 1, 1),
            patch_centers_px_yx=torch.tensor([[(shape_yx[0] - 1) / 2.0, (shape_yx[1] - 1) / 2.0]]),
            skipped_reason=skipped_reason,
        )
