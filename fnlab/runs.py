"""Run folders: a trained model with everything needed to judge and reuse it.

A Run folder holds::

    checkpoint.pt          weights + architecture + classes + preprocessing stats
                           + chosen threshold + fnlab version + config
    config.json            the TrainConfig
    history.csv            one row per epoch
    val_predictions.npz    Predictions on the validation split
    test_predictions.npz   Predictions on the test split
    metrics.json           model, dataset, seed, timing, and a report per split
    manifest.json          sha256 of the checkpoint and predictions (tamper check)

Checkpoints hold only tensors and plain containers, are written atomically
(temporary file, then ``os.replace``) and read with ``torch.load(weights_only=True)``.

:func:`get_or_train` caches Runs in :func:`fnlab.config.runs_dir`, keyed by a hash of
the config, the fnlab version and the data itself, so a notebook gets the Run an
earlier notebook trained instead of training it again.

Example
-------
>>> from fnlab.train import TrainConfig
>>> run = get_or_train(TrainConfig(dataset="synthetic", epochs=1))  # doctest: +SKIP
>>> run.metrics["test"]["sensitivity"]  # doctest: +SKIP
0.98
>>> run.model()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fnlab import __version__
from fnlab.config import runs_dir, seed_everything
from fnlab.data.imageset import ImageSet
from fnlab.predictions import Predictions

__all__ = [
    "CHECKPOINT",
    "REQUIRED_FILES",
    "Run",
    "RunError",
    "build_metrics",
    "config_key",
    "data_fingerprint",
    "get_or_train",
    "load_checkpoint",
    "save_checkpoint",
    "train_run",
]

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
HISTORY = "history.csv"
VAL_PREDICTIONS = "val_predictions.npz"
TEST_PREDICTIONS = "test_predictions.npz"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
REQUIRED_FILES = (CHECKPOINT, CONFIG, HISTORY, VAL_PREDICTIONS, TEST_PREDICTIONS, METRICS)
_HASHED = (CHECKPOINT, VAL_PREDICTIONS, TEST_PREDICTIONS)
CHECKPOINT_FORMAT = "fnlab-checkpoint"
CHECKPOINT_VERSION = 1
#: Config fields that do not change the trained weights' meaning (left out of the cache key).
_KEY_EXCLUDE = ("device", "num_workers", "progress")


class RunError(ValueError):
    """A Run folder or checkpoint that cannot be used; the message names the file."""


# --------------------------------------------------------------------------- small helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from exc


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, model: torch.nn.Module, *, class_names,
                    threshold: float = 0.5, threshold_rule: str = "fixed",
                    threshold_value: float | None = None, config: dict | None = None,
                    normalization: dict | None = None) -> Path:
    """Write ``model`` and its metadata to ``path`` atomically (tmp file then rename).

    Stores only tensors and plain containers, so :func:`load_checkpoint` can use
    ``torch.load(weights_only=True)``.

    >>> from fnlab import models
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.pt"
    >>> _ = save_checkpoint(p, models.create("smallcnn"), class_names=["normal", "pneumonia"])
    >>> load_checkpoint(p)["arch"]
    'smallcnn'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arch = getattr(model, "arch", None)
    if arch is None:
        raise TypeError("save_checkpoint needs a zoo model from fnlab.models.create")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "fnlab_version": __version__,
        "arch": arch,
        "num_classes": int(model.num_classes),
        "in_channels": int(model.in_channels),
        "image_size": int(model.image_size),
        "resize_to": None if model.resize_to is None else int(model.resize_to),
        "model_kwargs": _jsonable(dict((config or {}).get("model_kwargs") or {})),
        "class_names": [str(c) for c in class_names],
        "normalization": _jsonable(normalization or model.normalization()),
        "threshold": float(threshold),
        "threshold_rule": str(threshold_rule),
        "threshold_value": None if threshold_value is None else float(threshold_value),
        "config": _jsonable(config or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


_META_KEYS = ("format", "fnlab_version", "arch", "num_classes", "in_channels", "image_size",
              "class_names", "normalization", "threshold", "state_dict")


def load_checkpoint(path: str | Path, expect_model: str | None = None) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its contents.

    Raises :class:`RunError` naming the file when it is missing, corrupt, holds
    anything but tensors and plain containers, lacks fields, or holds another
    architecture than ``expect_model``.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors of every kind
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path}: corrupt or tampered checkpoint, or not an fnlab checkpoint "
                       f"(torch.load(weights_only=True) failed: {msg[:200]})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not an fnlab checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    missing = [k for k in _META_KEYS if k not in ckpt]
    if missing:
        raise RunError(f"{path}: checkpoint lacks {missing}; it is damaged or from another tool")
    if not isinstance(ckpt["state_dict"], dict) or not all(
            isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values()):
        raise RunError(f"{path}: the checkpoint's state_dict does not hold tensors only")
    if expect_model is not None and ckpt["arch"] != expect_model:
        raise RunError(f"{path}: holds a {ckpt['arch']!r} model, not the requested "
                       f"{expect_model!r}")
    return ckpt


def model_from_checkpoint(ckpt: dict, device="cpu", source: str | Path = "checkpoint"):
    """Rebuild the zoo model of a loaded checkpoint and load its weights."""
    from fnlab import models

    try:
        model = models.create(ckpt["arch"], num_classes=ckpt["num_classes"],
                              in_channels=ckpt["in_channels"], image_size=ckpt["image_size"],
                              resize_to=ckpt.get("resize_to"), **(ckpt.get("model_kwargs") or {}))
    except ValueError as exc:
        raise RunError(f"{source}: cannot rebuild the model ({exc})") from exc
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise RunError(f"{source}: the weights do not match architecture {ckpt['arch']!r} "
                       f"({' '.join(first[:3])[:300]})") from exc
    return model.to(device).eval()


# --------------------------------------------------------------------------- metrics
def build_metrics(config: dict, val: Predictions, test: Predictions, threshold: float,
                  threshold_label: str, extra: dict | None = None, ci: bool = True,
                  n_resamples: int = 1000) -> dict:
    """The ``metrics.json`` dict: run facts plus a :func:`fnlab.metrics.binary_report`
    of val and test at ``threshold`` (chosen on val)."""
    from fnlab.metrics import binary_report

    seed = int(config.get("seed", 0))
    out = {
        "model": config.get("model"),
        "dataset": config.get("dataset"),
        "seed": seed,
        **(extra or {}),
        "threshold": float(threshold),
        "threshold_rule": threshold_label,
        "fnlab_version": __version__,
    }
    for split, preds in (("val", val), ("test", test)):
        out[split] = binary_report(preds, threshold, threshold_label, ci=ci,
                                   n_resamples=n_resamples, seed=seed)
    return _jsonable(out)


# --------------------------------------------------------------------------- Run
@dataclass
class Run:
    """A trained model's folder (see the module docstring); load with :meth:`load`.

    Attributes: ``path``, ``config`` (dict), ``metrics`` (dict), ``history``
    (DataFrame), ``checkpoint`` (metadata: arch, class names, normalisation,
    threshold, ...; the weights are read again by :meth:`model`), and the
    Predictions ``val`` and ``test``.
    """

    path: Path
    config: dict
    metrics: dict
    history: pd.DataFrame
    checkpoint: dict
    val: Predictions
    test: Predictions
    cached: bool = False
    _state: dict | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: str | Path, expect_model: str | None = None) -> Run:
        """Open a Run folder, checking files, hashes and the architecture.

        >>> Run.load("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        fnlab.runs.RunError: not a Run folder (missing): /nonexistent
        """
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"not a Run folder (missing): {path}")
        missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
        if missing:
            raise RunError(f"Run folder {path} is missing {', '.join(missing)}")
        manifest_path = path / MANIFEST
        if manifest_path.is_file():
            hashes = _read_json(manifest_path).get("sha256", {})
            for name in _HASHED:
                if name in hashes and _sha256(path / name) != hashes[name]:
                    raise RunError(f"{path / name} was modified after the run was written "
                                   "(sha256 differs from manifest.json); retrain the run or "
                                   "restore the file")
        ckpt = load_checkpoint(path / CHECKPOINT, expect_model=expect_model)
        state = ckpt.pop("state_dict")
        try:
            val = Predictions.load(path / VAL_PREDICTIONS)
            test = Predictions.load(path / TEST_PREDICTIONS)
        except ValueError as exc:
            raise RunError(str(exc)) from exc
        try:
            history = pd.read_csv(path / HISTORY)
        except Exception as exc:
            raise RunError(f"{path / HISTORY}: unreadable ({exc})") from exc
        return cls(path=path, config=_read_json(path / CONFIG), metrics=_read_json(path / METRICS),
                   history=history, checkpoint=ckpt, val=val, test=test, _state=state)

    # -- facts
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def arch(self) -> str:
        return self.checkpoint["arch"]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.checkpoint["class_names"])

    @property
    def threshold(self) -> float:
        """The threshold chosen on validation (applied to test)."""
        return float(self.checkpoint["threshold"])

    @property
    def threshold_rule(self) -> str:
        return str(self.checkpoint["threshold_rule"])

    def __repr__(self) -> str:
        t = self.metrics.get("test", {})
        return (f"Run({self.name!r}, model={self.arch!r}, threshold={self.threshold:.4f} "
                f"[{self.threshold_rule}], test auc={t.get('auc')}, "
                f"sensitivity={t.get('sensitivity')}, specificity={t.get('specificity')})")

    # -- the model
    def model(self, device="cpu") -> torch.nn.Module:
        """Rebuild the trained ``nn.Module`` (eval mode) from the checkpoint."""
        ckpt = dict(self.checkpoint, state_dict=self._weights())
        return model_from_checkpoint(ckpt, device=device, source=self.path / CHECKPOINT)

    def _weights(self) -> dict:
        if self._state is None:
            self._state = load_checkpoint(self.path / CHECKPOINT)["state_dict"]
        return self._state

    def predict(self, imageset: ImageSet, tta: bool | None = None, device="cpu") -> Predictions:
        """Predictions of the Run's model on another ImageSet (e.g. a shifted test set)."""
        from fnlab.train import predict

        tta = bool(self.config.get("tta", False)) if tta is None else tta
        return predict(self.model(device), imageset, tta=tta, model_name=self.label())

    def label(self) -> str:
        """Short model label for tables: the architecture (and loss when not default)."""
        return str(self.config.get("model", self.arch))

    # -- thresholds
    def evaluate(self, rule: str = "recall", value: float | None = 0.98, write: bool = True,
                 ci: bool = True) -> dict:
        """Choose a new threshold on val by ``rule``/``value`` and recompute the metrics.

        With ``write=True`` the new threshold goes into ``checkpoint.pt`` and
        ``metrics.json`` (the ``fnlab evaluate`` command); otherwise only this
        object changes. Returns the new metrics dict.
        """
        from fnlab.thresholds import choose_threshold

        choice = choose_threshold(self.val, rule, value)
        keep = {k: v for k, v in self.metrics.items()
                if k not in ("val", "test", "threshold", "threshold_rule", "fnlab_version")}
        metrics = build_metrics(self.config, self.val, self.test, choice.threshold,
                                choice.label, extra=keep, ci=ci)
        metrics["threshold_description"] = choice.description
        self.metrics = metrics
        self.checkpoint = dict(self.checkpoint, threshold=float(choice.threshold),
                               threshold_rule=choice.label,
                               threshold_value=None if choice.value is None else float(choice.value))
        if write:
            save_checkpoint(self.path / CHECKPOINT, self.model(),
                            class_names=self.class_names, threshold=choice.threshold,
                            threshold_rule=choice.label, threshold_value=choice.value,
                            config=self.config, normalization=self.checkpoint["normalization"])
            _write_json(self.path / METRICS, metrics)
            _write_manifest(self.path)
        return metrics


def _write_manifest(path: Path) -> None:
    _write_json(path / MANIFEST, {
        "fnlab_version": __version__,
        "sha256": {name: _sha256(path / name) for name in _HASHED if (path / name).is_file()},
    })


# --------------------------------------------------------------------------- training a Run
def _load_data(config) -> dict[str, ImageSet]:
    from fnlab.data.registry import load_dataset

    kw = {} if config.max_train_images is None else {"max_train_images": config.max_train_images}
    return load_dataset(config.dataset, data_path=config.data_path, image_size=config.image_size,
                        profile=config.profile, seed=config.seed, **kw)


def _check_splits(data: dict) -> None:
    missing = [s for s in ("train", "val", "test") if s not in data]
    if missing:
        raise ValueError(f"dataset lacks split(s) {missing}; a Run needs train, val and test "
                         f"(got {sorted(data)})")


def data_fingerprint(data: dict[str, ImageSet]) -> str:
    """A short hash of the images, labels and class names of every split."""
    h = hashlib.blake2b(digest_size=16)
    for split in sorted(data):
        s = data[split]
        h.update(f"{split}|{s.images.shape}|{s.images.dtype}|{list(s.class_names)}".encode())
        h.update(np.ascontiguousarray(s.images).tobytes())
        h.update(np.ascontiguousarray(s.labels).tobytes())
    return h.hexdigest()


def config_key(config, data: dict[str, ImageSet] | None = None) -> str:
    """The cache key: a hash of the config (minus device/progress), the fnlab version,
    the model's architecture revision (:data:`fnlab.models.ARCHITECTURE_REVISIONS`) and
    (when given) the data fingerprint.

    >>> from fnlab.train import TrainConfig
    >>> config_key(TrainConfig()) == config_key(TrainConfig(device="cpu", progress=False))
    True
    >>> config_key(TrainConfig()) == config_key(TrainConfig(seed=1))
    False
    """
    from fnlab.models import ARCHITECTURE_REVISIONS

    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    d = {k: v for k, v in d.items() if k not in _KEY_EXCLUDE}
    key = {"config": _jsonable(d), "fnlab": __version__,
           "data": data_fingerprint(data) if data is not None else None}
    revision = ARCHITECTURE_REVISIONS.get(d.get("model"))
    if revision is not None:  # only changed models get the field: other keys stay valid
        key["architecture_revision"] = revision
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_run(config=None, out_dir: str | Path | None = None, threshold_rule: str = "recall",
              threshold_value: float | None = 0.98, data: dict[str, ImageSet] | None = None,
              ci: bool = True) -> Run:
    """Load the data, train, choose the threshold on val, predict val and test, and
    write a Run folder (``out_dir``, or a folder in :func:`fnlab.config.runs_dir`).

    ``data`` (a dict with train/val/test ImageSets) skips loading ``config.dataset``.
    """
    from fnlab import models
    from fnlab.thresholds import choose_threshold
    from fnlab.train import TrainConfig, fit, predict

    config = config or TrainConfig()
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    data = data if data is not None else _load_data(config)
    _check_splits(data)
    train, val, test = data["train"], data["val"], data["test"]
    if out_dir is None:
        out_dir = runs_dir(create=True) / _run_name(config, config_key(config, data))
    out_dir = Path(out_dir)

    seed_everything(config.seed)
    model = models.create(config.model, num_classes=train.num_classes,
                          in_channels=train.in_channels, image_size=train.image_size,
                          pretrained=config.pretrained, resize_to=config.resize_to,
                          **config.model_kwargs)
    result = fit(model, train, val, config)
    label = config.model
    val_pred = predict(result.model, val, tta=config.tta, model_name=label)
    test_pred = predict(result.model, test, tta=config.tta, model_name=label)
    choice = choose_threshold(val_pred, threshold_rule, threshold_value)
    cfg = config.to_dict()
    extra = {
        "train_seconds": round(result.train_seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "n_train": result.n_train,
        "n_parameters": models.count_parameters(result.model),
        "image_size": train.image_size,
        "class_names": list(train.class_names),
        "device": str(next(result.model.parameters()).device),
        "torch_version": torch.__version__,
        "cpu_count": os.cpu_count(),
    }
    metrics = build_metrics(cfg, val_pred, test_pred, choice.threshold, choice.label,
                            extra=extra, ci=ci)
    metrics["threshold_description"] = choice.description

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_checkpoint(tmp / CHECKPOINT, result.model.cpu(), class_names=train.class_names,
                        threshold=choice.threshold, threshold_rule=choice.label,
                        threshold_value=choice.value, config=cfg,
                        normalization=result.normalization)
        _write_json(tmp / CONFIG, cfg)
        result.history.to_csv(tmp / HISTORY, index=False)
        val_pred.save(tmp / VAL_PREDICTIONS)
        test_pred.save(tmp / TEST_PREDICTIONS)
        _write_json(tmp / METRICS, metrics)
        _write_manifest(tmp)
        _move_into(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Run.load(out_dir)


def _run_name(config, key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(config.dataset))
    return f"{safe}-{config.model}-{key}"


def _move_into(tmp: Path, out_dir: Path) -> None:
    """Put the finished files in place: rename the folder, or replace file by file."""
    if not out_dir.exists():
        try:
            os.replace(tmp, out_dir)
            return
        except OSError:  # another process won the race, or a cross-device move
            out_dir.mkdir(parents=True, exist_ok=True)
    if not out_dir.is_dir():
        raise RunError(f"{out_dir} exists and is not a folder")
    for f in tmp.iterdir():
        os.replace(f, out_dir / f.name)


def get_or_train(config=None, threshold_rule: str = "recall",
                 threshold_value: float | None = 0.98, data: dict[str, ImageSet] | None = None,
                 root: str | Path | None = None, retrain: bool = False,
                 ci: bool = True) -> Run:
    """Return the cached Run for ``config`` (same config, fnlab version and data), or
    train it and cache it in ``root`` (default :func:`fnlab.config.runs_dir`).

    A cached Run whose threshold rule differs is re-thresholded in memory (cheap: it
    only reads the saved validation predictions). A damaged cached Run is retrained.
    ``run.cached`` tells whether the Run came from the cache.
    """
    from fnlab.train import TrainConfig

    config = config or TrainConfig()
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    data = data if data is not None else _load_data(config)
    _check_splits(data)
    root = Path(root) if root is not None else runs_dir(create=True)
    path = root / _run_name(config, config_key(config, data))
    if path.is_dir() and not retrain:
        try:
            run = Run.load(path, expect_model=config.model)
        except RunError as exc:
            warnings.warn(f"cached run unusable, training again: {exc}", stacklevel=2)
        else:
            run.cached = True
            from fnlab.thresholds import choose_threshold

            label = choose_threshold(run.val, threshold_rule, threshold_value).label
            if label != run.threshold_rule:
                run.evaluate(threshold_rule, threshold_value, write=False, ci=ci)
            return run
    return train_run(config, out_dir=path, threshold_rule=threshold_rule,
                     threshold_value=threshold_value, data=data, ci=ci)
