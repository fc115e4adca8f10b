"""Picking with BoxNet: settings, result, the pretrained model and ``pick_particles``."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from cryowarp.picking.model import PIXEL_SIZE_A, BoxNet, BoxNetConfig
from cryowarp.picking.postprocess import find_particles
from cryowarp.picking.preprocess import predict_probabilities, prepare_boxnet_input

PRETRAINED_NAME = "boxnet_general.pt"


class PickSettings(BaseModel):
    """BoxNet picking settings (warp-facts.md §3.4–3.5; defaults as noted)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    particle_diameter_a: float = Field(200.0, gt=0, description="expected diameter D in Å (Warp GUI 200)")
    threshold: float = Field(
        0.8,
        ge=0,
        le=1,
        description="min particle score: smoothed score (ours 0.8, calibrated; with relative_threshold the "
        "per-micrograph threshold is min(this, relative_threshold × q)) or, for peak_method='warp', the "
        "probability (WarpTools 0.5, GUI 0.95)",
    )
    minimum_mask_distance_a: float = Field(0.0, ge=0, description="extra distance to the mask in Å (Warp 0)")
    mask_min_component_px: int = Field(
        50, ge=1, description="mask components below this (8 Å px) removed (Warp 20; ours 50, calibrated)"
    )
    mask_threshold: float | None = Field(
        0.7, ge=0, le=1, description="mask where artefact probability ≥ this (None = Warp's argmax rule)"
    )
    peak_method: Literal["smoothed", "warp"] = Field(
        "smoothed", description="'smoothed' (ours, calibrated) or 'warp' (argmax-gated components, §3.5)"
    )
    smooth_sigma_frac: float = Field(0.25, gt=0, description="'smoothed': Gaussian s.d. as a fraction of D")
    blob_weight: float | None = Field(
        None,
        ge=0,
        description="'smoothed': weight w of the dark-blob (LoG) prior, score = smoothed p1 + w·z/10; "
        "None = the model's own (model_blob_weight: 1.0 calibrated for the shipped model, 0 = off for "
        "models from boxnet train/retrain)",
    )
    blob_sigma_frac: float = Field(
        0.8, gt=0, description="'smoothed': LoG tuned to a disc of diameter this × D (ours 0.8, calibrated)"
    )
    relative_threshold: float | None = Field(
        0.3,
        gt=0,
        description="'smoothed': per-micrograph threshold min(threshold, this × q), q = relative_quantile "
        "percentile of the micrograph's candidate peak scores (ours 0.3, calibrated; None = fixed threshold)",
    )
    relative_quantile: float = Field(97.0, gt=0, le=100, description="percentile q for relative_threshold")
    border_frac: float = Field(0.5, ge=0, description="no picks closer than this × D to the edge (Warp 0.8)")
    highpass_a: float = Field(500.0, gt=0, description="high-pass cut-off in Å before normalising")
    invert_contrast: bool = Field(False, description="multiply by −1 (negative stain); cryo: False")
    tile_px: int = Field(512, gt=0, description="inference tile at 8 Å/px (Warp 2: 512)")
    border_px: int = Field(64, ge=0, description="discarded tile border at 8 Å/px (Warp 2: 64)")
    single_tile_max_px: int = Field(
        1024, ge=0, description="use one tile when the padded 8 Å image fits in this (0 = Warp's tiling)"
    )


@dataclass(frozen=True)
class Picks:
    """BoxNet result for one micrograph.

    Attributes
    ----------
    coords_px_xy : torch.Tensor
        `(n, 2)` particle centres (x, y) in pixels of the input micrograph (RELION's
        rlnCoordinateX/Y).
    scores : torch.Tensor
        `(n,)` score at each centre (rlnAutopickFigureOfMerit): smoothed score + blob prior (≥ 0, can
        exceed 1), or the probability for peak_method="warp".
    mask_8a : torch.Tensor
        `(h', w')` bool artefact mask at BoxNet's (about) 8 Å/px.
    mask_percentage : float
        Share of masked pixels in %.
    mask_pixel_size_xy_a : tuple of float
        Exact pixel size of ``mask_8a`` along x and y in Å (8 up to rounding of the size to even).
    """

    coords_px_xy: torch.Tensor
    scores: torch.Tensor
    mask_8a: torch.Tensor
    mask_percentage: float
    mask_pixel_size_xy_a: tuple[float, float] = (PIXEL_SIZE_A, PIXEL_SIZE_A)

    def __len__(self) -> int:
        return int(self.coords_px_xy.shape[0])

    def to_dict(self) -> dict:
        """Plain-JSON form (the mask as a list of row lists of 0/1)."""
        return {
            "coords_px_xy": self.coords_px_xy.detach().cpu().tolist(),
            "scores": self.scores.detach().cpu().tolist(),
            "mask_8a": self.mask_8a.detach().cpu().to(torch.uint8).tolist(),
            "mask_percentage": float(self.mask_percentage),
            "mask_pixel_size_xy_a": list(self.mask_pixel_size_xy_a),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Picks:
        """Inverse of :meth:`to_dict`."""
        return cls(
            coords_px_xy=torch.tensor(d["coords_px_xy"], dtype=torch.float32).reshape(-1, 2),
            scores=torch.tensor(d["scores"], dtype=torch.float32).reshape(-1),
            mask_8a=torch.tensor(d["mask_8a"], dtype=torch.uint8).to(torch.bool),
            mask_percentage=float(d["mask_percentage"]),
            mask_pixel_size_xy_a=tuple(float(v) for v in d["mask_pixel_size_xy_a"]),
        )


BLOB_WEIGHT_KEY = "blob_weight"


def model_blob_weight(model: BoxNet) -> float:
    """The dark-blob prior weight a model was calibrated with: its metadata ``blob_weight``, else 0.

    The shipped general model records 1.0 (``scripts/calibrate_boxnet_postprocess.py``). Any other
    model — retrained on a user's specimen or trained from scratch — picks from the network alone:
    the generic prior was not calibrated for it and works against a specimen-specific net
    (docs/benchmarks/picking_retrain.md: F1 0.85 without the prior, 0.40 with it).
    """
    return float(getattr(model, "metadata", {}).get(BLOB_WEIGHT_KEY, 0.0))


def boxnet_to_state(model: BoxNet, **metadata) -> dict:
    """A dict with the config, the weights and ``metadata`` (made plain JSON types) for ``torch.save``.

    Plain types keep the file loadable with ``torch.load(..., weights_only=True)``.
    """
    plain = json.loads(json.dumps(metadata, default=str))
    return {
        "format": "cryowarp-boxnet-1",
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": plain,
    }


def boxnet_from_state(state: dict, device: torch.device | None = None) -> BoxNet:
    """Rebuild a BoxNet in eval mode from :func:`boxnet_to_state` output."""
    if not isinstance(state, dict) or state.get("format") != "cryowarp-boxnet-1":
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"expected a cryowarp BoxNet state (format 'cryowarp-boxnet-1'), found {found!r}")
    model = BoxNet(BoxNetConfig.from_dict(state["config"]))
    model.load_state_dict(state["state_dict"])
    model.metadata = dict(state.get("metadata", {}))
    return model.to(device or torch.device("cpu")).eval()


def load_pretrained_boxnet(device: torch.device | None = None) -> BoxNet:
    """The general BoxNet shipped inside the package (``picking/weights/boxnet_general.pt``).

    It was produced by ``scripts/train_boxnet_general.py`` (see docs/boxnet.md).
    """
    source = resources.files("cryowarp.picking").joinpath("weights", PRETRAINED_NAME)
    if not source.is_file():
        raise FileNotFoundError(
            f"{source}: the pretrained BoxNet weights are missing from the installed package; "
            "re-create them with scripts/train_boxnet_general.py or reinstall cryowarp"
        )
    data = source.read_bytes()
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return boxnet_from_state(state, device)


def pick_particles(
    image: torch.Tensor, pixel_size_a: float, model: BoxNet, settings: PickSettings | None = None
) -> Picks:
    """Pick particles and mask artefacts in one micrograph with BoxNet.

    Parameters
    ----------
    image : torch.Tensor
        `(h, w)` micrograph (aligned average), native cryo contrast (particles dark).
    pixel_size_a : float
        Pixel size of ``image`` in Å.
    model : BoxNet
        E.g. :func:`load_pretrained_boxnet`; moved to and run on ``image.device`` in eval mode.
    settings : PickSettings, optional
        Defaults to ``PickSettings()``.

    Returns
    -------
    Picks
        Coordinates in pixels of ``image``; tensors on ``image.device``.

    References
    ----------
    Tegunov & Cramer, Nat. Methods 16, 1146 (2019); warp-facts.md §3.4–3.5.
    """
    settings = settings or PickSettings()
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"micrograph has {int((~torch.isfinite(image)).sum())} NaN/inf pixel(s); nothing was picked")
    x8, scale_xy = prepare_boxnet_input(
        image, pixel_size_a, highpass_a=settings.highpass_a, invert_contrast=settings.invert_contrast
    )
    mask_pixel_size_xy_a = (pixel_size_a * scale_xy[0], pixel_size_a * scale_xy[1])
    if float(image.std()) <= 1e-6 * max(float(image.abs().max()), 1e-30):
        # no contrast (e.g. a blank exposure; 1e-6 is float32 rounding of a constant): nothing to pick.
        # Without this the normalisation blows rounding up to unit noise, and the per-micrograph
        # threshold, relative to the best peak, accepts the flat map's ties.
        return Picks(
            coords_px_xy=torch.zeros(0, 2, device=image.device),
            scores=torch.zeros(0, device=image.device),
            mask_8a=torch.zeros(x8.shape, dtype=torch.bool, device=image.device),
            mask_percentage=0.0,
            mask_pixel_size_xy_a=mask_pixel_size_xy_a,
        )
    model = model.to(image.device).eval()
    probs = predict_probabilities(
        model,
        x8,
        tile_px=settings.tile_px,
        border_px=settings.border_px,
        single_tile_max_px=settings.single_tile_max_px,
    )
    pixel_size_8a = pixel_size_a * scale_xy[0]
    cand = find_particles(
        probs,
        particle_diameter_a=settings.particle_diameter_a,
        threshold=settings.threshold,
        minimum_mask_distance_a=settings.minimum_mask_distance_a,
        mask_min_component_px=settings.mask_min_component_px,
        pixel_size_a=pixel_size_8a,
        method=settings.peak_method,
        smooth_sigma_frac=settings.smooth_sigma_frac,
        border_frac=settings.border_frac,
        mask_threshold=settings.mask_threshold,
        image_8a=x8,
        # the blob and relative-threshold options act only when smoothed
        blob_weight=model_blob_weight(model) if settings.blob_weight is None else settings.blob_weight,
        blob_sigma_frac=settings.blob_sigma_frac,
        relative_threshold=settings.relative_threshold,
        relative_quantile=settings.relative_quantile,
    )
    scale = torch.tensor(scale_xy, device=cand.coords_px_xy.device, dtype=torch.float32)
    coords = cand.coords_px_xy * scale
    mask_pct = 100.0 * float(cand.mask.float().mean()) if cand.mask.numel() else 0.0
    return Picks(
        coords_px_xy=coords.to(image.device),
        scores=cand.scores.to(image.device),
        mask_8a=cand.mask.to(image.device),
        mask_percentage=mask_pct,
        mask_pixel_size_xy_a=mask_pixel_size_xy_a,
    )
