"""Open a ``.npz`` only after its members' sizes are checked from their headers.

A ``.npz`` is a zip of ``.npy`` files. NumPy allocates each array from the shape in its
``.npy`` header and inflates the member to fill it, so a small file can claim (and
really hold, as compressed zeros) gigabytes: a decompression bomb. :func:`open_npz`
reads every member's zip entry and ``.npy`` header (a few hundred bytes inflated
each) and refuses, before any array is decompressed,

- an array whose header claims more than ``max_bytes`` (default
  :data:`MAX_NPZ_BYTES`), or a member that inflates to more than that;
- a member over :data:`RATIO_FLOOR_BYTES` that inflates more than
  :data:`MAX_RATIO` times its compressed size (images compress a few times; zeros a
  thousand times);

with the same kind of reason as the image readers' pixel limit
(:func:`fnlab.data.imageio.too_many_pixels`). Only then is the archive handed to
NumPy (``allow_pickle=False``), from the same open file.

Example
-------
>>> import tempfile, os, numpy as np
>>> p = os.path.join(tempfile.mkdtemp(), "a.npz")
>>> np.savez_compressed(p, x=np.zeros((4, 8, 8), np.uint8))
>>> with open_npz(p) as z:
...     z["x"].shape
(4, 8, 8)
>>> member_problems(p, max_bytes=100)
['x: array of 4 x 8 x 8 uint8 = 256 bytes exceeds the limit of 100 bytes (possible decompression bomb); pass max_bytes=... to raise the limit']
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

#: Largest array (bytes, as its ``.npy`` header declares it) :func:`open_npz` accepts by
#: default: 2 GiB (the 224 px PneumoniaMNIST's train images are 236 MB).
MAX_NPZ_BYTES = 2 * 1024**3
#: Members that inflate to more than this many bytes ...
RATIO_FLOOR_BYTES = 256 * 1024**2
#: ... must not inflate more than this many times their compressed size.
MAX_RATIO = 100
#: A ``.npy`` member holds its header besides the array (NumPy reads at most 10,000 bytes).
_NPY_HEADER_MAX = 64 * 1024


class NpzLimitError(ValueError):
    """A ``.npz`` member is over the size limit; ``.path`` names the file, ``.problems``
    gives one reason per member."""

    def __init__(self, path, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(f"{self.path}: {'; '.join(self.problems)}")


def too_many_bytes(what: str, nbytes: int, max_bytes: int) -> str:
    """The reason for a member over the limit, worded as the image readers' pixel limit.

    >>> too_many_bytes("x: array of 10 x 10 float64", 800, 100)
    'x: array of 10 x 10 float64 = 800 bytes exceeds the limit of 100 bytes (possible decompression bomb); pass max_bytes=... to raise the limit'
    """
    return (f"{what} = {int(nbytes):,} bytes exceeds the limit of {int(max_bytes):,} bytes "
            "(possible decompression bomb); pass max_bytes=... to raise the limit")


def _npy_header(fh) -> tuple[tuple[int, ...], np.dtype]:
    from numpy.lib import format as npy

    version = npy.read_magic(fh)
    if version == (1, 0):
        shape, _fortran, dtype = npy.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _fortran, dtype = npy.read_array_header_2_0(fh)
    else:  # (3, 0): utf-8 field names; NumPy reads it with the same private helper
        shape, _fortran, dtype = npy._read_array_header(fh, version)
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _member_problem(zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int) -> str | None:
    name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    if info.filename.endswith(".npy"):
        try:
            with zf.open(info) as fh:
                shape, dtype = _npy_header(fh)
        except Exception:  # noqa: BLE001 - NumPy gives the precise reason when it reads it
            shape, dtype = None, None
        if shape is not None:
            count = 1
            for n in shape:
                count *= n
            nbytes = count * dtype.itemsize
            if nbytes > max_bytes:
                dims = " x ".join(map(str, shape)) or "scalar"
                return too_many_bytes(f"{name}: array of {dims} {dtype}", nbytes, max_bytes)
    allowance = _NPY_HEADER_MAX if info.filename.endswith(".npy") else 0
    if info.file_size > max_bytes + allowance:
        return (f"{name}: member inflating to {info.file_size:,} bytes exceeds the limit of "
                f"{max_bytes:,} bytes (possible decompression bomb); pass max_bytes=... to "
                "raise the limit")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > RATIO_FLOOR_BYTES and ratio > MAX_RATIO:
        return (f"{name}: member inflating from {info.compress_size:,} to {info.file_size:,} "
                f"bytes ({ratio:,.0f} times) exceeds the limit of {MAX_RATIO} times for "
                f"members over {RATIO_FLOOR_BYTES:,} bytes (possible decompression bomb); "
                "pass max_bytes=... to raise the limit")
    return None


def member_problems(source, max_bytes: int = MAX_NPZ_BYTES) -> list[str]:
    """One reason per member of the zip ``source`` (a path or an open binary file) that
    is over the limits; ``[]`` when all are within them. Nothing is decompressed but
    the ``.npy`` headers. Raises ``zipfile.BadZipFile`` when ``source`` is no zip."""
    with zipfile.ZipFile(source) as zf:
        problems = [_member_problem(zf, info, max_bytes) for info in zf.infolist()]
    return [p for p in problems if p]


def open_npz(path, max_bytes: int = MAX_NPZ_BYTES):
    """``np.load(path, allow_pickle=False)`` for a ``.npz``, after :func:`member_problems`
    found every member within the limits (else :class:`NpzLimitError`). Use it as a
    context manager, as ``np.load``'s result. Raises ``zipfile.BadZipFile`` (a
    ``.npy`` or any other file), OSError, or ValueError as NumPy does."""
    fh = open(Path(path), "rb")  # noqa: SIM115 - handed to NpzFile, which closes it
    try:
        problems = member_problems(fh, max_bytes)
        if problems:
            raise NpzLimitError(path, problems)
        fh.seek(0)
        return np.lib.npyio.NpzFile(fh, own_fid=True, allow_pickle=False)
    except BaseException:
        fh.close()
        raise
