"""ImageSet: the one result type every data source produces.

Synthetic images, PneumoniaMNIST ``.npz`` files, Kermany-style folders, the
COVID-19 Radiography folders and DICOM series all become an :class:`ImageSet`,
and a dataset with several splits is a plain ``dict[str, ImageSet]``
(``{"train": ..., "val": ..., "test": ...}``).

Example
-------
>>> import numpy as np
>>> s = ImageSet(np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 1, 0]),
...              class_names=("normal", "pneumonia"), split="train")
>>> len(s), s.counts()
(4, {'normal': 2, 'pneumonia': 2})
>>> s.subset([1, 2]).labels.tolist()
[1, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BINARY_CLASSES = ("normal", "pneumonia")
FOUR_CLASSES = ("Normal", "Lung_Opacity", "Viral Pneumonia", "COVID")


@dataclass
class ImageSet:
    """Images with labels and the metadata the course needs.

    Attributes
    ----------
    images : uint8 array, ``N x H x W`` (grayscale) or ``N x C x H x W``.
    labels : int64 array ``(N,)``, indices into ``class_names``.
    class_names : names of the classes; index 0 is always the normal class.
    patient_ids : ``(N,)`` array of strings, or None when the source has none.
    masks : bool array ``N x H x W`` of lesion pixels, or None.
    split : ``"train"``, ``"val"``, ``"test"`` or any other name.
    source : where the images came from (``"synthetic"``, a path, ...).
    meta : extra per-image arrays of length N (``"site"``, ``"subtype"``,
        ``"difficulty"``, ``"path"``, ...) and dataset-level facts.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: Sequence[str] = BINARY_CLASSES
    patient_ids: np.ndarray | None = None
    masks: np.ndarray | None = None
    split: str = "train"
    source: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels).reshape(-1).astype(np.int64)
        self.class_names = tuple(self.class_names)
        n = len(self.images)
        if self.images.dtype != np.uint8:
            raise ValueError(
                f"ImageSet({self.source!r}, split={self.split!r}): images must be uint8, "
                f"got {self.images.dtype}"
            )
        if self.images.ndim not in (3, 4):
            raise ValueError(
                f"ImageSet({self.source!r}, split={self.split!r}): images must be N x H x W "
                f"or N x C x H x W, got shape {self.images.shape}"
            )
        if len(self.labels) != n:
            raise ValueError(
                f"ImageSet({self.source!r}, split={self.split!r}): {n} images but "
                f"{len(self.labels)} labels"
            )
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            bad = self.labels[(self.labels < 0) | (self.labels >= len(self.class_names))]
            raise ValueError(
                f"ImageSet({self.source!r}, split={self.split!r}): label {int(bad[0])} out of "
                f"range for {len(self.class_names)} classes {list(self.class_names)}"
            )
        if self.patient_ids is not None:
            self.patient_ids = np.asarray(self.patient_ids).astype(str)
            if len(self.patient_ids) != n:
                raise ValueError(
                    f"ImageSet({self.source!r}): {n} images but {len(self.patient_ids)} patient ids"
                )
        if self.masks is not None:
            self.masks = np.asarray(self.masks).astype(bool)
            if self.masks.shape[0] != n or self.masks.shape[-2:] != self.images.shape[-2:]:
                raise ValueError(
                    f"ImageSet({self.source!r}): masks shape {self.masks.shape} does not "
                    f"match images {self.images.shape}"
                )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        """Side length of the (square) images."""
        return int(self.images.shape[-1])

    @property
    def in_channels(self) -> int:
        return 1 if self.images.ndim == 3 else int(self.images.shape[1])

    def counts(self) -> dict[str, int]:
        """Number of images per class name."""
        bins = np.bincount(self.labels, minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.class_names, bins)}

    def prevalence(self) -> float:
        """Share of images that are not the normal class (index 0)."""
        return float((self.labels != 0).mean()) if len(self) else float("nan")

    def subset(self, index, split: str | None = None) -> ImageSet:
        """A new ImageSet holding the selected rows (index array or boolean mask)."""
        index = np.asarray(index)
        meta = {
            k: (np.asarray(v)[index] if _is_per_image(v, len(self)) else v)
            for k, v in self.meta.items()
        }
        return ImageSet(
            images=self.images[index],
            labels=self.labels[index],
            class_names=self.class_names,
            patient_ids=None if self.patient_ids is None else self.patient_ids[index],
            masks=None if self.masks is None else self.masks[index],
            split=self.split if split is None else split,
            source=self.source,
            meta=meta,
        )

    def to_binary(self) -> ImageSet:
        """Collapse a multi-class set to normal (0) vs any disease (1)."""
        if self.num_classes == 2:
            return self
        out = self.subset(np.arange(len(self)))
        out.meta = dict(out.meta, original_labels=self.labels.copy(),
                        original_class_names=self.class_names)
        out.labels = (self.labels != 0).astype(np.int64)
        out.class_names = BINARY_CLASSES
        return out

    def torch_dataset(self, transform=None):
        """A ``torch.utils.data.Dataset`` view yielding ``(float tensor C x H x W, label)``.

        Pixels are scaled to [0, 1]; ``transform`` (e.g. a torchvision v2 pipeline
        from :mod:`fnlab.data.augment`) is applied to that tensor.
        """
        from fnlab.data.torchview import ImageSetDataset

        return ImageSetDataset(self, transform=transform)

    def summary(self) -> str:
        """One line: split, size, image shape and class counts."""
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return f"{self.split}: {len(self)} images {tuple(self.images.shape[1:])} ({counts})"


def _is_per_image(value: Any, n: int) -> bool:
    return isinstance(value, (np.ndarray, list, tuple)) and len(value) == n and n > 0
