"""Preprocessing: square resizing, intensity statistics, denoising and contrast.

All functions take and return uint8 grayscale arrays (``H x W``) unless stated, so
a notebook can show each step side by side:

- :func:`to_square` - center **crop** (keeps full resolution, may cut the edges of
  the lungs) or **pad** (keeps the whole field, adds black borders), chosen explicitly;
- :func:`resize` - PIL resampling with antialiasing;
- :func:`compute_stats` / :class:`Normalizer` - the mean and std of the training
  pixels (in [0, 1] units), kept as a small dict that goes into the checkpoint so
  that inference uses the same numbers;
- :func:`denoise` - median or Gaussian filter (SciPy);
- :func:`equalize` - global histogram equalisation (``PIL.ImageOps.equalize``);
- :func:`clahe` - contrast-limited adaptive histogram equalisation (Zuiderveld, 1994),
  implemented here in NumPy (tile histograms, clipping with redistribution, bilinear
  interpolation of the tile mappings), so no OpenCV or scikit-image is needed;
- :func:`preprocess_images` - a list of arrays of any sizes -> ``N x size x size``.

Example
-------
>>> import numpy as np
>>> img = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
>>> to_square(img, 8, method="crop").shape, to_square(img, 8, method="pad").shape
((8, 8), (8, 8))
>>> preprocess_images([img, img[:5]], 16, method="pad").shape
(2, 16, 16)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from fnlab.data.imageio import to_grayscale

#: Valid values of ``method`` for :func:`to_square`.
SQUARE_METHODS = ("crop", "pad")

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "area": Image.Resampling.BOX,
}


def _check_method(method: str) -> None:
    if method not in SQUARE_METHODS:
        raise ValueError(
            f"method must be one of {', '.join(map(repr, SQUARE_METHODS))} "
            f"(center crop or pad to square), got {method!r}"
        )


def _gray2d(img) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2 and a.dtype == np.uint8:
        return a
    return to_grayscale(a)


def resize(img: np.ndarray, size, resample: str = "bilinear") -> np.ndarray:
    """Resize a uint8 ``H x W`` image to ``size`` (an int for a square, or ``(H, W)``).

    Downsampling is antialiased (PIL filters scale their support with the factor).

    >>> resize(np.zeros((10, 30), np.uint8), (5, 15)).shape
    (5, 15)
    """
    a = _gray2d(img)
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    if a.shape == (h, w):
        return a.copy()
    try:
        filt = _RESAMPLE[resample]
    except KeyError:
        raise ValueError(
            f"resample must be one of {', '.join(_RESAMPLE)}, got {resample!r}"
        ) from None
    return np.asarray(Image.fromarray(a).resize((w, h), filt), dtype=np.uint8)


def to_square(img: np.ndarray, size: int | None, method: str = "crop",
              resample: str = "bilinear") -> np.ndarray:
    """Make an image square, then resize it to ``size x size`` (None keeps the side).

    ``method="crop"`` takes the central square of side ``min(H, W)``;
    ``method="pad"`` adds black borders around the image up to ``max(H, W)``.
    The choice is explicit because it changes what the model sees: cropping a wide
    radiograph can cut the costophrenic angles, padding shrinks the lungs.

    >>> img = np.full((4, 8), 9, np.uint8)
    >>> to_square(img, None, method="crop").shape
    (4, 4)
    >>> to_square(img, None, method="pad")[:, 0].tolist()
    [0, 0, 9, 9, 9, 9, 0, 0]
    >>> to_square(img, 4, method="stretch")
    Traceback (most recent call last):
    ...
    ValueError: method must be one of 'crop', 'pad' (center crop or pad to square), got 'stretch'
    """
    _check_method(method)
    a = _gray2d(img)
    h, w = a.shape
    if method == "crop":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        sq = a[top : top + s, left : left + s]
    else:
        s = max(h, w)
        sq = np.zeros((s, s), np.uint8)
        top, left = (s - h) // 2, (s - w) // 2
        sq[top : top + h, left : left + w] = a
    if size is None:
        return np.ascontiguousarray(sq)
    return resize(sq, int(size), resample=resample)


def preprocess_images(images: Iterable[np.ndarray], size: int, method: str = "crop",
                      resample: str = "bilinear") -> np.ndarray:
    """Turn arrays of any (mixed) sizes and colour layouts into uint8 ``N x size x size``.

    Each image goes through :func:`~fnlab.data.imageio.to_grayscale` and
    :func:`to_square`.

    >>> out = preprocess_images([np.zeros((30, 40, 3), np.uint8), np.ones((9, 7))], 8)
    >>> out.shape, out.dtype.name
    ((2, 8, 8), 'uint8')
    """
    _check_method(method)
    arrays = [to_square(to_grayscale(np.asarray(a)), size, method, resample) for a in images]
    if not arrays:
        return np.zeros((0, int(size), int(size)), np.uint8)
    return np.stack(arrays)


# --------------------------------------------------------------------------- statistics
def compute_stats(images) -> tuple[float, float]:
    """Mean and standard deviation of all pixels, in [0, 1] units (uint8 / 255).

    Compute them on the **training** split only and reuse them for val and test.

    >>> compute_stats(np.array([[[0, 255]]], np.uint8))
    (0.5, 0.5)
    """
    a = np.asarray(images)
    if a.size == 0:
        raise ValueError("compute_stats: no pixels (empty image array)")
    scale = 255.0 if a.dtype == np.uint8 else 1.0
    # float64 accumulation in chunks keeps memory flat for large sets
    flat = a.reshape(len(a), -1) if a.ndim > 1 else a.reshape(1, -1)
    total = 0.0
    total_sq = 0.0
    count = 0
    for start in range(0, len(flat), 4096):
        chunk = flat[start : start + 4096].astype(np.float64) / scale
        total += float(chunk.sum())
        total_sq += float(np.square(chunk).sum())
        count += chunk.size
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    return float(mean), float(np.sqrt(var))


@dataclass(frozen=True)
class Normalizer:
    """Intensity normalisation ``(x - mean) / std`` for images in [0, 1].

    The statistics travel with the model: :meth:`state_dict` gives a plain dict for
    the checkpoint and :meth:`from_dict` restores it.

    >>> norm = Normalizer.from_images(np.array([[[0, 255]]], np.uint8))
    >>> norm.state_dict()
    {'mean': 0.5, 'std': 0.5}
    >>> Normalizer.from_dict({'mean': 0.5, 'std': 0.5})(np.array([0.0, 1.0])).tolist()
    [-1.0, 1.0]
    """

    mean: float
    std: float

    def __post_init__(self):
        if not np.isfinite(self.mean) or not np.isfinite(self.std) or self.std <= 0:
            raise ValueError(
                f"Normalizer needs a finite mean and a positive std, got "
                f"mean={self.mean!r}, std={self.std!r} (a constant training set?)"
            )

    @classmethod
    def from_images(cls, images) -> Normalizer:
        """Statistics of ``images`` (uint8 arrays, or an ImageSet's ``.images``)."""
        images = getattr(images, "images", images)
        mean, std = compute_stats(images)
        return cls(mean, std if std > 0 else 1.0)

    @classmethod
    def from_dict(cls, state: dict) -> Normalizer:
        """Rebuild from :meth:`state_dict` output (e.g. read from a checkpoint)."""
        try:
            return cls(float(state["mean"]), float(state["std"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"normalisation stats must be a dict with 'mean' and 'std', got {state!r}"
            ) from exc

    def state_dict(self) -> dict:
        """``{"mean": ..., "std": ...}`` (plain floats, JSON-safe)."""
        return {"mean": float(self.mean), "std": float(self.std)}

    def __call__(self, x):
        """Normalise a float array or tensor in [0, 1]."""
        return (x - self.mean) / self.std

    def inverse(self, x):
        """Undo the normalisation (back to [0, 1] units)."""
        return x * self.std + self.mean

    def transform(self):
        """The same operation as a ``torchvision.transforms.v2.Normalize``."""
        from torchvision.transforms import v2

        return v2.Normalize(mean=[self.mean], std=[self.std])


# --------------------------------------------------------------------------- filters
DENOISE_METHODS = ("median", "gaussian")


def denoise(img: np.ndarray, method: str = "median", size: int = 3,
            sigma: float = 1.0) -> np.ndarray:
    """Reduce noise with a median filter (``size`` pixels) or a Gaussian (``sigma``).

    >>> img = np.zeros((5, 5), np.uint8); img[2, 2] = 255  # one hot pixel
    >>> int(denoise(img, "median").max()), int(denoise(img, "gaussian").max()) < 255
    (0, True)
    """
    a = _gray2d(img)
    if method == "median":
        out = ndimage.median_filter(a, size=int(size), mode="reflect")
    elif method == "gaussian":
        out = ndimage.gaussian_filter(a.astype(np.float32), sigma=float(sigma), mode="reflect")
        out = np.clip(np.rint(out), 0, 255)
    else:
        raise ValueError(
            f"denoise method must be one of {', '.join(map(repr, DENOISE_METHODS))}, "
            f"got {method!r}"
        )
    return out.astype(np.uint8)


def equalize(img: np.ndarray) -> np.ndarray:
    """Global histogram equalisation (``PIL.ImageOps.equalize``).

    >>> dull = np.repeat(np.arange(100, 132, dtype=np.uint8), 32).reshape(32, 32)
    >>> int(dull.max()), int(equalize(dull).max()) > 240
    (131, True)
    """
    return np.asarray(ImageOps.equalize(Image.fromarray(_gray2d(img))), dtype=np.uint8)


def clahe(img: np.ndarray, clip_limit: float = 2.0,
          tile_grid: int | Sequence[int] = 8, nbins: int = 256) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (CLAHE).

    The image is divided into ``tile_grid`` tiles (an int or ``(rows, cols)``); each
    tile's histogram is clipped at ``clip_limit`` times the mean bin height (the
    OpenCV convention: 1 = no contrast gain, larger = stronger; ``None`` or ``0``
    disables clipping, i.e. plain adaptive HE), the clipped excess is spread over all
    bins, and each pixel is mapped by bilinear interpolation between the cumulative
    histograms of its four nearest tiles, so tile borders do not show.

    >>> rng = np.random.default_rng(0)
    >>> flat = (100 + rng.integers(0, 8, size=(64, 64))).astype(np.uint8)  # low contrast
    >>> out = clahe(flat)
    >>> out.shape, out.dtype.name, bool(out.std() > flat.std())
    ((64, 64), 'uint8', True)
    """
    a = _gray2d(img)
    rows, cols = (int(tile_grid), int(tile_grid)) if np.isscalar(tile_grid) else map(int, tile_grid)
    if rows < 1 or cols < 1:
        raise ValueError(f"tile_grid must be positive, got {tile_grid!r}")
    nbins = int(nbins)
    if not 2 <= nbins <= 256:
        raise ValueError(f"nbins must be in 2..256, got {nbins}")
    h, w = a.shape
    rows, cols = min(rows, h), min(cols, w)
    th, tw = -(-h // rows), -(-w // cols)  # tile size (ceil)
    ph, pw = th * rows - h, tw * cols - w
    padded = np.pad(a, ((0, ph), (0, pw)), mode="reflect") if (ph or pw) else a
    bins = (padded.astype(np.int32) * nbins) >> 8  # 0..nbins-1

    # Histograms of every tile at once: (rows, cols, nbins).
    tiles = bins.reshape(rows, th, cols, tw).transpose(0, 2, 1, 3).reshape(rows * cols, -1)
    offsets = (np.arange(rows * cols) * nbins)[:, None]
    hist = np.bincount((tiles + offsets).ravel(), minlength=rows * cols * nbins)
    hist = hist.reshape(rows * cols, nbins).astype(np.float64)

    npix = th * tw
    if clip_limit:
        limit = max(float(clip_limit) * npix / nbins, 1.0)
        for _ in range(4):  # redistribution can push bins over the limit again
            excess = np.maximum(hist - limit, 0.0).sum(axis=1, keepdims=True)
            if not excess.any():
                break
            hist = np.minimum(hist, limit) + excess / nbins
    cdf = np.cumsum(hist, axis=1)
    lut = np.clip(np.rint(cdf / cdf[:, -1:] * 255.0), 0, 255).reshape(rows, cols, nbins)

    # Bilinear interpolation between the mappings of the 4 nearest tile centres.
    def coords(n, t, count):
        pos = (np.arange(n) + 0.5) / t - 0.5
        lo = np.clip(np.floor(pos).astype(int), 0, count - 1)
        hi = np.clip(lo + 1, 0, count - 1)
        frac = np.clip(pos - lo, 0.0, 1.0)
        frac[pos < 0] = 0.0
        return lo, hi, frac

    y0, y1, fy = coords(h, th, rows)
    x0, x1, fx = coords(w, tw, cols)
    v = bins[:h, :w]
    fy, fx = fy[:, None], fx[None, :]
    top = lut[y0[:, None], x0[None, :], v] * (1 - fx) + lut[y0[:, None], x1[None, :], v] * fx
    bot = lut[y1[:, None], x0[None, :], v] * (1 - fx) + lut[y1[:, None], x1[None, :], v] * fx
    out = top * (1 - fy) + bot * fy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
