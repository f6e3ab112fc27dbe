"""Argument checks shared by the ``fnlab`` subcommands.

The ``type=`` functions below make argparse refuse a bad number while it parses the
command line, so that no data is loaded (and nothing is trained) for a command that
cannot run. A refused value gives one line on stderr and exit code 2::

    fnlab train: error: argument --width: must be an integer >= 1, got '0'

Example
-------
>>> positive_int("3"), unit_interval("0.5"), nonneg_float("0")
(3, 0.5, 0.0)
>>> positive_float("inf")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: must be a finite number > 0, got 'inf'
"""

from __future__ import annotations

import argparse
import math
import re

from fnlab.data.imageio import MIN_IMAGE_SIDE

__all__ = [
    "WIDTH_MODELS",
    "check_device",
    "check_device_name",
    "check_train_args",
    "finite_float",
    "float_range",
    "image_side",
    "int_at_least",
    "learning_rate",
    "mixup_alpha",
    "nonneg_float",
    "nonneg_int",
    "positive_float",
    "positive_int",
    "probability",
    "seed_int",
    "unit_interval",
]


def _bad(text: str, what: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"must be {what}, got {text!r}")


def int_at_least(minimum: int, what: str | None = None, maximum: int | None = None):
    """A ``type=`` function accepting integers >= ``minimum`` (and <= ``maximum``)."""
    what = what or (f"an integer >= {minimum}" if maximum is None
                    else f"an integer from {minimum} to {maximum}")

    def check(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise _bad(text, what) from None
        if value < minimum or (maximum is not None and value > maximum):
            raise _bad(text, what)
        return value

    check.__name__ = f"int_at_least_{minimum}"
    return check


positive_int = int_at_least(1)
positive_int.__doc__ = "An integer >= 1 (epochs, batch size, widths, counts)."
nonneg_int = int_at_least(0)
nonneg_int.__doc__ = "An integer >= 0."
#: Largest image side (px) the command line accepts: a batch of 64 images of 1024 px
#: is already 268 MB of float32 input before the first layer.
MAX_IMAGE_SIDE = 1024
image_side = int_at_least(
    MIN_IMAGE_SIDE, f"an image side of {MIN_IMAGE_SIDE} px (the smallest the models accept) "
    f"to {MAX_IMAGE_SIDE} px", maximum=MAX_IMAGE_SIDE)
image_side.__doc__ = f"An image side in pixels, {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIDE}."
#: Largest seed: NumPy's legacy seeding and DataLoader workers take 32-bit seeds.
MAX_SEED = 2**32 - 1
seed_int = int_at_least(0, f"a seed from 0 to {MAX_SEED} (2**32 - 1)", maximum=MAX_SEED)
seed_int.__doc__ = f"A random seed, 0 to {MAX_SEED}."


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise _bad(text, what) from None
    if not math.isfinite(value):
        raise _bad(text, what)
    return value


def finite_float(text: str) -> float:
    """Any finite number (no nan, no inf)."""
    return _float(text, "a finite number")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    what = "a finite number > 0"
    value = _float(text, what)
    if not value > 0:
        raise _bad(text, what)
    return value


def nonneg_float(text: str) -> float:
    """A finite number >= 0."""
    what = "a finite number >= 0"
    value = _float(text, what)
    if value < 0:
        raise _bad(text, what)
    return value


def float_range(low: float, high: float, *, low_open: bool = True, why: str = ""):
    """A ``type=`` function for finite numbers in ``(low, high]`` (``[low, high]`` with
    ``low_open=False``); ``why`` is added to the refusal.

    >>> float_range(0, 10)("0.5")
    0.5
    """
    what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]" + (
        f" ({why})" if why else "")

    def check(text: str) -> float:
        value = _float(text, what)
        if not (low < value <= high if low_open else low <= value <= high):
            raise _bad(text, what)
        return value

    return check


#: ``--lr``: larger rates only diverge with fnlab's optimizers (and 1e308 overflows).
learning_rate = float_range(0, 10, why="larger rates only diverge")
#: ``--mixup``: Beta(alpha, alpha); above 10 every pair is mixed about half and half.
mixup_alpha = float_range(0, 10, low_open=False,
                          why="0 is off; above 10 every pair is mixed about half and half")


def unit_interval(text: str) -> float:
    """A number in (0, 1]: a target recall or specificity."""
    what = "a number in (0, 1]"
    value = _float(text, what)
    if not 0 < value <= 1:
        raise _bad(text, what)
    return value


def open_unit_interval(text: str) -> float:
    """A number in (0, 1): an averaging decay."""
    what = "a number in (0, 1)"
    value = _float(text, what)
    if not 0 < value < 1:
        raise _bad(text, what)
    return value


def half_open_unit_interval(text: str) -> float:
    """A number in [0, 1): a label-smoothing amount."""
    what = "a number in [0, 1)"
    value = _float(text, what)
    if not 0 <= value < 1:
        raise _bad(text, what)
    return value


def probability(text: str) -> float:
    """A number in [0, 1]: a fixed threshold."""
    what = "a number in [0, 1]"
    value = _float(text, what)
    if not 0 <= value <= 1:
        raise _bad(text, what)
    return value


#: Zoo models that take ``--width`` (channels of the first stage).
WIDTH_MODELS = ("smallcnn", "attention_cnn")


def check_train_args(args) -> None:
    """Check what ``fnlab train``'s flags mean together, before any data is loaded.

    The dataset and ``--data-path`` agree (the synthetic sets read no files, the folder
    datasets need one, and the path exists), ``--image-size`` fits the synthetic
    generator, ``--width`` and ``--pretrained`` fit the model, ``--augment`` names a
    preset and ``--device`` is available here. Raises :class:`fnlab.cli.UsageError`,
    or FileNotFoundError when ``--pretrained`` weights are not in the local cache.
    """
    from pathlib import Path

    from fnlab.cli import UsageError
    from fnlab.data.registry import DATASETS, resolve_dataset

    if not str(args.dataset).strip():
        raise UsageError(f"--dataset {args.dataset!r} is empty; name a dataset (auto, "
                         "synthetic, pneumoniamnist, ...) or leave the option out for auto")
    try:  # "auto": real data when the official file is cached or can be downloaded
        name, _reason = resolve_dataset(
            args.dataset, offline=True if getattr(args, "offline", False) else None,
            download=args.data_path is None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    kind = DATASETS[name].kind
    real = ", ".join(n for n, info in DATASETS.items() if info.kind != "embedded")
    if args.data_path is not None:
        if kind == "embedded":
            which = (f"--dataset {args.dataset}" if name == args.dataset
                     else f"--dataset {args.dataset} (here: {name})")
            raise UsageError(
                f"--data-path conflicts with {which}: the synthetic images are generated in "
                f"memory and read no file; name the real dataset instead (--dataset {real})")
        if not Path(args.data_path).expanduser().exists():
            raise UsageError(f"--data-path {args.data_path}: no such file or folder")
    elif kind == "folder":
        raise UsageError(f"--dataset {name} needs --data-path (the dataset's folder)")
    elif name == "pneumoniamnist":
        from fnlab.data import medmnist

        side = args.image_size or 28
        base = side if side in medmnist.PNEUMONIAMNIST else 28  # other sides resize 28 px
        cached, problem = medmnist.check_cached(base)
        if problem is not None:  # a variant at the default place: only with --data-path
            raise FileNotFoundError(problem)
        if cached is None:
            raise FileNotFoundError(
                f"PneumoniaMNIST ({base} px) is not cached in {medmnist.data_dir()}; run "
                f"fnlab data download pneumoniamnist --size {base}, or pass --data-path "
                "with any .npz of the MedMNIST layout")
    if kind == "embedded" and args.image_size is not None:
        from fnlab.data.synthetic import MAX_SIZE, MIN_SIZE

        if not MIN_SIZE <= args.image_size <= MAX_SIZE:
            raise UsageError(f"--image-size {args.image_size}: the synthetic images are "
                             f"{MIN_SIZE} to {MAX_SIZE} px")
    if args.width is not None and args.model not in WIDTH_MODELS:
        raise UsageError(f"--width goes with --model {' or '.join(WIDTH_MODELS)}, "
                         f"not {args.model}")
    if args.pretrained:
        from fnlab.models import pretrained_weights_path

        try:
            weights = pretrained_weights_path(args.model)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if not weights.is_file():
            raise FileNotFoundError(
                f"ImageNet weights for {args.model!r} are not in the local torch hub cache "
                f"({weights}); fnlab never downloads weights: copy the file there, or point "
                "$TORCH_HOME at a folder holding hub/checkpoints/")
    _check_augment(args.augment)
    check_device(args.device)


def _check_augment(preset) -> None:
    from fnlab.cli import UsageError
    from fnlab.data.augment import PRESETS
    from fnlab.train import BATCH_AUGMENTS

    if preset in (None, "", "none", "None") or preset in BATCH_AUGMENTS or preset in PRESETS:
        return
    choices = ", ".join(dict.fromkeys([*BATCH_AUGMENTS, *PRESETS, "none"]))
    raise UsageError(f"unknown augment preset {preset!r}; choose one of: {choices}")


def check_device(device) -> None:
    """Refuse a device that is not here (``--device cuda`` without CUDA) up front."""
    from fnlab.cli import UsageError
    from fnlab.config import resolve_device

    if device is not None and not str(device).strip():
        raise UsageError(f"--device {device!r} is empty; use auto, cpu, cuda, cuda:N or mps "
                         "(or leave the option out)")
    try:
        resolve_device(device)
    except ValueError as exc:
        raise UsageError(f"{exc}; use --device cpu (or auto)") from None


def check_device_name(device) -> None:
    """Refuse a device name torch does not know (``tpu``, ``''``), without asking whether
    it is here: ``fnlab course sweep`` runs on workers that may have CUDA."""
    from fnlab.cli import UsageError

    if device is None:
        return
    text = str(device).strip()
    if text in ("auto", "cpu", "mps") or re.fullmatch(r"cuda(:[0-9]+)?", text):
        return
    raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
