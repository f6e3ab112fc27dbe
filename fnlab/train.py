"""The trainer: fit a zoo model on an ImageSet, keep the best weights, predict.

One :class:`TrainConfig` describes a run; :func:`fit` trains a model on a train and
a validation :class:`~fnlab.data.imageset.ImageSet` and returns a
:class:`TrainResult` (best weights, per-epoch history, timing); :func:`predict`
turns a model and an ImageSet into :class:`~fnlab.predictions.Predictions`.

Speed: without per-image transforms the images are converted to one float tensor
once and batches are sliced from it (no per-item ``DataLoader``), so the trainer
costs within a few percent of a bare PyTorch loop (``benchmarks/bench_trainer.py``).
The built-in augmentation presets (:data:`BATCH_AUGMENTS`) are applied to whole
batches at once (random affine per image via ``affine_grid``/``grid_sample``,
brightness/contrast); any other preset name is looked up in
:func:`fnlab.data.augment.get_augment` and applied per image through a
``DataLoader``.

Example
-------
>>> import numpy as np
>>> from fnlab.data.imageset import ImageSet
>>> from fnlab import models
>>> rng = np.random.default_rng(0)
>>> y = np.arange(64) % 2
>>> x = (rng.random((64, 16, 16)) * 80 + y[:, None, None] * 120).astype(np.uint8)
>>> tr, va = ImageSet(x, y, split="train"), ImageSet(x, y, split="val")
>>> cfg = TrainConfig(model="smallcnn", epochs=2, batch_size=16, image_size=16, progress=False)
>>> result = fit(models.create("smallcnn", image_size=16), tr, va, cfg)
>>> list(result.history.columns)[:4]
['epoch', 'train_loss', 'val_loss', 'val_auc']
>>> predict(result.model, va).scores.shape
(64,)
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from fnlab.config import resolve_device, seed_everything
from fnlab.data.imageset import ImageSet
from fnlab.models import pixels_to_float
from fnlab.predictions import Predictions
from fnlab.recipe import (  # re-exported: fnlab.train.TrainConfig is the same class
    RECIPE_28PX,
    TrainConfig,
    recipe_config,
)

__all__ = [
    "BATCH_AUGMENTS",
    "BatchAugment",
    "RECIPE_28PX",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "fit",
    "normalization_stats",
    "predict",
    "recipe_config",
]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a NaN loss); the message names epoch and batch."""


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    ``model`` holds the best weights (by ``config.monitor``), ``history`` one row per
    epoch (epoch, train_loss, val_loss, val_auc, val_sensitivity, val_specificity at
    threshold 0.5, lr, seconds), ``train_seconds`` the whole fit wall time and
    ``images_per_second`` the training throughput (excluding validation).
    """

    model: nn.Module
    history: pd.DataFrame
    best_epoch: int
    train_seconds: float
    images_per_second: float
    normalization: dict
    stopped_early: bool = False
    n_train: int = 0
    config: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- augmentation
class BatchAugment:
    """Random per-image affine (rotation, shift, scale, optional flip) plus
    brightness/contrast jitter, applied to a whole ``N x C x H x W`` batch at once.

    Randomness comes from ``generator`` (a CPU ``torch.Generator``), so runs repeat.

    >>> aug = BatchAugment(rotate=10, translate=0.1)
    >>> aug(torch.rand(4, 1, 28, 28), torch.Generator().manual_seed(0)).shape
    torch.Size([4, 1, 28, 28])
    """

    def __init__(self, rotate: float = 0.0, translate: float = 0.0, scale: float = 0.0,
                 hflip: bool = False, contrast: float = 0.0, brightness: float = 0.0):
        self.rotate, self.translate, self.scale = float(rotate), float(translate), float(scale)
        self.hflip, self.contrast, self.brightness = bool(hflip), float(contrast), float(brightness)

    def __repr__(self) -> str:
        return (f"BatchAugment(rotate={self.rotate}, translate={self.translate}, "
                f"scale={self.scale}, hflip={self.hflip}, contrast={self.contrast}, "
                f"brightness={self.brightness})")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = x.shape[0]

        def uniform(*shape):  # in [-1, 1], drawn on the CPU generator
            return (torch.rand(*shape, generator=generator) * 2 - 1).to(x.device)

        if self.rotate or self.translate or self.scale or self.hflip:
            angle = uniform(n) * math.radians(self.rotate)
            inv_scale = 1.0 / (1.0 + uniform(n) * self.scale)
            tx, ty = uniform(n) * 2 * self.translate, uniform(n) * 2 * self.translate
            flip = torch.ones(n, device=x.device)
            if self.hflip:
                flip = torch.where(uniform(n) < 0, -1.0, 1.0)
            cos, sin = torch.cos(angle) * inv_scale, torch.sin(angle) * inv_scale
            theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1),
                                 torch.stack([sin * flip, cos, ty], 1)], 1).to(x.dtype)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                              align_corners=False)
        if self.contrast or self.brightness:
            c = 1.0 + uniform(n, 1, 1, 1) * self.contrast
            b = uniform(n, 1, 1, 1) * self.brightness
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * c + mean + b).clamp(0.0, 1.0)
        return x


#: Built-in, batched augmentation presets (fast); other names (``light``, ``standard``,
#: ``strong``, ``over``) go to :func:`fnlab.data.augment.get_augment`, applied per image.
BATCH_AUGMENTS: dict[str, BatchAugment] = {
    "xray": BatchAugment(rotate=10, translate=0.1, scale=0.1),
    "xray_strong": BatchAugment(rotate=15, translate=0.12, scale=0.15, contrast=0.3,
                                brightness=0.15),
}


def _per_image_transform(preset: str, image_size: int):
    try:
        from fnlab.data.augment import get_augment
    except ImportError as exc:  # pragma: no cover - the data layer always ships it
        raise ValueError(f"unknown augment preset {preset!r}; built-in presets: "
                         f"{', '.join(BATCH_AUGMENTS)}") from exc
    try:
        return get_augment(preset, image_size)
    except ValueError as exc:
        raise ValueError(f"unknown augment preset {preset!r}; built-in (batched) presets: "
                         f"{', '.join(BATCH_AUGMENTS)}; {exc}") from exc


# --------------------------------------------------------------------------- data helpers
def _as_float(images: np.ndarray) -> torch.Tensor:
    x = pixels_to_float(images)
    return x.unsqueeze(1) if x.ndim == 3 else x


def normalization_stats(imageset: ImageSet) -> dict:
    """Per-channel mean and std of an ImageSet's pixels scaled to [0, 1].

    >>> s = ImageSet(np.array([[[0, 255]]], np.uint8), [0])
    >>> normalization_stats(s)
    {'mean': [0.5], 'std': [0.5]}
    """
    if len(imageset) == 0:
        raise ValueError(f"cannot compute normalisation statistics of an empty "
                         f"{imageset.split!r} split")
    x = _as_float(imageset.images)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False).clamp_min(1e-3)
    return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}


def _stratified_cap(imageset: ImageSet, cap: int | None, seed: int) -> ImageSet:
    if cap is None or len(imageset) <= cap:
        return imageset
    rng = np.random.default_rng(seed)
    keep = []
    labels = imageset.labels
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(cap * len(idx) / len(labels))))
        keep.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return imageset.subset(np.sort(np.concatenate(keep)))


def _check_data(model: nn.Module, train_set: ImageSet, val_set: ImageSet) -> None:
    if len(train_set) == 0:
        raise ValueError("the training split is empty")
    if len(val_set) == 0:
        raise ValueError("the validation split is empty: fit needs validation images to pick "
                         "the best epoch (and Runs need them to choose a threshold)")
    if tuple(val_set.class_names) != tuple(train_set.class_names):
        raise ValueError(f"train classes {list(train_set.class_names)} differ from val classes "
                         f"{list(val_set.class_names)}")
    k = getattr(model, "num_classes", None)
    if k is not None and k != train_set.num_classes:
        raise ValueError(f"the model has {k} classes but the data has {train_set.num_classes} "
                         f"({', '.join(train_set.class_names)}); create the model with "
                         f"num_classes={train_set.num_classes}")
    c = getattr(model, "in_channels", None)
    for s in (train_set, val_set):
        if c is not None and c != s.in_channels:
            raise ValueError(f"the model takes {c}-channel images but the {s.split!r} images "
                             f"have {s.in_channels} channel(s)")
    if val_set.images.shape[1:] != train_set.images.shape[1:]:
        raise ValueError(f"train images {train_set.images.shape[1:]} and val images "
                         f"{val_set.images.shape[1:]} differ in shape")


class _TensorBatches:
    """Fast in-memory batches: index pre-built tensors, no per-item Python work."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                 weights: torch.Tensor | None, generator: torch.Generator):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.weights, self.generator = weights, generator

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        if self.weights is None:
            order = torch.randperm(n, generator=self.generator)
        else:
            order = torch.multinomial(self.weights, n, replacement=True, generator=self.generator)
        order = order.to(self.x.device)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.x[idx], self.y[idx]


def _sample_weights(labels: np.ndarray) -> torch.Tensor:
    counts = np.bincount(labels)
    w = 1.0 / counts[labels].astype(np.float64)
    return torch.from_numpy(w)


# --------------------------------------------------------------------------- evaluation
def _binary_val_figures(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    from sklearn.metrics import roc_auc_score

    pos = scores if scores.ndim == 1 else 1.0 - scores[:, 0]
    truth = (y_true != 0).astype(int)
    auc = float(roc_auc_score(truth, pos)) if 0 < truth.sum() < len(truth) else float("nan")
    pred = pos >= 0.5
    sens = float(pred[truth == 1].mean()) if truth.any() else float("nan")
    spec = float((~pred[truth == 0]).mean()) if (truth == 0).any() else float("nan")
    return auc, sens, spec


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int, device, amp: bool) -> torch.Tensor:
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=amp):
            out.append(model(xb).float())
    return torch.cat(out)


def _scores(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if logits.ndim == 1 else torch.softmax(logits, dim=1)


def _tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The image and four 1-pixel shifts (replicate padding at the border)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    views = [x]
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        views.append(padded[..., dy:dy + h, dx:dx + w])
    return views


@torch.no_grad()
def predict_tensor(model: nn.Module, x: torch.Tensor, batch_size: int = 512, device=None,
                   tta: bool = False) -> torch.Tensor:
    """Probabilities for a float image tensor (``(N,)`` binary, ``(N, K)`` multi-class).

    With ``tta=True`` the probabilities are averaged over the image and its four
    1-pixel shifts.
    """
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    amp = device.type == "cuda"
    try:
        views = _tta_views(x) if tta else [x]
        probs = sum(_scores(_logits(model, v, batch_size, device, amp)) for v in views)
    finally:
        model.train(was_training)
    return (probs / len(views)).cpu()


def predict(model: nn.Module, imageset: ImageSet, batch_size: int = 512, device=None,
            tta: bool = False, model_name: str | None = None) -> Predictions:
    """Run ``model`` on every image of ``imageset`` and return its :class:`Predictions`.

    Scores are ``(N,)`` pneumonia probabilities for binary models, ``(N, K)`` class
    probabilities otherwise; ``ids`` are the image paths when the set has them, else
    row indices.

    >>> from fnlab import models
    >>> s = ImageSet(np.zeros((3, 28, 28), np.uint8), [0, 1, 0], split="test")
    >>> p = predict(models.create("smallcnn"), s)
    >>> p.split, p.scores.shape
    ('test', (3,))
    """
    if len(imageset) == 0:
        raise ValueError(f"cannot predict on an empty {imageset.split!r} split")
    scores = predict_tensor(model, _as_float(imageset.images), batch_size, device, tta)
    ids = imageset.meta.get("path")
    ids = np.asarray(ids) if ids is not None and len(ids) == len(imageset) else None
    return Predictions(y_true=imageset.labels, scores=scores.double().numpy(), ids=ids,
                       split=imageset.split, model=model_name or getattr(model, "arch", "model"),
                       class_names=imageset.class_names)


# --------------------------------------------------------------------------- fit
def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True,
                           weight_decay=config.weight_decay)


def _make_schedule(opt, config: TrainConfig, total_steps: int):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return None


def _improved(value: float, best: float | None, monitor: str | None) -> bool:
    if monitor is None:
        return True
    if not np.isfinite(value):
        return best is None
    if best is None or not np.isfinite(best):
        return True
    return value > best if monitor == "val_auc" else value < best


def _train_loss(loss_fn: nn.Module, logits: torch.Tensor, targets: torch.Tensor,
                smoothing: float, binary: bool) -> torch.Tensor:
    """The training loss, with binary label smoothing as a mix of the two labels' losses.

    For BCE this equals the loss on the smoothed target ``y (1 - eps) + eps / 2``; for a
    weighted or cost-sensitive loss each label keeps its own weight.
    """
    loss = loss_fn(logits, targets)
    if smoothing and binary:
        loss = (1.0 - smoothing / 2) * loss + smoothing / 2 * loss_fn(logits, 1 - targets)
    return loss


def _training_batches(train_set: ImageSet, config: TrainConfig, device, gen):
    """The epoch's batches and the batched augmentation (None for per-image transforms).

    Batched presets (or no augmentation) keep the whole training split as one tensor on
    the device; other presets go through a DataLoader of per-image torchvision transforms.
    """
    weights = _sample_weights(train_set.labels) if config.balanced_sampler else None
    if config.augment is None or config.augment in BATCH_AUGMENTS:
        batch_aug = BATCH_AUGMENTS.get(config.augment) if config.augment else None
        x_train = _as_float(train_set.images).to(device)
        y_train = torch.from_numpy(train_set.labels).to(device)
        return _TensorBatches(x_train, y_train, config.batch_size, weights, gen), batch_aug
    from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

    transform = _per_image_transform(config.augment, train_set.image_size)
    sampler = (WeightedRandomSampler(weights, len(train_set), replacement=True, generator=gen)
               if weights is not None else RandomSampler(range(len(train_set)), generator=gen))
    loader = DataLoader(train_set.torch_dataset(transform), batch_size=config.batch_size,
                        sampler=sampler, num_workers=config.num_workers,
                        pin_memory=device.type == "cuda")
    return loader, None


@dataclass
class _Stepper:
    """One optimisation step and one epoch of them: optimiser, schedule, mixed precision,
    EMA, mixup and label smoothing, with the random streams that make them repeatable."""

    model: nn.Module
    loss_fn: nn.Module
    config: TrainConfig
    device: torch.device
    gen: torch.Generator
    batch_aug: Any
    steps: int
    binary: bool
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    ema: Any
    mix_rng: np.random.Generator
    amp: bool

    @classmethod
    def build(cls, model, loss_fn, config, device, gen, batch_aug, steps, binary) -> _Stepper:
        amp = device.type == "cuda"
        mix_rng = np.random.default_rng(config.seed)  # mixup weights repeat with the seed
        ema = None
        if config.ema is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(config.ema)),
                                use_buffers=True)
        opt = _make_optimizer(model, config)
        sched = _make_schedule(opt, config, steps * config.epochs)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        return cls(model, loss_fn, config, device, gen, batch_aug, steps, binary, opt, sched,
                   scaler, ema, mix_rng, amp)

    def _loss(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        c = self.config
        lam, partner = 1.0, None
        if c.mixup > 0:
            lam = float(self.mix_rng.beta(c.mixup, c.mixup))
            partner = torch.randperm(len(yb), generator=self.gen).to(self.device)
            xb = lam * xb + (1.0 - lam) * xb[partner]
        with torch.autocast(device_type=self.device.type, enabled=self.amp):
            out = self.model(xb).float()
            loss = _train_loss(self.loss_fn, out, yb, c.label_smoothing, self.binary)
            if partner is not None:
                loss = lam * loss + (1.0 - lam) * _train_loss(
                    self.loss_fn, out, yb[partner], c.label_smoothing, self.binary)
        return loss

    def epoch(self, batches, epoch: int) -> tuple[torch.Tensor, int]:
        """Train one epoch; return the summed training loss and the images seen."""
        self.model.train()
        total, seen = torch.zeros((), device=self.device), 0
        for b, (xb, yb) in enumerate(batches, start=1):
            if xb.device != self.device:
                xb = xb.to(self.device, non_blocking=True)
                yb = yb.to(self.device, non_blocking=True)
            if self.batch_aug is not None:
                xb = self.batch_aug(xb, self.gen)
            loss = self._loss(xb, yb)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss is {loss.item()} at epoch {epoch}, batch {b} of "
                                    f"{self.steps}; lower the learning rate "
                                    f"(lr={self.config.lr}) or check the data for NaN pixels")
            self.opt.zero_grad(set_to_none=True)
            if self.amp:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                loss.backward()
                self.opt.step()
            if self.sched is not None:
                self.sched.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            total += loss.detach() * len(yb)
            seen += len(yb)
        return total, seen


def _validate(judged: nn.Module, x_val, y_val, labels, loss_fn, device, amp: bool) -> dict:
    """Validation loss, AUC, sensitivity and specificity (threshold 0.5) of ``judged``."""
    judged.eval()  # dropout off, BatchNorm's running statistics used and left untouched
    with torch.no_grad():
        logits = _logits(judged, x_val, 512, device, amp)
        val_loss = float(loss_fn(logits, y_val.to(device)))
    auc, sens, spec = _binary_val_figures(labels, _scores(logits).cpu().numpy())
    return {"val_loss": val_loss, "val_auc": auc, "val_sensitivity": sens,
            "val_specificity": spec}


def _best_state(judged: nn.Module, epoch: int, config: TrainConfig, ema) -> dict | None:
    """A copy of the best epoch's weights, or None where the current weights will be kept."""
    if (config.monitor is not None and epoch < config.epochs) or ema is not None:
        return copy.deepcopy({k: v.detach().clone() for k, v in judged.state_dict().items()})
    return None


def fit(model: nn.Module, train_set: ImageSet, val_set: ImageSet,
        config: TrainConfig | None = None, loss_fn: nn.Module | None = None,
        **overrides: Any) -> TrainResult:
    """Train ``model`` on ``train_set``, validate each epoch on ``val_set``.

    The loop inside is written out by hand, in plain PyTorch, in notebook 02 ("The
    training loop, written out": data loader, forward, class-weighted loss, backward,
    AdamW step with the one-cycle schedule, validation AUC) and checked there against
    this function: on the same seed and batches with ``augment=None`` the first epoch's
    training loss agrees within 1e-4 (claim ``hand_loop_matches_fit``). ``fit`` adds
    batched augmentation, the best epoch's weights, early stopping, EMA, mixup, label
    smoothing, NaN checks, timing and a mixed-precision GPU path.

    Parameters
    ----------
    model : a zoo model from :func:`fnlab.models.create` (or any module taking
        ``N x C x H x W`` images in [0, 1]; one logit per image for binary tasks).
    train_set, val_set : ImageSets with the same classes and image shape.
    config : a :class:`TrainConfig` (defaults when None); ``**overrides`` change
        fields of it (``fit(m, tr, va, epochs=3)``).
    loss_fn : a loss module to use instead of ``config.loss``.

    Returns a :class:`TrainResult` whose ``model`` holds the best weights. The
    model's input normalisation is set from the training split. Raises
    :class:`TrainingError` naming the epoch and batch when the loss is NaN or inf.
    """
    from fnlab.config import progress_bar as tqdm
    from fnlab.losses import create_loss

    config = (config or TrainConfig())
    if overrides:
        config = config.replace(**overrides)
    _check_data(model, train_set, val_set)
    started = time.perf_counter()
    seed_everything(config.seed)
    device = resolve_device(config.device)
    train_set = _stratified_cap(train_set, config.max_train_images, config.seed)
    binary = train_set.num_classes == 2
    if config.label_smoothing and not binary:
        raise ValueError("label_smoothing is for binary tasks; this data has "
                         f"{train_set.num_classes} classes")
    stats = normalization_stats(train_set)
    if hasattr(model, "set_normalization"):
        model.set_normalization(stats["mean"], stats["std"])
    model.to(device)
    if loss_fn is None:
        loss_fn = create_loss(config.loss, train_set.num_classes, labels=train_set.labels,
                              **config.loss_kwargs)
    gen = torch.Generator().manual_seed(config.seed)
    batches, batch_aug = _training_batches(train_set, config, device, gen)
    step = _Stepper.build(model, loss_fn.to(device), config, device, gen, batch_aug,
                          len(batches), binary)
    x_val, y_val = _as_float(val_set.images), torch.from_numpy(val_set.labels)

    rows: list[dict] = []
    best_value, best_epoch, best_state = None, 0, None
    stale, stopped_early, train_time, seen = 0, False, 0.0, 0
    bar = tqdm(range(1, config.epochs + 1), desc=f"{getattr(model, 'arch', 'model')}",
               unit="epoch", disable=not config.progress, leave=True)
    for epoch in bar:
        t0 = time.perf_counter()
        total, n = step.epoch(batches, epoch)
        train_time += time.perf_counter() - t0
        seen += n
        judged = model if step.ema is None else step.ema.module  # EMA: the averaged weights
        row = {"epoch": epoch, "train_loss": float(total) / len(train_set),
               **_validate(judged, x_val, y_val, val_set.labels, step.loss_fn, device, step.amp),
               "lr": step.opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        rows.append(row)
        value = row.get(config.monitor, 0.0) if config.monitor else 0.0
        if _improved(value, best_value, config.monitor):
            best_value, best_epoch, stale = value, epoch, 0
            best_state = _best_state(judged, epoch, config, step.ema)
        else:
            stale += 1
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_loss=f"{row['val_loss']:.4f}",
                        val_auc=f"{row['val_auc']:.4f}", best=best_epoch)
        if config.patience is not None and stale >= config.patience:
            stopped_early = True
            break
    bar.close()
    if best_state is not None and (best_epoch != rows[-1]["epoch"] or step.ema is not None):
        model.load_state_dict(best_state)
    model.eval()
    history = pd.DataFrame(rows, columns=["epoch", "train_loss", "val_loss", "val_auc",
                                          "val_sensitivity", "val_specificity", "lr", "seconds"])
    return TrainResult(model=model, history=history, best_epoch=best_epoch,
                       train_seconds=time.perf_counter() - started,
                       images_per_second=seen / train_time if train_time > 0 else float("nan"),
                       normalization=stats, stopped_early=stopped_early, n_train=len(train_set),
                       config=config.to_dict())
