"""Helpers shared by several test modules (imported as ``support``; pytest puts tests/ on the path).

>>> sorted(tiny_data(n=4, n_eval=2))
['test', 'train', 'val']
"""

from __future__ import annotations

import csv
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


def write_npz_bomb(path, shape=(76_000, 224, 224), chunk_mb: int = 1) -> Path:
    """A MedMNIST-named ``.npz`` whose ``train_images.npy`` inflates to ``prod(shape)``
    bytes (3.8 GB by default) of zeros from a few MB on disk: a decompression bomb.

    The deflate stream is one fully flushed chunk of ``chunk_mb`` MB of zeros repeated
    (valid deflate); the zip is written by hand, so nothing of that size is ever made
    here. The CRC is left 0: NumPy would find the mismatch only after inflating it all,
    so the bomb still costs its full size to a reader without the size check.
    """
    import struct
    import zlib

    from numpy.lib import format as npy

    header = npy.header_data_from_array_1_0(np.zeros((1,), np.uint8))
    header["shape"] = tuple(shape)
    buf = __import__("io").BytesIO()
    npy.write_array_header_1_0(buf, header)
    head = buf.getvalue()
    total = int(np.prod(shape))
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = chunk_mb << 20
    block = comp.compress(b"\0" * chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = first.compress(head) + first.flush(zlib.Z_FULL_FLUSH)
    n_blocks, rest = divmod(total, chunk)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    data += block * n_blocks + tail.compress(b"\0" * rest) + tail.flush(zlib.Z_FINISH)
    size = len(head) + total
    assert size < 2**32, "a ZIP64 member is not built here"
    name = b"train_images.npy"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, 0, len(data), size,
                        len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, 0,
                          len(data), size, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central),
                      len(local) + len(data), 0)
    path = Path(path)
    path.write_bytes(local + data + central + end)
    return path


def grade_rows(path: Path) -> dict[str, dict[str, dict]]:
    """A grades CSV as ``{submission stem: {question: row}}``."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        by.setdefault(Path(r["submission"]).stem, {})[r["question"]] = r
    return by


def grade_scores(rows: dict) -> dict[str, float]:
    """``{question: score}`` of one submission's rows (from :func:`grade_rows`)."""
    return {q: float(r["score"]) for q, r in rows.items()}


#: notebook 00's scores for a fully right and an unanswered submission
FULL = {"q1_sensitivity": 1.0, "q2_missed_per_1000": 1.0, "TOTAL": 2.0}
ZERO = {"q1_sensitivity": 0.0, "q2_missed_per_1000": 0.0, "TOTAL": 0.0}
