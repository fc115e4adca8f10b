"""``ItemResult``: what processing one movie hands back to the coordinator (plain JSON, any machine)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["ItemResult", "SCALAR_FIELDS"]

#: Scalar results kept per item in the store (and shown/filtered in the UI), with their units.
SCALAR_FIELDS: dict[str, str] = {
    "defocus_um": "mean defocus, µm, positive = underfocus",
    "defocus_delta_um": "astigmatism, full U − V difference in µm",
    "astigmatism_angle_deg": "angle of U from the x axis, degrees",
    "phase_shift_deg": "phase shift, degrees",
    "resolution_a": "CTF fit resolution estimate, Å",
    "mean_motion_a": "mean frame-to-frame movement, Å",
    "mask_percentage": "BoxNet-masked area, %",
    "n_particles": "particles exported (or picked when export is off)",
}


@dataclass(frozen=True)
class ItemResult:
    """Outcome of processing one movie.

    Attributes
    ----------
    name : str
        Item name (the movie's file stem, unique in a project).
    path : str
        The movie file.
    ok : bool
        False when any stage failed; ``error`` then says which and why.
    error : str or None
        ``"<stage>: <message>"`` of the first failure.
    stages_run : tuple of str
        Stages computed in this call (others were reused from earlier results on disk).
    stage_hashes : dict of str to str
        Settings hash of every stage whose result is now current (see ``settings.stage_hashes``).
    n_frames, shape_yx, pixel_size_a
        What the movie turned out to be.
    defocus_um ... n_particles
        Scalar results (see :data:`SCALAR_FIELDS`); None when the stage did not run.
    picks_px_xy_score : list of [x, y, score]
        BoxNet picks in px of the full-size micrograph.
    particles : list of dict
        One row per particle in the stack, in stack order: ``x_px, y_px, defocus_u_um,
        defocus_v_um, astigmatism_angle_deg, phase_shift_deg, score, source``.
    particle_stack : str or None
        Stack path relative to the project folder.
    particle_pixel_size_a, particle_box_px
        Pixel size and box of the stack.
    artifacts : dict of str to str
        Files written for this item, relative to the project folder (average, thumbnail, spectrum, ...).
    timings_s : dict of str to float
        Wall time per stage.
    """

    name: str
    path: str
    ok: bool = True
    error: str | None = None
    stages_run: tuple[str, ...] = ()
    stage_hashes: dict[str, str] = field(default_factory=dict)
    n_frames: int | None = None
    shape_yx: tuple[int, int] | None = None
    pixel_size_a: float | None = None
    defocus_um: float | None = None
    defocus_delta_um: float | None = None
    astigmatism_angle_deg: float | None = None
    phase_shift_deg: float | None = None
    resolution_a: float | None = None
    mean_motion_a: float | None = None
    mask_percentage: float | None = None
    n_particles: int | None = None
    picks_px_xy_score: list[list[float]] = field(default_factory=list)
    particles: list[dict[str, Any]] = field(default_factory=list)
    particle_stack: str | None = None
    particle_pixel_size_a: float | None = None
    particle_box_px: int | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = asdict(self)
        d["stages_run"] = list(self.stages_run)
        d["shape_yx"] = list(self.shape_yx) if self.shape_yx is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ItemResult:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["stages_run"] = tuple(kw.get("stages_run", ()))
        if kw.get("shape_yx") is not None:
            kw["shape_yx"] = tuple(kw["shape_yx"])
        return cls(**kw)

    def scalars(self) -> dict[str, float | int | None]:
        """The :data:`SCALAR_FIELDS` values."""
        return {k: getattr(self, k) for k in SCALAR_FIELDS}
