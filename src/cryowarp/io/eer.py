"""EER (electron-event representation, Falcon 4): a writer for test data and a streaming reader.

An EER file is a BigTIFF whose pages each hold one raw frame as a bit stream of events. Read LSB
first, each event is a run length (``skipbits`` bits; the all-ones value means "skip that many pixels,
no event"), then a horizontal and a vertical 2-bit sub-pixel position stored XOR 2. The event sits on
the pixel the run reaches; the next run starts after it; a frame ends with a run landing exactly on
H·W. Compression 65000 uses 8-bit runs, 65001 7-bit runs, 65002 reads the bit sizes from tags
65007–65009 (toolchain.md §3).

Rendering: ``superres`` 0, 1, 2 gives 4K, 8K, 16K images (1×, 2×, 4× the physical 4096² grid),
decoded by ``imagecodecs.eer_decode`` straight into a uint16 accumulator for each group of raw frames.

Example::

    from cryowarp.io.eer import write_eer, eer_info, iter_eer_groups
    write_eer("movie.eer", counts)               # counts: [N, H, W] with 0/1 per pixel and frame
    info = eer_info("movie.eer")                 # n_raw_frames, shape, compression, metadata
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from cryowarp.io.errors import CorruptFileError, TruncatedFileError, format_bytes
from cryowarp.io.mrc import atomic_path

__all__ = [
    "write_eer",
    "encode_eer_frame",
    "EerInfo",
    "eer_info",
    "decode_eer_frame",
    "iter_eer_groups",
    "eer_group_ranges",
    "EER_BITS",
]

# compression code -> (skipbits, horzbits, vertbits)
EER_BITS = {65000: (8, 2, 2), 65001: (7, 2, 2), 65002: (7, 2, 2)}
_TAG_METADATA = 65001
_TAG_BITS = (65007, 65008, 65009)


def encode_eer_frame(
    pixel_index: np.ndarray,
    n_pixels: int,
    subpixel_x: np.ndarray | None = None,
    subpixel_y: np.ndarray | None = None,
    *,
    skipbits: int = 7,
    horzbits: int = 2,
    vertbits: int = 2,
) -> bytes:
    """Encode one frame's events (vectorised).

    Parameters
    ----------
    pixel_index : numpy.ndarray
        ``[E]`` flat pixel indices ``y·W + x`` of the events, strictly increasing (at most one event
        per pixel and frame, as in EER).
    n_pixels : int
        H·W of the physical grid.
    subpixel_x, subpixel_y : numpy.ndarray, optional
        ``[E]`` sub-pixel positions 0–3 (for 16K rendering); 0 if not given.

    Returns
    -------
    data : bytes
        The frame's strip, padded to an even length with ≥ 2 zero bytes.
    """
    p = np.asarray(pixel_index, dtype=np.int64)
    if p.size and (np.any(np.diff(p) <= 0) or p[0] < 0 or p[-1] >= n_pixels):
        raise ValueError("pixel_index must be strictly increasing and inside the frame (one event per pixel)")
    sx = np.zeros_like(p) if subpixel_x is None else np.asarray(subpixel_x, dtype=np.int64)
    sy = np.zeros_like(p) if subpixel_y is None else np.asarray(subpixel_y, dtype=np.int64)
    mask = (1 << skipbits) - 1
    previous_end = np.concatenate([[0], p[:-1] + 1]) if p.size else np.zeros(0, np.int64)
    runs = p - previous_end
    n_skips = runs // mask
    final_run = n_pixels - (int(p[-1]) + 1 if p.size else 0)
    final_skips = max(0, (final_run - 1) // mask) if final_run > 0 else 0
    per_event = n_skips + 3
    n_codes = int(per_event.sum()) + final_skips + 1
    values = np.full(n_codes, mask, dtype=np.int64)
    nbits = np.full(n_codes, skipbits, dtype=np.int64)
    ends = np.cumsum(per_event)  # exclusive end of each event's codes
    if p.size:
        values[ends - 3] = runs % mask
        values[ends - 2] = sx ^ (1 << (horzbits - 1))
        nbits[ends - 2] = horzbits
        values[ends - 1] = sy ^ (1 << (vertbits - 1))
        nbits[ends - 1] = vertbits
    values[-1] = final_run - final_skips * mask
    starts = np.cumsum(nbits) - nbits
    code_of_bit = np.repeat(np.arange(n_codes), nbits)
    bit_in_code = np.arange(int(nbits.sum())) - starts[code_of_bit]
    bits = ((values[code_of_bit] >> bit_in_code) & 1).astype(np.uint8)
    data = np.packbits(bits, bitorder="little").tobytes() + b"\0\0"
    return data + b"\0" * (len(data) % 2)


def _ifd(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """One BigTIFF IFD: entry count, sorted 20-byte entries, a zero next-IFD offset (patched later)."""
    out = struct.pack("<Q", len(entries))
    for tag, typ, count, value in sorted(entries):
        out += struct.pack("<HHQ", tag, typ, count) + value.ljust(8, b"\0")
    return out + struct.pack("<Q", 0)


def write_eer(
    path: str | Path,
    counts: np.ndarray | Sequence[np.ndarray],
    *,
    subpixel_xy: np.ndarray | Sequence[np.ndarray] | None = None,
    compression: int = 65001,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write raw frames as an EER file (a minimal BigTIFF, as Falcon 4 cameras write it), atomically.

    Parameters
    ----------
    path : str or Path
        Destination (``.eer``).
    counts : numpy.ndarray or sequence of numpy.ndarray
        ``[N, H, W]`` events per pixel and raw frame, 0 or 1 (EER has at most one event per pixel per
        frame; simulate enough raw frames that this holds). Any sequence of ``[H, W]`` frames works, so
        a long movie can be generated frame by frame (``len`` and indexing are all that is used).
    subpixel_xy : numpy.ndarray or sequence, optional
        ``[N, H, W, 2]`` sub-pixel position (0–3) of each event in x and y, for 8K/16K rendering.
    compression : {65000, 65001}
        8-bit or 7-bit run lengths.
    metadata : mapping, optional
        Items written into the XML of tag 65001, e.g. ``{"sensorPixelSize.width": 1.0e-10}``.

    Returns
    -------
    path : Path
    """
    if isinstance(counts, np.ndarray) and counts.ndim != 3:
        raise ValueError(f"{Path(path).name}: counts must be [N, H, W], got shape {counts.shape}")
    if compression not in (65000, 65001):
        raise ValueError(f"compression must be 65000 or 65001, got {compression}")
    skipbits, horzbits, vertbits = EER_BITS[compression]
    n = len(counts)
    if n == 0:
        raise ValueError(f"{Path(path).name}: no frames to write")
    h, w = np.asarray(counts[0]).shape
    items = {"numberOfFrames": n, "sensorImageWidth": w, "sensorImageHeight": h, **(metadata or {})}
    xml = (
        "<metadata>"
        + "".join(f'<item name="{escape(str(k))}">{escape(str(v))}</item>' for k, v in items.items())
        + "</metadata>"
    ).encode()
    with atomic_path(path, suffix=".eer") as tmp, open(tmp, "wb") as f:
        f.write(b"II" + struct.pack("<HHHQ", 43, 8, 0, 0))  # first-IFD offset patched below
        previous_link = 8
        for i in range(n):
            frame = np.asarray(counts[i])
            if frame.shape != (h, w):
                raise ValueError(
                    f"{Path(path).name}: frame {i} has shape {frame.shape}, frame 0 has {(h, w)}"
                )
            if frame.size and (frame.max() > 1 or frame.min() < 0):
                raise ValueError(
                    f"{Path(path).name}: EER stores at most one event per pixel and frame; frame {i} holds "
                    f"{frame.min()}..{frame.max()} — use more raw frames"
                )
            idx = np.flatnonzero(frame.reshape(-1))
            sub_x = sub_y = None
            if subpixel_xy is not None:
                sub = subpixel_xy[i].reshape(-1, 2)[idx]
                sub_x, sub_y = sub[:, 0], sub[:, 1]
            strip = encode_eer_frame(
                idx, h * w, sub_x, sub_y, skipbits=skipbits, horzbits=horzbits, vertbits=vertbits
            )
            strip_offset = f.tell()
            f.write(strip)
            entries = [
                (256, 4, 1, struct.pack("<I", w)),
                (257, 4, 1, struct.pack("<I", h)),
                (259, 3, 1, struct.pack("<H", compression)),
                (262, 3, 1, struct.pack("<H", 1)),
                (273, 16, 1, struct.pack("<Q", strip_offset)),
                (277, 3, 1, struct.pack("<H", 1)),
                (278, 4, 1, struct.pack("<I", h)),
                (279, 16, 1, struct.pack("<Q", len(strip))),
            ]
            if i == 0:
                xml_offset = f.tell()
                f.write(xml + b"\0" * (len(xml) % 2))
                entries.append((_TAG_METADATA, 7, len(xml), struct.pack("<Q", xml_offset)))
            ifd_offset = f.tell()
            ifd = _ifd(entries)
            f.write(ifd)
            end = f.tell()
            f.seek(previous_link)
            f.write(struct.pack("<Q", ifd_offset))
            f.seek(end)
            previous_link = ifd_offset + len(ifd) - 8
    return Path(path)


@dataclass(frozen=True)
class EerInfo:
    """What an EER file holds (header only)."""

    path: str
    n_raw_frames: int
    shape_yx: tuple[int, int]
    compression: int
    bits: tuple[int, int, int]
    metadata: dict[str, str] = field(default_factory=dict)
    pixel_size_a: float | None = None
    first_frame_page: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary."""
        return asdict(self)


def _pixel_size_from_metadata(meta: Mapping[str, Any]) -> float | None:
    for key in ("pixelSpacing", "pixelSize", "sensorPixelSize.width", "pixelSize.width"):
        if key in meta:
            try:
                value = float(meta[key])
            except (TypeError, ValueError):
                continue
            if value <= 0:
                continue
            return value * 1e10 if value < 1e-6 else value  # metres → Å if given in SI
    return None


def _open_tiff(path: Path):  # type: ignore[no-untyped-def]
    import tifffile

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise TruncatedFileError(
            path, "expected an EER/TIFF file, file is empty (0 bytes) — still being written?"
        )
    try:
        return tifffile.TiffFile(path)
    except Exception as exc:
        raise CorruptFileError(
            path,
            f"expected a TIFF/EER file ({format_bytes(size)} found), could not parse its "
            f"header ({type(exc).__name__}: {exc}) — truncated or still being written?",
        ) from exc


def check_tiff_page_chain(path: Path, tif: Any) -> int:
    """Walk to the end of the IFD chain; raise :class:`TruncatedFileError` if it points past the file end.

    tifffile stops quietly (with a log message) at a page offset beyond the end of a truncated file, so
    a half-written movie would otherwise look like a shorter complete one. Returns the number of pages.
    """
    pages = tif.pages
    n = len(pages)
    last = pages[n - 1]
    size = path.stat().st_size
    byteorder = tif.byteorder
    count_fmt, entry_bytes, next_fmt = ("Q", 20, "Q") if tif.is_bigtiff else ("H", 12, "I")
    with open(path, "rb") as fh:
        fh.seek(int(last.offset))
        raw = fh.read(struct.calcsize(count_fmt))
        if len(raw) < struct.calcsize(count_fmt):
            next_offset = size + 1
        else:
            n_tags = struct.unpack(byteorder + count_fmt, raw)[0]
            fh.seek(int(last.offset) + len(raw) + n_tags * entry_bytes)
            raw_next = fh.read(struct.calcsize(next_fmt))
            next_offset = (
                struct.unpack(byteorder + next_fmt, raw_next)[0]
                if len(raw_next) == struct.calcsize(next_fmt)
                else size + 1
            )
    if next_offset != 0:
        raise TruncatedFileError(
            path,
            f"expected the TIFF page table to end after page {n}, it points on to byte {next_offset} but the "
            f"file holds {size} bytes ({format_bytes(size)}) — truncated or still being written",
        )
    end = max(
        (int(o) + int(c) for o, c in zip(last.dataoffsets, last.databytecounts, strict=False)), default=0
    )
    if end > size:
        raise TruncatedFileError(
            path,
            f"expected {n} pages with the last one's data ending at byte {end}, file holds {size} bytes "
            f"({format_bytes(size)}) — truncated or still being written",
        )
    return n


def eer_info(path: str | Path) -> EerInfo:
    """Read an EER file's page table and metadata without decoding frames."""
    path = Path(path)
    with _open_tiff(path) as tif:
        pages = tif.pages
        try:
            n_pages = check_tiff_page_chain(path, tif)
        except TruncatedFileError:
            raise
        except Exception as exc:
            raise TruncatedFileError(
                path, f"could not walk the page table ({exc}) — truncated or still being written"
            ) from exc
        meta: dict[str, str] = {}
        try:
            parsed = tif.eer_metadata
            if isinstance(parsed, str):
                import xml.etree.ElementTree as ET

                root = ET.fromstring(parsed)
                meta = {item.get("name", ""): (item.text or "") for item in root.iter("item")}
            elif isinstance(parsed, Mapping):
                meta = {str(k): str(v) for k, v in parsed.items()}
        except Exception:
            meta = {}
        first = 0
        page0 = pages[0]
        if int(page0.compression) not in EER_BITS:  # a leading uncompressed 'integrated' image
            first = 1
        if n_pages - first <= 0:
            raise CorruptFileError(path, "expected EER frames, found no EER-compressed pages")
        page = pages[first]
        compression = int(page.compression)
        if compression not in EER_BITS:
            raise CorruptFileError(path, f"expected EER compression 65000/65001/65002, found {compression}")
        bits = EER_BITS[compression]
        if compression == 65002:
            tags = page.tags
            bits = tuple(
                int(tags[t].value) if t in tags else d for t, d in zip(_TAG_BITS, bits, strict=False)
            )  # type: ignore[assignment]
        shape = (int(page.imagelength), int(page.imagewidth))
        last = pages[n_pages - 1]
        end = int(last.dataoffsets[0]) + int(last.databytecounts[0])
        size = path.stat().st_size
        if end > size:
            raise TruncatedFileError(
                path,
                f"expected {n_pages - first} EER frames ending at byte {end}, file holds "
                f"{size} bytes — truncated or still being written",
            )
    return EerInfo(
        path=str(path),
        n_raw_frames=n_pages - first,
        shape_yx=shape,
        compression=compression,
        bits=bits,
        metadata=meta,
        pixel_size_a=_pixel_size_from_metadata(meta),
        first_frame_page=first,
    )


def eer_group_ranges(
    n_raw_frames: int,
    *,
    n_groups: int | None = None,
    frames_per_group: int | None = None,
    group_exposure_e_per_a2: float | None = None,
    total_exposure_e_per_a2: float | None = None,
) -> tuple[list[range], int]:
    """Split raw EER frames into groups (warp-facts §1.7).

    Exactly one of ``n_groups`` (group size = floor(N/n_groups)), ``frames_per_group`` or
    ``group_exposure_e_per_a2`` (n_groups = ceil(total exposure / group exposure); needs
    ``total_exposure_e_per_a2``). An incomplete last group is dropped.

    Returns
    -------
    groups : list of range
        Raw frame indices of each group.
    n_dropped : int
        Raw frames left out at the end.
    """
    given = sum(x is not None for x in (n_groups, frames_per_group, group_exposure_e_per_a2))
    if given != 1:
        raise ValueError("give exactly one of n_groups, frames_per_group, group_exposure_e_per_a2")
    if group_exposure_e_per_a2 is not None:
        if not total_exposure_e_per_a2 or total_exposure_e_per_a2 <= 0 or group_exposure_e_per_a2 <= 0:
            raise ValueError(
                "grouping by exposure needs positive group_exposure_e_per_a2 and total_exposure_e_per_a2"
            )
        n_groups = int(np.ceil(total_exposure_e_per_a2 / group_exposure_e_per_a2 - 1e-9))
    if n_groups is not None:
        if n_groups <= 0:
            raise ValueError(f"n_groups must be positive, got {n_groups}")
        frames_per_group = n_raw_frames // n_groups
    assert frames_per_group is not None
    if frames_per_group <= 0 or frames_per_group > n_raw_frames:
        raise ValueError(f"cannot make groups of {frames_per_group} raw frames from {n_raw_frames}")
    n_full = n_raw_frames // frames_per_group
    groups = [range(g * frames_per_group, (g + 1) * frames_per_group) for g in range(n_full)]
    return groups, n_raw_frames - n_full * frames_per_group


def decode_eer_frame(
    path: str | Path,
    raw_index: int,
    *,
    superres: int = 0,
    out: np.ndarray | None = None,
    info: EerInfo | None = None,
) -> np.ndarray:
    """Decode one raw frame (added into ``out`` if given) at super-resolution level 0, 1 or 2."""
    path = Path(path)
    info = info or eer_info(path)
    for _start, acc in _decode_groups(path, info, [range(raw_index, raw_index + 1)], superres, out):
        return acc
    raise AssertionError("unreachable")


def _decode_groups(
    path: Path, info: EerInfo, groups: list[range], superres: int, out: np.ndarray | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    import imagecodecs

    if superres not in (0, 1, 2):
        raise ValueError(f"superres must be 0 (4K), 1 (8K) or 2 (16K), got {superres}")
    scale = 1 << superres
    shape = (info.shape_yx[0] * scale, info.shape_yx[1] * scale)
    skipbits, horzbits, vertbits = info.bits
    with _open_tiff(path) as tif, open(path, "rb") as fh:
        pages = tif.pages
        for g, group in enumerate(groups):
            acc = out if out is not None else np.zeros(shape, dtype=np.uint16)
            for raw in group:
                page = pages[info.first_frame_page + raw]
                fh.seek(int(page.dataoffsets[0]))
                n_bytes = int(page.databytecounts[0])
                data = fh.read(n_bytes)
                if len(data) != n_bytes:
                    raise TruncatedFileError(
                        path,
                        f"raw frame {raw}: expected {n_bytes} bytes, found {len(data)} "
                        "— truncated or still being written",
                    )
                if len(data) % 2:
                    data += b"\0"
                try:
                    imagecodecs.eer_decode(
                        data, shape, skipbits, horzbits, vertbits, superres=superres, out=acc
                    )
                except Exception as exc:
                    raise CorruptFileError(
                        path,
                        f"raw frame {raw}: EER stream does not decode to {shape[1]}×{shape[0]} "
                        f"({type(exc).__name__}: {exc})",
                    ) from exc
            yield g, acc


def iter_eer_groups(
    path: str | Path, groups: list[range], *, superres: int = 0, info: EerInfo | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(group_index, counts uint16 [H·s, W·s])`` summing the raw frames of each group."""
    path = Path(path)
    info = info or eer_info(path)
    yield from _decode_groups(path, info, groups, superres)
