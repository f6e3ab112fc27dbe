"""Predictions: what a model said about a split, without the model.

Metrics, thresholds, ensembles, widgets and reports consume Predictions and never
a model, so they are pure NumPy and testable without torch.

Example
-------
>>> import numpy as np
>>> p = Predictions(y_true=[0, 1, 1], scores=[0.1, 0.8, 0.4], split="val", model="demo")
>>> p.positive_scores().tolist()
[0.1, 0.8, 0.4]
>>> p.predict(0.5).tolist()
[0, 1, 0]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Predictions:
    """Labels and scores of one model on one split.

    Attributes
    ----------
    y_true : int array ``(N,)``; 0 is the normal class.
    scores : float array ``(N,)`` (probability of the positive class) for binary
        tasks, or ``(N, K)`` class probabilities for multi-class tasks.
    ids : per-image identifiers (index in the split by default).
    split, model : names used in tables and plots.
    class_names : names of the classes (index 0 = normal).
    """

    y_true: np.ndarray
    scores: np.ndarray
    ids: np.ndarray | None = None
    split: str = "test"
    model: str = "model"
    class_names: Sequence[str] = ("normal", "pneumonia")
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y_true = np.asarray(self.y_true).reshape(-1).astype(np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.scores.ndim == 2 and self.scores.shape[1] == 1:
            self.scores = self.scores[:, 0]
        if self.scores.ndim not in (1, 2) or len(self.scores) != len(self.y_true):
            raise ValueError(
                f"Predictions({self.model!r}, {self.split!r}): {len(self.y_true)} labels but "
                f"scores of shape {self.scores.shape}"
            )
        if not np.all(np.isfinite(self.scores)):
            raise ValueError(f"Predictions({self.model!r}, {self.split!r}): scores contain NaN or inf")
        self.ids = (
            np.arange(len(self.y_true)) if self.ids is None else np.asarray(self.ids)
        )
        self.class_names = tuple(self.class_names)

    def __len__(self) -> int:
        return len(self.y_true)

    @property
    def is_binary(self) -> bool:
        return self.scores.ndim == 1

    def positive_scores(self) -> np.ndarray:
        """Score of "any disease": the binary score, or 1 - P(normal) for multi-class."""
        return self.scores if self.is_binary else 1.0 - self.scores[:, 0]

    def binary_truth(self) -> np.ndarray:
        """1 where the image shows any disease (label != 0)."""
        return (self.y_true != 0).astype(np.int64)

    def predict(self, threshold: float = 0.5) -> np.ndarray:
        """Binary decisions: 1 (pneumonia) where the positive score >= threshold."""
        check_threshold(threshold)
        return (self.positive_scores() >= threshold).astype(np.int64)

    def with_scores(self, scores, model: str | None = None) -> Predictions:
        """Same labels and ids, new scores (e.g. an ensemble or a calibrated model)."""
        return Predictions(self.y_true, scores, self.ids, self.split,
                           model or self.model, self.class_names, dict(self.meta))

    def subset(self, index) -> Predictions:
        index = np.asarray(index)
        return Predictions(self.y_true[index], self.scores[index], self.ids[index],
                           self.split, self.model, self.class_names, dict(self.meta))

    def save(self, path: str | Path) -> Path:
        """Write to ``.npz`` (arrays) with the names as JSON inside."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps({"split": self.split, "model": self.model,
                             "class_names": list(self.class_names), "meta": self.meta})
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, y_true=self.y_true, scores=self.scores, ids=self.ids,
                 header=np.array(header))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Predictions:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"predictions file not found: {path}")
        import zipfile

        from fnlab.data.npzcheck import open_npz

        try:  # member sizes checked before anything is inflated
            with open_npz(path) as z:
                header = json.loads(str(z["header"]))
                return cls(z["y_true"], z["scores"], z["ids"], header["split"],
                           header["model"], header["class_names"], header.get("meta", {}))
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: not a valid fnlab predictions file ({exc})") from exc


def check_threshold(threshold: float) -> float:
    """Raise a clear ValueError unless ``0 <= threshold <= 1``; return it as float."""
    t = float(threshold)
    if not (0.0 <= t <= 1.0) or np.isnan(t):
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    return t
