"""Processing of one movie: read → motion → average → CTF → BoxNet → particles, with artifacts on disk.

``process_movie`` is what a worker runs (in a local process or on a Dask worker). It reads the movie,
calls the pure core functions, writes its artifacts under the project folder (atomically), and returns
an :class:`~cryowarp.pipeline.results.ItemResult`. It never touches the database: the coordinator
records the result. Any failure is caught and returned as ``ok=False`` with a message naming the
stage, the file, what was expected and what was found.

Stages whose stored results are still current (``stages`` leaves them out) are reloaded from the
item folder instead of recomputed.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cryowarp.pipeline.results import ItemResult
from cryowarp.pipeline.settings import ProcessingSettings, stage_hashes

__all__ = ["process_movie", "item_name", "item_dir", "stack_relpath", "ItemError"]

_BOXNET_CACHE: dict[tuple[str | None, str], Any] = {}


class ItemError(RuntimeError):
    """A readable, per-item processing failure."""


def item_name(path: str | Path) -> str:
    """Item name of a movie: its file name without the (last) extension."""
    return Path(path).name.rsplit(".", 1)[0] if "." in Path(path).name else Path(path).name


def item_dir(project_dir: str | Path, name: str) -> Path:
    """``<project>/items/<name>``."""
    return Path(project_dir) / "items" / name


def stack_relpath(name: str) -> str:
    """Particle stack path relative to the project: ``particles/<name>.mrcs``."""
    return f"particles/{name}.mrcs"


def _relative(project_dir: Path, path: Path) -> str:
    return path.relative_to(project_dir).as_posix()


def _write_json(path: Path, data: Any) -> Path:
    from cryowarp.io.mrc import atomic_path

    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data, allow_nan=True))
    return path


def _load_boxnet(path: str | None, device: torch.device) -> Any:
    from cryowarp.picking import boxnet_from_state, load_pretrained_boxnet

    # keyed by the file's identity too: a model file replaced in place is read again
    stat = Path(path).stat() if path is not None and Path(path).is_file() else None
    key = (path, str(device), None if stat is None else (stat.st_mtime_ns, stat.st_size, stat.st_ino))
    if key not in _BOXNET_CACHE:
        if path is None:
            try:
                model = load_pretrained_boxnet(device=device)
            except FileNotFoundError as exc:
                raise ItemError(
                    "the general BoxNet model is not installed (picking/weights/boxnet_general.pt "
                    "missing); pass --boxnet MODEL.pt or turn picking off"
                ) from exc
        else:
            if not Path(path).is_file():
                raise ItemError(f"BoxNet model {path}: no such file")
            state = torch.load(path, map_location="cpu", weights_only=True)
            model = boxnet_from_state(state, device)
        _BOXNET_CACHE.clear()
        _BOXNET_CACHE[key] = model
    return _BOXNET_CACHE[key]


def _apply_corrections(
    picks_xy: np.ndarray, scores: np.ndarray, corrections: dict | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """BoxNet's picks minus manual removals plus manual additions."""
    sources = ["auto"] * len(picks_xy)
    if not corrections:
        return picks_xy, scores, sources
    keep = np.ones(len(picks_xy), dtype=bool)
    for x, y, radius in corrections.get("removed", []):
        if len(picks_xy):
            keep &= np.hypot(picks_xy[:, 0] - x, picks_xy[:, 1] - y) > radius
    added = np.asarray(corrections.get("added", []), dtype=np.float64).reshape(-1, 2)
    xy = np.concatenate([picks_xy[keep], added])
    sc = np.concatenate([scores[keep], np.full(len(added), np.nan)])
    return xy, sc, [s for s, k in zip(sources, keep, strict=True) if k] + ["manual"] * len(added)


def process_movie(
    path: str | Path,
    settings: ProcessingSettings,
    project_dir: str | Path,
    *,
    stages: list[str] | tuple[str, ...] | None = None,
    pick_corrections: dict | None = None,
    expected_shape_fyx: tuple[int, int, int] | None = None,
    device: str | torch.device = "auto",
    n_threads: int | None = None,
) -> ItemResult:
    """Process one movie and write its artifacts under ``project_dir``.

    Parameters
    ----------
    path : str or Path
        The movie (MRC, TIFF, EER).
    settings : ProcessingSettings
        Current project settings.
    project_dir : str or Path
        Project folder (artifacts go to ``items/<name>/`` and ``particles/<name>.mrcs``).
    stages : sequence of str, optional
        Stages to compute (default: all enabled). Others needed downstream are loaded from disk.
    pick_corrections : dict, optional
        ``{"added": [[x, y]], "removed": [[x, y, radius_px]]}`` manual corrections (from the store).
    expected_shape_fyx : tuple of int, optional
        Frames, height and width the session's movies have (e.g. the first movie's); a movie that
        differs fails with a message instead of producing inconsistent particles.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda:0"`` ...
    n_threads : int, optional
        torch intra-op threads for this process.

    Returns
    -------
    ItemResult
        ``ok=False`` with ``error="<stage>: <message>"`` on failure (never raises for bad input).
    """
    from cryowarp.device import resolve_device

    if n_threads:
        import numba  # the motion kernels' thread pool follows torch's

        torch.set_num_threads(int(n_threads))
        numba.set_num_threads(min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
    project_dir = Path(project_dir)
    path = Path(path)
    name = item_name(path)
    folder = item_dir(project_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    enabled = settings.enabled_stages()
    todo = [s for s in enabled if stages is None or s in stages]
    hashes = stage_hashes(settings)
    timings: dict[str, float] = {}
    done: list[str] = []
    out: dict[str, Any] = {"artifacts": {}}
    stage = "read"
    try:
        dev = resolve_device(device) if isinstance(device, str) else device
        state = _ItemState(path, name, folder, project_dir, settings, dev, out, timings)
        need_frames = any(s in todo for s in ("motion", "export"))
        if need_frames:
            t0 = time.perf_counter()
            state.read(expected_shape_fyx)
            timings["read"] = time.perf_counter() - t0
        for stage in todo:
            t0 = time.perf_counter()
            getattr(state, f"run_{stage}")(pick_corrections)
            timings[stage] = time.perf_counter() - t0
            done.append(stage)
    except Exception as exc:  # per-item errors are recorded, never raised
        message = str(exc) or type(exc).__name__
        if path.name not in message:
            message = f"{path.name}: {message}"
        return ItemResult(
            name=name,
            path=str(path),
            ok=False,
            error=f"{stage}: {message}",
            stages_run=tuple(done),
            stage_hashes={s: hashes[s] for s in done},
            timings_s=timings,
            **{k: v for k, v in out.items() if k not in ("particles",)},
        )
    return ItemResult(
        name=name,
        path=str(path),
        ok=True,
        stages_run=tuple(done),
        stage_hashes={s: hashes[s] for s in done},
        timings_s=timings,
        **{k: v for k, v in out.items()},
    )


class _ItemState:
    """The intermediate results of one movie while its stages run (private)."""

    def __init__(
        self,
        path: Path,
        name: str,
        folder: Path,
        project_dir: Path,
        settings: ProcessingSettings,
        device: torch.device,
        out: dict[str, Any],
        timings: dict[str, float],
    ):
        self.path, self.name, self.folder, self.project_dir = path, name, folder, project_dir
        self.settings, self.device, self.out, self.timings = settings, device, out, timings
        self.frames: torch.Tensor | None = None
        self.pixel_size_a: float | None = settings.input.pixel_size_a
        self.motion_model: Any = None
        self.average: torch.Tensor | None = None
        self.average_no_dw: torch.Tensor | None = None
        self.ctf_model: Any = None
        self.picks: tuple[np.ndarray, np.ndarray, list[str]] | None = None

    # ---------------------------------------------------------------- reading
    def read(self, expected_shape_fyx: tuple[int, int, int] | None) -> None:
        from cryowarp.io.movies import read_movie

        inp = self.settings.input
        movie = read_movie(
            self.path,
            gain=inp.gain_path,
            defects=inp.defects_path,
            gain_flip_x=inp.gain_flip_x,
            gain_flip_y=inp.gain_flip_y,
            gain_transpose=inp.gain_transpose,
            eer_upsampling=inp.eer_upsampling,
            eer_group=inp.eer_group,
            pixel_size_a=inp.pixel_size_a,
        )
        frames = movie.frames
        if movie.pixel_size_a is None or movie.pixel_size_a <= 0:
            raise ItemError("pixel size unknown: the file header has none and no --pixel-size was given")
        self.pixel_size_a = float(movie.pixel_size_a)
        f, h, w = frames.shape
        if expected_shape_fyx is not None and (f, h, w) != tuple(expected_shape_fyx):
            ef, eh, ew = expected_shape_fyx
            raise ItemError(
                f"expected {ef} frames of {ew}×{eh} like the rest of the session, found {f} frames of {w}×{h}"
            )
        if self.settings.do_ctf and min(h, w) < 2 * self.settings.ctf.window:
            raise ItemError(
                f"frames of {w}×{h} are smaller than one CTF patch ({2 * self.settings.ctf.window} px); "
                f"expected ≥ {2 * self.settings.ctf.window} px per side (or a smaller ctf.window)"
            )
        # a sum per frame carries any NaN/inf: 0.1 s at 4096² × 40, against 5–7 s and a 0.7 GB mask for
        # isfinite(frames).all() (counts stay far below float32's range)
        sums = frames.reshape(frames.shape[0], -1).sum(1)
        if not bool(torch.isfinite(sums).all()):
            bad = torch.nonzero(~torch.isfinite(sums)).reshape(-1).tolist()
            raise ItemError(f"frames hold NaN or infinite values (frame{'s' if len(bad) > 1 else ''} {bad[:5]})")
        self.frames = frames.to(self.device)
        self.out.update(n_frames=f, shape_yx=(h, w), pixel_size_a=self.pixel_size_a)

    # ---------------------------------------------------------------- stages
    def run_motion(self, _corrections: Any) -> None:
        from cryowarp.io.mrc import write_mrc
        from cryowarp.motion import MotionModel, average_frames, fit_motion

        exposure = self.settings.input.exposure_per_frame_e_per_a2
        if self.settings.do_motion:
            model = fit_motion(self.frames, self.pixel_size_a, exposure, self.settings.motion)
        else:
            model = MotionModel.zeros(
                tuple(self.frames.shape[-2:]),
                self.pixel_size_a,
                int(self.frames.shape[0]),
                skipped_reason="motion correction turned off (do_motion = false)",
            )
        aligned = average_frames(
            self.frames,
            model,
            pixel_size_a=self.pixel_size_a,
            exposure_per_frame_e_per_a2=exposure,
            dose_weighted=True,
            also_unweighted=True,
        )
        self.motion_model, self.average, self.average_no_dw = model, aligned.average, aligned.average_no_dw
        average_path = write_mrc(self.folder / "average.mrc", aligned.average, self.pixel_size_a)
        write_mrc(self.folder / "average_nodw.mrc", aligned.average_no_dw, self.pixel_size_a)
        tracks = model.patch_tracks_a_yx()
        motion = {
            **model.to_dict(),
            "tracks_a_yx": model.global_displacement_a_yx().tolist(),
            "patch_tracks_a_yx": tracks.tolist(),
        }
        motion_path = _write_json(self.folder / "motion.json", motion)
        thumb, scale = _images().write_thumbnail(self.folder / "thumb.png", aligned.average)
        tracks_png = _images().write_tracks_png(
            self.folder / "tracks.png",
            tracks.cpu().numpy(),
            model.patch_centers_px_yx.cpu().numpy(),
            model.shape_yx,
        )
        self.out["artifacts"].update(
            average=_relative(self.project_dir, average_path),
            motion_json=_relative(self.project_dir, motion_path),
            thumbnail=_relative(self.project_dir, thumb),
            tracks_png=_relative(self.project_dir, tracks_png),
        )
        self.out["mean_motion_a"] = float(model.mean_frame_movement_a)
        _write_json(self.folder / "thumb.json", {"scale": scale})

    def _need_motion(self) -> None:
        if self.motion_model is None:
            from cryowarp.motion import MotionModel

            path = self.folder / "motion.json"
            if not path.is_file():
                raise ItemError(f"no stored motion result ({path}); motion must run first")
            self.motion_model = MotionModel.from_dict(json.loads(path.read_text()))

    def _need_average(self, dose_weighted: bool) -> torch.Tensor:
        current = self.average if dose_weighted else self.average_no_dw
        if current is None:
            from cryowarp.io.mrc import read_mrc

            file = self.folder / ("average.mrc" if dose_weighted else "average_nodw.mrc")
            if not file.is_file():
                raise ItemError(f"no stored average ({file}); motion must run first")
            array, pixel_size_a = read_mrc(file)
            current = torch.as_tensor(np.asarray(array), dtype=torch.float32).to(self.device)
            if self.pixel_size_a is None and pixel_size_a:
                self.pixel_size_a = float(pixel_size_a)
            if dose_weighted:
                self.average = current
            else:
                self.average_no_dw = current
        return current

    def run_ctf(self, _corrections: Any) -> None:
        from cryowarp.ctf import fit_ctf

        image = self._need_average(dose_weighted=False)
        model = fit_ctf(image, self.pixel_size_a, self.settings.ctf)
        self.ctf_model = model
        ctf_path = _write_json(self.folder / "ctf.json", model.to_dict())
        spectrum = {
            "freq_per_a": model.frequencies_1d_per_a().tolist(),
            "ps_1d": list(model.spectrum_1d),
            "ctf_fit_1d": list(model.simulated_1d),
            "background_1d": list(model.background_1d),
            "quality_1d": list(model.quality_1d),
            "resolution_a": model.resolution_a,
            "fit_range_a": list(model.fit_range_a),
        }
        spec_path = _write_json(self.folder / "spectrum.json", spectrum)
        png = _images().write_spectrum_png(
            self.folder / "ps.png", image, model, self.pixel_size_a, window=self.settings.ctf.window
        )
        self.out["artifacts"].update(
            ctf_json=_relative(self.project_dir, ctf_path),
            spectrum_json=_relative(self.project_dir, spec_path),
            spectrum_png=_relative(self.project_dir, png),
        )
        self.out.update(
            defocus_um=float(model.defocus_um),
            defocus_delta_um=float(model.defocus_delta_um),
            astigmatism_angle_deg=float(model.astigmatism_angle_deg),
            phase_shift_deg=float(model.phase_shift_deg),
            resolution_a=_finite(model.resolution_a),
        )

    def _need_ctf(self) -> None:
        if self.ctf_model is None and self.settings.do_ctf:
            from cryowarp.ctf import CTFModel

            path = self.folder / "ctf.json"
            if not path.is_file():
                raise ItemError(f"no stored CTF result ({path}); ctf must run first")
            self.ctf_model = CTFModel.from_dict(json.loads(path.read_text()))

    def run_pick(self, corrections: dict | None) -> None:
        from cryowarp.io.masks import write_mask_tif
        from cryowarp.picking import pick_particles

        if self.settings.picks_star_dir is not None:
            xy, scores, mask_percentage = self._picks_from_star(Path(self.settings.picks_star_dir))
            (self.folder / "mask.tif").unlink(missing_ok=True)  # a BoxNet mask of earlier settings
            self.out["artifacts"]["mask"] = None
        else:
            image = self._need_average(dose_weighted=True)
            model = _load_boxnet(self.settings.boxnet_model_path, self.device)
            picks = pick_particles(image, self.pixel_size_a, model, self.settings.pick)
            xy = picks.coords_px_xy.detach().cpu().double().numpy().reshape(-1, 2)
            scores = picks.scores.detach().cpu().double().numpy().reshape(-1)
            mask_percentage = float(picks.mask_percentage)
            mask_path = write_mask_tif(self.folder / "mask.tif", picks.mask_8a)
            self.out["artifacts"]["mask"] = _relative(self.project_dir, mask_path)
        self.out["picks_px_xy_score"] = [
            [float(x), float(y), float(s)] for (x, y), s in zip(xy, scores, strict=True)
        ]
        self.out["mask_percentage"] = mask_percentage
        picks_path = _write_json(
            self.folder / "picks.json",
            {"coords_px_xy": xy.tolist(), "scores": scores.tolist(), "mask_percentage": mask_percentage},
        )
        self.out["artifacts"]["picks_json"] = _relative(self.project_dir, picks_path)
        self.picks = _apply_corrections(xy, scores, corrections)
        if "export" not in self.settings.enabled_stages():
            self.out["n_particles"] = len(self.picks[0])

    def _picks_from_star(self, folder: Path) -> tuple[np.ndarray, np.ndarray, float | None]:
        """Coordinates from ``<folder>/<name>*.star`` (RELION rlnCoordinateX/Y; FOM as score if present)."""
        from cryowarp.io.star import read_star

        candidates = sorted(folder.glob(f"{self.name}*.star"))
        if not candidates:
            raise ItemError(f"no coordinate file {folder}/{self.name}*.star (picks_star_dir is set)")
        table = None
        for candidate in candidates:  # e.g. <name>_motion.star and <name>_particles.star side by side
            table = next((t for t in read_star(candidate).values() if "rlnCoordinateX" in t.columns), None)
            if table is not None:
                break
        if table is None:
            raise ItemError(
                f"{', '.join(c.name for c in candidates)}: expected a table with rlnCoordinateX/Y "
                f"in {folder}, found none"
            )
        xy = table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(dtype=np.float64)
        if "rlnAutopickFigureOfMerit" in table.columns:
            scores = table["rlnAutopickFigureOfMerit"].to_numpy(dtype=np.float64)
        else:
            scores = np.ones(len(xy))
        return xy, scores, None

    def _need_picks(self, corrections: dict | None) -> None:
        if self.picks is None:
            path = self.folder / "picks.json"
            if not path.is_file():
                raise ItemError(f"no stored picks ({path}); pick must run first")
            data = json.loads(path.read_text())
            xy = np.asarray(data["coords_px_xy"], dtype=np.float64).reshape(-1, 2)
            scores = np.asarray(data["scores"], dtype=np.float64).reshape(-1)
            self.out.setdefault("mask_percentage", data.get("mask_percentage"))
            self.picks = _apply_corrections(xy, scores, corrections)

    def run_export(self, corrections: dict | None) -> None:
        from cryowarp.export import extract_particles_2d
        from cryowarp.io.mrc import write_mrc

        self._need_motion()
        self._need_ctf()
        self._need_picks(corrections)
        xy, scores, sources = self.picks
        stack_rel = stack_relpath(self.name)
        stack_path = self.project_dir / stack_rel
        export = self.settings.export
        if len(xy) == 0:
            stack_path.unlink(missing_ok=True)
            self.out.update(
                particles=[], particle_stack=None, n_particles=0, particle_box_px=export.box_size_px
            )
            return
        stack = extract_particles_2d(
            self.frames,
            self.motion_model,
            self.ctf_model,
            torch.as_tensor(xy, dtype=torch.float32),
            pixel_size_a=self.pixel_size_a,
            exposure_per_frame_e_per_a2=self.settings.input.exposure_per_frame_e_per_a2,
            settings=export,
        )
        write_mrc(stack_path, stack.images, stack.pixel_size_a, float16=export.float16, stack=True)
        u = stack.defocus_u_um.cpu().tolist() if stack.defocus_u_um is not None else [None] * len(xy)
        v = stack.defocus_v_um.cpu().tolist() if stack.defocus_v_um is not None else [None] * len(xy)
        particles = [
            {
                "x_px": float(x),
                "y_px": float(y),
                "defocus_u_um": du,
                "defocus_v_um": dv,
                "astigmatism_angle_deg": stack.astigmatism_angle_deg,
                "phase_shift_deg": stack.phase_shift_deg,
                "score": None if math.isnan(s) else float(s),
                "source": src,
            }
            for (x, y), s, src, du, dv in zip(xy, scores, sources, u, v, strict=True)
        ]
        self.out.update(
            particles=particles,
            particle_stack=stack_rel,
            n_particles=len(particles),
            particle_pixel_size_a=float(stack.pixel_size_a),
            particle_box_px=int(stack.box_size_px),
        )
        self.out["artifacts"]["particles"] = stack_rel


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _images() -> Any:
    from cryowarp.pipeline import _images as images

    return images
