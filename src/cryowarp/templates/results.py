"""Results of template matching: every stored peak with its orientation, serialisable to JSON."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

__all__ = ["TemplateMatches", "CTFParameters"]


@dataclass(frozen=True)
class CTFParameters:
    """The CTF used to filter the data or modulate the template (warp-facts.md §0 conventions).

    ``defocus_um`` positive = underfocus; ``defocus_delta_um`` is the full U − V difference;
    the astigmatism angle is that of U from +x, degrees.
    """

    defocus_um: float
    defocus_delta_um: float = 0.0
    astigmatism_angle_deg: float = 0.0
    phase_shift_deg: float = 0.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07

    @classmethod
    def from_model(cls, model) -> CTFParameters:
        """Take the fields of any object or mapping with our CTF names (e.g. a ``CTFModel``)."""

        def get(name, default):
            value = model.get(name, default) if isinstance(model, dict) else getattr(model, name, default)
            if isinstance(value, torch.Tensor):
                value = float(value.float().mean())
            return float(value) if value is not None else default

        return cls(
            **{
                name: get(name, default)
                for name, default in (
                    ("defocus_um", None),
                    ("defocus_delta_um", 0.0),
                    ("astigmatism_angle_deg", 0.0),
                    ("phase_shift_deg", 0.0),
                    ("voltage_kv", 300.0),
                    ("cs_mm", 2.7),
                    ("amplitude_contrast", 0.07),
                )
            }
        )

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> CTFParameters:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


@dataclass(frozen=True)
class TemplateMatches:
    """Peaks of a template search: positions, RELION Euler angles and scores, best first.

    Attributes
    ----------
    coords_px : torch.Tensor
        `(n, 2)` (x, y) in pixels of the input micrograph, or `(n, 3)` (x, y, z) in voxels of the
        input tomogram (RELION rlnCoordinateX/Y/Z; not Warp's fractions, see warp-facts.md §10.9).
    euler_deg : torch.Tensor
        `(n, 3)` rot, tilt, psi in degrees (RELION ZYZ): the template rotated by these matches.
    scores : torch.Tensor
        `(n,)` normalised cross-correlation in units of the background s.d. (rlnAutopickFigureOfMerit).
    pixel_size_a : float
        Pixel size of the coordinates, Å.
    diameter_a : float
        Particle diameter used, Å.
    angular_step_deg : float
        Sampling of the search.
    floor : float
        Scores at or below this were not stored; any threshold above it can be applied later.
    """

    coords_px: torch.Tensor
    euler_deg: torch.Tensor
    scores: torch.Tensor
    pixel_size_a: float
    diameter_a: float
    angular_step_deg: float
    floor: float
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        """Number of peaks."""
        return int(self.scores.shape[0])

    def above(self, threshold: float) -> TemplateMatches:
        """The peaks with score > ``threshold`` (no recomputation)."""
        keep = self.scores > threshold
        return replace(
            self, coords_px=self.coords_px[keep], euler_deg=self.euler_deg[keep], scores=self.scores[keep]
        )

    def top(self, n: int) -> TemplateMatches:
        """The ``n`` best peaks."""
        return replace(
            self, coords_px=self.coords_px[:n], euler_deg=self.euler_deg[:n], scores=self.scores[:n]
        )

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return {
            "coords_px": self.coords_px.tolist(),
            "euler_deg": self.euler_deg.tolist(),
            "scores": self.scores.tolist(),
            "pixel_size_a": self.pixel_size_a,
            "diameter_a": self.diameter_a,
            "angular_step_deg": self.angular_step_deg,
            "floor": self.floor,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict) -> TemplateMatches:
        """Inverse of :meth:`to_dict`."""
        coords = torch.tensor(d["coords_px"], dtype=torch.float64)
        ndim = coords.shape[1] if coords.ndim == 2 and len(coords) else d.get("meta", {}).get("ndim", 2)
        return cls(
            coords.reshape(-1, ndim),
            torch.tensor(d["euler_deg"], dtype=torch.float64).reshape(-1, 3),
            torch.tensor(d["scores"], dtype=torch.float32).reshape(-1),
            float(d["pixel_size_a"]),
            float(d["diameter_a"]),
            float(d["angular_step_deg"]),
            float(d["floor"]),
            dict(d.get("meta", {})),
        )
