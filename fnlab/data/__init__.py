"""The data layer: one :class:`ImageSet` type for every source.

Knows nothing of models. See :mod:`fnlab.data.registry` for ``load_dataset``.
"""

from fnlab.data.imageset import BINARY_CLASSES, FOUR_CLASSES, ImageSet

__all__ = ["ImageSet", "BINARY_CLASSES", "FOUR_CLASSES"]
