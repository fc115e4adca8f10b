"""Gain references, defect maps, defect and hot-pixel correction, and a gain-orientation check.

Conventions (warp-facts.md §1.7):

* a gain reference is flipped in x, then in y, then transposed (Warp's order), then rotated by a
  multiple of 90° counter-clockwise; it is divided by the mean of its non-zero pixels; zeros become 1
  and are marked as defects;
* frames are **multiplied** by the gain, except EER, whose frames are **divided** by it
  (``convention="divide"``);
* a defective pixel is replaced by the mean of the nearest ≥ 49 good pixels (= round(π·4²) − 1): the
  disc radius starts at 4 px and grows until that many are found;
* a hot pixel deviates from the mean of its 11 × 11 neighbourhood (itself excluded) by more than 20 ×
  the frame's standard deviation and is replaced by that mean.

Example::

    from cryowarp.io.gain import load_gain, detect_gain_orientation
    gain = load_gain("gain.mrc", flip_y=True)
    report = detect_gain_orientation(raw_sum, gain)      # which of the 8 flips/transposes fits
    print(report.summary())
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cryowarp.io.errors import CorruptFileError, InvalidDataError, ShapeMismatchError

__all__ = [
    "GainTransform",
    "GainReference",
    "load_gain",
    "read_image_2d",
    "read_defect_map",
    "DefectCorrector",
    "make_defect_corrector",
    "remove_hot_pixels",
    "GainOrientationReport",
    "detect_gain_orientation",
    "GOOD_PIXELS_PER_DEFECT",
]

# round(π·4²) − 1 good pixels around each defect (warp-facts §1.7).
GOOD_PIXELS_PER_DEFECT = round(math.pi * 4**2) - 1
_START_RADIUS_PX = 4
_MAX_RADIUS_PX = 512


@dataclass(frozen=True)
class GainTransform:
    """A flip/transpose/rotation of a gain reference, applied in Warp's order.

    Attributes
    ----------
    flip_x : bool
        Mirror columns (x → W−1−x).
    flip_y : bool
        Mirror rows.
    transpose : bool
        Swap x and y (after the flips).
    rotate_deg : int
        0, 90, 180 or 270, counter-clockwise in the displayed image (rows going down), applied last.
    """

    flip_x: bool = False
    flip_y: bool = False
    transpose: bool = False
    rotate_deg: int = 0

    def __post_init__(self) -> None:
        if self.rotate_deg % 90 != 0:
            raise ValueError(f"rotate_deg must be a multiple of 90, got {self.rotate_deg}")

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """Transform ``[..., H, W]``; returns a new tensor."""
        out = image
        if self.flip_x:
            out = out.flip(-1)
        if self.flip_y:
            out = out.flip(-2)
        if self.transpose:
            out = out.transpose(-1, -2)
        k = (self.rotate_deg // 90) % 4
        if k:
            out = torch.rot90(out, k, dims=(-2, -1))
        return out.contiguous()

    def output_shape(self, shape_yx: tuple[int, int]) -> tuple[int, int]:
        """Shape after :meth:`apply`."""
        swapped = self.transpose ^ bool((self.rotate_deg // 90) % 2)
        return (shape_yx[1], shape_yx[0]) if swapped else tuple(shape_yx)  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """E.g. ``"flip_x+transpose"``; ``"identity"`` when nothing is done."""
        parts = [
            n
            for n, on in (("flip_x", self.flip_x), ("flip_y", self.flip_y), ("transpose", self.transpose))
            if on
        ]
        if self.rotate_deg % 360:
            parts.append(f"rotate_{self.rotate_deg % 360}")
        return "+".join(parts) or "identity"

    def cli_flags(self) -> str:
        """The options of ``cryowarp`` commands that request this transform."""
        flags = [
            f
            for f, on in (
                ("--gain-flip-x", self.flip_x),
                ("--gain-flip-y", self.flip_y),
                ("--gain-transpose", self.transpose),
            )
            if on
        ]
        if self.rotate_deg % 360:
            flags.append(f"--gain-rotate {self.rotate_deg % 360}")
        return " ".join(flags) or "(none)"

    def then(self, other: GainTransform) -> GainTransform:
        """The single transform equal to applying ``self`` and then ``other`` (found by probing)."""
        probe = torch.arange(12.0).reshape(3, 4)
        target = other.apply(self.apply(probe))
        for candidate in all_gain_transforms():
            result = candidate.apply(probe)
            if result.shape == target.shape and torch.equal(result, target):
                return candidate
        raise AssertionError("the 8 flips/transposes form a group; composition must be among them")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary."""
        return {
            "flip_x": self.flip_x,
            "flip_y": self.flip_y,
            "transpose": self.transpose,
            "rotate_deg": self.rotate_deg,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GainTransform:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


def all_gain_transforms() -> list[GainTransform]:
    """The 8 distinct flips/transposes (the symmetries of a square), identity first."""
    return [
        GainTransform(flip_x=fx, flip_y=fy, transpose=tr)
        for tr in (False, True)
        for fy in (False, True)
        for fx in (False, True)
    ]


@dataclass(frozen=True)
class GainReference:
    """A normalised gain reference.

    Attributes
    ----------
    gain : torch.Tensor
        ``[H, W]`` float32, mean 1 over good pixels, 1 at defects.
    defects : torch.Tensor
        ``[H, W]`` bool, True where the raw gain was 0 (or not finite).
    convention : str
        ``"multiply"`` (MRC/TIFF movies) or ``"divide"`` (EER).
    transform : GainTransform
        Applied to the file's image.
    path : str or None
        Where it came from.
    """

    gain: torch.Tensor
    defects: torch.Tensor
    convention: str = "multiply"
    transform: GainTransform = field(default_factory=GainTransform)
    path: str | None = None

    @property
    def shape_yx(self) -> tuple[int, int]:
        """``(H, W)``."""
        return (int(self.gain.shape[-2]), int(self.gain.shape[-1]))

    def check_shape(self, shape_yx: tuple[int, int], movie_name: str = "movie") -> None:
        """Raise :class:`ShapeMismatchError` naming both shapes unless they agree."""
        if tuple(shape_yx) != self.shape_yx:
            hint = ""
            if tuple(shape_yx) == self.shape_yx[::-1]:
                hint = " — the gain looks transposed: try --gain-transpose"
            elif all(s % g == 0 or g % s == 0 for s, g in zip(shape_yx, self.shape_yx, strict=False)):
                hint = " — super-resolution vs. physical pixels? bin the gain or the movie to match"
            raise ShapeMismatchError(
                self.path or "gain",
                f"expected a gain reference of the movie's frame size {shape_yx[1]}×{shape_yx[0]} (W×H) "
                f"for {movie_name}, found {self.shape_yx[1]}×{self.shape_yx[0]} "
                f"(after {self.transform.name}){hint}",
            )

    def apply(self, frames: torch.Tensor) -> torch.Tensor:
        """Gain-correct ``[..., H, W]`` frames (new tensor; multiplies, or divides for EER)."""
        gain = self.gain.to(device=frames.device, dtype=frames.dtype)
        return frames / gain if self.convention == "divide" else frames * gain

    def apply_(self, frames: torch.Tensor) -> torch.Tensor:
        """In-place version of :meth:`apply`, for buffers the reader owns."""
        gain = self.gain.to(device=frames.device, dtype=frames.dtype)
        return frames.div_(gain) if self.convention == "divide" else frames.mul_(gain)

    def with_transform(self, transform: GainTransform) -> GainReference:
        """The same gain re-oriented by ``transform`` (on top of the current one)."""
        return replace(
            self,
            gain=transform.apply(self.gain),
            defects=transform.apply(self.defects),
            transform=self.transform.then(transform),
        )


def read_image_2d(path: str | Path) -> torch.Tensor:
    """Read a single 2D image (MRC or TIFF; first page/section) as float32 ``[H, W]``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff", ".gain"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                array = tif.pages[0].asarray()
        except Exception as exc:
            raise CorruptFileError(
                path, f"expected a TIFF image, could not read it ({type(exc).__name__}: {exc})"
            ) from exc
        array = np.asarray(array, dtype=np.float32)
    else:
        from cryowarp.io.mrc import read_mrc

        array, _ = read_mrc(path, check_finite=False)
        if array.ndim == 3:
            array = array[0]
    if array.ndim != 2:
        raise CorruptFileError(path, f"expected a 2D image, found shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array))


def load_gain(
    source: str | Path | torch.Tensor | np.ndarray,
    *,
    flip_x: bool = False,
    flip_y: bool = False,
    transpose: bool = False,
    rotate_deg: int = 0,
    convention: str = "multiply",
) -> GainReference:
    """Load and normalise a gain reference.

    Parameters
    ----------
    source : path or array
        MRC or TIFF file (EER ``.gain`` files are TIFF), or an ``[H, W]`` array.
    flip_x, flip_y, transpose, rotate_deg
        Orientation, applied in this order (see :class:`GainTransform`).
    convention : {"multiply", "divide"}
        How frames are corrected: MRC/TIFF movies multiply, EER divides (warp-facts §1.7).

    Returns
    -------
    gain : GainReference
        Mean 1 over good pixels; zeros and non-finite values are defects (set to 1).
    """
    if convention not in ("multiply", "divide"):
        raise ValueError(f"convention must be 'multiply' or 'divide', got {convention!r}")
    path = None
    if isinstance(source, (str, Path)):
        path = str(source)
        raw = read_image_2d(source)
    else:
        raw = torch.as_tensor(np.asarray(source) if isinstance(source, np.ndarray) else source).detach()
        raw = raw.to("cpu", torch.float32)
    if raw.ndim != 2:
        raise ShapeMismatchError(
            path or "gain", f"expected a 2D gain reference, found shape {tuple(raw.shape)}"
        )
    transform = GainTransform(flip_x=flip_x, flip_y=flip_y, transpose=transpose, rotate_deg=rotate_deg)
    raw = transform.apply(raw)
    defects = ~torch.isfinite(raw) | (raw == 0)
    good = raw[~defects]
    if good.numel() == 0:
        raise InvalidDataError(
            path or "gain", "expected a gain reference with non-zero pixels, found all zeros"
        )
    if bool((good < 0).any()):
        raise InvalidDataError(
            path or "gain",
            f"expected a positive gain reference, found {int((good < 0).sum())} negative pixels",
        )
    gain = torch.where(defects, torch.ones_like(raw), raw / good.mean())
    return GainReference(
        gain=gain.contiguous(), defects=defects, convention=convention, transform=transform, path=path
    )


def read_defect_map(
    source: str | Path | torch.Tensor | np.ndarray, shape_yx: tuple[int, int]
) -> torch.Tensor:
    """A boolean defect mask ``[H, W]`` (True = defective).

    Parameters
    ----------
    source : path or array
        An image (MRC/TIFF; non-zero = defective), an array, or a text file of rectangles, one per
        line as ``x y w h`` (px, x = column, origin top-left; ``#`` starts a comment). A rectangle
        reaching beyond the frame is clipped.
    shape_yx : tuple of int
        Frame size.
    """
    shape_yx = (int(shape_yx[0]), int(shape_yx[1]))
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        if path.suffix.lower() in (".txt", ".defects", ".dat", ""):
            mask = torch.zeros(shape_yx, dtype=torch.bool)
            for line_no, line in enumerate(path.read_text().splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.replace(",", " ").split()
                try:
                    x, y, w, h = (int(round(float(p))) for p in parts)
                except ValueError as exc:
                    raise CorruptFileError(
                        path, f"line {line_no}: expected 4 numbers 'x y w h', found {line!r}"
                    ) from exc
                if w <= 0 or h <= 0:
                    raise CorruptFileError(
                        path, f"line {line_no}: expected a positive width and height, found {line!r}"
                    )
                mask[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = True
            return mask
        image = read_image_2d(path)
        name = path
    else:
        image = torch.as_tensor(np.asarray(source) if isinstance(source, np.ndarray) else source)
        name = "defects"
    if tuple(image.shape) != shape_yx:
        raise ShapeMismatchError(
            name,
            f"expected a defect map of the frame size {shape_yx[1]}×{shape_yx[0]} (W×H), "
            f"found {image.shape[-1]}×{image.shape[-2]}",
        )
    return image != 0


@dataclass(frozen=True)
class DefectCorrector:
    """Precomputed replacement of defective pixels by the mean of nearby good ones.

    Attributes
    ----------
    defect_index : torch.Tensor
        ``[D]`` flat indices (y·W + x) of defective pixels.
    source_index : torch.Tensor
        ``[S]`` flat indices of the good pixels averaged.
    target_slot : torch.Tensor
        ``[S]`` which defect (0..D−1) each source pixel contributes to.
    weight : torch.Tensor
        ``[S]`` 1 / (number of sources of that defect).
    shape_yx : tuple of int
    """

    defect_index: torch.Tensor
    source_index: torch.Tensor
    target_slot: torch.Tensor
    weight: torch.Tensor
    shape_yx: tuple[int, int]

    @property
    def n_defects(self) -> int:
        """Number of defective pixels."""
        return int(self.defect_index.numel())

    def apply_(self, frames: torch.Tensor) -> torch.Tensor:
        """Replace defects in ``[..., H, W]`` in place and return it."""
        if self.n_defects == 0:
            return frames
        if tuple(frames.shape[-2:]) != self.shape_yx:
            raise ShapeMismatchError(
                None,
                f"defect map is {self.shape_yx[1]}×{self.shape_yx[0]} (W×H), frames are "
                f"{frames.shape[-1]}×{frames.shape[-2]}",
            )
        flat = frames.reshape(-1, self.shape_yx[0] * self.shape_yx[1])
        device = frames.device
        src = self.source_index.to(device)
        values = flat[:, src] * self.weight.to(device, frames.dtype)
        replaced = torch.zeros(flat.shape[0], self.n_defects, device=device, dtype=frames.dtype)
        replaced.index_add_(1, self.target_slot.to(device), values)
        flat[:, self.defect_index.to(device)] = replaced
        return frames

    def apply(self, frames: torch.Tensor) -> torch.Tensor:
        """Out-of-place version of :meth:`apply_`."""
        return self.apply_(frames.clone())


def make_defect_corrector(defects: torch.Tensor) -> DefectCorrector:
    """Find, for every defective pixel, the good pixels whose mean replaces it (warp-facts §1.7).

    Parameters
    ----------
    defects : torch.Tensor
        ``[H, W]`` bool, True = defective.

    Returns
    -------
    corrector : DefectCorrector
    """
    mask = np.asarray(torch.as_tensor(defects).cpu(), dtype=bool)
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    defect_index = ys.astype(np.int64) * w + xs
    if len(defect_index) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return DefectCorrector(empty, empty, empty, torch.zeros(0), (h, w))
    if mask.all():
        raise InvalidDataError(None, f"every pixel of the {w}×{h} frame is marked defective")
    sources: list[np.ndarray] = []
    slots: list[np.ndarray] = []
    pending = np.arange(len(defect_index))
    radius = _START_RADIUS_PX
    while len(pending) and radius <= _MAX_RADIUS_PX:
        r = int(math.ceil(radius))
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        inside = (dy**2 + dx**2 <= radius**2) & ((dy != 0) | (dx != 0))
        dy, dx = dy[inside], dx[inside]
        # Chunk the pending defects so that big defect areas never build a huge [D, K] array.
        chunk = max(1, 4_000_000 // len(dy))
        still: list[np.ndarray] = []
        for start in range(0, len(pending), chunk):
            idx = pending[start : start + chunk]
            yy = ys[idx, None] + dy[None, :]
            xx = xs[idx, None] + dx[None, :]
            valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            yy_c, xx_c = np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)
            valid &= ~mask[yy_c, xx_c]
            count = valid.sum(axis=1)
            done = count >= GOOD_PIXELS_PER_DEFECT
            if done.any():
                rows, cols = np.nonzero(valid[done])
                sources.append(yy_c[done][rows, cols].astype(np.int64) * w + xx_c[done][rows, cols])
                slots.append(idx[done][rows])
            still.append(idx[~done])
        pending = np.concatenate(still)
        radius = radius * 1.5 if radius >= 16 else radius + 2
    if len(pending):  # a defect area larger than ~1000 px across: use the mean of all good pixels
        good = np.flatnonzero(~mask.ravel())
        for slot in pending:
            sources.append(good)
            slots.append(np.full(len(good), slot))
    source_index = np.concatenate(sources)
    target_slot = np.concatenate(slots)
    counts = np.bincount(target_slot, minlength=len(defect_index))
    weight = 1.0 / counts[target_slot]
    return DefectCorrector(
        defect_index=torch.from_numpy(defect_index),
        source_index=torch.from_numpy(source_index),
        target_slot=torch.from_numpy(target_slot.astype(np.int64)),
        weight=torch.from_numpy(weight.astype(np.float32)),
        shape_yx=(h, w),
    )


def _box_mean(image: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a ``size × size`` window (reflect-padded) of ``[B, H, W]``, separably."""
    pad = size // 2
    x = image.unsqueeze(1)
    x = F.pad(x, (pad, pad, 0, 0), mode="reflect")
    x = F.avg_pool2d(x, (1, size), stride=1)
    x = F.pad(x, (0, 0, pad, pad), mode="reflect")
    x = F.avg_pool2d(x, (size, 1), stride=1)
    return x.squeeze(1)


def remove_hot_pixels(
    frames: torch.Tensor, *, threshold_sd: float = 20.0, window_px: int = 11, in_place: bool = False
) -> tuple[torch.Tensor, int]:
    """Replace X-ray / hot pixels by the mean of their neighbourhood (warp-facts §1.7).

    Parameters
    ----------
    frames : torch.Tensor
        ``[F, H, W]`` or ``[H, W]``.
    threshold_sd : float
        A pixel is hot if it deviates from the mean of its ``window_px``² neighbourhood (itself
        excluded) by more than this many standard deviations of its frame (Warp: 20).
    window_px : int
        Odd window size (Warp: 11).
    in_place : bool
        Modify ``frames`` instead of a copy.

    Returns
    -------
    frames : torch.Tensor
        Corrected frames.
    n_replaced : int
        Number of pixels replaced over all frames.
    """
    if window_px % 2 != 1 or window_px < 3:
        raise ValueError(f"window_px must be odd and ≥ 3, got {window_px}")
    out = frames if in_place else frames.clone()
    batch = out.reshape(-1, out.shape[-2], out.shape[-1])
    n_total = window_px * window_px
    mean_all = _box_mean(batch, window_px)
    mean_others = (mean_all * n_total - batch) / (n_total - 1)
    sd = batch.std(dim=(-2, -1), keepdim=True)
    hot = (batch - mean_others).abs() > threshold_sd * sd
    n_hot = int(hot.sum())
    if n_hot:
        batch[hot] = mean_others[hot]
    return out, n_hot


@dataclass(frozen=True)
class GainOrientationReport:
    """Which of the 8 flips/transposes of a gain reference fits a movie best.

    Attributes
    ----------
    correlations : dict of str to float
        Transform name → correlation between the (high-passed) gain-corrected sum and the
        (high-passed) transformed gain. The right orientation leaves ~0 correlation.
    best : GainTransform
        The transform (on top of the gain as given) with the smallest \\|correlation\\|.
    current_correlation : float
        Correlation with the gain as given (identity).
    noise_level : float
        1/√(pixels): the size of a correlation that random noise alone gives.
    looks_wrong : bool
        True if the gain as given leaves a correlation well above noise and ≥ 3× the best one.
    """

    correlations: dict[str, float]
    best: GainTransform
    current_correlation: float
    noise_level: float
    looks_wrong: bool

    def summary(self) -> str:
        """One human-readable paragraph."""
        lines = [
            f"  {name:>24s}: corr {c:+.4f}"
            for name, c in sorted(self.correlations.items(), key=lambda kv: abs(kv[1]))
        ]
        verdict = (
            f"gain orientation looks WRONG (corr {self.current_correlation:+.4f}, "
            f"noise ~{self.noise_level:.4f}); "
            f"apply {self.best.name} ({self.best.cli_flags()})"
            if self.looks_wrong
            else f"gain orientation looks right (corr {self.current_correlation:+.4f}, "
            f"noise ~{self.noise_level:.4f})"
        )
        return verdict + "\n" + "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary."""
        return {
            "correlations": dict(self.correlations),
            "best": self.best.to_dict(),
            "current_correlation": self.current_correlation,
            "noise_level": self.noise_level,
            "looks_wrong": self.looks_wrong,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GainOrientationReport:
        """Inverse of :meth:`to_dict`."""
        return cls(
            correlations=dict(d["correlations"]),
            best=GainTransform.from_dict(d["best"]),
            current_correlation=float(d["current_correlation"]),
            noise_level=float(d["noise_level"]),
            looks_wrong=bool(d["looks_wrong"]),
        )


def _highpass(image: torch.Tensor, size: int = 9) -> torch.Tensor:
    return image - _box_mean(image.unsqueeze(0), size)[0]


def detect_gain_orientation(
    frames_sum: torch.Tensor, gain: GainReference | torch.Tensor, *, convention: str | None = None
) -> GainOrientationReport:
    """Try the 8 flips/transposes of a gain and report which leaves no gain pattern in the corrected sum.

    With the right orientation the corrected sum is the specimen plus shot noise, uncorrelated with
    the gain's pixel-to-pixel pattern; with a wrong one it still carries (gain_t / gain_true), which
    correlates with gain_t. Both are high-passed (minus a 9 × 9 box mean) so that the specimen's low
    frequencies do not count.

    Parameters
    ----------
    frames_sum : torch.Tensor
        ``[H, W]`` sum of raw (not gain-corrected) frames; more frames = clearer answer.
    gain : GainReference or torch.Tensor
        The gain as it would be applied.
    convention : {"multiply", "divide"}, optional
        Overrides the gain's own convention.

    Returns
    -------
    report : GainOrientationReport
    """
    if not isinstance(gain, GainReference):
        gain = load_gain(gain)
    conv = convention or gain.convention
    raw = frames_sum.detach().to("cpu", torch.float32)
    if raw.ndim == 3:
        raw = raw.sum(0)
    correlations: dict[str, float] = {}
    best, best_abs = None, math.inf
    n_pixels = raw.numel()
    for transform in all_gain_transforms():
        g = transform.apply(gain.gain)
        if tuple(g.shape) != tuple(raw.shape):
            continue
        defects = transform.apply(gain.defects)
        corrected = raw / g if conv == "divide" else raw * g
        a, b = _highpass(corrected), _highpass(g)
        good = ~defects
        a, b = a[good], b[good]
        a, b = a - a.mean(), b - b.mean()
        denom = float(torch.sqrt((a * a).sum() * (b * b).sum()))
        corr = float((a * b).sum()) / denom if denom > 0 else 0.0
        correlations[transform.name] = corr
        if abs(corr) < best_abs:
            best, best_abs = transform, abs(corr)
    if best is None:
        gain.check_shape(tuple(raw.shape))  # raises with both shapes
        raise AssertionError("unreachable")
    noise = 1.0 / math.sqrt(n_pixels)
    current = correlations.get("identity", math.nan)
    looks_wrong = bool(
        not math.isfinite(current) or (abs(current) > 5 * noise and abs(current) > 3 * best_abs)
    )
    return GainOrientationReport(
        correlations=correlations,
        best=best,
        current_correlation=current,
        noise_level=noise,
        looks_wrong=looks_wrong,
    )
