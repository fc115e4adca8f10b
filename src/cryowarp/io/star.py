"""STAR files (RELION 3.0, 3.1+, 4, 5) and cryoSPARC ``.cs`` files, and the one mapping from our names
to RELION's.

Every conversion to RELION units happens here and nowhere else: defocus µm → Å (``rlnDefocusU/V``),
Warp's mean defocus ± half the full astigmatism difference, phase shift in degrees, and motion
displacements (Å, ``_yx``) → ``rlnMicrographShiftX/Y`` = −displacement / pixel size (px), following
docs/api-contracts.md ("Shift / motion convention").

Tables are pandas DataFrames. Key–value blocks (``data_general`` with no ``loop_``) are read as a
one-row DataFrame with ``df.attrs["star_pairs"] = True`` and written back as key–value blocks, so a
read → write → read round trip keeps the layout.

Example::

    from cryowarp.io.star import read_star, write_star, particles_star_tables, read_particles
    tables = read_star("particles.star")          # {"optics": DataFrame, "particles": DataFrame}
    write_star("copy.star", tables)               # atomic (temp file + rename)
    optics, particles = read_particles("old_relion30.star")   # any flavour, or a cryoSPARC .cs
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import starfile

from cryowarp.base.units import ANGSTROM_PER_UM
from cryowarp.io.errors import CorruptFileError, TruncatedFileError
from cryowarp.io.mrc import atomic_path

__all__ = [
    "RELION_NAMES",
    "read_star",
    "write_star",
    "star_flavour",
    "ParticleTables",
    "read_particles",
    "read_cryosparc_cs",
    "relion_image_name",
    "parse_relion_image_name",
    "ctf_to_star_row",
    "star_row_to_ctf",
    "optics_table",
    "micrographs_star_tables",
    "particles_star_tables",
    "motion_to_star_tables",
    "star_tables_to_motion",
]

# One mapping: our name -> RELION label(s). Units of ours in the name; RELION's units in the comment.
RELION_NAMES: dict[str, str | tuple[str, str]] = {
    "coords_px_xy": ("rlnCoordinateX", "rlnCoordinateY"),  # px of the micrograph
    "defocus_u_a": "rlnDefocusU",  # Å, RELION stores Å
    "defocus_v_a": "rlnDefocusV",
    "astigmatism_angle_deg": "rlnDefocusAngle",  # deg, angle of U from +x
    "phase_shift_deg": "rlnPhaseShift",  # deg
    "resolution_a": "rlnCtfMaxResolution",  # Å
    "voltage_kv": "rlnVoltage",  # kV
    "cs_mm": "rlnSphericalAberration",  # mm
    "amplitude_contrast": "rlnAmplitudeContrast",
    "image_pixel_size_a": "rlnImagePixelSize",
    "micrograph_pixel_size_a": "rlnMicrographPixelSize",
    "original_pixel_size_a": "rlnMicrographOriginalPixelSize",
    "box_size_px": "rlnImageSize",
    "optics_group": "rlnOpticsGroup",
    "optics_group_name": "rlnOpticsGroupName",
    "image_name": "rlnImageName",
    "micrograph_name": "rlnMicrographName",
    "euler_deg": ("rlnAngleRot", "rlnAngleTilt"),  # + rlnAnglePsi
    "origin_a_xy": ("rlnOriginXAngst", "rlnOriginYAngst"),
    "shift_px_xy": ("rlnMicrographShiftX", "rlnMicrographShiftY"),  # = −displacement / px
    "score": "rlnAutopickFigureOfMerit",
}

_TITLE = "# Written by cryowarp (io/star.py)"


# ----------------------------------------------------------------------------------------------
# reading and writing
# ----------------------------------------------------------------------------------------------
def read_star(path: str | Path) -> dict[str, pd.DataFrame]:
    """Read every data block of a STAR file.

    Parameters
    ----------
    path : str or Path
        The STAR file.

    Returns
    -------
    tables : dict of str to pandas.DataFrame
        Block name without ``data_`` (``""`` for a bare ``data_``) → table. Key–value blocks become
        one-row tables with ``attrs["star_pairs"] = True``.

    Raises
    ------
    FileNotFoundError, TruncatedFileError, CorruptFileError
        Missing, empty, or not parseable as STAR.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise TruncatedFileError(
            path,
            "expected a STAR file with at least one data_ block, file is empty "
            "(0 bytes) — still being written?",
        )
    text = path.read_text(errors="replace")
    if "data_" not in text:
        preview = text[:40]
        raise CorruptFileError(
            path, f"expected a STAR file with 'data_' blocks, found none (file starts with {preview!r})"
        )
    try:
        raw = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises assorted errors on malformed input
        raise CorruptFileError(path, f"not a readable STAR file ({type(exc).__name__}: {exc})") from exc
    tables: dict[str, pd.DataFrame] = {}
    for name, block in raw.items():
        if isinstance(block, pd.DataFrame):
            tables[name] = block
        else:
            df = pd.DataFrame({k: [v] for k, v in dict(block).items()})
            df.attrs["star_pairs"] = True
            tables[name] = df
    _check_loop_rows(path, text)
    return tables


def _check_loop_rows(path: Path, text: str) -> None:
    """A half-written file ends inside its last loop with a short last row: name it."""
    lines = [ln.strip() for ln in text.splitlines()]
    try:
        loop_at = max(i for i, ln in enumerate(lines) if ln.startswith("loop_"))
    except ValueError:
        return
    labels, i = 0, loop_at + 1
    while i < len(lines) and (lines[i].startswith("_") or not lines[i]):
        labels += bool(lines[i])
        i += 1
    rows = [ln for ln in lines[i:] if ln and not ln.startswith("#")]
    if not rows or labels == 0 or rows[-1].startswith("data_"):
        return
    try:
        n_values = len(shlex.split(rows[-1]))
    except ValueError:  # an unclosed quote is itself a sign of truncation
        n_values = -1
    if n_values < labels:
        raise TruncatedFileError(
            path,
            f"expected {labels} values in every row of the last loop, its last row (row {len(rows)}) has "
            f"{max(n_values, 0)} — truncated or still being written",
        )


def write_star(
    path: str | Path,
    tables: Mapping[str, pd.DataFrame | Mapping[str, Any]],
    *,
    relion_version: int | None = 30001,
    float_format: str = "%.12g",
) -> Path:
    """Write data blocks to a STAR file atomically (temp file + rename).

    Parameters
    ----------
    path : str or Path
        Destination.
    tables : mapping of str to DataFrame or dict
        Block name (without ``data_``) → loop table, or → dict / ``attrs["star_pairs"]`` one-row
        table for a key–value block.
    relion_version : int or None
        Writes ``# version N`` (30001 = RELION 3.1/4, 50001 = RELION 5) at the top, as RELION does;
        None leaves it out.
    float_format : str
        printf format for floats; the default keeps float64 to 12 significant digits.

    Returns
    -------
    path : Path
    """
    path = Path(path)
    blocks: dict[str, pd.DataFrame | dict[str, Any]] = {}
    for name, table in tables.items():
        if isinstance(table, pd.DataFrame):
            if table.attrs.get("star_pairs") and len(table) == 1:
                blocks[name] = {k: _plain(v) for k, v in table.iloc[0].items()}
            else:
                blocks[name] = table.reset_index(drop=True)
        elif isinstance(table, Mapping):
            blocks[name] = {k: _plain(v) for k, v in table.items()}
        else:
            raise TypeError(
                f"{path.name}: block {name!r} must be a DataFrame or a dict, got {type(table).__name__}"
            )
    with atomic_path(path, suffix=".star") as tmp:
        starfile.write(blocks, tmp, float_format=float_format, overwrite=True)
        if relion_version is not None:
            text = tmp.read_text()
            text = "\n".join(
                line for line in text.splitlines() if not line.startswith("# Created by the starfile")
            )
            tmp.write_text(f"\n# version {int(relion_version)}\n{_TITLE}\n" + text.lstrip("\n") + "\n")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def star_flavour(path_or_tables: str | Path | Mapping[str, pd.DataFrame]) -> str:
    """Guess which RELION layout a STAR file uses.

    Returns
    -------
    flavour : str
        ``"relion5"`` (``# version 5xxxx`` header), ``"relion3.1"`` (an ``optics`` block; also RELION 4),
        ``"relion3.0"`` (particles/micrographs without an optics block) or ``"other"``.
    """
    if isinstance(path_or_tables, (str, Path)):
        text = Path(path_or_tables).read_text(errors="replace")[:2000]
        match = re.search(r"#\s*version\s+(\d+)", text)
        if match and int(match.group(1)) >= 50000:
            return "relion5"
        tables = read_star(path_or_tables)
    else:
        tables = path_or_tables
    if "optics" in tables:
        return "relion3.1"
    for df in tables.values():
        cols = set(df.columns)
        if cols & {"rlnImageName", "rlnMicrographName", "rlnCoordinateX"}:
            return "relion3.0"
    return "other"


# ----------------------------------------------------------------------------------------------
# particles in any flavour -> RELION 3.1 form
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParticleTables:
    """Particles in RELION 3.1 form: an ``optics`` table and a ``particles`` table."""

    optics: pd.DataFrame
    particles: pd.DataFrame

    def to_tables(self) -> dict[str, pd.DataFrame]:
        """``{"optics": ..., "particles": ...}`` for :func:`write_star`."""
        return {"optics": self.optics, "particles": self.particles}


_OPTICS_COLUMNS = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")


def read_particles(path: str | Path) -> ParticleTables:
    """Read particles from RELION 3.0 / 3.1 / 4 / 5 STAR or a cryoSPARC ``.cs`` file.

    A RELION 3.0 table is split into optics groups (one per distinct voltage, Cs, amplitude contrast
    and pixel size); its pixel size comes from ``rlnDetectorPixelSize`` (µm) / ``rlnMagnification``
    × 10⁴ when ``rlnImagePixelSize`` is absent.

    Parameters
    ----------
    path : str or Path
        ``.star`` or ``.cs``.

    Returns
    -------
    tables : ParticleTables
    """
    path = Path(path)
    if path.suffix == ".cs":
        return read_cryosparc_cs(path)
    tables = read_star(path)
    if "particles" in tables and "optics" in tables:
        return ParticleTables(tables["optics"], tables["particles"])
    candidates = [
        df for df in tables.values() if "rlnImageName" in df.columns or "rlnCoordinateX" in df.columns
    ]
    if not candidates:
        raise CorruptFileError(
            path,
            f"expected a particle table (rlnImageName or rlnCoordinateX columns), found "
            f"blocks {list(tables)} with columns {[list(t.columns)[:4] for t in tables.values()]}",
        )
    return _split_optics(candidates[0].copy())


def _split_optics(particles: pd.DataFrame) -> ParticleTables:
    if "rlnImagePixelSize" not in particles.columns:
        if {"rlnDetectorPixelSize", "rlnMagnification"} <= set(particles.columns):
            particles["rlnImagePixelSize"] = (
                particles["rlnDetectorPixelSize"].astype(float)
                / particles["rlnMagnification"].astype(float)
                * ANGSTROM_PER_UM
            )
    keys = [c for c in (*_OPTICS_COLUMNS, "rlnImagePixelSize") if c in particles.columns]
    if keys:
        rounded = particles[keys].astype(float).round(6)
        groups = rounded.drop_duplicates().reset_index(drop=True)
        group_of = rounded.merge(groups.reset_index().rename(columns={"index": "_g"}), on=keys, how="left")[
            "_g"
        ]
        particles["rlnOpticsGroup"] = group_of.to_numpy() + 1
        optics = particles.groupby("rlnOpticsGroup", sort=True)[keys].first().reset_index()
    else:
        particles["rlnOpticsGroup"] = 1
        optics = pd.DataFrame({"rlnOpticsGroup": [1]})
    optics.insert(0, "rlnOpticsGroupName", [f"opticsGroup{g}" for g in optics["rlnOpticsGroup"]])
    optics["rlnImageDimensionality"] = 2
    particles = particles.drop(
        columns=[c for c in (*keys, "rlnDetectorPixelSize", "rlnMagnification") if c in particles.columns]
    )
    return ParticleTables(optics, particles)


def read_cryosparc_cs(path: str | Path) -> ParticleTables:
    """Convert a cryoSPARC particle ``.cs`` file (numpy structured array) to RELION 3.1 tables.

    Mapping: ``blob/path`` + ``blob/idx`` → ``rlnImageName`` (1-based ``N@path``), ``ctf/df1_A``,
    ``df2_A`` → ``rlnDefocusU/V`` (Å), ``ctf/df_angle_rad`` → ``rlnDefocusAngle`` (deg),
    ``ctf/phase_shift_rad`` → ``rlnPhaseShift`` (deg), ``ctf/accel_kv``, ``cs_mm``, ``amp_contrast``,
    ``blob/psize_A``, ``blob/shape`` → optics; ``location/center_x_frac`` etc. → coordinates when
    present; ``alignments3D/pose`` (axis-angle, as cryoSPARC stores it) is kept as three columns
    ``csPoseX/Y/Z`` and ``alignments*/shift`` (px) → ``rlnOriginXAngst/YAngst``.

    Parameters
    ----------
    path : str or Path
        The ``.cs`` file.

    Returns
    -------
    tables : ParticleTables
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        records = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise CorruptFileError(
            path,
            f"expected a cryoSPARC .cs file (numpy structured array), "
            f"could not load it ({type(exc).__name__}: {exc})",
        ) from exc
    names = records.dtype.names
    if not names or "blob/path" not in names:
        raise CorruptFileError(
            path, f"expected cryoSPARC particle fields incl. 'blob/path', found {list(names or [])[:6]}"
        )
    out: dict[str, Any] = {}
    blob_paths = [p.decode() if isinstance(p, bytes) else str(p) for p in records["blob/path"]]
    blob_paths = [p.lstrip(">") for p in blob_paths]  # cryoSPARC marks imported paths with '>'
    out["rlnImageName"] = [
        relion_image_name(int(i), p) for i, p in zip(records["blob/idx"], blob_paths, strict=False)
    ]
    if "location/micrograph_path" in names:
        out["rlnMicrographName"] = [p.decode().lstrip(">") for p in records["location/micrograph_path"]]
        if {"location/center_x_frac", "location/micrograph_shape"} <= set(names):
            shape = records["location/micrograph_shape"]
            out["rlnCoordinateX"] = records["location/center_x_frac"] * shape[:, 1]
            out["rlnCoordinateY"] = records["location/center_y_frac"] * shape[:, 0]
    if "ctf/df1_A" in names:
        out["rlnDefocusU"] = records["ctf/df1_A"].astype(float)
        out["rlnDefocusV"] = records["ctf/df2_A"].astype(float)
        out["rlnDefocusAngle"] = np.degrees(records["ctf/df_angle_rad"].astype(float))
    if "ctf/phase_shift_rad" in names:
        out["rlnPhaseShift"] = np.degrees(records["ctf/phase_shift_rad"].astype(float))
    if "ctf/bfactor" in names:
        out["rlnCtfBfactor"] = records["ctf/bfactor"].astype(float)
    psize = records["blob/psize_A"].astype(float)
    for kind in ("alignments3D", "alignments2D"):
        if f"{kind}/shift" in names:
            shift_px = records[f"{kind}/shift"].astype(float)
            out["rlnOriginXAngst"] = shift_px[:, 0] * psize
            out["rlnOriginYAngst"] = shift_px[:, 1] * psize
            if f"{kind}/class" in names:
                out["rlnClassNumber"] = records[f"{kind}/class"].astype(int) + 1
            if kind == "alignments3D" and "alignments3D/pose" in names:
                pose = records["alignments3D/pose"].astype(float)
                out["csPoseX"], out["csPoseY"], out["csPoseZ"] = pose[:, 0], pose[:, 1], pose[:, 2]
            elif kind == "alignments2D" and "alignments2D/pose" in names:
                out["rlnAnglePsi"] = np.degrees(records["alignments2D/pose"].astype(float))
            break
    particles = pd.DataFrame(out)
    particles["rlnVoltage"] = records["ctf/accel_kv"].astype(float) if "ctf/accel_kv" in names else np.nan
    particles["rlnSphericalAberration"] = (
        records["ctf/cs_mm"].astype(float) if "ctf/cs_mm" in names else np.nan
    )
    particles["rlnAmplitudeContrast"] = (
        records["ctf/amp_contrast"].astype(float) if "ctf/amp_contrast" in names else np.nan
    )
    particles["rlnImagePixelSize"] = psize
    tables = _split_optics(particles)
    box = {int(g): int(records["blob/shape"][i][0]) for i, g in enumerate(tables.particles["rlnOpticsGroup"])}
    optics = tables.optics.copy()
    optics["rlnImageSize"] = [box[int(g)] for g in optics["rlnOpticsGroup"]]
    return ParticleTables(optics, tables.particles)


def relion_image_name(index: int, stack_path: str | Path) -> str:
    """``"000001@stack.mrcs"`` for the 0-based ``index`` (RELION counts from 1; Warp pads to 7 digits)."""
    return f"{index + 1:07d}@{stack_path}"


def parse_relion_image_name(name: str) -> tuple[int, str]:
    """Inverse of :func:`relion_image_name`: ``(0-based index, stack path)``."""
    number, _, stack = str(name).partition("@")
    if not stack or not number.strip().isdigit():
        raise ValueError(f"expected a RELION image name 'N@stack.mrcs', found {name!r}")
    return int(number) - 1, stack


# ----------------------------------------------------------------------------------------------
# CTF: our names <-> RELION row
# ----------------------------------------------------------------------------------------------
def _get(model: Any, name: str, default: Any = None) -> Any:
    if isinstance(model, Mapping):
        value = model.get(name, default)
    else:
        value = getattr(model, name, default)
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = value.item() if value.numel() == 1 else value.numpy()
    return value


def ctf_to_star_row(model: Any) -> dict[str, float]:
    """RELION CTF columns for a CTF fit (a ``CTFModel`` or a mapping with the same field names).

    ``rlnDefocusU = (defocus_um + defocus_delta_um / 2) · 10⁴`` Å, ``rlnDefocusV = (defocus_um −
    defocus_delta_um / 2) · 10⁴`` Å (warp-facts §0), ``rlnDefocusAngle = astigmatism_angle_deg``,
    ``rlnPhaseShift = phase_shift_deg``, ``rlnCtfMaxResolution = resolution_a``; optics values when
    the model carries them. U ≥ V is enforced by swapping and turning the angle by 90°; the angle is
    given in [0°, 180°).

    Parameters
    ----------
    model : CTFModel or mapping
        Needs ``defocus_um``; ``defocus_delta_um``, ``astigmatism_angle_deg``, ``phase_shift_deg``,
        ``resolution_a``, ``voltage_kv``, ``cs_mm``, ``amplitude_contrast`` are used when present.

    Returns
    -------
    row : dict of str to float
    """
    defocus_um = float(_get(model, "defocus_um"))
    delta_um = float(_get(model, "defocus_delta_um", 0.0) or 0.0)
    angle_deg = float(_get(model, "astigmatism_angle_deg", 0.0) or 0.0)
    if delta_um < 0:
        delta_um, angle_deg = -delta_um, angle_deg + 90.0
    angle_deg = angle_deg % 180.0  # [0, 180), as the CTF model and the particle rows
    row = {
        "rlnDefocusU": (defocus_um + delta_um / 2) * ANGSTROM_PER_UM,
        "rlnDefocusV": (defocus_um - delta_um / 2) * ANGSTROM_PER_UM,
        "rlnDefocusAngle": angle_deg,
        "rlnPhaseShift": float(_get(model, "phase_shift_deg", 0.0) or 0.0),
    }
    for ours, label in (
        ("resolution_a", "rlnCtfMaxResolution"),
        ("voltage_kv", "rlnVoltage"),
        ("cs_mm", "rlnSphericalAberration"),
        ("amplitude_contrast", "rlnAmplitudeContrast"),
    ):
        value = _get(model, ours)
        if value is not None and np.ndim(value) == 0:
            row[label] = float(value)
    return row


def star_row_to_ctf(row: Mapping[str, Any]) -> dict[str, float]:
    """Inverse of :func:`ctf_to_star_row`: our names (µm, degrees) from a RELION row."""
    u_a, v_a = float(row["rlnDefocusU"]), float(row.get("rlnDefocusV", row["rlnDefocusU"]))
    out = {
        "defocus_um": (u_a + v_a) / 2 / ANGSTROM_PER_UM,
        "defocus_delta_um": (u_a - v_a) / ANGSTROM_PER_UM,
        "astigmatism_angle_deg": float(row.get("rlnDefocusAngle", 0.0)),
        "phase_shift_deg": float(row.get("rlnPhaseShift", 0.0)),
    }
    for label, ours in (
        ("rlnCtfMaxResolution", "resolution_a"),
        ("rlnVoltage", "voltage_kv"),
        ("rlnSphericalAberration", "cs_mm"),
        ("rlnAmplitudeContrast", "amplitude_contrast"),
    ):
        if label in row:
            out[ours] = float(row[label])
    return out


# ----------------------------------------------------------------------------------------------
# builders of RELION 3.1 tables
# ----------------------------------------------------------------------------------------------
def optics_table(
    *,
    pixel_size_a: float,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    kind: str = "particles",
    box_size_px: int | None = None,
    original_pixel_size_a: float | None = None,
    optics_group_name: str = "opticsGroup1",
    optics_group: int = 1,
    mtf_file: str | None = None,
) -> pd.DataFrame:
    """One-row RELION 3.1 ``data_optics`` table.

    Parameters
    ----------
    kind : {"particles", "micrographs"}
        Particles get ``rlnImagePixelSize``, ``rlnImageSize`` and ``rlnImageDimensionality`` (2);
        micrographs get ``rlnMicrographPixelSize`` and ``rlnMicrographOriginalPixelSize``.
    """
    row: dict[str, Any] = {
        "rlnOpticsGroupName": optics_group_name,
        "rlnOpticsGroup": int(optics_group),
        "rlnVoltage": float(voltage_kv),
        "rlnSphericalAberration": float(cs_mm),
        "rlnAmplitudeContrast": float(amplitude_contrast),
    }
    if kind == "particles":
        if box_size_px is None:
            raise ValueError("optics_table(kind='particles') needs box_size_px")
        row["rlnImagePixelSize"] = float(pixel_size_a)
        row["rlnImageSize"] = int(box_size_px)
        row["rlnImageDimensionality"] = 2
    elif kind == "micrographs":
        row["rlnMicrographPixelSize"] = float(pixel_size_a)
        row["rlnMicrographOriginalPixelSize"] = float(original_pixel_size_a or pixel_size_a)
    else:
        raise ValueError(f"kind must be 'particles' or 'micrographs', got {kind!r}")
    if mtf_file:
        row["rlnMtfFileName"] = mtf_file
    return pd.DataFrame([row])


def _column(values: Any, n: int, name: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim == 0:
        return np.full(n, array.item())
    if len(array) != n:
        raise ValueError(f"{name}: expected {n} values (one per row), got {len(array)}")
    return array


def micrographs_star_tables(
    micrograph_names: Sequence[str],
    *,
    pixel_size_a: float,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    ctf: Sequence[Any] | None = None,
    original_pixel_size_a: float | None = None,
    metadata_names: Sequence[str] | None = None,
    extra_columns: Mapping[str, Any] | None = None,
    optics_group_name: str = "opticsGroup1",
) -> dict[str, pd.DataFrame]:
    """RELION 3.1 ``micrographs.star`` tables: ``optics`` + ``micrographs``.

    Parameters
    ----------
    micrograph_names : sequence of str
        Paths of the averages as RELION should find them (``rlnMicrographName``).
    pixel_size_a, voltage_kv, cs_mm, amplitude_contrast : float
        Optics of the micrographs (pixel size of the average, after any binning).
    ctf : sequence of CTFModel or mappings, optional
        One per micrograph, converted with :func:`ctf_to_star_row`.
    original_pixel_size_a : float, optional
        Pixel size of the movies (``rlnMicrographOriginalPixelSize``).
    metadata_names : sequence of str, optional
        Per-movie motion STAR files (``rlnMicrographMetadata``), as RELION polishing wants.
    extra_columns : mapping, optional
        More RELION columns, one value per micrograph (or a scalar).
    """
    n = len(micrograph_names)
    micrographs = pd.DataFrame({"rlnMicrographName": [str(m) for m in micrograph_names]})
    if metadata_names is not None:
        micrographs["rlnMicrographMetadata"] = _column(list(map(str, metadata_names)), n, "metadata_names")
    micrographs["rlnOpticsGroup"] = 1
    if ctf is not None:
        if len(ctf) != n:
            raise ValueError(f"ctf: expected {n} models (one per micrograph), got {len(ctf)}")
        rows = [ctf_to_star_row(c) for c in ctf]
        for label in (
            "rlnDefocusU",
            "rlnDefocusV",
            "rlnDefocusAngle",
            "rlnPhaseShift",
            "rlnCtfMaxResolution",
        ):
            if all(label in r for r in rows):
                micrographs[label] = [r[label] for r in rows]
        if rows:
            micrographs["rlnCtfAstigmatism"] = micrographs["rlnDefocusU"] - micrographs["rlnDefocusV"]
    for label, values in (extra_columns or {}).items():
        micrographs[label] = _column(values, n, label)
    optics = optics_table(
        pixel_size_a=pixel_size_a,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        kind="micrographs",
        original_pixel_size_a=original_pixel_size_a,
        optics_group_name=optics_group_name,
    )
    return {"optics": optics, "micrographs": micrographs}


def particles_star_tables(
    *,
    image_names: Sequence[str],
    micrograph_names: Sequence[str] | str,
    coords_px_xy: Any,
    pixel_size_a: float,
    box_size_px: int,
    voltage_kv: float,
    cs_mm: float,
    amplitude_contrast: float,
    defocus_u_um: Any | None = None,
    defocus_v_um: Any | None = None,
    astigmatism_angle_deg: Any = 0.0,
    phase_shift_deg: Any = 0.0,
    resolution_a: Any | None = None,
    scores: Any | None = None,
    extra_columns: Mapping[str, Any] | None = None,
    optics_group_name: str = "opticsGroup1",
) -> dict[str, pd.DataFrame]:
    """RELION 3.1 particle tables: ``optics`` + ``particles`` (the layout Warp's export writes, §7.5).

    Parameters
    ----------
    image_names : sequence of str
        ``rlnImageName`` (``N@stack.mrcs``, see :func:`relion_image_name`).
    micrograph_names : sequence of str or str
        ``rlnMicrographName`` per particle (or one for all).
    coords_px_xy : array-like
        ``[N, 2]`` particle centres in px of the full-size micrograph, ``(x, y)``.
    pixel_size_a : float
        Pixel size of the extracted images (``rlnImagePixelSize``).
    box_size_px : int
        ``rlnImageSize``.
    voltage_kv, cs_mm, amplitude_contrast : float
        Optics.
    defocus_u_um, defocus_v_um : array-like, optional
        Local defocus of each particle along U and V in µm (written in Å).
    astigmatism_angle_deg, phase_shift_deg, resolution_a : array-like or float
        Per particle or one value.
    scores : array-like, optional
        Picking scores (``rlnAutopickFigureOfMerit``).
    extra_columns : mapping, optional
        More RELION columns.

    Returns
    -------
    tables : dict
        ``{"optics": DataFrame, "particles": DataFrame}`` for :func:`write_star`.
    """
    n = len(image_names)
    coords = np.asarray(
        coords_px_xy.detach().cpu() if hasattr(coords_px_xy, "detach") else coords_px_xy, dtype=float
    ).reshape(-1, 2)
    if len(coords) != n:
        raise ValueError(f"coords_px_xy: expected {n} rows (one per image name), got {len(coords)}")
    mics = [micrograph_names] * n if isinstance(micrograph_names, (str, Path)) else list(micrograph_names)
    particles = pd.DataFrame(
        {
            "rlnImageName": list(map(str, image_names)),
            "rlnMicrographName": _column(list(map(str, mics)), n, "micrograph_names"),
            "rlnCoordinateX": coords[:, 0],
            "rlnCoordinateY": coords[:, 1],
        }
    )
    if defocus_u_um is not None:
        u = _column(defocus_u_um, n, "defocus_u_um").astype(float)
        v = _column(defocus_v_um if defocus_v_um is not None else defocus_u_um, n, "defocus_v_um").astype(
            float
        )
        particles["rlnDefocusU"] = u * ANGSTROM_PER_UM
        particles["rlnDefocusV"] = v * ANGSTROM_PER_UM
        particles["rlnDefocusAngle"] = _column(astigmatism_angle_deg, n, "astigmatism_angle_deg").astype(
            float
        )
        particles["rlnPhaseShift"] = _column(phase_shift_deg, n, "phase_shift_deg").astype(float)
    if resolution_a is not None:
        particles["rlnCtfMaxResolution"] = _column(resolution_a, n, "resolution_a").astype(float)
    if scores is not None:
        particles["rlnAutopickFigureOfMerit"] = _column(scores, n, "scores").astype(float)
    for label, values in (extra_columns or {}).items():
        particles[label] = _column(values, n, label)
    particles["rlnOpticsGroup"] = 1
    optics = optics_table(
        pixel_size_a=pixel_size_a,
        voltage_kv=voltage_kv,
        cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast,
        kind="particles",
        box_size_px=box_size_px,
        optics_group_name=optics_group_name,
    )
    return {"optics": optics, "particles": particles}


# ----------------------------------------------------------------------------------------------
# motion: displacements (Å, yx) <-> RELION per-movie motion STAR
# ----------------------------------------------------------------------------------------------
def motion_to_star_tables(
    global_displacement_a_yx: Any,
    *,
    pixel_size_a: float,
    movie_name: str,
    image_size_xyz: tuple[int, int, int],
    exposure_per_frame_e_per_a2: float,
    voltage_kv: float,
    binning: float = 1.0,
    pre_exposure_e_per_a2: float = 0.0,
    gain_name: str | None = None,
    local_coords_px_xy: Any | None = None,
    local_displacement_a_yx: Any | None = None,
) -> dict[str, pd.DataFrame]:
    """RELION's per-movie motion STAR (``data_general``, ``data_global_shift``, ``data_local_shift``).

    ``rlnMicrographShiftX/Y`` = −displacement / pixel size (px of the movie), i.e. the shift that
    aligns the frame (docs/api-contracts.md). ``rlnMotionModelVersion`` is 0 (no polynomial model),
    as Warp writes; local shifts are listed per patch and frame as the *total* shift there (global +
    local), as issue 3 specifies, so a reader needs no second table to place a patch.

    Parameters
    ----------
    global_displacement_a_yx : array-like
        ``[F, 2]`` displacement of each frame in Å, ``(y, x)``.
    pixel_size_a : float
        Unbinned movie pixel size in Å.
    movie_name : str
        ``rlnMicrographMovieName``.
    image_size_xyz : tuple of int
        ``(width, height, n_frames)`` of the movie.
    exposure_per_frame_e_per_a2 : float
        ``rlnMicrographDoseRate``.
    voltage_kv : float
        ``rlnVoltage``.
    local_coords_px_xy, local_displacement_a_yx : array-like, optional
        ``[P, 2]`` patch centres and ``[F, P, 2]`` total displacement there (Å, yx).

    Returns
    -------
    tables : dict
        ``{"general": pairs table, "global_shift": DataFrame[, "local_shift": DataFrame]}``.
    """
    disp = np.asarray(
        global_displacement_a_yx.detach().cpu()
        if hasattr(global_displacement_a_yx, "detach")
        else global_displacement_a_yx,
        dtype=float,
    )
    if disp.ndim != 2 or disp.shape[1] != 2:
        raise ValueError(f"global_displacement_a_yx: expected shape [F, 2], got {disp.shape}")
    n_frames = disp.shape[0]
    general = pd.DataFrame(
        [
            {
                "rlnImageSizeX": int(image_size_xyz[0]),
                "rlnImageSizeY": int(image_size_xyz[1]),
                "rlnImageSizeZ": int(image_size_xyz[2]),
                "rlnMicrographMovieName": str(movie_name),
                "rlnMicrographBinning": float(binning),
                "rlnMicrographOriginalPixelSize": float(pixel_size_a),
                "rlnMicrographDoseRate": float(exposure_per_frame_e_per_a2),
                "rlnMicrographPreExposure": float(pre_exposure_e_per_a2),
                "rlnVoltage": float(voltage_kv),
                "rlnMicrographStartFrame": 1,
                "rlnMotionModelVersion": 0,
            }
        ]
    )
    if gain_name:
        general["rlnMicrographGainName"] = gain_name
    general.attrs["star_pairs"] = True
    global_shift = pd.DataFrame(
        {
            "rlnMicrographFrameNumber": np.arange(1, n_frames + 1),
            "rlnMicrographShiftX": -disp[:, 1] / pixel_size_a,
            "rlnMicrographShiftY": -disp[:, 0] / pixel_size_a,
        }
    )
    tables: dict[str, pd.DataFrame] = {"general": general, "global_shift": global_shift}
    if local_coords_px_xy is not None and local_displacement_a_yx is not None:
        coords = np.asarray(local_coords_px_xy, dtype=float).reshape(-1, 2)
        local = np.asarray(
            local_displacement_a_yx.detach().cpu()
            if hasattr(local_displacement_a_yx, "detach")
            else local_displacement_a_yx,
            dtype=float,
        )
        if local.shape != (n_frames, len(coords), 2):
            raise ValueError(
                f"local_displacement_a_yx: expected shape [{n_frames}, {len(coords)}, 2], got {local.shape}"
            )
        frames, patches = np.meshgrid(np.arange(n_frames), np.arange(len(coords)), indexing="ij")
        tables["local_shift"] = pd.DataFrame(
            {
                "rlnMicrographFrameNumber": frames.ravel() + 1,
                "rlnCoordinateX": coords[patches.ravel(), 0],
                "rlnCoordinateY": coords[patches.ravel(), 1],
                "rlnMicrographShiftX": -local[..., 1].ravel() / pixel_size_a,
                "rlnMicrographShiftY": -local[..., 0].ravel() / pixel_size_a,
            }
        )
    return tables


def star_tables_to_motion(tables: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """Read RELION's per-movie motion STAR back into our convention.

    Returns
    -------
    motion : dict
        ``global_displacement_a_yx`` ``[F, 2]`` (Å, yx; = −shift × pixel size), ``pixel_size_a``,
        ``exposure_per_frame_e_per_a2``, ``movie_name``, ``image_size_xyz``.
    """
    general = tables["general"].iloc[0]
    pixel_size_a = float(general["rlnMicrographOriginalPixelSize"])
    shifts = tables["global_shift"].sort_values("rlnMicrographFrameNumber")
    disp = (
        -np.stack(
            [shifts["rlnMicrographShiftY"].to_numpy(float), shifts["rlnMicrographShiftX"].to_numpy(float)],
            axis=1,
        )
        * pixel_size_a
    )
    return {
        "global_displacement_a_yx": disp,
        "pixel_size_a": pixel_size_a,
        "exposure_per_frame_e_per_a2": float(general.get("rlnMicrographDoseRate", math.nan)),
        "movie_name": str(general.get("rlnMicrographMovieName", "")),
        "image_size_xyz": tuple(int(general[k]) for k in ("rlnImageSizeX", "rlnImageSizeY", "rlnImageSizeZ")),
    }
