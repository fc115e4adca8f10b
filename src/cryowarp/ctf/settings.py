"""Settings of CTF estimation, with Warp's defaults (warp-facts.md §2, §7.2)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CTFSettings(BaseModel):
    """How to fit the CTF of one micrograph or movie.

    Defaults are Warp's (warp-facts.md §2.2–2.5, §7.2): 300 kV, Cs 2.7 mm, amplitude contrast 0.07,
    fit range 30–4 Å, defocus search 0.5–5 µm in 0.01 µm steps (WarpTools), spectrum window 512 px
    from 1024 px patches with 50 % overlap, a 5 × 5 × 1 defocus grid. Phase-shift fitting is off
    (WarpTools' default; Warp's GUI turns it on).

    Attributes
    ----------
    voltage_kv, cs_mm, amplitude_contrast
        Microscope: acceleration voltage (kV), spherical aberration (mm), amplitude contrast (fraction).
    window : int
        Side of the spectra in px; patches are ``2 * window`` px with 50 % overlap.
    range_min_a, range_max_a : float
        Fit range, low- and high-resolution ends in Å (range_max_a beyond Nyquist is clipped).
    defocus_min_um, defocus_max_um, defocus_step_um : float
        1D exhaustive search over mean defocus (positive = underfocus).
    fit_phase : bool
        Also fit a phase-plate shift (searched over 0–180° in ``phase_step_deg`` steps).
    phase_step_deg : float
        Phase search step; Warp's 0.01 π = 1.8°.
    grid_xyt : tuple of int
        Defocus grid nodes along x, y and time (Warp's X × Y × Z); capped by the number of patches
        and of frames. The phase grid is ``1 × 1 × t``.
    use_movie_sum : bool
        For movies: take spectra of the frame sum instead of summing per-frame spectra.
    frames_per_spectrum : int
        For movies (ours): consecutive frames summed before each amplitude spectrum; the spectra of
        these frame blocks are then summed. 1 is Warp's per-frame spectra; the default 4 costs a
        quarter of the Fourier transforms (a 4096² × 40 movie: 490 instead of 1960 of 1024² px)
        while motion within 4 frames (typically ≲ 2 Å) barely blurs the 4 Å rings.
    max_iterations : int
        L-BFGS iterations of each 2D refinement pass (Warp caps at 15).
    local_search_um : float
        Half-width of the per-patch defocus search around the global value (tilted specimens).
    max_astigmatism_um : float
        Largest full astigmatism U − V tried by the initial astigmatism search.
    quality_threshold : float
        Resolution estimate: first bin whose local fit quality drops below this (Warp: 0.3).
    quality_min_window : int
        Shortest window of the local fit-quality correlation, in bins (Warp: 16).
    large_window_above_um : float or None
        Ours, not Warp's: when the 1D search finds a mean defocus above this (µm) and the image holds
        at least 3 patches of ``4 * window`` px per axis (4096² px for the default window), the fit
        restarts with spectra of ``2 * window`` px from those patches. At high defocus the Thon
        rings near 4 Å are so closely spaced that 512-px spectra cannot resolve the astigmatism
        angle (one 3.4 µm case was off by 17°); 1024-px spectra halve the U − V error. The larger
        patches give fewer patches per axis, hence a coarser (still ≥ 2 × 2) defocus grid. ``None`` keeps ``window`` always.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    voltage_kv: float = Field(300.0, gt=0)
    cs_mm: float = Field(2.7, ge=0)
    amplitude_contrast: float = Field(0.07, ge=0, lt=1)
    window: int = Field(512, ge=32)
    range_min_a: float = Field(30.0, gt=0)
    range_max_a: float = Field(4.0, gt=0)
    defocus_min_um: float = 0.5
    defocus_max_um: float = 5.0
    defocus_step_um: float = Field(0.01, gt=0)
    fit_phase: bool = False
    phase_step_deg: float = Field(1.8, gt=0)
    grid_xyt: tuple[int, int, int] = (5, 5, 1)
    use_movie_sum: bool = False
    frames_per_spectrum: int = Field(4, ge=1)
    max_iterations: int = Field(15, ge=1)
    local_search_um: float = Field(0.6, ge=0)
    max_astigmatism_um: float = Field(0.6, ge=0)
    quality_threshold: float = 0.3
    quality_min_window: int = Field(16, ge=3)
    large_window_above_um: float | None = 2.5

    @model_validator(mode="after")
    def _check(self) -> CTFSettings:
        if self.window % 2:
            raise ValueError(f"CTFSettings.window must be even, found {self.window}")
        if self.range_max_a >= self.range_min_a:
            raise ValueError(
                f"CTFSettings: range_max_a ({self.range_max_a} Å, high-resolution end) must be smaller than "
                f"range_min_a ({self.range_min_a} Å, low-resolution end)"
            )
        if self.defocus_max_um <= self.defocus_min_um:
            raise ValueError(
                f"CTFSettings: defocus_max_um ({self.defocus_max_um}) must exceed defocus_min_um "
                f"({self.defocus_min_um})"
            )
        if min(self.grid_xyt) < 1:
            raise ValueError(f"CTFSettings.grid_xyt needs at least 1 node per axis, found {self.grid_xyt}")
        return self
