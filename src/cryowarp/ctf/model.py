"""The fitted CTF of one micrograph: parameters, defocus grid, 1D curves, specimen plane."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from cryowarp.base.grids import CubicGrid
from cryowarp.base.units import ANGSTROM_PER_UM


def normalized_coords_xy(coords_px_xy: torch.Tensor, shape_yx: tuple[int, int]) -> torch.Tensor:
    """Pixel coordinates (x, y) → grid coordinates in [0, 1]: pixel 0 ↦ 0, pixel size − 1 ↦ 1."""
    h, w = shape_yx
    scale = torch.tensor([max(w - 1, 1), max(h - 1, 1)], dtype=torch.float32, device=coords_px_xy.device)
    return coords_px_xy.to(torch.float32) / scale


def ctf_chi_rad(
    defocus_um: torch.Tensor,
    astigmatism_um: torch.Tensor,
    phase_shift_rad: torch.Tensor,
    *,
    defocus_term: torch.Tensor,
    cs_term: torch.Tensor,
    cos2: torch.Tensor,
    sin2: torch.Tensor,
    amplitude_phase_rad: float,
) -> torch.Tensor:
    """Phase χ(k) + α of the CTF at Fourier pixels, for one defocus and phase shift per spectrum.

    CTF = −(√(1 − A²) sin χ + A cos χ) = −sin(χ + α) with α = atan2(A, √(1 − A²)), so the CTF² the
    2D fit correlates with is ``sin(ctf_chi_rad(...))²``. The body is dtype-agnostic: the L-BFGS cost
    calls it in float32, the per-patch finite differences in float64 (the one source of truth for χ).

    Parameters
    ----------
    defocus_um : torch.Tensor
        `(s,)` mean defocus of each spectrum, µm (underfocus positive).
    astigmatism_um : torch.Tensor
        `(2,)` astigmatism vector (a₁, a₂): the local defocus at pixel angle θ is
        D + a₁ cos 2θ + a₂ sin 2θ, so U − V = 2 |a| and the angle of U is ½ atan2(a₂, a₁).
    phase_shift_rad : torch.Tensor
        `(s,)` phase-plate shift of each spectrum, radians.
    defocus_term, cs_term, cos2, sin2 : torch.Tensor
        `(m,)` per pixel: π λ k² · 10⁴ (χ per µm of defocus), −π Cs λ³ k⁴ / 2, cos 2θ and sin 2θ.
    amplitude_phase_rad : float
        α above.

    Returns
    -------
    torch.Tensor
        `(s, m)` radians.
    """
    local = defocus_um[:, None] + astigmatism_um[0] * cos2 + astigmatism_um[1] * sin2
    return defocus_term * local + (cs_term + amplitude_phase_rad) + phase_shift_rad[:, None]


@dataclass(frozen=True)
class SpecimenPlane:
    """Plane fitted to the local defocus over the image.

    Attributes
    ----------
    inclination_deg : float
        Angle between the specimen plane and the image plane, ≥ 0.
    axis_deg : float
        Direction of the tilt axis (where defocus does not change), from +x towards +y, in [0, 180).
    gradient_azimuth_deg : float
        Direction in which underfocus increases, from +x towards +y, in [0, 360).
    gradient_a_per_a_xy : tuple of float
        d(defocus)/dx and d(defocus)/dy, Å of defocus per Å of image.
    """

    inclination_deg: float
    axis_deg: float
    gradient_azimuth_deg: float
    gradient_a_per_a_xy: tuple[float, float]


def fit_specimen_plane(
    grid: CubicGrid, shape_yx: tuple[int, int], pixel_size_a: float, n_samples: int = 16
) -> SpecimenPlane:
    """Least-squares plane through a defocus grid `(1, t, y, x)` (µm), sampled on ``n_samples``² points."""
    h, w = shape_yx
    ys = torch.linspace(0, h - 1, n_samples)
    xs = torch.linspace(0, w - 1, n_samples)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    coords = normalized_coords_xy(torch.stack([xx.reshape(-1), yy.reshape(-1)], -1), shape_yx)
    n_t = grid.resolution[0]
    t_coords = torch.linspace(0, 1, n_t) if n_t > 1 else torch.zeros(1)
    values = []
    for t in t_coords:
        full = torch.cat([t.expand(coords.shape[0], 1), coords.flip(-1)], dim=-1)  # (t, y, x)
        values.append(grid.evaluate(full.to(grid.values.device))[:, 0].detach().cpu())
    defocus_a = torch.stack(values).mean(0).double() * ANGSTROM_PER_UM
    design = torch.stack(
        [
            torch.ones_like(defocus_a),
            xx.reshape(-1).double() * pixel_size_a,
            yy.reshape(-1).double() * pixel_size_a,
        ],
        -1,
    )
    solution = torch.linalg.lstsq(design, defocus_a[:, None]).solution[:, 0]
    gx, gy = float(solution[1]), float(solution[2])
    magnitude = math.hypot(gx, gy)
    azimuth = math.degrees(math.atan2(gy, gx)) % 360.0 if magnitude > 0 else 0.0
    return SpecimenPlane(
        inclination_deg=math.degrees(math.atan(magnitude)),
        axis_deg=(azimuth + 90.0) % 180.0,
        gradient_azimuth_deg=azimuth,
        gradient_a_per_a_xy=(gx, gy),
    )


@dataclass(frozen=True)
class CTFModel:
    """Result of :func:`cryowarp.ctf.fit_ctf` (RELION/Warp conventions, docs/conventions.md).

    Attributes
    ----------
    defocus_um : float
        Mean defocus (mean of the grid nodes, as Warp), µm, positive = underfocus.
    defocus_delta_um : float
        Full astigmatism U − V ≥ 0, µm.
    astigmatism_angle_deg : float
        Angle of U from +x towards +y, degrees in [0, 180).
    phase_shift_deg : float
        Mean phase-plate shift in [0, 180) degrees (amplitude spectra cannot tell φ from φ + 180°).
    resolution_a : float
        Resolution to which Thon rings are fitted (warp-facts.md §2.7), Å.
    figure_of_merit : float
        Mean normalised correlation of the 2D fit over all spectra, in [−1, 1].
    voltage_kv, cs_mm, amplitude_contrast, pixel_size_a : float
        Microscope and sampling used.
    image_shape_yx : tuple of int
        Size of the fitted image; grid coordinates map pixel 0 → 0 and size − 1 → 1.
    defocus_grid_um : list
        Nested `[t][y][x]` defocus grid node values, µm (a :class:`cryowarp.base.grids.CubicGrid`).
    phase_grid_deg : list of float
        `[t]` phase-shift nodes, degrees.
    fit_range_a : tuple of float
        (low, high) resolution limits of the fit, Å.
    window : int
        Spectrum size in px; 1D curves have ``window // 2`` bins, bin i at i / (window · pixel) 1/Å.
    spectrum_1d, background_1d, envelope_1d, simulated_1d, quality_1d : list of float
        Astigmatism-corrected, background-subtracted 1D amplitude spectrum at the mean defocus; the
        background that was subtracted; the envelope; the simulated |CTF| × envelope; the local fit
        quality (NaN where undefined).
    plane : SpecimenPlane
        Plane through the defocus grid.
    """

    defocus_um: float
    defocus_delta_um: float
    astigmatism_angle_deg: float
    phase_shift_deg: float
    resolution_a: float
    figure_of_merit: float
    voltage_kv: float
    cs_mm: float
    amplitude_contrast: float
    pixel_size_a: float
    image_shape_yx: tuple[int, int]
    defocus_grid_um: list
    phase_grid_deg: list
    fit_range_a: tuple[float, float]
    window: int
    plane: SpecimenPlane
    spectrum_1d: list = field(default_factory=list)
    background_1d: list = field(default_factory=list)
    envelope_1d: list = field(default_factory=list)
    simulated_1d: list = field(default_factory=list)
    quality_1d: list = field(default_factory=list)

    # -- derived values -------------------------------------------------------------------------
    @property
    def defocus_u_um(self) -> float:
        """Larger principal defocus U = D + ΔD/2, µm."""
        return self.defocus_um + 0.5 * self.defocus_delta_um

    @property
    def defocus_v_um(self) -> float:
        """Smaller principal defocus V = D − ΔD/2, µm."""
        return self.defocus_um - 0.5 * self.defocus_delta_um

    @property
    def grid_shape_txy(self) -> tuple[int, int, int]:
        """Defocus grid nodes (t, y, x)."""
        values = torch.tensor(self.defocus_grid_um)
        return tuple(values.shape)  # type: ignore[return-value]

    def defocus_grid(self, device: torch.device | None = None) -> CubicGrid:
        """The defocus grid as a :class:`CubicGrid` `(1, t, y, x)`, µm."""
        values = torch.tensor(self.defocus_grid_um, dtype=torch.float32, device=device)[None]
        return CubicGrid(tuple(values.shape[1:]), 1, values=values)

    def frequencies_1d_per_a(self) -> torch.Tensor:
        """Frequencies of the 1D curves' bins, 1/Å."""
        return torch.arange(self.window // 2, dtype=torch.float32) / (self.window * self.pixel_size_a)

    def local_defocus_um(
        self, coords_px_xy: torch.Tensor, frame_fraction: float | None = None
    ) -> torch.Tensor:
        """Mean defocus at image positions.

        Parameters
        ----------
        coords_px_xy : torch.Tensor
            `(n, 2)` positions (x, y) in px of the fitted image (as rlnCoordinateX/Y).
        frame_fraction : float, optional
            Time in [0, 1] along the exposure for grids with several time nodes; default: the mean
            over the time nodes.

        Returns
        -------
        defocus_um : torch.Tensor
            `(n,)` on the device of ``coords_px_xy``, µm, positive = underfocus.
        """
        coords_px_xy = torch.as_tensor(coords_px_xy, dtype=torch.float32)
        if coords_px_xy.ndim != 2 or coords_px_xy.shape[-1] != 2:
            raise ValueError(f"coords_px_xy must have shape (n, 2), found {tuple(coords_px_xy.shape)}")
        grid = self.defocus_grid(device=coords_px_xy.device)
        uv = normalized_coords_xy(coords_px_xy, self.image_shape_yx)
        n_t = grid.resolution[0]
        if frame_fraction is not None or n_t == 1:
            times = [float(frame_fraction) if frame_fraction is not None else 0.0]
        else:
            times = torch.linspace(0, 1, n_t).tolist()
        out = []
        for t in times:
            full = torch.cat([torch.full_like(uv[:, :1], t), uv.flip(-1)], dim=-1)
            out.append(grid.evaluate(full)[:, 0])
        return torch.stack(out).mean(0).detach()

    def local_defocus_uv_um(self, coords_px_xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local (U, V) in µm at image positions: local mean ± ΔD/2 (the angle is global)."""
        mean = self.local_defocus_um(coords_px_xy)
        return mean + 0.5 * self.defocus_delta_um, mean - 0.5 * self.defocus_delta_um

    # -- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain-JSON dictionary (NaN in ``quality_1d`` become None)."""
        d = asdict(self)
        d["image_shape_yx"] = list(self.image_shape_yx)
        d["fit_range_a"] = list(self.fit_range_a)
        d["plane"]["gradient_a_per_a_xy"] = list(self.plane.gradient_a_per_a_xy)
        d["quality_1d"] = [None if (v is None or math.isnan(v)) else v for v in self.quality_1d]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CTFModel:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        plane = dict(d.pop("plane"))
        plane["gradient_a_per_a_xy"] = tuple(plane["gradient_a_per_a_xy"])
        d["image_shape_yx"] = tuple(d["image_shape_yx"])
        d["fit_range_a"] = tuple(d["fit_range_a"])
        d["quality_1d"] = [float("nan") if v is None else float(v) for v in d.get("quality_1d", [])]
        return cls(plane=SpecimenPlane(**plane), **d)
