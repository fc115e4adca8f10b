"""Tilt-series metadata: SerialEM ``.mdoc`` files and IMOD ``.tlt`` / ``.rawtlt`` / ``.xf`` files.

Example::

    from cryowarp.io.mdoc import read_mdoc, mdoc_tilt_series, read_tlt
    mdoc = read_mdoc("TS_01.mrc.mdoc")
    ts = mdoc_tilt_series(mdoc)        # tilt_deg, tilt_axis_deg, pixel_size_a, exposure per tilt, order
    angles_deg = read_tlt("TS_01.tlt")
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryowarp.io.errors import CorruptFileError, TruncatedFileError

__all__ = ["Mdoc", "read_mdoc", "TiltSeriesMetadata", "mdoc_tilt_series", "read_tlt", "write_tlt", "read_xf"]

_SECTION = re.compile(r"^\[\s*(\w+)\s*=\s*(.*?)\s*\]$")
_KEY_VALUE = re.compile(r"^([A-Za-z][\w ]*?)\s*=\s*(.*)$")
_TILT_AXIS = re.compile(r"Tilt axis angle\s*=\s*(-?[\d.]+)")


@dataclass(frozen=True)
class Mdoc:
    """A parsed SerialEM ``.mdoc``.

    Attributes
    ----------
    path : str
    global_data : dict
        Key–value pairs before the first section (``PixelSpacing``, ``ImageSize``, ``Voltage`` ...).
    titles : list of str
        The ``[T = ...]`` title lines.
    sections : pandas.DataFrame
        One row per ``[ZValue = n]`` / ``[FrameSet = n]`` / ``[MontSection = n]`` section, with columns
        ``section_kind``, ``section_index`` and every key found (numbers parsed; several numbers → tuple).
    """

    path: str
    global_data: dict[str, Any]
    titles: list[str]
    sections: pd.DataFrame

    @property
    def tilt_axis_deg(self) -> float | None:
        """The tilt axis from a ``Tilt axis angle = ...`` title, if any."""
        for title in self.titles:
            match = _TILT_AXIS.search(title)
            if match:
                return float(match.group(1))
        return None


def _parse_value(text: str) -> Any:
    parts = text.split()
    if not parts:
        return ""
    numbers = []
    for part in parts:
        try:
            numbers.append(int(part) if re.fullmatch(r"[+-]?\d+", part) else float(part))
        except ValueError:
            return text.strip()
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


def read_mdoc(path: str | Path) -> Mdoc:
    """Read a SerialEM ``.mdoc`` (tilt series, frame sets, montages).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    mdoc : Mdoc
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(errors="replace")
    if not text.strip():
        raise TruncatedFileError(
            path, "expected SerialEM 'key = value' lines, file is empty — still being written?"
        )
    global_data: dict[str, Any] = {}
    titles: list[str] = []
    rows: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        section = _SECTION.match(line)
        if section:
            kind, value = section.groups()
            if kind == "T":
                titles.append(value)
                continue
            current = {"section_kind": kind, "section_index": _parse_value(value)}
            rows.append(current)
            continue
        kv = _KEY_VALUE.match(line)
        if not kv:
            raise CorruptFileError(
                path, f"line {line_no}: expected 'key = value' or '[Section = n]', found {line!r}"
            )
        key, value = kv.group(1).strip(), kv.group(2)
        if key == "T":  # frame-set mdocs put the title as a bare 'T = ...' line
            titles.append(value.strip())
            continue
        (current if current is not None else global_data)[key] = _parse_value(value)
    if not rows and not global_data:
        raise CorruptFileError(path, "expected SerialEM mdoc sections or key = value pairs, found none")
    return Mdoc(path=str(path), global_data=global_data, titles=titles, sections=pd.DataFrame(rows))


@dataclass(frozen=True)
class TiltSeriesMetadata:
    """What processing needs from an mdoc, in our units, sorted by tilt angle.

    Attributes
    ----------
    tilt_deg : list of float
        Stage tilt of each image.
    acquisition_order : list of int
        0-based order in which each image was taken (from ``DateTime``; else section order).
    exposure_e_per_a2 : list of float
        Exposure of each tilt (``ExposureDose``; 0 when SerialEM did not record it).
    pre_exposure_e_per_a2 : list of float
        Exposure accumulated before each tilt, summed in acquisition order.
    tilt_axis_deg : float or None
    pixel_size_a : float or None
    voltage_kv : float or None
    nominal_defocus_um : float or None
        ``−TargetDefocus`` (SerialEM writes underfocus as negative; ours is positive).
    sub_frame_paths : list of str
        Movie of each tilt (``SubFramePath``; file name only, the Windows folder dropped).
    section_index : list of int
        The ``ZValue`` of each image in the stack.
    """

    tilt_deg: list[float]
    acquisition_order: list[int]
    exposure_e_per_a2: list[float]
    pre_exposure_e_per_a2: list[float]
    tilt_axis_deg: float | None
    pixel_size_a: float | None
    voltage_kv: float | None
    nominal_defocus_um: float | None
    sub_frame_paths: list[str] = field(default_factory=list)
    section_index: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TiltSeriesMetadata:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    for fmt in ("%d-%b-%y %H:%M:%S", "%d-%b-%Y %H:%M:%S"):
        try:
            return datetime.strptime(" ".join(value.split()), fmt)
        except ValueError:
            continue
    return None


def mdoc_tilt_series(mdoc: Mdoc) -> TiltSeriesMetadata:
    """Tilt angles, exposures, acquisition order and optics of a tilt-series mdoc, sorted by tilt."""
    sections = mdoc.sections
    if sections.empty or "TiltAngle" not in sections.columns:
        raise CorruptFileError(mdoc.path, "expected sections with TiltAngle, found none")
    n = len(sections)
    tilts = sections["TiltAngle"].astype(float).to_numpy()
    times = [_parse_time(v) for v in sections.get("DateTime", pd.Series([None] * n))]
    if all(t is not None for t in times):
        order_keys = np.array([t.timestamp() for t in times])  # type: ignore[union-attr]
    else:
        order_keys = np.arange(n, dtype=float)
    acquisition_rank = np.empty(n, dtype=int)
    acquisition_rank[np.argsort(order_keys, kind="stable")] = np.arange(n)
    exposure = (
        sections["ExposureDose"].astype(float).fillna(0).to_numpy()
        if "ExposureDose" in sections
        else np.zeros(n)
    )
    by_time = np.argsort(acquisition_rank)
    pre = np.zeros(n)
    pre[by_time] = np.concatenate([[0.0], np.cumsum(exposure[by_time])[:-1]])
    sort = np.argsort(tilts, kind="stable")

    def glob(key: str) -> Any:
        if key in mdoc.global_data:
            return mdoc.global_data[key]
        if key in sections.columns:
            return sections[key].iloc[0]
        return None

    pixel = glob("PixelSpacing")
    voltage = glob("Voltage")
    target = glob("TargetDefocus")
    paths = (
        [re.split(r"[\\/]", str(p))[-1] for p in sections["SubFramePath"]]
        if "SubFramePath" in sections
        else []
    )
    indices = sections["section_index"].to_numpy()
    return TiltSeriesMetadata(
        tilt_deg=[float(tilts[i]) for i in sort],
        acquisition_order=[int(acquisition_rank[i]) for i in sort],
        exposure_e_per_a2=[float(exposure[i]) for i in sort],
        pre_exposure_e_per_a2=[float(pre[i]) for i in sort],
        tilt_axis_deg=mdoc.tilt_axis_deg,
        pixel_size_a=float(pixel) if pixel is not None else None,
        voltage_kv=float(voltage) if voltage is not None else None,
        nominal_defocus_um=-float(target) if target is not None else None,
        sub_frame_paths=[paths[i] for i in sort] if paths else [],
        section_index=[int(indices[i]) for i in sort],
    )


def read_tlt(path: str | Path) -> np.ndarray:
    """Tilt angles in degrees from an IMOD ``.tlt`` / ``.rawtlt`` (one number per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    values = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            values.append(float(line.split()[0]))
        except ValueError as exc:
            raise CorruptFileError(
                path, f"line {line_no}: expected a tilt angle in degrees, found {line!r}"
            ) from exc
    if not values:
        raise TruncatedFileError(path, "expected one tilt angle per line, file holds none")
    return np.asarray(values)


def write_tlt(path: str | Path, tilt_deg: Any) -> Path:
    """Write tilt angles (degrees), one per line, as IMOD does (atomically)."""
    from cryowarp.io.mrc import atomic_path

    with atomic_path(path, suffix=".tlt") as tmp:
        tmp.write_text("".join(f"{float(t):8.2f}\n" for t in np.asarray(tilt_deg).ravel()))
    return Path(path)


def read_xf(path: str | Path) -> np.ndarray:
    """IMOD ``.xf`` transforms as ``[N, 2, 3]``: ``[[A11, A12, DX], [A21, A22, DY]]`` per view (px)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 6:
            raise CorruptFileError(
                path, f"line {line_no}: expected 6 numbers (A11 A12 A21 A22 DX DY), found {len(parts)}"
            )
        a11, a12, a21, a22, dx, dy = (float(p) for p in parts)
        rows.append([[a11, a12, dx], [a21, a22, dy]])
    if not rows:
        raise TruncatedFileError(path, "expected one transform per line, file holds none")
    return np.asarray(rows)
