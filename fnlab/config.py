"""Configuration shared by every layer: data directory, device choice and seeding.

This module is the lowest layer of :mod:`fnlab`; it imports nothing from the
rest of the package, and torch only lazily (so pure modules stay torch-free).

Example
-------
>>> from fnlab import config
>>> config.seed_everything(0)
0
>>> config.data_dir().name in {"data", "data"}
True
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

#: Environment variable that overrides the data directory.
DATA_DIR_ENV = "FNLAB_DATA_DIR"
#: Environment variable that overrides the device (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
DEVICE_ENV = "FNLAB_DEVICE"
#: Environment variable: ``1`` means never try the network (tests, CI, offline classrooms).
OFFLINE_ENV = "FNLAB_OFFLINE"
#: Set by a course run whose one download attempt failed: the reason every notebook then gives
#: for using the synthetic X-rays (the same words as the run's summary.md).
AUTO_REASON_ENV = "FNLAB_AUTO_REASON"
#: Names a PneumoniaMNIST ``.npz`` explicitly (a rebuilt or variant file, not the official
#: download): ``dataset="auto"`` and ``"pneumoniamnist"`` then load it, with a warning when
#: its checksum is not the official one. ``fnlab course run --data-path FILE`` sets it.
PNEUMONIAMNIST_ENV = "FNLAB_PNEUMONIAMNIST"
#: 1 where no browser drives the kernel (batch runs): widgets render as static outputs.
STATIC_WIDGETS_ENV = "FNLAB_STATIC_WIDGETS"

PACKAGE_ROOT = Path(__file__).resolve().parent
#: Project root when fnlab runs from a checkout (the folder holding pyproject.toml), else None.
PROJECT_ROOT: Path | None = (
    PACKAGE_ROOT.parent if (PACKAGE_ROOT.parent / "pyproject.toml").is_file() else None
)


def data_dir(create: bool = False) -> Path:
    """Return the folder where datasets are cached.

    ``$FNLAB_DATA_DIR`` wins; otherwise the project's ``data/`` folder when fnlab
    runs from a checkout, else ``~/.fnlab/data``.

    >>> import os
    >>> os.environ["FNLAB_DATA_DIR"] = "/tmp/fnlab-doc"
    >>> str(data_dir())
    '/tmp/fnlab-doc'
    >>> del os.environ["FNLAB_DATA_DIR"]
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        path = Path(env).expanduser()
    elif PROJECT_ROOT is not None:
        path = PROJECT_ROOT / "data"
    else:
        path = Path.home() / ".fnlab" / "data"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def offline_mode(offline: bool | None = None) -> bool:
    """True when fnlab must not try the network.

    An explicit ``offline`` (True/False) wins; otherwise ``$FNLAB_OFFLINE`` decides:
    ``1``, ``true``, ``yes`` or ``on`` (any case) mean offline, anything else (or unset)
    means online.

    >>> import os
    >>> os.environ["FNLAB_OFFLINE"] = "1"
    >>> offline_mode(), offline_mode(False)
    (True, False)
    >>> del os.environ["FNLAB_OFFLINE"]
    >>> offline_mode(), offline_mode(True)
    (False, True)
    """
    if offline is not None:
        return bool(offline)
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def runs_dir(create: bool = False) -> Path:
    """Folder for cached training runs: ``<data_dir>/runs`` (git-ignored)."""
    path = data_dir() / "runs"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def shared_data_dir() -> Path | None:
    """The ``../shared/data`` folder beside a checkout (developers and CI), or None."""
    if PROJECT_ROOT is None:
        return None
    path = PROJECT_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def resolve_device(device: str | None = "auto"):
    """Pick a torch device: an explicit name, ``$FNLAB_DEVICE``, else CUDA, MPS, CPU.

    >>> str(resolve_device("cpu"))
    'cpu'
    """
    import torch

    if device in (None, "", "auto"):
        device = os.environ.get(DEVICE_ENV) or "auto"
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r} requested but MPS is not available here")
    return dev


def seed_everything(seed: int = 0, deterministic: bool = True) -> int:
    """Seed Python, NumPy and (if installed) torch in one call; return the seed.

    With ``deterministic=True`` torch is asked for deterministic kernels where it
    has them (CPU training is then bit-for-bit repeatable for a given seed).

    >>> seed_everything(7)
    7
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import torch
    except ImportError:  # pure layers work without torch
        return seed
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if hasattr(torch.backends, "cudnn"):
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return seed


def named_pneumoniamnist() -> Path | None:
    """The ``.npz`` named by ``$FNLAB_PNEUMONIAMNIST``, or None when it is unset.

    >>> import os
    >>> os.environ["FNLAB_PNEUMONIAMNIST"] = "~/x.npz"
    >>> named_pneumoniamnist().name
    'x.npz'
    >>> del os.environ["FNLAB_PNEUMONIAMNIST"]
    >>> named_pneumoniamnist() is None
    True
    """
    value = os.environ.get(PNEUMONIAMNIST_ENV, "").strip()
    return Path(value).expanduser() if value else None


def progress_bar(iterable=None, **kwargs):
    """tqdm's progress bar: a widget in JupyterLab, text in a terminal, none in batch runs.

    A course run (``fnlab course run``) sets ``TQDM_DISABLE=1`` for its kernels: a bar saved
    into an executed notebook would stay a widget stuck at "0%" in the run copy and the book.
    tqdm's notebook bar ignores that variable, so every fnlab loop asks for its bar here.

    >>> import os
    >>> os.environ["TQDM_DISABLE"] = "1"
    >>> progress_bar(range(3)).disable
    True
    >>> del os.environ["TQDM_DISABLE"]
    """
    if os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on"):
        kwargs["disable"] = True
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
