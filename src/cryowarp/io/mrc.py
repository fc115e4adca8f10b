"""MRC/MRCS files: header checks, reading (whole or frame by frame), atomic writing, EPU FEI headers.

Reading converts every supported mode (0 int8, 1 int16, 2 float32, 6 uint16, 12 float16) to float32.
Every read first checks that the file is as long as its header says, so a file that is empty,
truncated or still being written fails with a :class:`~cryowarp.io.errors.TruncatedFileError` that
names the file, the expected size and the size found.

Example::

    from cryowarp.io.mrc import read_mrc, write_mrc, read_mrc_header
    image, pixel_size_a = read_mrc("average.mrc")
    write_mrc("copy.mrc", image, pixel_size_a)
    read_mrc_header("epu.mrc").fei   # {'voltage_kv': 300.0, 'exposure_e_per_a2': 41.2, ...}
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np
import torch

from cryowarp.io.errors import (
    CorruptFileError,
    InvalidDataError,
    TruncatedFileError,
    UnsupportedFormatError,
    format_bytes,
)

__all__ = [
    "MrcInfo",
    "read_mrc_header",
    "read_mrc",
    "iter_mrc_frames",
    "write_mrc",
    "atomic_path",
    "SUPPORTED_MODES",
]

HEADER_BYTES = 1024
SUPPORTED_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
_MODE_NAMES = {3: "complex int16", 4: "complex float32", 101: "4-bit packed"}


@dataclass(frozen=True)
class MrcInfo:
    """What an MRC header says, checked against the file size.

    Attributes
    ----------
    shape_zyx : tuple of int
        ``(nz, ny, nx)``; for an image stack nz is the number of images (frames).
    mode : int
        MRC mode number.
    dtype : str
        numpy dtype name of the stored data.
    pixel_size_a : float or None
        x voxel size in Å, None when the header holds 0.
    voxel_size_a_xyz : tuple of float
        voxel size along x, y, z in Å.
    is_stack : bool
        True if the header's space group marks an image stack (ispg 0) or a volume stack (ispg ≥ 401),
        False for a volume (ispg 1–230). A single 2-D image is ispg 0 too (MRC2014: "image or image
        stack"), so this is the header convention, not "more than one image" (see ``shape_zyx``).
    exttyp : str
        extended header type (``FEI1``, ``FEI2``, ``CCP4``, ...) or ``""``.
    extended_header_bytes : int
        size of the extended header (``nsymbt``).
    data_offset_bytes : int
        where the voxel data starts.
    fei : dict
        metadata from an FEI1/FEI2 (EPU) extended header, in our units (see :func:`fei_metadata`).
    """

    path: str
    shape_zyx: tuple[int, int, int]
    mode: int
    dtype: str
    pixel_size_a: float | None
    voxel_size_a_xyz: tuple[float, float, float]
    is_stack: bool
    exttyp: str
    extended_header_bytes: int
    data_offset_bytes: int
    file_bytes: int
    fei: dict[str, Any] = field(default_factory=dict)
    byte_order: str = "<"
    n_sections_in_header: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MrcInfo:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["shape_zyx"] = tuple(d["shape_zyx"])
        d["voxel_size_a_xyz"] = tuple(d["voxel_size_a_xyz"])
        return cls(**d)


def _describe_shape(shape_zyx: tuple[int, int, int], dtype: str) -> str:
    nz, ny, nx = shape_zyx
    return f"{nz} section{'s' if nz != 1 else ''} of {nx}×{ny} {dtype}"


def read_mrc_header(path: str | Path, *, permissive: bool = False) -> MrcInfo:
    """Read and check an MRC header without reading the data.

    Parameters
    ----------
    path : str or Path
        MRC/MRCS file.
    permissive : bool
        For inspecting a truncated file: instead of raising, describe only the complete sections present
        (``shape_zyx[0]`` shrinks; ``n_sections_in_header`` keeps the header's count) and warn.

    Returns
    -------
    info : MrcInfo

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    TruncatedFileError
        The file is empty or shorter than header + extended header + data.
    CorruptFileError
        The header is not an MRC header.
    UnsupportedFormatError
        The mode is not one of 0, 1, 2, 6, 12.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    file_bytes = path.stat().st_size
    if file_bytes == 0:
        raise TruncatedFileError(
            path, "file is empty (0 bytes); expected at least a 1024-byte MRC header — still being written?"
        )
    if file_bytes < HEADER_BYTES:
        raise TruncatedFileError(
            path,
            f"expected a 1024-byte MRC header, file holds {file_bytes} bytes "
            "— truncated or still being written",
        )
    try:
        with warnings.catch_warnings():  # permissive mode warns about what we check and report below
            warnings.simplefilter("ignore", RuntimeWarning)
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                header = mrc.header.copy()
    except (ValueError, OSError) as exc:  # mrcfile reports impossible headers as ValueError
        raise CorruptFileError(path, f"not a readable MRC header ({exc})") from exc
    if header is None or bytes(header.map).strip() not in (b"MAP", b""):
        found = None if header is None else bytes(header.map)
        raise CorruptFileError(path, f"expected the MRC map ID 'MAP ' at byte 208, found {found!r}")
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    mode = int(header.mode)
    if nx <= 0 or ny <= 0 or nz <= 0 or max(nx, ny) > 1_000_000:
        raise CorruptFileError(
            path, f"expected positive image dimensions, header says nx={nx} ny={ny} nz={nz}"
        )
    if mode not in SUPPORTED_MODES:
        what = _MODE_NAMES.get(mode, "unknown")
        raise UnsupportedFormatError(
            path,
            f"expected MRC mode 0, 1, 2, 6 or 12 ({', '.join(SUPPORTED_MODES.values())}), "
            f"found mode {mode} ({what})",
        )
    dtype = np.dtype(SUPPORTED_MODES[mode])
    nsymbt = int(header.nsymbt)
    if nsymbt < 0:
        raise CorruptFileError(path, f"expected a non-negative extended header size, found {nsymbt}")
    data_offset = HEADER_BYTES + nsymbt
    expected = data_offset + nx * ny * nz * dtype.itemsize
    shape = (nz, ny, nx)
    n_sections_in_header = None
    if file_bytes < expected:
        message = (
            f"expected {_describe_shape(shape, dtype.name)} ({format_bytes(expected - data_offset)}) "
            f"after the {format_bytes(data_offset)} header, "
            f"file holds {format_bytes(file_bytes - data_offset)} "
            "— truncated or still being written"
        )
        n_complete = max(0, file_bytes - data_offset) // (nx * ny * dtype.itemsize)
        if not permissive or n_complete == 0:
            raise TruncatedFileError(path, message)
        warnings.warn(f"{path.name}: {message}; reading the {n_complete} complete section(s)", stacklevel=2)
        n_sections_in_header, shape = nz, (n_complete, ny, nx)
    byte_order = mrcfile.utils.data_dtype_from_header(header).byteorder
    byte_order = ">" if byte_order == ">" or (byte_order == "=" and np.little_endian is False) else "<"
    mx, my, mz = int(header.mx), int(header.my), int(header.mz)
    cella = header.cella
    voxel = tuple(
        float(c) / m if m > 0 else 0.0
        for c, m in zip((cella.x, cella.y, cella.z), (mx, my, mz), strict=False)
    )
    pixel_size_a = voxel[0] if voxel[0] > 0 else None
    ispg = int(header.ispg)
    is_stack = ispg == 0 or ispg >= 401
    exttyp = bytes(header.exttyp).decode("ascii", errors="replace").strip("\x00 ")
    fei: dict[str, Any] = {}
    if exttyp in ("FEI1", "FEI2") and nsymbt > 0:
        fei = fei_metadata(path)
    return MrcInfo(
        path=str(path),
        shape_zyx=shape,
        mode=mode,
        dtype=dtype.name,
        pixel_size_a=pixel_size_a,
        voxel_size_a_xyz=voxel,
        is_stack=is_stack,
        exttyp=exttyp,
        extended_header_bytes=nsymbt,
        data_offset_bytes=data_offset,
        file_bytes=file_bytes,
        fei=fei,
        byte_order=byte_order,
        n_sections_in_header=n_sections_in_header,
    )


# FEI/EPU extended header fields (SI units in the file) -> our names and units.
_FEI_FIELDS = {
    "HT": ("voltage_kv", 1e-3),
    "Dose": ("exposure_e_per_a2", 1e-20),  # e/m² -> e/Å²
    "Pixel size X": ("pixel_size_a", 1e10),
    "Pixel size Y": ("pixel_size_y_a", 1e10),
    "Defocus": ("defocus_um", 1e6),
    "Applied defocus": ("applied_defocus_um", 1e6),
    "Magnification": ("magnification", 1.0),
    "Integration time": ("exposure_time_s", 1.0),
    "Alpha tilt": ("tilt_deg", 1.0),
    "Tilt axis angle": ("tilt_axis_deg", 1.0),
    "X-Stage": ("stage_x_um", 1e6),
    "Y-Stage": ("stage_y_um", 1e6),
    "Z-Stage": ("stage_z_um", 1e6),
    "Timestamp": ("timestamp_days", 1.0),
}
_FEI_TEXT = {
    "Camera name": "camera_name",
    "Microscope type": "microscope_type",
    "Application": "application",
    "Application version": "application_version",
}


def fei_metadata(path: str | Path) -> dict[str, Any]:
    """Acquisition metadata from the first record of an EPU FEI1/FEI2 extended header.

    The file stores SI units; we return ``voltage_kv``, ``exposure_e_per_a2`` (total dose),
    ``pixel_size_a``, ``defocus_um`` (EPU's "Defocus" field, sign as stored), ``applied_defocus_um``,
    ``magnification``, ``exposure_time_s``, ``tilt_deg``, stage position in µm, and text fields
    ``camera_name`` etc. Fields whose presence bit is not set are left out.

    Parameters
    ----------
    path : str or Path
        MRC file with ``exttyp`` FEI1 or FEI2.

    Returns
    -------
    metadata : dict
        Plain-JSON values; empty if the file has no FEI extended header.
    """
    with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
        records = mrc.indexed_extended_header
        if records is None or len(records) == 0:
            return {}
        rec = records[0]
        names = records.dtype.names or ()
        out: dict[str, Any] = {}
        for name, (ours, scale) in _FEI_FIELDS.items():
            if name in names:
                value = float(rec[name]) * scale
                if np.isfinite(value):
                    out[ours] = value
        for name, ours in _FEI_TEXT.items():
            if name in names:
                raw = rec[name]
                out[ours] = (
                    raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else str(raw)
                ).strip("\x00 ")
        if "Direct detector electron counting" in names:
            out["counting"] = bool(rec["Direct detector electron counting"])
        out["n_records"] = int(len(records))
    return out


@contextmanager
def _open_data(path: Path, info: MrcInfo) -> Iterator[np.ndarray]:
    """Memory-map the voxel data as ``[nz, ny, nx]`` in the file's dtype (read-only)."""
    data = np.memmap(
        path,
        dtype=np.dtype(info.dtype).newbyteorder(info.byte_order),
        mode="r",
        offset=info.data_offset_bytes,
        shape=info.shape_zyx,
    )
    try:
        yield data
    finally:
        del data


def _check_finite(path: Path, chunk: np.ndarray | torch.Tensor, first_index: int) -> None:
    array = torch.as_tensor(chunk)
    if not array.dtype.is_floating_point:
        return
    finite = torch.isfinite(array)
    if not bool(finite.all()):
        bad = (~finite).reshape(array.shape[0], -1).any(dim=1).nonzero().flatten()
        n_bad = int((~finite).sum())
        raise InvalidDataError(
            path,
            f"expected finite pixel values, found {n_bad} NaN/inf value(s) in section(s) "
            f"{[int(i) + first_index for i in bad[:5]]} — the file is corrupt or was written wrongly",
        )


def read_mrc(
    path: str | Path,
    *,
    as_tensor: bool = False,
    sections: slice | range | None = None,
    squeeze: bool = True,
    check_finite: bool = True,
    permissive: bool = False,
) -> tuple[np.ndarray | torch.Tensor, float | None]:
    """Read an MRC/MRCS file as float32.

    Parameters
    ----------
    path : str or Path
        The file.
    as_tensor : bool
        Return a CPU ``torch.Tensor`` instead of a numpy array.
    sections : slice or range, optional
        Only these z sections (frames of a stack).
    squeeze : bool
        Drop the z axis of a single-section file, so a micrograph comes back as ``[H, W]``.
    check_finite : bool
        Raise :class:`InvalidDataError` on NaN/inf.
    permissive : bool
        Read the complete sections of a truncated file (with a warning) instead of raising.

    Returns
    -------
    array : numpy.ndarray or torch.Tensor
        ``[nz, ny, nx]`` (or ``[ny, nx]``) float32.
    pixel_size_a : float or None
        x voxel size in Å from the header, None when it is 0.
    """
    path = Path(path)
    info = read_mrc_header(path, permissive=permissive)
    with _open_data(path, info) as data:
        selected = data if sections is None else data[sections]
        array = np.array(selected, dtype=np.float32)
    if check_finite:
        _check_finite(path, array, 0 if sections is None else (sections.start or 0))
    if squeeze and array.shape[0] == 1:
        array = array[0]
    return (torch.from_numpy(array) if as_tensor else array), info.pixel_size_a


def iter_mrc_frames(
    path: str | Path, *, chunk_frames: int = 4, frames: slice | range | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(first_index, chunk [c, H, W] float32)`` through a stack without loading it whole."""
    path = Path(path)
    info = read_mrc_header(path)
    n = info.shape_zyx[0]
    indices = range(n)[frames] if frames is not None else range(n)
    with _open_data(path, info) as data:
        for start in range(0, len(indices), chunk_frames):
            idx = indices[start : start + chunk_frames]
            if idx.step == 1:
                chunk = np.array(data[idx.start : idx.stop], dtype=np.float32)
            else:
                chunk = np.stack([np.asarray(data[i], dtype=np.float32) for i in idx])
            _check_finite(path, chunk, idx[0])
            yield start, torch.from_numpy(chunk)


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Give a temporary path next to ``path``; on success rename it onto ``path`` atomically.

    Readers never see a half-written file: they see the old file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would (umask),
        # so RELION or a web server running as another user can read it.
        umask = os.umask(0)
        os.umask(umask)
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_mrc(
    path: str | Path,
    array: np.ndarray | torch.Tensor,
    pixel_size_a: float | None,
    *,
    float16: bool = False,
    stack: bool = False,
    dtype: str | np.dtype | None = None,
) -> Path:
    """Write an image, a stack or a volume as MRC, atomically.

    Parameters
    ----------
    path : str or Path
        Destination; written to a temporary file in the same folder and renamed.
    array : numpy.ndarray or torch.Tensor
        ``[H, W]`` image, ``[N, H, W]`` stack (with ``stack=True``) or ``[D, H, W]`` volume.
    pixel_size_a : float or None
        Pixel (voxel) size in Å written to the header; None writes 0 (unknown).
    float16 : bool
        Store as mode 12 (half precision), as Warp does for particle stacks.
    stack : bool
        Mark a 3D array as an image stack (ispg 0), e.g. particles or movie frames.
    dtype : str or numpy.dtype, optional
        Store in this dtype instead (``uint16``, ``int8``, ``int16``, ``float32``); overrides ``float16``.

    Returns
    -------
    path : Path
        The written file. It passes ``mrcfile.validate``.
    """
    path = Path(path)
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"{path.name}: expected a 2D image or a 3D stack/volume, got shape {array.shape}")
    if stack and array.ndim != 3:
        raise ValueError(f"{path.name}: stack=True needs a 3D array [N, H, W], got shape {array.shape}")
    target = np.dtype(dtype) if dtype is not None else np.dtype(np.float16 if float16 else np.float32)
    if target.name not in SUPPORTED_MODES.values():
        raise ValueError(
            f"{path.name}: expected a dtype among {sorted(SUPPORTED_MODES.values())}, got {target}"
        )
    if target.kind == "f":
        data = np.ascontiguousarray(array, dtype=target)
    else:
        info = np.iinfo(target)
        if array.size and (np.nanmin(array) < info.min or np.nanmax(array) > info.max):
            raise ValueError(
                f"{path.name}: values {np.nanmin(array)}..{np.nanmax(array)} do not fit {target}"
            )
        data = (
            np.ascontiguousarray(np.rint(array), dtype=target)
            if array.dtype.kind == "f"
            else np.ascontiguousarray(array, dtype=target)
        )
    with atomic_path(path, suffix=".mrc") as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(data)
            if stack:
                mrc.set_image_stack()
            mrc.voxel_size = float(pixel_size_a) if pixel_size_a else 0.0
            mrc.update_header_stats()
            if data.size:
                # mrcfile averages in float32; a zero-mean image then gets a header mean (e.g. 0.0) that
                # mrcfile.validate, which averages in float64 with atol 1e-8, calls inaccurate
                mrc.header.dmean = np.float32(data.mean(dtype=np.float64))
    return path
