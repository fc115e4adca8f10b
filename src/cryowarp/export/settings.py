"""Settings of 2-D particle export from movies (warp-facts.md §7.6)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ExportSettings(BaseModel):
    """Particle extraction settings, defaults as Warp's ``fs_export_particles`` / GUI (warp-facts §7.2, §7.6).

    Field names equal the keyword arguments of :func:`cryowarp.export.extract_particles_2d`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    box_size_px: int = Field(
        128, gt=0, description="output box in px of the output pixel size, even (Warp 128)"
    )
    particle_diameter_a: float = Field(
        200.0, gt=0, description="diameter D in Å; normalisation uses outside D/2"
    )
    output_pixel_size_a: float | None = Field(
        None, gt=0, description="pixel size of the stacks in Å (Warp --angpix_out); None = the movie's"
    )
    invert: bool = Field(True, description="multiply by −1 so particles are white (Warp: yes for cryo)")
    normalize: bool = Field(
        True, description="subtract a plane, then mean 0 / s.d. 1 outside D/2 (Warp: yes)"
    )
    flip_phases: bool = Field(
        False, description="pre-flip with sign(CTF) at the local defocus (--flip_phases)"
    )
    dose_weighted: bool = Field(
        True, description="per-frame B-factor weights normalised per frequency (§1.6)"
    )
    bfactor_per_e_a2: float = Field(-4.0, description="B_f = b·d·(f + ½) in Å² (Warp particle export: −4)")
    skip_first_frames: int = Field(0, ge=0, description="frames left out at the start")
    skip_last_frames: int = Field(0, ge=0, description="frames left out at the end")
    float16: bool = Field(
        False,
        description="write stacks as MRC mode 12 (Warp does by default; RELION 3.1 cannot read mode 12)",
    )

    @model_validator(mode="after")
    def _even_box(self) -> ExportSettings:
        if self.box_size_px % 2:
            raise ValueError(f"box_size_px must be even (Warp's rule), got {self.box_size_px}")
        return self
