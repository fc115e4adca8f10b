"""Training and retraining BoxNet (warp-facts.md §3.6): labels, class weights, augmentation, loop."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from cryowarp.picking.model import PIXEL_SIZE_A, BoxNet
from cryowarp.picking.preprocess import prepare_boxnet_input, rescale_to_boxnet_pixel_size


def paint_labels(
    shape_yx: tuple[int, int],
    coords_px_xy: torch.Tensor,
    particle_diameter_a: float,
    *,
    mask: torch.Tensor | None = None,
    pixel_size_a: float = PIXEL_SIZE_A,
) -> torch.Tensor:
    """Label image for BoxNet: discs of class 1 at picks, class 2 where ``mask`` > 0.5, else 0.

    Each pick is a disc of radius max(1.5, D/2/px/4) px, a quarter of the particle radius
    (warp-facts.md §3.6); the mask overwrites particles.

    Parameters
    ----------
    shape_yx : tuple of int
        Shape of the 8 Å/px image.
    coords_px_xy : torch.Tensor
        `(n, 2)` centres (x, y) in pixels of that image.
    particle_diameter_a : float
        Particle diameter D in Å.
    mask : torch.Tensor, optional
        `(h, w)` artefact mask (values > 0.5 are artefact).

    Returns
    -------
    labels : torch.Tensor
        `(h, w)` int64 in {0, 1, 2}, on the device of ``coords_px_xy``.
    """
    h, w = shape_yx
    device = coords_px_xy.device
    labels = torch.zeros(h, w, dtype=torch.long, device=device)
    radius = max(1.5, particle_diameter_a / 2 / pixel_size_a / 4)
    if coords_px_xy.numel():
        yy = torch.arange(h, device=device, dtype=torch.float32)[:, None]
        xx = torch.arange(w, device=device, dtype=torch.float32)[None, :]
        r = int(math.ceil(radius))
        for x, y in coords_px_xy.float().tolist():
            y0, y1 = max(int(math.floor(y)) - r, 0), min(int(math.ceil(y)) + r + 1, h)
            x0, x1 = max(int(math.floor(x)) - r, 0), min(int(math.ceil(x)) + r + 1, w)
            if y0 >= y1 or x0 >= x1:
                continue
            disc = (yy[y0:y1] - y) ** 2 + (xx[:, x0:x1] - x) ** 2 <= radius**2
            labels[y0:y1, x0:x1][disc] = 1
    if mask is not None:
        if tuple(mask.shape) != (h, w):
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from the image shape {(h, w)}")
        labels[mask.to(device) > 0.5] = 2
    return labels


FALSE_POSITIVE_CERTAINTY = 4.0  # Warp: false-positive discs painted with 4 into the certainty layer
UNCERTAIN_CERTAINTY = 0.0  # Warp: "uncertain" picks painted with 0 (ignored by the loss)


def paint_certainty(
    shape_yx: tuple[int, int],
    particle_diameter_a: float,
    *,
    false_positives_px_xy: torch.Tensor | None = None,
    uncertain_px_xy: torch.Tensor | None = None,
    pixel_size_a: float = PIXEL_SIZE_A,
) -> torch.Tensor:
    """Per-pixel loss weight ("certainty" layer, warp-facts.md §3.6): 1, 4 on false positives, 0 on uncertain.

    False positives (e.g. picks a user removed) stay background in the labels but weigh 4× in the
    loss, so the network unlearns exactly the look-alikes it picked; uncertain picks are left out of
    the loss. Each is a disc of the particle radius D/2 (Warp: max(1, D/16) px at 8 Å/px, the same
    radius); uncertain discs are painted last. Warp 2 writes this layer but ignores it; Warp 1 multiplied the
    per-pixel weight by it, as we do.

    Returns
    -------
    certainty : torch.Tensor
        `(h, w)` float32.
    """
    h, w = shape_yx
    certainty = torch.ones(h, w, dtype=torch.float32)
    radius = max(1.0, particle_diameter_a / 2 / pixel_size_a)
    yy = torch.arange(h, dtype=torch.float32)[:, None]
    xx = torch.arange(w, dtype=torch.float32)[None, :]
    for coords, value in ((false_positives_px_xy, FALSE_POSITIVE_CERTAINTY), (uncertain_px_xy, UNCERTAIN_CERTAINTY)):
        if coords is None:
            continue
        for x, y in torch.as_tensor(coords, dtype=torch.float32).reshape(-1, 2).cpu().tolist():
            certainty[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = value
    return certainty


def class_weights(labels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Cross-entropy class weights of a corpus (warp-facts.md §3.6, Warp 2).

    Background w₀ = min(0.5·(N₁/N₀)^⅓, 1), particle w₁ = 1, artefact w₂ = 1; with no particle pixels
    w₀ = (N₂/N₀)^⅓.

    Returns
    -------
    weights : torch.Tensor
        `(3,)` float32.
    """
    counts = torch.zeros(3, dtype=torch.float64)
    for lab in labels:
        counts += torch.bincount(lab.reshape(-1).cpu(), minlength=3)[:3].double()
    n0, n1, n2 = counts.tolist()
    if n0 == 0:
        w0 = 1.0
    elif n1 > 0:
        w0 = min(0.5 * (n1 / n0) ** (1 / 3), 1.0)
    else:
        w0 = (n2 / n0) ** (1 / 3) if n2 > 0 else 1.0
    return torch.tensor([w0, 1.0, 1.0], dtype=torch.float32)


@dataclass(frozen=True)
class TrainingExample:
    """One micrograph prepared for BoxNet: `(h, w)` normalised 8 Å/px image, its labels and, optionally,
    the per-pixel loss weight of :func:`paint_certainty` (None = 1 everywhere)."""

    image_8a: torch.Tensor
    labels: torch.Tensor
    name: str = ""
    certainty: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> TrainingExample:
        """The same example with its tensors on ``device``."""
        return TrainingExample(
            self.image_8a.to(device),
            self.labels.to(device),
            self.name,
            None if self.certainty is None else self.certainty.to(device),
        )


def make_training_example(
    image: torch.Tensor,
    pixel_size_a: float,
    coords_px_xy: torch.Tensor,
    particle_diameter_a: float,
    *,
    mask: torch.Tensor | None = None,
    false_positives_px_xy: torch.Tensor | None = None,
    uncertain_px_xy: torch.Tensor | None = None,
    highpass_a: float = 500.0,
    invert_contrast: bool = False,
    name: str = "",
) -> TrainingExample:
    """Rescale, high-pass and normalise a micrograph like inference does and paint its labels.

    Parameters
    ----------
    image : torch.Tensor
        `(h, w)` micrograph at ``pixel_size_a``.
    coords_px_xy : torch.Tensor
        `(n, 2)` particle centres in pixels of ``image``.
    mask : torch.Tensor, optional
        `(h, w)` artefact mask in pixels of ``image`` (> 0.5 = artefact) or already at 8 Å/px.
    false_positives_px_xy, uncertain_px_xy : torch.Tensor, optional
        `(m, 2)` positions in pixels of ``image`` that are not particles (weighted 4× as background)
        or not sure (left out of the loss); see :func:`paint_certainty`.
    """
    x8, scale_xy = prepare_boxnet_input(
        image, pixel_size_a, highpass_a=highpass_a, invert_contrast=invert_contrast
    )
    coords = torch.as_tensor(coords_px_xy, dtype=torch.float32, device=x8.device).reshape(-1, 2)
    coords_8a = coords / torch.tensor(scale_xy, device=x8.device)
    mask_8a = None
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.float32, device=x8.device)
        if tuple(mask.shape) == tuple(x8.shape):
            mask_8a = mask
        elif tuple(mask.shape) == tuple(image.shape):
            mask_8a = F.interpolate(mask[None, None], size=tuple(x8.shape), mode="area")[0, 0]
        else:
            raise ValueError(
                f"{name or 'example'}: mask shape {tuple(mask.shape)} matches neither the "
                f"micrograph {tuple(image.shape)} nor its 8 Å/px version {tuple(x8.shape)}"
            )
    pixel_size_8a = pixel_size_a * scale_xy[0]
    labels = paint_labels(
        tuple(x8.shape), coords_8a, particle_diameter_a, mask=mask_8a, pixel_size_a=pixel_size_8a
    )
    certainty = None
    if false_positives_px_xy is not None or uncertain_px_xy is not None:
        to_8a = torch.tensor(scale_xy, dtype=torch.float32)

        def at_8a(xy: torch.Tensor | None) -> torch.Tensor | None:
            return None if xy is None else torch.as_tensor(xy, dtype=torch.float32).cpu().reshape(-1, 2) / to_8a

        certainty = paint_certainty(
            tuple(x8.shape),
            particle_diameter_a,
            false_positives_px_xy=at_8a(false_positives_px_xy),
            uncertain_px_xy=at_8a(uncertain_px_xy),
            pixel_size_a=pixel_size_8a,
        ).to(x8.device)
    return TrainingExample(image_8a=x8, labels=labels, name=name, certainty=certainty)


def augment_batch(
    examples: Sequence[TrainingExample], patch_px: int, generator: torch.Generator, *, noise_sd: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random augmented patches (warp-facts.md §3.6 ``BoxNet2Augment``).

    Per patch: random centre, rotation U(0, 2π), anisotropic scale U(0.8, 1.2) × U(0.8, 1.2) along
    a random direction, image resampled bilinearly (Warp: windowed sinc), labels nearest-neighbour,
    additive Gaussian noise of s.d. |N(0, ``noise_sd``)| (Warp: 0.3), intensity offset U(−0.4, 0.4) and
    scale U(0.5, 1.5).

    Returns
    -------
    images : torch.Tensor
        `(b, 1, patch, patch)`.
    labels : torch.Tensor
        `(b, patch, patch)` int64.
    certainty : torch.Tensor
        `(b, patch, patch)` float32 per-pixel loss weight (nearest-neighbour, like the labels; 1 where
        an example has none).
    """
    device = examples[0].image_8a.device
    images, labels, certainties = [], [], []
    for ex in examples:
        h, w = ex.image_8a.shape

        def u(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=generator))

        margin_y, margin_x = min(patch_px / 4, h / 2), min(patch_px / 4, w / 2)
        cy, cx = u(margin_y, h - margin_y), u(margin_x, w - margin_x)
        theta, phi = u(0, 2 * math.pi), u(0, 2 * math.pi)
        s1, s2 = u(0.8, 1.2), u(0.8, 1.2)
        rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        dirm = torch.tensor([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])
        a = rot @ dirm @ torch.diag(torch.tensor([s1, s2])) @ dirm.T  # (x, y) output offset -> input offset
        # grid_sample coordinates (x, y) in [-1, 1] with align_corners=False
        p = torch.arange(patch_px, dtype=torch.float32) - (patch_px - 1) / 2
        py, px = torch.meshgrid(p, p, indexing="ij")
        offs = torch.stack([px, py], dim=-1) @ a.T  # (patch, patch, 2) in input px, (x, y)
        gx = (cx + offs[..., 0] + 0.5) / w * 2 - 1
        gy = (cy + offs[..., 1] + 0.5) / h * 2 - 1
        grid = torch.stack([gx, gy], dim=-1)[None].to(device)
        img = F.grid_sample(
            ex.image_8a[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )[0, 0]
        lab = (
            F.grid_sample(
                ex.labels[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
            )[0, 0]
            .round()
            .long()
        )
        cert = torch.ones_like(img)
        if ex.certainty is not None:
            # 1 outside the micrograph, as for an example without a certainty layer
            cert = 1.0 + F.grid_sample(
                ex.certainty[None, None].to(device) - 1.0, grid, mode="nearest", padding_mode="zeros", align_corners=False
            )[0, 0]
        sd = abs(float(torch.randn((), generator=generator))) * noise_sd
        img = img + sd * torch.randn(img.shape, generator=generator).to(device)
        img = img * u(0.5, 1.5) + u(-0.4, 0.4)
        images.append(img)
        labels.append(lab)
        certainties.append(cert)
    return torch.stack(images)[:, None], torch.stack(labels), torch.stack(certainties)


class TrainSettings(BaseModel):
    """BoxNet training settings (warp-facts.md §3.6; CPU-oriented defaults where noted)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(20, ge=1, description="Warp: 100; iterations = epochs × n_new × n_corpora")
    batch_size: int = Field(4, ge=1, description="Warp: 8")
    patch_px: int = Field(256, ge=32, description="training patch at 8 Å/px (Warp 2: 512)")
    optimizer: str = Field(
        "adam", pattern="^(adam|sgd)$", description="adam (ours) or sgd (Warp, momentum 0.9)"
    )
    lr_start: float = Field(1e-3, gt=0, description="Warp SGD: 5e-5")
    lr_end: float = Field(1e-4, gt=0, description="Warp SGD: 1e-5")
    warmup_iterations: int = Field(100, ge=0, description="linear warm-up (Warp: 100)")
    weight_decay: float = Field(1e-4, ge=0, description="Warp 2: 1e-4")
    noise_sd: float = Field(0.3, ge=0, description="augmentation noise s.d. |N(0, noise_sd)| (Warp: 0.3)")
    max_iterations: int | None = Field(None, ge=1, description="hard cap on iterations (time budget)")
    eval_crop_px: int = Field(512, ge=32, description="central crop used for the per-epoch accuracies")
    n_eval_general: int = Field(8, ge=1, description="general-corpus examples used for the accuracies")
    n_eval_new: int = Field(16, ge=1, description="new examples used for the accuracies (evenly spaced)")


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor, certainty: torch.Tensor
) -> torch.Tensor:
    """Σ wᵢ·ℓᵢ / Σ wᵢ with wᵢ = class weight × certainty of pixel i (ℓ = cross-entropy).

    With certainty 1 everywhere this equals ``F.cross_entropy(logits, labels, weight=class_weight)``.
    """
    w = class_weight[labels] * certainty
    per_pixel = F.cross_entropy(logits, labels, reduction="none")
    return (w * per_pixel).sum() / w.sum().clamp_min(1e-12)


@dataclass(frozen=True)
class EpochReport:
    """Progress of one training epoch; accuracies are balanced pixel accuracies (mean per-class recall)."""

    epoch: int
    n_epochs: int
    iteration: int
    n_iterations: int
    loss: float
    accuracy_old_model_new_data: float
    accuracy_old_model_old_data: float | None
    accuracy_new_model_new_data: float
    accuracy_new_model_old_data: float | None

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EpochReport:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


@dataclass(frozen=True)
class TrainProgress:
    """Per-iteration progress for callbacks; ``epoch_report`` is set on the last iteration of an epoch."""

    iteration: int
    n_iterations: int
    loss: float
    epoch_report: EpochReport | None = None


def _center_crop(t: torch.Tensor, size: int, granularity: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    ch = min(size, h) // granularity * granularity
    cw = min(size, w) // granularity * granularity
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return t[..., y0 : y0 + ch, x0 : x0 + cw]


def pixel_accuracy(model: BoxNet, examples: Sequence[TrainingExample], crop_px: int = 512) -> float:
    """Balanced pixel accuracy (mean over present classes of the recall) on central crops."""
    if not examples:
        return float("nan")
    was_training = model.training
    model.eval()
    hits = torch.zeros(3, dtype=torch.float64)
    totals = torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for ex in examples:
            img = _center_crop(ex.image_8a, crop_px, model.granularity)
            lab = _center_crop(ex.labels, crop_px, model.granularity)
            if img.numel() == 0:
                continue
            pred = model(img[None, None]).argmax(dim=1)[0]
            for c in range(3):
                sel = lab == c
                totals[c] += float(sel.sum())
                hits[c] += float((pred[sel] == c).sum())
    model.train(was_training)
    present = totals > 0
    return float((hits[present] / totals[present]).mean()) if present.any() else float("nan")


@dataclass(frozen=True)
class TrainResult:
    """The trained model (eval mode) and one :class:`EpochReport` per epoch."""

    model: BoxNet
    history: tuple[EpochReport, ...]


def train_boxnet(
    model: BoxNet,
    examples: Sequence[TrainingExample],
    settings: TrainSettings | None = None,
    *,
    general_examples: Sequence[TrainingExample] | None = None,
    seed: int = 0,
    progress: Callable[[TrainProgress], None] | None = None,
    checkpoint: Callable[[BoxNet, EpochReport], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train or retrain BoxNet (warp-facts.md §3.6).

    ``model`` is copied, not modified; the copy starts with empty metadata, so it picks without the
    shipped model's dark-blob prior (:func:`cryowarp.picking.pick.model_blob_weight`). With
    ``general_examples`` every batch is half new examples, half general corpus (Warp's 1:1 mixing).
    An epoch is ``len(examples) × n_corpora`` iterations (Warp's definition). Loss: cross-entropy
    with the class weights of :func:`class_weights` over all training labels, times each pixel's
    certainty (Warp 1), normalised by the sum of the weights. LR: linear warm-up, then linear from
    ``lr_start`` to ``lr_end``. At the end of every epoch the four accuracy figures (old/new model on
    new/old data) are reported through ``progress`` and ``checkpoint`` is called with the current
    model. ``stop`` (e.g. a wall-clock budget kept by the caller) ends training early after any
    iteration; a final epoch report is then made.

    Returns
    -------
    TrainResult
    """
    settings = settings or TrainSettings()
    if not examples:
        raise ValueError("no training examples given")
    g = model.granularity
    if settings.patch_px % g:
        raise ValueError(f"patch_px must be a multiple of {g} for this BoxNet, found {settings.patch_px}")
    general = list(general_examples or [])
    device = examples[0].image_8a.device
    old_model = copy.deepcopy(model).to(device).eval()
    net = copy.deepcopy(model).to(device).train()
    net.metadata = {}  # a trained model is a new model: the old one's calibration (blob weight) does not carry over
    gen = torch.Generator().manual_seed(seed)
    eval_general = general[:: max(1, math.ceil(len(general) / settings.n_eval_general))]
    eval_new = list(examples)[:: max(1, math.ceil(len(examples) / settings.n_eval_new))]
    acc_old_new = pixel_accuracy(old_model, eval_new, settings.eval_crop_px)
    acc_old_old = pixel_accuracy(old_model, eval_general, settings.eval_crop_px) if general else None

    weights = class_weights([e.labels for e in list(examples) + general]).to(device)
    n_corpora = 2 if general else 1
    per_epoch = len(examples) * n_corpora
    n_iterations = settings.epochs * per_epoch
    if settings.max_iterations is not None:
        n_iterations = min(n_iterations, settings.max_iterations)
        per_epoch = min(per_epoch, n_iterations)
    params = [p for p in net.parameters() if p.requires_grad]
    if settings.optimizer == "adam":
        opt = torch.optim.AdamW(params, lr=settings.lr_start, weight_decay=settings.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=settings.lr_start, momentum=0.9, weight_decay=settings.weight_decay)

    history: list[EpochReport] = []
    n_epochs = math.ceil(n_iterations / per_epoch)
    for it in range(n_iterations):
        frac = it / max(n_iterations - 1, 1)
        lr = settings.lr_start + (settings.lr_end - settings.lr_start) * frac
        if it < settings.warmup_iterations:
            lr *= (it + 1) / settings.warmup_iterations
        for group in opt.param_groups:
            group["lr"] = lr
        if general:
            n_new = (settings.batch_size + 1) // 2
            picks_new = torch.randint(len(examples), (n_new,), generator=gen).tolist()
            picks_gen = torch.randint(len(general), (settings.batch_size - n_new,), generator=gen).tolist()
            batch = [examples[i] for i in picks_new] + [general[i] for i in picks_gen]
        else:
            batch = [
                examples[i]
                for i in torch.randint(len(examples), (settings.batch_size,), generator=gen).tolist()
            ]
        images, labels, certainty = augment_batch(batch, settings.patch_px, gen, noise_sd=settings.noise_sd)
        loss = weighted_cross_entropy(net(images), labels, weights, certainty)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
        report = None
        stopping = stop is not None and stop()
        if (it + 1) % per_epoch == 0 or it + 1 == n_iterations or stopping:
            report = EpochReport(
                epoch=len(history) + 1,
                n_epochs=n_epochs,
                iteration=it + 1,
                n_iterations=n_iterations,
                loss=loss_value,
                accuracy_old_model_new_data=acc_old_new,
                accuracy_old_model_old_data=acc_old_old,
                accuracy_new_model_new_data=pixel_accuracy(net, eval_new, settings.eval_crop_px),
                accuracy_new_model_old_data=(
                    pixel_accuracy(net, eval_general, settings.eval_crop_px) if general else None
                ),
            )
            history.append(report)
        if progress is not None:
            progress(
                TrainProgress(
                    iteration=it + 1, n_iterations=n_iterations, loss=loss_value, epoch_report=report
                )
            )
        if report is not None and checkpoint is not None:
            checkpoint(net, report)
        if stopping:
            break
    net.eval()
    return TrainResult(model=net, history=tuple(history))


__all__ = [
    "EpochReport",
    "TrainProgress",
    "TrainResult",
    "TrainSettings",
    "TrainingExample",
    "augment_batch",
    "class_weights",
    "make_training_example",
    "paint_certainty",
    "paint_labels",
    "pixel_accuracy",
    "rescale_to_boxnet_pixel_size",
    "train_boxnet",
    "weighted_cross_entropy",
]
