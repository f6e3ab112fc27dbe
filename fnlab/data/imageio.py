"""Read one image file as an 8-bit grayscale array, with errors that name the file.

Every folder loader in :mod:`fnlab.data` reads pixels through :func:`read_image`,
so the conversions and the bad-input rules live in one place:

- **RGB / CMYK / YCbCr** -> luma (ITU-R 601-2, ``PIL.Image.convert("L")``).
- **RGBA / LA / palette with transparency** -> composited on **black**: a transparent
  pixel becomes 0, like the air around a patient on a radiograph (dropping the alpha
  channel instead would reveal whatever colour the transparent pixels happen to hold).
- **Palette (P)** -> expanded through its palette, then luma.
- **16-bit and 32-bit (I;16, I, F)** -> scaled to 8 bits by the image's own range
  (minimum -> 0, maximum -> 255); a constant image becomes all zeros. Detectors store
  10-14 bits in 16-bit files, so scaling by the dtype range would leave them near black.
- **1-bit** -> 0 / 255.
- Multi-frame files (TIFF, GIF) -> the first frame; EXIF orientation is applied.

Bad input raises :class:`ImageReadError` (a ``ValueError``) carrying ``.path`` and
``.reason``: missing file, zero-byte file, not an image, truncated or corrupt data,
and images over ``max_pixels`` (a decompression bomb guard; PIL's own global limit
is never changed). Every image reader (:func:`read_image` and
:func:`fnlab.data.dicom.read_dicom`) refuses images over :data:`MAX_PIXELS` with the
same :func:`too_many_pixels` reason, checked from the header before any decoding.

Example
-------
>>> import numpy as np, tempfile, os
>>> from PIL import Image
>>> path = os.path.join(tempfile.mkdtemp(), "x.png")
>>> Image.fromarray(np.full((4, 6, 3), 200, np.uint8)).save(path)
>>> img = read_image(path)
>>> img.shape, img.dtype.name, int(img[0, 0])
((4, 6), 'uint8', 200)
>>> open(path, "wb").close()
>>> try:
...     read_image(path)
... except ImageReadError as err:
...     print(err.reason)
empty file (0 bytes)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest image (width x height, times frames for multi-frame DICOM) that the image
#: readers (:func:`read_image`, :func:`fnlab.data.dicom.read_dicom`) accept by default:
#: 10,000 x 10,000.
MAX_PIXELS = 10_000 * 10_000

#: Smallest image side (px) the models accept (:func:`fnlab.models.create` refuses
#: smaller images); ``fnlab data check`` flags smaller images and ``fnlab train`` refuses
#: a smaller ``--image-size``.
MIN_IMAGE_SIDE = 8

#: File name endings that the folder loaders treat as images.
IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"})

#: Files that operating systems leave in folders; loaders ignore them silently.
IGNORED_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})


class ImageReadError(ValueError):
    """An image file could not be read; ``.path`` names it and ``.reason`` says why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = str(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # keep picklable (thread/process pools)
        return (type(self), (self.path, self.reason))


def too_many_pixels(pixels: int, max_pixels: int, size: str | None = None) -> str:
    """The reason every image reader gives for an image over its pixel limit.

    ``size`` describes the image (``"W x H"``, or ``"W x H x N frames"``) when known.

    >>> too_many_pixels(12_000 * 12_000, MAX_PIXELS, "12000 x 12000")
    'image of 12000 x 12000 = 144,000,000 pixels exceeds the limit of 100,000,000 pixels (possible decompression bomb); pass max_pixels=... to raise the limit'
    """
    what = f"{size} = {int(pixels):,}" if size else f"{int(pixels):,}"
    return (f"image of {what} pixels exceeds the limit of {int(max_pixels):,} pixels "
            "(possible decompression bomb); pass max_pixels=... to raise the limit")


def is_ignored_file(path) -> bool:
    """True for hidden files and OS clutter (``.DS_Store``, ``Thumbs.db``) that loaders skip.

    >>> is_ignored_file("a/.DS_Store"), is_ignored_file("a/IM-0001-0001.jpeg")
    (True, False)
    """
    name = Path(path).name
    return name.startswith(".") or name.lower() in IGNORED_FILES


def is_image_file(path) -> bool:
    """True when the file name ends in one of :data:`IMAGE_EXTENSIONS`.

    >>> is_image_file("x/person1_virus_6.jpeg"), is_image_file("notes.txt")
    (True, False)
    """
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(
    path,
    on_error: str = "raise",
    *,
    max_pixels: int | None = MAX_PIXELS,
    draft_size: int | None = None,
) -> np.ndarray | None:
    """Read an image file as a uint8 grayscale array ``H x W``.

    Parameters
    ----------
    path : the image file.
    on_error : ``"raise"`` (default) raises :class:`ImageReadError`; ``"none"``
        returns None instead (the caller counts and reports it).
    max_pixels : refuse images with more pixels than this (decompression-bomb guard);
        None disables the check.
    draft_size : for JPEG, let the decoder shrink by a power of two while keeping both
        sides >= this many pixels (much faster when the image will be resized anyway).

    >>> import numpy as np, tempfile, os
    >>> from PIL import Image
    >>> p = os.path.join(tempfile.mkdtemp(), "big.png")
    >>> Image.fromarray(np.zeros((50, 50), np.uint8)).save(p)
    >>> read_image(p, max_pixels=100, on_error="none") is None
    True
    """
    if on_error not in ("raise", "none"):
        raise ValueError(f"on_error must be 'raise' or 'none', got {on_error!r}")
    try:
        return _read(Path(path), max_pixels, draft_size)
    except ImageReadError:
        if on_error == "none":
            return None
        raise


def _read(path: Path, max_pixels: int | None, draft_size: int | None) -> np.ndarray:
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image file")
    try:
        nbytes = os.path.getsize(path)
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if nbytes == 0:
        raise ImageReadError(path, "empty file (0 bytes)")

    with warnings.catch_warnings():
        # Our own max_pixels check below replaces PIL's global warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise ImageReadError(path, _pil_bomb_reason(exc, max_pixels)) from exc
        except UnidentifiedImageError as exc:
            raise ImageReadError(
                path, f"not a recognised image file ({nbytes:,} bytes, unknown format)"
            ) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageReadError(path, f"cannot open image ({exc})") from exc

        with img:
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageReadError(
                    path, too_many_pixels(width * height, max_pixels, f"{width} x {height}"))
            if draft_size and img.format == "JPEG":
                img.draft("L", (int(draft_size), int(draft_size)))
            try:
                img.load()
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                img = ImageOps.exif_transpose(img)
                return _to_gray(img)
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                msg = str(exc) or type(exc).__name__
                raise ImageReadError(path, f"truncated or corrupt image data ({msg})") from exc


def _pil_bomb_reason(exc: Exception, max_pixels: int | None) -> str:
    """Reason for Pillow's own refusal (over twice ``PIL.Image.MAX_IMAGE_PIXELS``)."""
    import re

    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(found.group(1)) if found else None
    if pixels is not None and max_pixels is not None and pixels > max_pixels:
        return too_many_pixels(pixels, max_pixels)
    size = f"{pixels:,} pixels" if pixels is not None else "too many pixels"
    return (f"image of {size} exceeds Pillow's own limit (PIL.Image.MAX_IMAGE_PIXELS; "
            "possible decompression bomb), which fnlab leaves unchanged")


def _to_gray(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    if mode == "P":
        has_alpha = "transparency" in img.info or img.palette.mode == "RGBA"
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
    if mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        gray = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float32)
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        return np.clip(np.rint(gray * alpha), 0, 255).astype(np.uint8)
    if mode.startswith("I") or mode == "F":
        return scale_to_uint8(np.asarray(img))
    return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Linearly map an array's own range (min..max) to 0..255 uint8; constant -> zeros.

    >>> scale_to_uint8(np.array([[1000, 2000], [3000, 1000]], np.uint16)).tolist()
    [[0, 128], [255, 0]]
    """
    a = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    out = (np.where(finite, a, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_grayscale(array: np.ndarray) -> np.ndarray:
    """Convert an in-memory image array to uint8 ``H x W`` by the same rules as files.

    Accepts ``H x W`` (any integer or float dtype), ``H x W x 1``, ``H x W x 3`` (RGB)
    and ``H x W x 4`` (RGBA, composited on black). uint8 data is kept as it is; floats
    in [0, 1] are scaled by 255; any other range is scaled by its own min..max.

    >>> to_grayscale(np.full((2, 2, 4), [255, 255, 255, 0], np.uint8)).tolist()
    [[0, 0], [0, 0]]
    >>> to_grayscale(np.array([[0.0, 1.0]])).tolist()
    [[0, 255]]
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        rgb = _as_uint8(a[..., :3]).astype(np.float32)
        gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        if a.shape[-1] == 4:
            gray = gray * (_as_uint8(a[..., 3]).astype(np.float32) / 255.0)
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    if a.ndim != 2:
        raise ValueError(
            f"expected an image H x W, H x W x 1, H x W x 3 or H x W x 4; got shape {a.shape}"
        )
    return _as_uint8(a)


def _as_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a.copy()
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.floating):
        finite = a[np.isfinite(a)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            return np.clip(np.rint(np.nan_to_num(a) * 255.0), 0, 255).astype(np.uint8)
        return scale_to_uint8(a)
    if np.issubdtype(a.dtype, np.integer) and a.size and a.min() >= 0 and a.max() <= 255:
        return a.astype(np.uint8)
    return scale_to_uint8(a)
