"""A torch Dataset view of an :class:`~fnlab.data.imageset.ImageSet`.

Example
-------
>>> import numpy as np
>>> from fnlab.data.imageset import ImageSet
>>> ds = ImageSet(np.full((2, 4, 4), 255, np.uint8), [0, 1]).torch_dataset()
>>> x, y = ds[1]
>>> tuple(x.shape), float(x.max()), y
((1, 4, 4), 1.0, 1)
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class ImageSetDataset(Dataset):
    """Yields ``(image, label)`` with the image as a float tensor in [0, 1], C x H x W."""

    def __init__(self, imageset, transform=None):
        self.imageset = imageset
        self.transform = transform
        images = torch.from_numpy(imageset.images)
        if images.ndim == 3:
            images = images.unsqueeze(1)
        self._images = images  # uint8, N x C x H x W
        self._labels = torch.from_numpy(imageset.labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, i):
        x = self._images[i].float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self._labels[i])

    def tensors(self):
        """All images as one float tensor (N x C x H x W, in [0, 1]) and the labels."""
        return self._images.float().div_(255.0), self._labels.clone()
