"""Run folders: a trained model with everything needed to judge and reuse it.

A Run folder holds::

    checkpoint.pt          weights + architecture + classes + preprocessing stats
                           + chosen threshold + fnlab version + config
    config.json            the TrainConfig
    history.csv            one row per epoch
    val_predictions.npz    Predictions on the validation split
    test_predictions.npz   Predictions on the test split
    metrics.json           model, dataset, seed, timing, and a report per split
    manifest.json          sha256 of every other file of the run (tamper check)

Checkpoints hold only tensors and plain containers and are read with
``torch.load(weights_only=True)``.

Integrity
---------
:meth:`Run.load` refuses a folder without ``manifest.json``, with a manifest of an
older format, with a file whose sha256 differs, or with a file the manifest does not
list (hidden files such as ``.DS_Store`` aside). Every file is read once, and what was
hashed is what is parsed. Independently of the manifest, it also checks that the
weights have exactly the parameter names and shapes of the architecture the checkpoint
names (built on PyTorch's ``meta`` device, so a checkpoint asking for a huge model is
refused before any memory is allocated: :data:`fnlab.models.MAX_PARAMETERS`), and that
checkpoint, ``config.json`` and ``metrics.json`` describe the same model. Files changed
on purpose (or a run written by an older fnlab) are trusted again only by a deliberate
command: ``fnlab evaluate RUN_DIR --resign`` (:func:`sign_run`). :meth:`Run.evaluate`
rewrites the threshold from the weights it verified and never signs files that changed
after it loaded them.

Writing
-------
A Run is written whole or not at all: its files go to a hidden sibling folder
(``.NAME.fnlab-tmp-...``), are signed there, and the folder is put in place by a rename;
an existing Run is replaced by an atomic exchange of the two folders (Linux
``renameat2``; elsewhere two renames, and a Run moved aside by a writer killed between
them is moved back by the next :meth:`Run.load` or write). A reader sees the old Run or
the new one, never a mix. Leftovers of killed writers are removed by the next write in
the same folder (:func:`clean_stale`). :func:`train_run` refuses an existing non-empty
``out_dir`` unless ``overwrite=True`` (``fnlab train --force``), and never replaces a
folder holding files that are not part of a Run.

Cache
-----
:func:`get_or_train` caches Runs in :func:`fnlab.config.runs_dir`, keyed by a hash of
the config, the fnlab version and the data itself, so a notebook gets the Run an
earlier notebook trained instead of training it again. It holds a file lock per key
(``ROOT/.locks/NAME.lock``) while it looks up, trains and writes: one process trains,
others asking for the same key wait and then load its Run. A cached entry that fails
the checks above is trained again.

Example
-------
>>> from fnlab.train import TrainConfig
>>> run = get_or_train(TrainConfig(dataset="synthetic", epochs=1))  # doctest: +SKIP
>>> run.metrics["test"]["sensitivity"]  # doctest: +SKIP
0.98
>>> run.model()  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fnlab import __version__
from fnlab.config import runs_dir, seed_everything
from fnlab.data.imageset import ImageSet
from fnlab.fileio import atomic_write_text, write_json
from fnlab.predictions import Predictions

__all__ = [
    "CHECKPOINT",
    "OPTIONAL_FILES",
    "add_document",
    "REQUIRED_FILES",
    "Run",
    "RunError",
    "build_metrics",
    "check_architecture",
    "check_out_dir",
    "clean_stale",
    "config_key",
    "data_fingerprint",
    "get_or_train",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
    "sign_run",
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
#: Documents derived from a Run that may be added to its folder (signed with it).
OPTIONAL_FILES = ("model_card.md",)
CHECKPOINT_FORMAT = "fnlab-checkpoint"
CHECKPOINT_VERSION = 1
MANIFEST_FORMAT = "fnlab-run-manifest"
#: 2: every file of the Run (version 1, no format tag, covered only checkpoint and predictions)
MANIFEST_VERSION = 2
#: Config fields that do not change the trained weights' meaning (left out of the cache key).
_KEY_EXCLUDE = ("device", "num_workers", "progress")
#: Config fields added after Runs were cached: left out of the key at these defaults, so
#: the keys of earlier Runs stay valid.
_KEY_LATER_DEFAULTS = {"ema": None, "mixup": 0.0, "label_smoothing": 0.0}
#: Hidden entries that tools drop into folders: ignored by the manifest, removed by a replace.
_CLUTTER = (".DS_Store", ".ipynb_checkpoints")
#: A temporary folder of a writer older than this is stale even when its owner is unknown.
STALE_SECONDS = 3600
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.fnlab-(?P<kind>tmp|old)-(?P<host>[0-9a-f]{8})-"
                      r"(?P<pid>\d+)-[0-9a-f]+$")
_LEGACY_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}$")  # mkdtemp, fnlab <= 0.2.0


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
    write_json(path, _jsonable(data), allow_nan=False)  # hidden temp file: never a Run file


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
        return _json_from_bytes(path.read_bytes(), path)
    except OSError as exc:
        raise RunError(f"{path}: unreadable ({exc})") from exc


def _json_from_bytes(data: bytes, path: Path) -> dict:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:limit]


def _listing(names, limit: int = 5) -> str:
    names = list(names)
    more = f", ... {len(names)} in all" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, model: torch.nn.Module, *, class_names,
                    threshold: float = 0.5, threshold_rule: str = "fixed",
                    threshold_value: float | None = None, config: dict | None = None,
                    normalization: dict | None = None) -> Path:
    """Write ``model`` and its metadata to ``path`` atomically (tmp file then rename).

    Stores only tensors and plain containers, so :func:`load_checkpoint` can use
    ``torch.load(weights_only=True)``. The builder options come from
    ``config["model_kwargs"]``, else from the model itself; a checkpoint whose weights
    would not match its named architecture is refused (:func:`check_architecture`).

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
        "model_kwargs": _jsonable(dict((config or {}).get("model_kwargs")
                                       or getattr(model, "model_kwargs", None) or {})),
        "class_names": [str(c) for c in class_names],
        "normalization": _jsonable(normalization or model.normalization()),
        "threshold": float(threshold),
        "threshold_rule": str(threshold_rule),
        "threshold_value": None if threshold_value is None else float(threshold_value),
        "config": _jsonable(config or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    check_architecture(payload, source=path)  # never write a checkpoint that cannot be rebuilt
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
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
#: ``create`` arguments a checkpoint sets through its own fields, never through model_kwargs.
_RESERVED_KWARGS = ("name", "num_classes", "in_channels", "image_size", "pretrained",
                    "resize_to")


def load_checkpoint(path: str | Path, expect_model: str | None = None) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its contents.

    Raises :class:`RunError` naming the file when it is missing, corrupt, holds
    anything but tensors and plain containers, lacks fields, holds another
    architecture than ``expect_model``, or when its weights do not match the
    architecture it names (see :func:`check_architecture`).
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunError(f"{path}: unreadable ({exc})") from exc
    return _checkpoint_from_bytes(data, path, expect_model)


def _checkpoint_from_bytes(data: bytes, path: Path, expect_model: str | None = None) -> dict:
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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
            isinstance(k, str) and isinstance(v, torch.Tensor)
            for k, v in ckpt["state_dict"].items()):
        raise RunError(f"{path}: the checkpoint's state_dict does not hold tensors only")
    if expect_model is not None and ckpt["arch"] != expect_model:
        raise RunError(f"{path}: holds a {ckpt['arch']!r} model, not the requested "
                       f"{expect_model!r}")
    check_architecture(ckpt, source=path)
    return ckpt


def _model_options(ckpt: dict, source) -> dict:
    kwargs = ckpt.get("model_kwargs") or {}
    if not isinstance(kwargs, dict) or not all(
            isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise RunError(f"{source}: the checkpoint's model_kwargs is not a dict of options")
    reserved = sorted(set(kwargs) & set(_RESERVED_KWARGS))
    if reserved:
        raise RunError(f"{source}: the checkpoint's model_kwargs may not set {reserved}")
    return kwargs


def check_architecture(ckpt: dict, source: str | Path = "checkpoint") -> None:
    """Check that a loaded checkpoint's weights are exactly those of the model it names.

    Builds the named architecture from the checkpoint's own fields and
    ``model_kwargs`` on PyTorch's ``meta`` device (no memory for weights; a model of
    more than :data:`fnlab.models.MAX_PARAMETERS` parameters is refused before anything
    is allocated) and requires the same parameter and buffer names with the same
    shapes. Raises :class:`RunError` (one line) otherwise. :func:`load_checkpoint` and
    :meth:`Run.load` call it whether or not a manifest vouches for the file.

    >>> from fnlab import models
    >>> m = models.create("smallcnn", width=8)
    >>> ckpt = {"arch": "attention_cnn", "num_classes": 2, "in_channels": 1,
    ...         "image_size": 28, "model_kwargs": {"width": 8}, "state_dict": m.state_dict()}
    >>> check_architecture(ckpt, "c.pt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fnlab.runs.RunError: c.pt: the weights do not match architecture 'attention_cnn' ...
    """
    from fnlab import models

    options = _model_options(ckpt, source)
    try:
        skeleton = models.meta_model(ckpt["arch"], num_classes=ckpt["num_classes"],
                                     in_channels=ckpt["in_channels"],
                                     image_size=ckpt["image_size"],
                                     resize_to=ckpt.get("resize_to"), options=options)
    except (ValueError, TypeError) as exc:
        raise RunError(f"{source}: cannot rebuild the model ({_one_line(exc, 300)})") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    if expected == got:
        return
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [f"{k} {got[k]} instead of {expected[k]}"
              for k in expected if k in got and got[k] != expected[k]]
    parts = [f"{label}: {_listing(items, 3)}" for label, items in
             (("missing", missing), ("unexpected", unexpected), ("shapes", shapes)) if items]
    raise RunError(f"{source}: the weights do not match architecture {ckpt['arch']!r} named in "
                   f"the checkpoint ({'; '.join(parts)})")


def model_from_checkpoint(ckpt: dict, device="cpu", source: str | Path = "checkpoint"):
    """Rebuild the zoo model of a loaded checkpoint and load its weights.

    The architecture and the model's size are checked first (:func:`check_architecture`),
    so a checkpoint cannot make this allocate a huge model.
    """
    from fnlab import models

    check_architecture(ckpt, source)
    try:
        model = models.create(ckpt["arch"], num_classes=ckpt["num_classes"],
                              in_channels=ckpt["in_channels"], image_size=ckpt["image_size"],
                              resize_to=ckpt.get("resize_to"), **_model_options(ckpt, source))
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


# --------------------------------------------------------------------------- manifest
class _Folder:
    """A Run folder read as one: every read goes through one open handle of the folder
    (where the system has them), so a Run swapped in meanwhile cannot mix into the read;
    :meth:`replaced` tells that it happened, and the reader starts again."""

    _DIR_FD = (os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd
               and os.listdir in os.supports_fd and hasattr(os, "O_DIRECTORY"))

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None
        if self._DIR_FD:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            st = os.fstat(self.fd)
        else:
            st = os.stat(path)
        self._id = (st.st_dev, st.st_ino)

    def __enter__(self) -> _Folder:
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def entries(self) -> dict[str, bool]:
        """``{name: is a plain file}`` for every entry (symbolic links are not)."""
        if self.fd is None:
            return {e.name: e.is_file() and not e.is_symlink() for e in self.path.iterdir()}
        out = {}
        for name in os.listdir(self.fd):
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            out[name] = stat.S_ISREG(st.st_mode)
        return out

    def read(self, name: str) -> bytes:
        if self.fd is None:
            return (self.path / name).read_bytes()
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0), dir_fd=self.fd)
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def replaced(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self._id


#: How often a reader starts again when the Run it was reading is replaced meanwhile.
_READ_ATTEMPTS = 5


def _read_whole(path: Path, read: Callable[[_Folder], Any]) -> Any:
    """``read(folder)``, started again if a writer replaced the folder meanwhile."""
    for attempt in range(_READ_ATTEMPTS):
        try:
            folder = _Folder(path)
        except (FileNotFoundError, NotADirectoryError):
            raise RunError(f"not a Run folder (missing): {path}") from None
        except OSError as exc:
            raise RunError(f"{path}: unreadable ({_one_line(exc)})") from exc
        with folder:
            try:
                return read(folder)
            except (RunError, OSError) as exc:
                if attempt + 1 < _READ_ATTEMPTS and folder.replaced():
                    continue
                if isinstance(exc, RunError):
                    raise
                raise RunError(f"{path}: unreadable ({_one_line(exc)})") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _run_files(path: Path, entries: dict[str, bool]) -> list[str]:
    """Names of a Run folder's files: every entry but hidden ones and the manifest."""
    names = []
    for name in sorted(entries):
        if name.startswith(".") or name == MANIFEST:
            continue
        if not entries[name]:
            raise RunError(f"{path / name} is not a plain file; a Run folder holds plain "
                           "files only")
        names.append(name)
    missing = [f for f in REQUIRED_FILES if f not in names]
    if missing:
        raise RunError(f"Run folder {path} is missing {', '.join(missing)}")
    return names


def _folder_entries(folder: Path) -> dict[str, bool]:
    return {e.name: e.is_file() and not e.is_symlink() for e in folder.iterdir()}


def _write_manifest(folder: Path, expect: dict[str, str] | None = None,
                    blobs: dict[str, bytes] | None = None) -> dict[str, str]:
    """Sign every file of ``folder``: write ``manifest.json`` and return its hashes.

    ``expect`` (name -> sha256) are files copied from a verified Run: signing stops if
    any of them is not what was verified. ``blobs`` are the bytes already read and
    checked (hashed instead of reading the files again).
    """
    blobs = blobs or {}
    hashes = {name: (hashlib.sha256(blobs[name]).hexdigest() if name in blobs
                     else _sha256(folder / name))
              for name in _run_files(folder, _folder_entries(folder))}
    changed = sorted(n for n, h in (expect or {}).items() if hashes.get(n) != h)
    if changed:
        raise RunError(f"{folder}: {', '.join(changed)} changed after the run was loaded; "
                       "not signing it (load the Run again)")
    _write_json(folder / MANIFEST, {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                                    "fnlab_version": __version__, "sha256": hashes})
    return hashes


def _resign_hint(path: Path) -> str:
    return (f"retrain it, or check its files and sign them deliberately: "
            f"fnlab evaluate {path} --resign")


def _verified_files(path: Path, folder: _Folder) -> tuple[dict[str, bytes], dict[str, str]]:
    """Read every file of the Run once and check it against ``manifest.json``."""
    entries = folder.entries()
    names = _run_files(path, entries)
    manifest_path = path / MANIFEST
    if not entries.get(MANIFEST):
        raise RunError(f"{path} has no manifest.json, so its files cannot be checked; "
                       + _resign_hint(path))
    manifest = _json_from_bytes(folder.read(MANIFEST), manifest_path)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise RunError(f"{manifest_path} was written by an older fnlab and does not cover "
                       "every file of the run; " + _resign_hint(path))
    if manifest.get("version") != MANIFEST_VERSION:
        raise RunError(f"{manifest_path}: manifest version {manifest.get('version')!r} is not "
                       f"{MANIFEST_VERSION}; " + _resign_hint(path))
    listed = manifest.get("sha256")
    if not isinstance(listed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "/" not in k and "\\" not in k
            and not k.startswith(".") and k != MANIFEST for k, v in listed.items()):
        raise RunError(f"{manifest_path}: malformed file list; " + _resign_hint(path))
    unsigned = [f for f in REQUIRED_FILES if f not in listed]
    if unsigned:
        raise RunError(f"{manifest_path} does not cover {', '.join(unsigned)}; "
                       + _resign_hint(path))
    extra = [f for f in names if f not in listed]
    if extra:
        raise RunError(f"{path / extra[0]} is not listed in manifest.json (added after the run "
                       "was written); remove it, or " + _resign_hint(path))
    blobs = {}
    for name, digest in listed.items():
        if name not in names:
            raise RunError(f"Run folder {path} is missing {name} (listed in manifest.json)")
        blobs[name] = folder.read(name)
        if hashlib.sha256(blobs[name]).hexdigest() != digest:
            raise RunError(f"{path / name} was modified after the run was written (sha256 "
                           "differs from manifest.json); retrain the run or restore the file")
    return blobs, dict(listed)


def _predictions_from_bytes(data: bytes, path: Path) -> Predictions:
    from fnlab.data.npzcheck import member_problems

    try:
        problems = member_problems(io.BytesIO(data))  # before anything is inflated
        if problems:
            raise ValueError("; ".join(problems))
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            return Predictions(z["y_true"], z["scores"], z["ids"], header["split"],
                               header["model"], header["class_names"], header.get("meta", {}))
    except Exception as exc:  # zip, npy, JSON and Predictions' own checks
        raise RunError(f"{path}: not a valid fnlab predictions file ({_one_line(exc)})") from exc


def _parse_run(path: Path, blobs: dict[str, bytes], expect_model: str | None = None) -> dict:
    """The parts of a Run from its files' bytes, with the checks that need no manifest."""
    ckpt = _checkpoint_from_bytes(blobs[CHECKPOINT], path / CHECKPOINT, expect_model)
    config = _json_from_bytes(blobs[CONFIG], path / CONFIG)
    metrics = _json_from_bytes(blobs[METRICS], path / METRICS)
    val = _predictions_from_bytes(blobs[VAL_PREDICTIONS], path / VAL_PREDICTIONS)
    test = _predictions_from_bytes(blobs[TEST_PREDICTIONS], path / TEST_PREDICTIONS)
    try:
        history = pd.read_csv(io.BytesIO(blobs[HISTORY]))
    except Exception as exc:
        raise RunError(f"{path / HISTORY}: unreadable ({_one_line(exc)})") from exc
    arch, model = ckpt["arch"], config.get("model")
    if model != arch:
        raise RunError(f"{path / CHECKPOINT} holds a {arch!r} model but config.json says "
                       f"{model!r}: the checkpoint comes from another run")
    if metrics.get("model", model) != model:
        raise RunError(f"{path / METRICS} describes a {metrics.get('model')!r} model but "
                       f"config.json says {model!r}: the metrics come from another run")
    if (ckpt.get("model_kwargs") or {}) != (config.get("model_kwargs") or {}):
        raise RunError(f"{path / CHECKPOINT} was built with model options "
                       f"{ckpt.get('model_kwargs')} but config.json says "
                       f"{config.get('model_kwargs')}")
    saved = _jsonable(ckpt.get("config") or {})
    if saved and saved != _jsonable(config):
        differ = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise RunError(f"{path / CHECKPOINT} was trained with another config than config.json "
                       f"(differs in {_listing(differ)})")
    if (val.split, test.split) != ("val", "test"):
        raise RunError(f"{path}: the prediction files hold splits {val.split!r} and "
                       f"{test.split!r}, not 'val' and 'test'")
    return {"checkpoint": ckpt, "config": config, "metrics": metrics, "history": history,
            "val": val, "test": test}


def sign_run(path: str | Path) -> dict:
    """Trust a Run folder's files as they are now: check them and write ``manifest.json``.

    The deliberate way back after :meth:`Run.load` refused a folder: a file you changed
    on purpose, a run written by an older fnlab, a deleted manifest. Every check that
    needs no manifest runs first (checkpoint readable with ``weights_only``, weights
    matching the architecture, bounded model size, checkpoint, config and metrics
    naming the same model), so a foreign or corrupt checkpoint is never signed. The
    command line is ``fnlab evaluate RUN_DIR --resign``.

    Returns ``{"files": [...], "changed": [...], "previous": bool}``: the files signed,
    those that differ from (or were missing in) the previous manifest, and whether
    there was a previous manifest of the current format at all.

    >>> sign_run("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fnlab.runs.RunError: not a Run folder (missing): /nonexistent
    """
    path = Path(path)

    def read(folder: _Folder) -> dict[str, bytes]:
        return {name: folder.read(name) for name in _run_files(path, folder.entries())}

    blobs = _read_whole(path, read)
    _parse_run(path, blobs)
    old: dict | None = None
    if (path / MANIFEST).is_file():
        try:
            manifest = _read_json(path / MANIFEST)
            if manifest.get("format") == MANIFEST_FORMAT and isinstance(manifest.get("sha256"),
                                                                         dict):
                old = manifest["sha256"]
        except RunError:
            pass
    hashes = _write_manifest(path, blobs=blobs)
    changed = sorted(n for n in hashes if (old or {}).get(n) != hashes[n])
    return {"files": sorted(hashes), "changed": changed if old is not None else [],
            "previous": old is not None}


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
    _hashes: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | Path, expect_model: str | None = None) -> Run:
        """Open a Run folder, checking its manifest, every file's hash and the architecture.

        >>> Run.load("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        fnlab.runs.RunError: not a Run folder (missing): /nonexistent
        """
        path = Path(path)
        if not path.is_dir():
            _restore_moved_aside(path)
        blobs, hashes = _read_whole(path, lambda folder: _verified_files(path, folder))
        parts = _parse_run(path, blobs, expect_model)
        ckpt = parts.pop("checkpoint")
        state = ckpt.pop("state_dict")
        return cls(path=path, checkpoint=ckpt, _state=state, _hashes=hashes, **parts)

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
            path = self.path / CHECKPOINT
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise RunError(f"{path}: unreadable ({exc})") from exc
            digest = self._hashes.get(CHECKPOINT)
            if digest is None or hashlib.sha256(data).hexdigest() != digest:
                raise RunError(f"{path} changed after the run was loaded; load the Run again")
            self._state = _checkpoint_from_bytes(data, path, self.arch)["state_dict"]
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
        ``metrics.json`` (the ``fnlab evaluate`` command): the new checkpoint holds the
        weights verified by :meth:`load`, the other files are carried over only if they
        still have the hashes verified then, and the folder is replaced whole. Otherwise
        only this object changes. Returns the new metrics dict.
        """
        from fnlab.thresholds import choose_threshold

        choice = choose_threshold(self.val, rule, value)
        keep = {k: v for k, v in self.metrics.items()
                if k not in ("val", "test", "threshold", "threshold_rule", "fnlab_version")}
        metrics = build_metrics(self.config, self.val, self.test, choice.threshold,
                                choice.label, extra=keep, ci=ci)
        metrics["threshold_description"] = choice.description
        checkpoint = dict(self.checkpoint, threshold=float(choice.threshold),
                          threshold_rule=choice.label,
                          threshold_value=None if choice.value is None else float(choice.value))
        if write:
            if not self._hashes:
                raise RunError(f"{self.path}: only a Run opened with Run.load can be rewritten")
            model = self.model()
            carried = {n: h for n, h in self._hashes.items() if n not in (CHECKPOINT, METRICS)}

            def fill(tmp: Path) -> None:
                for name in carried:
                    shutil.copyfile(self.path / name, tmp / name)
                save_checkpoint(tmp / CHECKPOINT, model, class_names=self.class_names,
                                threshold=choice.threshold, threshold_rule=choice.label,
                                threshold_value=choice.value, config=self.config,
                                normalization=self.checkpoint["normalization"])
                _write_json(tmp / METRICS, metrics)

            self._hashes = _publish(self.path, fill, overwrite=True, expect=carried)
        self.metrics = metrics
        self.checkpoint = checkpoint
        return metrics


# --------------------------------------------------------------------------- writing whole
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _temp_path(parent: Path, name: str, kind: str) -> Path:
    return parent / f".{name}.fnlab-{kind}-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # no cheap, safe check: rely on the age
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def _is_stale(entry: Path, host: str, pid: int, max_age: float) -> bool:
    try:
        age = time.time() - entry.lstat().st_mtime
    except OSError:
        return False
    if age > max_age:
        return True
    return host == _host_tag() and pid != os.getpid() and not _pid_alive(pid)


def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)


def _restore_moved_aside(path: Path, max_age: float = STALE_SECONDS) -> bool:
    """Put back a Run that a writer killed mid-replace left moved aside (two-rename swap)."""
    parent = path.parent
    try:
        entries = list(parent.iterdir())
    except OSError:
        return False
    backups = []
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if (m and m["kind"] == "old" and m["name"] == path.name and entry.is_dir()
                and _is_stale(entry, m["host"], int(m["pid"]), max_age)):
            backups.append(entry)
    for entry in sorted(backups, key=lambda e: e.stat().st_mtime, reverse=True):
        if path.exists() or path.is_symlink():
            break
        try:
            _rename(entry, path)
            return True
        except OSError:
            continue
    return False


def clean_stale(parent: str | Path, max_age: float = STALE_SECONDS,
                legacy: bool = False) -> list[Path]:
    """Remove the temporary folders that killed writers left in ``parent``.

    A temporary folder (``.NAME.fnlab-tmp-HOST-PID-TOKEN``) is stale when its writer's
    process is gone (same host) or it is older than ``max_age`` seconds. A Run that a
    killed writer had moved aside (``.NAME.fnlab-old-...``) is moved back when ``NAME``
    is missing, and removed otherwise. ``legacy=True`` (the Run cache only) also
    removes the ``.NAME.xxxxxxxx`` folders of fnlab 0.2.0 writers older than
    ``max_age``. Every write calls it; returns the paths removed or restored.

    >>> import tempfile
    >>> clean_stale(tempfile.mkdtemp())
    []
    """
    parent = Path(parent)
    done: list[Path] = []
    try:
        entries = sorted(parent.iterdir(), key=lambda e: e.name)
    except OSError:
        return done
    for entry in entries:
        if not entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue
        m = _TEMP_RE.match(entry.name)
        if m is not None:
            if not _is_stale(entry, m["host"], int(m["pid"]), max_age):
                continue
            if m["kind"] == "old" and _restore_moved_aside(parent / m["name"], max_age):
                done.append(entry)
                continue
        elif legacy and _LEGACY_TEMP_RE.match(entry.name):
            try:
                old = time.time() - entry.stat().st_mtime > max_age
                ours = all(_is_run_entry(e.name) for e in entry.iterdir())
            except OSError:
                continue
            if not (old and ours):
                continue
        else:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            done.append(entry)
    return done


def _is_run_entry(name: str) -> bool:
    """A name a Run folder may hold (its files, their temporary files, tool clutter)."""
    run_names = (*REQUIRED_FILES, *OPTIONAL_FILES, MANIFEST)
    if name in run_names or name in _CLUTTER:
        return True
    base = name.lstrip(".")
    return any(base.startswith(f + ".") and (base.endswith(".tmp") or base.endswith(".tmp.npz"))
               for f in run_names)


def check_out_dir(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Check that a Run may be written to ``out_dir``; raise :class:`RunError` if not.

    Allowed: a missing or empty folder, or, with ``overwrite=True``, a folder that
    holds only a Run's files (it is replaced whole once the new Run is complete). Never
    a file, a symbolic link, or a folder with other files, whatever ``overwrite`` says.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> check_out_dir(d / "new") == d / "new"
    True
    >>> _ = (d / "notes.txt").write_text("mine")
    >>> check_out_dir(d, overwrite=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fnlab.runs.RunError: ... holds files that are not part of a Run (notes.txt); ...
    """
    out = Path(out_dir)
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise RunError(f"{str(out_dir)!r} is the current folder or one that holds it; a Run is "
                       "written beside its folder and swapped in, so name a folder of its "
                       "own (e.g. runs/smallcnn)")
    if out.is_symlink():
        raise RunError(f"{out} is a symbolic link; give the folder itself as the Run folder")
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file, not a folder; choose a folder for the Run")
    if not out.exists():
        return out
    names = sorted(e.name for e in out.iterdir())
    if not names:
        return out
    foreign = [n for n in names if not _is_run_entry(n)]
    if foreign:
        raise RunError(f"{out} holds files that are not part of a Run ({_listing(foreign)}); "
                       "refusing to replace it (even with --force): choose another folder")
    if not overwrite:
        raise RunError(f"{out} already holds a Run ({_listing(names)}); replace it with "
                       "--force (overwrite=True), or choose another folder")
    return out


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the system or the file system cannot (the caller falls back).
    """
    global _RENAMEAT2
    if not sys.platform.startswith("linux"):
        return False
    if _RENAMEAT2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
            fn.restype = ctypes.c_int
            _RENAMEAT2 = fn
        except (OSError, AttributeError):
            _RENAMEAT2 = False
    if not _RENAMEAT2:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if _RENAMEAT2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


_RENAMEAT2: Any = None


def _swap_in(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Put the complete Run folder ``tmp`` at ``out_dir``: a reader sees old or new."""
    try:
        _rename(tmp, out_dir)  # POSIX: works when out_dir is missing or an empty folder
        return
    except OSError:
        if not (out_dir.exists() or out_dir.is_symlink()):
            raise
    if out_dir.is_dir() and not out_dir.is_symlink() and not any(out_dir.iterdir()):
        out_dir.rmdir()  # an empty folder on a system whose rename will not replace it
        _rename(tmp, out_dir)
        return
    check_out_dir(out_dir, overwrite)  # the folder changed while the Run was being written
    if _exchange(tmp, out_dir):
        return  # tmp now holds the old Run; the caller removes it
    aside = _temp_path(out_dir.parent, out_dir.name, "old")
    _rename(out_dir, aside)
    try:
        _rename(tmp, out_dir)
    except BaseException:
        _rename(aside, out_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _publish(out_dir: Path, fill: Callable[[Path], None], overwrite: bool,
             expect: dict[str, str] | None = None) -> dict[str, str]:
    """Write a Run whole: ``fill`` a hidden sibling folder, sign it, swap it in.

    Returns the manifest's hashes. Stale temporary folders beside ``out_dir`` go first.
    """
    out_dir = Path(out_dir)
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(parent)
    check_out_dir(out_dir, overwrite)
    tmp = _temp_path(parent, out_dir.name, "tmp")
    tmp.mkdir()
    try:
        fill(tmp)
        hashes = _write_manifest(tmp, expect=expect)
        _swap_in(tmp, out_dir, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return hashes


# --------------------------------------------------------------------------- training a Run
def _load_data(config) -> dict[str, ImageSet]:
    from fnlab.data.registry import load_dataset

    kw = {} if config.max_train_images is None else {"max_train_images": config.max_train_images}
    return load_dataset(config.dataset, data_path=config.data_path, image_size=config.image_size,
                        profile=config.profile, seed=config.seed,
                        progress=bool(getattr(config, "progress", True)), **kw)


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
    d = {k: v for k, v in d.items() if k not in _KEY_EXCLUDE
         and not (k in _KEY_LATER_DEFAULTS and v == _KEY_LATER_DEFAULTS[k])}
    key = {"config": _jsonable(d), "fnlab": __version__,
           "data": data_fingerprint(data) if data is not None else None}
    revision = ARCHITECTURE_REVISIONS.get(d.get("model"))
    if revision is not None:  # only changed models get the field: other keys stay valid
        key["architecture_revision"] = revision
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train_run(config=None, out_dir: str | Path | None = None, threshold_rule: str = "recall",
              threshold_value: float | None = 0.98, data: dict[str, ImageSet] | None = None,
              ci: bool = True, overwrite: bool = False) -> Run:
    """Load the data, train, choose the threshold on val, predict val and test, and
    write a Run folder (``out_dir``, or a folder in :func:`fnlab.config.runs_dir`).

    ``data`` (a dict with train/val/test ImageSets) skips loading ``config.dataset``.
    An existing non-empty ``out_dir`` is refused before anything is loaded, unless
    ``overwrite=True`` and it holds only a Run's files (:func:`check_out_dir`); the new
    Run replaces it whole once complete. The default folder (the cache) is replaced.
    """
    from fnlab import models
    from fnlab.thresholds import choose_threshold
    from fnlab.train import TrainConfig, fit, predict

    config = config or TrainConfig()
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if out_dir is not None:
        check_out_dir(out_dir, overwrite)
    data = data if data is not None else _load_data(config)
    _check_splits(data)
    train, val, test = data["train"], data["val"], data["test"]
    if out_dir is None:
        out_dir, overwrite = runs_dir(create=True) / _run_name(config, config_key(config, data)), True
    out_dir = Path(out_dir)
    try:  # its size first, from shapes alone: a mistyped width must not fill the memory
        models.meta_model(config.model, num_classes=train.num_classes,
                          in_channels=train.in_channels, image_size=train.image_size,
                          resize_to=config.resize_to, options=config.model_kwargs)
    except ValueError as exc:
        raise RunError(str(exc)) from None

    seed_everything(config.seed)
    model = models.create(config.model, num_classes=train.num_classes,
                          in_channels=train.in_channels, image_size=train.image_size,
                          pretrained=config.pretrained, resize_to=config.resize_to,
                          **config.model_kwargs)
    result = fit(model, train, val, config)
    label = config.model
    val_pred = predict(result.model, val, tta=config.tta, model_name=label)
    test_pred = predict(result.model, test, tta=config.tta, model_name=label)
    for pred, role in ((val_pred, "val"), (test_pred, "test")):
        if pred.split != role:  # e.g. a cross-validation fold judged on its held-out part
            pred.meta["source_split"] = pred.split
            pred.split = role  # the Run's files are its val and test roles
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

    def fill(tmp: Path) -> None:
        save_checkpoint(tmp / CHECKPOINT, result.model.cpu(), class_names=train.class_names,
                        threshold=choice.threshold, threshold_rule=choice.label,
                        threshold_value=choice.value, config=cfg,
                        normalization=result.normalization)
        _write_json(tmp / CONFIG, cfg)
        result.history.to_csv(tmp / HISTORY, index=False)
        val_pred.save(tmp / VAL_PREDICTIONS)
        test_pred.save(tmp / TEST_PREDICTIONS)
        _write_json(tmp / METRICS, metrics)

    _publish(out_dir, fill, overwrite=overwrite)
    return Run.load(out_dir)


def _run_name(config, key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(config.dataset))
    return f"{safe}-{config.model}-{key}"


#: Seconds :func:`get_or_train` waits quietly for another process's lock before saying so.
_LOCK_QUIET_SECONDS = 2.0


@contextmanager
def _cache_lock(root: Path, name: str) -> Iterator[None]:
    """Hold the cache key's file lock (``root/.locks/name.lock``) inside the block.

    Waits for another process that holds it (training that key). A cache folder where
    no lock file can be written (a read-only shared cache) is used without one:
    its entries are still only ever replaced whole.
    """
    from filelock import FileLock, Timeout

    lock_dir = root / ".locks"
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        writable = os.access(lock_dir, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        warnings.warn(f"cannot write a lock in {lock_dir}; using the run cache without one",
                      stacklevel=3)
        yield
        return
    lock = FileLock(str(lock_dir / f"{name}.lock"))
    try:
        lock.acquire(timeout=_LOCK_QUIET_SECONDS)
    except Timeout:
        print(f"waiting for another process to finish the run {name} ...", file=sys.stderr,
              flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def get_or_train(config=None, threshold_rule: str = "recall",
                 threshold_value: float | None = 0.98, data: dict[str, ImageSet] | None = None,
                 root: str | Path | None = None, retrain: bool = False,
                 ci: bool = True) -> Run:
    """Return the cached Run for ``config`` (same config, fnlab version and data), or
    train it and cache it in ``root`` (default :func:`fnlab.config.runs_dir`).

    One trainer per key: the lookup, the training and the write happen under a file
    lock of the key, so a second process (another notebook, a Dask worker) asking for
    the same Run waits and then loads it instead of training it again. A cached Run
    whose threshold rule differs is re-thresholded in memory (cheap: it only reads the
    saved validation predictions). A cached Run that fails :meth:`Run.load`'s checks
    (damaged, tampered, or signed by an older fnlab) is trained again, with a warning.
    ``run.cached`` tells whether the Run came from the cache.
    """
    from fnlab.train import TrainConfig

    config = config or TrainConfig()
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    data = data if data is not None else _load_data(config)
    _check_splits(data)
    root = Path(root) if root is not None else runs_dir(create=True)
    root.mkdir(parents=True, exist_ok=True)
    name = _run_name(config, config_key(config, data))
    path = root / name
    with _cache_lock(root, name):
        if not path.is_dir():
            _restore_moved_aside(path)
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
        clean_stale(root, legacy=True)
        return train_run(config, out_dir=path, threshold_rule=threshold_rule,
                         threshold_value=threshold_value, data=data, ci=ci, overwrite=True)


def add_document(run_path: str | Path, name: str, text: str) -> Path:
    """Add a document derived from a Run (``model_card.md``) to its folder, signed.

    The Run is verified first (a tampered Run is never re-signed), the file is written
    whole, and the manifest is written again to cover it, all under the Run's cache
    lock, so the Run stays loadable (a file the manifest does not list is refused).

    >>> add_document("/nonexistent", "notes.txt", "x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fnlab.runs.RunError: notes.txt: a Run folder takes only these documents: model_card.md
    """
    if name not in OPTIONAL_FILES:
        raise RunError(f"{name}: a Run folder takes only these documents: "
                       f"{', '.join(OPTIONAL_FILES)}")
    path = Path(run_path)
    with _cache_lock(path.parent, path.name):
        Run.load(path)  # verified before anything is signed
        target = path / name
        atomic_write_text(target, text)
        sign_run(path)
    return target
