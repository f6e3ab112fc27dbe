"""Helpers shared by several test modules (imported as ``support``; pytest puts tests/ on the path).

>>> sorted(tiny_data(n=4, n_eval=2))
['test', 'train', 'val']
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fnlab.data.imageset import ImageSet


def tiny_data(seed=0, n=80, size=16, n_eval=40) -> dict[str, ImageSet]:
    """Train/val/test splits of ``size`` px noise with a bright block on the pneumonias."""
    rng = np.random.default_rng(seed)

    def make(split, k):
        y = np.arange(k) % 2
        x = (rng.random((k, size, size)) * 90).astype(np.uint8)
        x[y == 1, 4:10, 4:12] += 120
        return ImageSet(x, y, split=split, source="tiny")

    return {"train": make("train", n), "val": make("val", n_eval), "test": make("test", n_eval)}


def processes_with(marker: str) -> list[int]:
    """Pids of processes whose command line holds ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def kill_processes_with(marker: str) -> None:
    """SIGKILL every process whose command line holds ``marker`` (test clean-up)."""
    for pid in processes_with(marker):
        try:
            os.kill(pid, 9)
        except OSError:
            pass
