"""Processing settings of a project, their per-stage hashes, and which stages a change makes outdated.

A project's settings are one :class:`ProcessingSettings` (a frozen pydantic model, saved as
``<project>/settings.json`` and in the store). It is composed of the stage settings (motion, CTF,
picking, export), the quality filter and the input description (pixel size, exposure, gain, optics).

Outdated detection (warp-facts.md §7.3): every stage result stored in the project carries the hash of
the settings that produced it. :func:`stage_hashes` chains the hashes along the stage graph
(:data:`STAGE_DEPENDS_ON`), so a change in one stage's settings changes the hash of that stage *and of
every stage downstream of it*; a result is outdated exactly when its stored hash differs from the
current one. Filter settings are not part of any stage hash: filtering never reprocesses.

Example::

    from cryowarp.pipeline.settings import ProcessingSettings, outdated_stages
    old = ProcessingSettings()
    new = old.updated({"pick": {"threshold": 0.7}})
    outdated_stages(old, new)          # ["pick", "export"]
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_jsonable_python

from cryowarp.ctf.settings import CTFSettings
from cryowarp.export.settings import ExportSettings
from cryowarp.motion.settings import MotionSettings
from cryowarp.picking import PickSettings

__all__ = [
    "SETTINGS_VERSION",
    "STAGES",
    "STAGE_DEPENDS_ON",
    "InputSettings",
    "FilterSettings",
    "ProcessingSettings",
    "MotionSettings",
    "CTFSettings",
    "canonical_json",
    "settings_hash",
    "stage_hashes",
    "outdated_stages",
    "downstream_of",
    "load_settings",
    "save_settings",
    "split_unknown_settings",
    "UnknownSettingsWarning",
    "warn_unknown_settings",
]

SETTINGS_VERSION = 1

#: Processing stages in the order they run for one movie.
STAGES: tuple[str, ...] = ("motion", "ctf", "pick", "export")

#: Direct upstream stages of each stage. Motion reads the movie (input settings); CTF is fitted on the
#: motion-corrected data; BoxNet picks on the aligned average; export needs all three.
STAGE_DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "motion": (),
    "ctf": ("motion",),
    "pick": ("motion",),
    "export": ("motion", "ctf", "pick"),
}


class InputSettings(BaseModel):
    """What the movies are: pixel size, exposure, gain (Warp's Import settings, §7.2).

    The optics (voltage, Cs, amplitude contrast) live in ``ProcessingSettings.ctf`` (one place).

    Every field here feeds the first stage (motion), so changing any of them outdates all stages.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pixel_size_a: float | None = Field(
        None, gt=0, description="movie pixel size in Å/px; None = read it from the file header"
    )
    exposure_per_frame_e_per_a2: float = Field(1.0, gt=0, description="exposure per frame in e⁻/Å²")
    gain_path: str | None = Field(None, description="gain reference (MRC/TIFF), multiplied into every frame")
    gain_flip_x: bool = Field(False, description="flip the gain reference along x")
    gain_flip_y: bool = Field(False, description="flip the gain reference along y")
    gain_transpose: bool = Field(False, description="transpose the gain reference")
    defects_path: str | None = Field(None, description="defect map (nonzero = bad pixel)")
    eer_upsampling: int = Field(1, ge=1, le=4, description="EER super-resolution factor (1, 2 or 4)")
    eer_group: int | None = Field(
        None,
        description="Warp's signed EERGroupFrames: > 0 raw frames per frame, < 0 minus the number of "
        "frames; None = 40 frames (WarpTools)",
    )
    patterns: tuple[str, ...] = Field(
        ("*.mrc", "*.mrcs", "*.tif", "*.tiff", "*.eer"), description="file name patterns taken as movies"
    )
    recursive: bool = Field(False, description="also look in sub-folders")


class FilterSettings(BaseModel):
    """Quality filter (Warp's UpdateFilterResult, warp-facts.md §7.4). Never triggers reprocessing.

    A criterion whose value an item lacks (stage not run) does not reject it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    defocus_min_um: float = Field(0.0, description="minimum mean defocus in µm (Warp 0)")
    defocus_max_um: float = Field(5.0, description="maximum mean defocus in µm (Warp 5)")
    astigmatism_max_sigma: float = Field(
        3.0,
        ge=0,
        description="max distance of (ΔD cos 2φ, ΔD sin 2φ) from the dataset mean, in s.d. (Warp 3)",
    )
    resolution_max_a: float = Field(
        5.0, gt=0, description="worst accepted CTF resolution estimate in Å (Warp 5)"
    )
    phase_min_deg: float = Field(0.0, description="minimum phase shift in degrees (Warp 0·π)")
    phase_max_deg: float = Field(180.0, description="maximum phase shift in degrees (Warp 1·π)")
    filter_phase: bool = Field(False, description="apply the phase range (Warp: only when phase is fitted)")
    motion_max_a: float = Field(5.0, ge=0, description="maximum mean frame movement in Å (Warp 5)")
    particles_min: int = Field(1, ge=0, description="minimum particle count (Warp 1)")
    mask_percentage_max: float = Field(10.0, ge=0, description="maximum masked area in % (Warp 10)")


class ProcessingSettings(BaseModel):
    """All settings of a project (versioned); saved as ``<project>/settings.json``.

    Attributes
    ----------
    version : int
        Schema version (:data:`SETTINGS_VERSION`).
    input : InputSettings
        Pixel size, exposure per frame, gain, file patterns.
    motion, ctf, pick, export : stage settings
        ``ctf`` also holds the optics (voltage, Cs, amplitude contrast).
        ``cryowarp.motion.MotionSettings``, ``cryowarp.ctf.CTFSettings``,
        ``cryowarp.picking.PickSettings``, ``cryowarp.export.ExportSettings``.
    filter : FilterSettings
        Quality filter; changing it re-evaluates filters and STAR files, never reprocesses.
    boxnet_model_path : str or None
        BoxNet weights to pick with (part of the pick stage's hash: a retrained model re-picks).
    picks_star_dir : str or None
        Take picks from RELION coordinate files instead of BoxNet (e.g. another picker's output).
    do_motion, do_ctf, do_pick, do_export : bool
        Which stages run (Warp's ProcessMovement / ProcessCTF / ProcessPicking); without motion the
        frames are averaged unaligned; without CTF the particles carry no defocus.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = SETTINGS_VERSION
    input: InputSettings = Field(default_factory=InputSettings)
    motion: MotionSettings = Field(default_factory=MotionSettings)
    ctf: CTFSettings = Field(default_factory=CTFSettings)
    pick: PickSettings = Field(default_factory=PickSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    filter: FilterSettings = Field(default_factory=FilterSettings)
    boxnet_model_path: str | None = Field(
        None, description="BoxNet weights (.pt) to pick with; None = the general model shipped with cryowarp"
    )
    picks_star_dir: str | None = Field(
        None,
        description="folder of RELION coordinate STAR files <movie stem>*.star (rlnCoordinateX/Y in px "
        "of the movie); when set, the pick stage reads these instead of running BoxNet",
    )
    do_motion: bool = Field(
        True,
        description="fit motion (off: frames are averaged as they are, as Warp's ProcessMovement = false)",
    )
    do_ctf: bool = True
    do_pick: bool = True
    do_export: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProcessingSettings:
        """Validate a plain dict (e.g. from settings.json or the UI); raises ``ValueError`` on bad input."""
        version = d.get("version", SETTINGS_VERSION)
        if version > SETTINGS_VERSION:
            raise ValueError(
                f"settings version {version} is newer than this cryowarp understands "
                f"({SETTINGS_VERSION}); upgrade cryowarp"
            )
        return cls.model_validate(d)

    def updated(self, changes: dict[str, Any]) -> ProcessingSettings:
        """A copy with ``changes`` merged in (nested dicts merge per section), validated."""
        return ProcessingSettings.from_dict(_deep_merge(self.to_dict(), changes))

    def enabled_stages(self) -> tuple[str, ...]:
        """The stages that run under these settings, in order."""
        on = {
            "motion": True,
            "ctf": self.do_ctf,
            "pick": self.do_pick,
            "export": self.do_export and self.do_pick,
        }
        return tuple(s for s in STAGES if on[s])


def _deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal content gives equal text whatever the key order."""
    value = to_jsonable_python(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def settings_hash(value: Any) -> str:
    """16-hex-digit SHA-256 of :func:`canonical_json` (ignores key order)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def stage_hashes(settings: ProcessingSettings) -> dict[str, str]:
    """Hash of each stage's settings chained with its upstream stages' hashes.

    The motion hash covers the input settings (pixel size, gain, exposure, ...) and MotionSettings; CTF
    covers its settings plus the motion hash, and so on, so a change propagates downstream.
    Pixel size and optics are also folded into the CTF and export hashes through the chain.
    """
    own: dict[str, Any] = {
        "motion": {"input": settings.input, "motion": settings.motion, "do_motion": settings.do_motion},
        "ctf": settings.ctf,
        "pick": {
            "pick": settings.pick,
            "boxnet_model_path": settings.boxnet_model_path,
            "picks_star_dir": settings.picks_star_dir,
        },
        "export": settings.export,
    }
    hashes: dict[str, str] = {}
    for stage in STAGES:
        parts = {
            "own": canonical_json(own[stage]),
            "upstream": {up: hashes[up] for up in STAGE_DEPENDS_ON[stage]},
        }
        hashes[stage] = settings_hash(parts)
    return hashes


def downstream_of(stage: str) -> tuple[str, ...]:
    """``stage`` and every stage that depends on it (transitively), in run order."""
    if stage not in STAGE_DEPENDS_ON:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    hit = {stage}
    for s in STAGES:
        if any(up in hit for up in STAGE_DEPENDS_ON[s]):
            hit.add(s)
    return tuple(s for s in STAGES if s in hit)


def outdated_stages(old: ProcessingSettings, new: ProcessingSettings) -> list[str]:
    """Stages whose results under ``old`` are outdated under ``new`` (changed ones and downstream)."""
    old_h, new_h = stage_hashes(old), stage_hashes(new)
    return [s for s in STAGES if old_h[s] != new_h[s]]


def save_settings(path: str | Path, settings: ProcessingSettings) -> Path:
    """Write settings JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(settings.to_dict(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


class UnknownSettingsWarning(UserWarning):
    """Settings saved by a project held keys this cryowarp version does not know; they were dropped."""


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (also through ``Model | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def split_unknown_settings(
    data: dict[str, Any], model: type[BaseModel] | None = None, _prefix: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """Separate keys that ``model`` (default :class:`ProcessingSettings`) does not know, at every level.

    Returns
    -------
    known : dict
        ``data`` without the unknown keys (nested sections filtered the same way).
    unknown : list of str
        The dropped keys as dotted paths (e.g. ``"ctf.new_option"``), in the order found.
    """
    model = model or ProcessingSettings
    known: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            unknown.append(f"{_prefix}{key}")
            continue
        sub = _nested_model(field.annotation)
        if sub is not None and isinstance(value, dict):
            value, dropped = split_unknown_settings(value, sub, f"{_prefix}{key}.")
            unknown.extend(dropped)
        known[key] = value
    return known, unknown


def load_settings(path: str | Path, *, unknown: str = "error") -> ProcessingSettings:
    """Read a settings JSON written by :func:`save_settings` (or by hand; missing keys take defaults).

    Parameters
    ----------
    path : str or Path
        The JSON file.
    unknown : {"error", "warn"}
        Keys this version does not know: ``"error"`` (a user's ``--settings FILE``: a typo must not be
        ignored) raises ``ValueError`` naming them and the file; ``"warn"`` (settings a project saved,
        possibly by a newer cryowarp) drops them with an :class:`UnknownSettingsWarning`.
    """
    if unknown not in ("error", "warn"):
        raise ValueError(f"unknown must be 'error' or 'warn', got {unknown!r}")
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: settings file not found") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: expected a JSON settings file, found invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, found {type(data).__name__}")
    known, dropped = split_unknown_settings(data)
    if dropped and unknown == "error":
        raise ValueError(
            f"{path}: invalid settings — unknown setting{'s' if len(dropped) > 1 else ''} "
            f"{', '.join(map(repr, dropped))} "
            "(not a setting of this cryowarp version; check the spelling against `cryowarp settings PROJECT`)"
        )
    if dropped:
        warn_unknown_settings(dropped, str(path))
    try:
        return ProcessingSettings.from_dict(known)
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid settings — {exc}") from exc


def warn_unknown_settings(dropped: list[str], source: str) -> None:
    """Warn (:class:`UnknownSettingsWarning`) that ``dropped`` keys of ``source`` were ignored."""
    warnings.warn(
        f"{source}: ignoring setting{'s' if len(dropped) > 1 else ''} unknown to this cryowarp version: "
        f"{', '.join(dropped)} (saved by a newer version?); they are dropped when settings are next saved",
        UnknownSettingsWarning,
        stacklevel=3,
    )
