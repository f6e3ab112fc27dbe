"""A grid of example images with their class, saved as PNG (``fnlab data preview``).

Uses matplotlib's object API with the Agg canvas, so it never touches pyplot's
global state or needs a display.

Example
-------
>>> import numpy as np, tempfile, os
>>> from fnlab.data.imageset import ImageSet
>>> s = ImageSet(np.zeros((4, 8, 8), np.uint8), [0, 1, 0, 1])
>>> out = preview_grid(s, os.path.join(tempfile.mkdtemp(), "grid.png"), n=4)
>>> out.name
'grid.png'
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fnlab.data.imageset import ImageSet


def _load_any(source, size: int) -> ImageSet:
    """An ImageSet from an ImageSet, a dict of them, or a path (.npz or folder)."""
    if isinstance(source, ImageSet):
        return source
    if isinstance(source, dict):
        return source.get("train") or next(iter(source.values()))
    path = Path(source).expanduser()
    if path.is_file():
        import warnings

        from fnlab.data.medmnist import load_npz

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a checksum note is not news here
            sets = load_npz(path, verify="off")
        return sets.get("train") or next(iter(sets.values()))
    from fnlab.data.check import detect_layout

    layout = detect_layout(path)
    if layout == "kermany":
        from fnlab.data.folders import load_kermany

        sets = load_kermany(path, size=size, on_error="skip", progress=False)
    elif layout == "covid":
        from fnlab.data.folders import load_covid_radiography

        sets = load_covid_radiography(path, size=size, on_error="skip", progress=False)
    elif layout == "dicom":
        from fnlab.data.dicom import load_dicom_folder

        return load_dicom_folder(path, size=size, on_error="skip", progress=False)
    else:
        raise ValueError(f"{path}: not a .npz file or a dataset folder fnlab recognises "
                         "(run: fnlab data check PATH)")
    non_empty = [s for s in sets.values() if len(s)]
    if not non_empty:
        raise ValueError(f"{path}: no readable images")
    return non_empty[0]


def preview_grid(source, out_png, n: int = 16, seed: int = 0, size: int = 128,
                 per_class: bool = True, dpi: int = 100) -> Path:
    """Save a grid of ``n`` images with their class names as titles; return the path.

    Parameters
    ----------
    source : an ImageSet, a ``dict[str, ImageSet]`` (its train split), or a path to
        a ``.npz`` or a dataset folder.
    out_png : where to write the PNG (folders are created).
    n : number of images.
    seed : which images (random but repeatable).
    size : side used when loading a folder.
    per_class : draw about the same number of images from each class.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = _load_any(source, size)
    if len(s) == 0:
        raise ValueError(f"{getattr(s, 'source', source)}: no images to preview")
    rng = np.random.default_rng(seed)
    n = max(1, min(int(n), len(s)))
    if per_class:
        groups = [rng.permutation(np.flatnonzero(s.labels == c)) for c in range(s.num_classes)]
        picked: list[int] = []
        for i in range(n):
            live = [g for g in groups if len(g)]
            if not live:
                break
            g = live[i % len(live)]
            picked.append(int(g[0]))
            groups = [x[1:] if x is g else x for x in groups]
        idx = np.array(picked[:n])
    else:
        idx = rng.choice(len(s), size=n, replace=False)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.8 * cols, 1.95 * rows), dpi=dpi)
    FigureCanvasAgg(fig)
    for k, i in enumerate(idx):
        ax = fig.add_subplot(rows, cols, k + 1)
        img = s.images[i]
        if img.ndim == 3:  # C x H x W
            img = img[0] if img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1)
        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(str(s.class_names[s.labels[i]]), fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{s.source} [{s.split}]", fontsize=9)
    fig.tight_layout()
    out = Path(out_png).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
