"""True specimen motion: global drift with jumps plus a smooth local deformation, exactly evaluable.

d_f(x) = g_f + Σ_m a_m · p_m(f) · cos(2π (k_m · x / size) + θ_m)

* g_f `(F, 2)` Å yx, the global displacement, with mean 0 over frames (the gauge of api-contracts.md);
* each local mode m has an integer number of cycles across the image (k_m, so it averages to exactly 0
  over the pixel grid: the global part *is* the spatial mean of d), a random phase θ_m, a yx amplitude
  a_m in Å and a temporal profile p_m(f) of mean 0 over frames (beam-induced motion: fast at first).
So every specimen point sits, on average over the exposure, where it is in the clean image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MotionField:
    """The motion of one movie; pure data (lists of floats) so it survives JSON."""

    shape_yx: tuple[int, int]
    global_a_yx: tuple[tuple[float, float], ...]  # (F, 2)
    mode_cycles_yx: tuple[tuple[int, int], ...]  # (M, 2)
    mode_phase_rad: tuple[float, ...]  # (M,)
    mode_amplitude_a_yx: tuple[tuple[float, float], ...]  # (M, 2)
    mode_profile: tuple[tuple[float, ...], ...]  # (M, F)

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return len(self.global_a_yx)

    def global_displacement_a_yx(self) -> torch.Tensor:
        """`(F, 2)` float64 global displacement in Å."""
        return torch.tensor(self.global_a_yx, dtype=torch.float64).reshape(-1, 2)

    def local_displacement_a_yx(
        self, coords_px_yx: torch.Tensor, frame_index: torch.Tensor | int
    ) -> torch.Tensor:
        """Local part only at ``coords_px_yx`` `(N, 2)` and frames `(N,)` or int → `(N, 2)` Å."""
        coords = torch.as_tensor(coords_px_yx, dtype=torch.float64).reshape(-1, 2)
        frames = torch.as_tensor(frame_index, dtype=torch.long).reshape(-1).expand(coords.shape[0])
        out = torch.zeros_like(coords)
        if not self.mode_phase_rad:
            return out
        h, w = self.shape_yx
        cycles = torch.tensor(self.mode_cycles_yx, dtype=torch.float64)  # (M, 2)
        phase = torch.tensor(self.mode_phase_rad, dtype=torch.float64)
        amp = torch.tensor(self.mode_amplitude_a_yx, dtype=torch.float64)
        profile = torch.tensor(self.mode_profile, dtype=torch.float64)  # (M, F)
        arg = (
            2
            * math.pi
            * (coords[:, None, 0] * cycles[None, :, 0] / h + coords[:, None, 1] * cycles[None, :, 1] / w)
        )
        spatial = torch.cos(arg + phase[None, :])  # (N, M)
        temporal = profile[:, frames].T  # (N, M)
        return torch.einsum("nm,nm,mc->nc", spatial, temporal, amp)

    def displacement_a_yx(self, coords_px_yx: torch.Tensor, frame_index: torch.Tensor | int) -> torch.Tensor:
        """Total displacement d_f(x) (global + local) in Å yx at frame pixels ``coords_px_yx`` `(N, 2)`."""
        coords = torch.as_tensor(coords_px_yx, dtype=torch.float64).reshape(-1, 2)
        frames = torch.as_tensor(frame_index, dtype=torch.long).reshape(-1).expand(coords.shape[0])
        if len(frames) and (int(frames.min()) < 0 or int(frames.max()) >= self.n_frames):
            raise IndexError(
                f"frame_index out of range: expected 0..{self.n_frames - 1}, found "
                f"{int(frames.min())}..{int(frames.max())}"
            )
        return self.global_displacement_a_yx()[frames] + self.local_displacement_a_yx(coords, frames)

    def local_field_px_yx(
        self,
        frame_index: int,
        pixel_size_a: float,
        shape_yx: tuple[int, int],
        device: torch.device | None = None,
    ) -> torch.Tensor:
        """Local displacement in px at every pixel of a frame, `(2, H, W)` float32, evaluated exactly.

        cos(a·y + b·x + θ) = cos(a·y)·cos(b·x + θ) − sin(a·y)·sin(b·x + θ), so the field of all modes is
        one `(H, 2M) @ (2M, W)` product per component.
        """
        h, w = shape_yx
        out = torch.zeros((2, h, w), dtype=torch.float32, device=device)
        if not self.mode_phase_rad:
            return out
        y = torch.arange(h, dtype=torch.float64)
        x = torch.arange(w, dtype=torch.float64)
        left, right = [], []
        for (cy, cx), theta, prof in zip(
            self.mode_cycles_yx, self.mode_phase_rad, self.mode_profile, strict=True
        ):
            ay, bx = 2 * math.pi * cy * y / self.shape_yx[0], 2 * math.pi * cx * x / self.shape_yx[1]
            left += [torch.cos(ay) * prof[frame_index], -torch.sin(ay) * prof[frame_index]]
            right += [torch.cos(bx + theta), torch.sin(bx + theta)]
        left_m = torch.stack(left, 1)  # (H, 2M)
        right_m = torch.stack(right, 0)  # (2M, W)
        amp = torch.tensor(self.mode_amplitude_a_yx, dtype=torch.float64) / pixel_size_a  # (M, 2)
        for c in range(2):
            weights = amp[:, c].repeat_interleave(2)  # (2M,)
            out[c] = ((left_m * weights[None, :]) @ right_m).to(device=device, dtype=torch.float32)
        return out

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return {
            "shape_yx": list(self.shape_yx),
            "global_a_yx": [list(v) for v in self.global_a_yx],
            "mode_cycles_yx": [list(v) for v in self.mode_cycles_yx],
            "mode_phase_rad": list(self.mode_phase_rad),
            "mode_amplitude_a_yx": [list(v) for v in self.mode_amplitude_a_yx],
            "mode_profile": [list(v) for v in self.mode_profile],
        }

    @classmethod
    def from_dict(cls, d: dict) -> MotionField:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(d["shape_yx"]),
            tuple(tuple(v) for v in d["global_a_yx"]),
            tuple(tuple(int(c) for c in v) for v in d["mode_cycles_yx"]),
            tuple(d["mode_phase_rad"]),
            tuple(tuple(v) for v in d["mode_amplitude_a_yx"]),
            tuple(tuple(v) for v in d["mode_profile"]),
        )


def generate_motion(s, generator: torch.Generator) -> MotionField:
    """Draw a global track and a local deformation from the settings (see the module docstring)."""
    n = s.n_frames
    t = torch.arange(n, dtype=torch.float64) + 0.5  # mid-frame times in frames
    u = lambda k: torch.rand(k, generator=generator, dtype=torch.float64)  # noqa: E731
    angles = 2 * math.pi * u(3)
    direction = lambda a: torch.stack([torch.sin(a), torch.cos(a)])  # noqa: E731  yx unit vector
    # fast initial beam-induced motion decaying with a time constant of a few frames, then steady drift
    tau = 1.0 + 3.0 * float(u(1))
    initial = s.initial_motion_a * (1 - torch.exp(-t / tau))[:, None] * direction(angles[0])[None]
    drift = s.drift_a_per_frame * t[:, None] * direction(angles[1])[None]
    # a gentle wobble (smooth, sub-Å) so the track is not a straight line
    wobble = (
        0.3
        * torch.sin(2 * math.pi * t / max(n, 2) + 2 * math.pi * float(u(1)))[:, None]
        * direction(angles[2])[None]
    )
    track = initial + drift + wobble
    for _ in range(s.n_jumps):
        at = 1 + int(float(u(1)) * max(n - 1, 1))
        a = 2 * math.pi * float(u(1))
        track[at:] += s.jump_a * torch.tensor([math.sin(a), math.cos(a)], dtype=torch.float64)
    track = track - track.mean(0, keepdim=True)

    cycles, phases, amps, profiles = [], [], [], []
    choices = [(0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0), (1, 2), (2, 1), (2, -1), (1, -2)]
    for m in range(s.local_n_modes if s.local_amplitude_a > 0 else 0):
        cycles.append(choices[int(float(u(1)) * len(choices)) % len(choices)] if m else choices[m])
        phases.append(2 * math.pi * float(u(1)))
        a = 2 * math.pi * float(u(1))
        scale = s.local_amplitude_a / math.sqrt(s.local_n_modes)
        amps.append((scale * math.sin(a), scale * math.cos(a)))
        tau_m = 1.0 + 6.0 * float(u(1))
        p = 1 - torch.exp(-t / tau_m)
        p = p - p.mean()
        p = p / p.abs().max().clamp_min(1e-12)
        profiles.append(tuple(p.tolist()))
    return MotionField(
        tuple(s.shape_yx),
        tuple(tuple(v) for v in track.tolist()),
        tuple(cycles),
        tuple(phases),
        tuple(amps),
        tuple(profiles),
    )
