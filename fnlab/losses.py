"""Losses for false-negative-aware training: BCE/CE, class-weighted, focal and FN-cost.

Every loss made by :func:`create_loss` is an ``nn.Module`` called as
``loss(logits, targets)`` with the model conventions of :mod:`fnlab.models`:

* binary (``num_classes == 2``): ``logits`` of shape ``(N,)`` (one logit, the
  pneumonia score is ``sigmoid(logit)``), ``targets`` 0/1 of shape ``(N,)``;
* multi-class (``K > 2``): ``logits`` ``(N, K)``, integer ``targets`` ``(N,)``;
  class 0 is the normal class, every other class is a disease.

All losses return the mean over the batch (the weighted mean for class weights).

Example
-------
>>> import torch
>>> loss = create_loss("fn_cost", fn_cost=5.0)
>>> round(float(loss(torch.tensor([0.0, 0.0]), torch.tensor([1, 0]))), 4)  # (5 + 1)/2 * log 2
2.0794
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "BinaryLoss",
    "FocalLoss",
    "FNCostLoss",
    "MultiClassLoss",
    "available_losses",
    "class_weights_from_labels",
    "create_loss",
]

_LOSSES = {
    "bce": "binary cross-entropy (cross-entropy for K > 2 classes), optional pos_weight",
    "ce": "alias of 'bce': cross-entropy for either task",
    "weighted": "class-weighted BCE/CE; weights from the training labels (n / (K n_c)) or given",
    "focal": "focal loss: torchvision sigmoid_focal_loss (binary), softmax focal (K > 2)",
    "fn_cost": "BCE/CE where a missed disease (false negative) costs fn_cost times more",
}


def available_losses() -> list[str]:
    """Names :func:`create_loss` accepts.

    >>> available_losses()
    ['bce', 'ce', 'weighted', 'focal', 'fn_cost']
    """
    return list(_LOSSES)


def class_weights_from_labels(labels, num_classes: int | None = None) -> np.ndarray:
    """Balanced class weights ``w_c = n / (K * n_c)`` (scikit-learn's "balanced" rule).

    A class absent from ``labels`` raises a ValueError (its weight would be infinite).

    >>> class_weights_from_labels([0, 1, 1, 1]).tolist()
    [2.0, 0.6666666666666666]
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.size == 0:
        raise ValueError("cannot compute class weights from an empty label array")
    k = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    counts = np.bincount(labels, minlength=k)[:k]
    if np.any(counts == 0):
        missing = [int(c) for c in np.flatnonzero(counts == 0)]
        raise ValueError(f"class(es) {missing} have no training labels; cannot weight them")
    return labels.size / (k * counts.astype(np.float64))


def _as_float_targets(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    if targets.shape != logits.shape:
        raise ValueError(f"binary loss: logits of shape {tuple(logits.shape)} but targets of "
                         f"shape {tuple(targets.shape)} (binary models output one logit per image)")
    return targets.to(logits.dtype)


def _check_multiclass(logits: torch.Tensor, targets: torch.Tensor, k: int) -> None:
    if logits.ndim != 2 or logits.shape[1] != k:
        raise ValueError(f"{k}-class loss: expected logits N x {k}, got {tuple(logits.shape)}")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"{k}-class loss: {logits.shape[0]} logits rows but targets of shape "
                         f"{tuple(targets.shape)}")


class BinaryLoss(nn.Module):
    """Binary cross-entropy on one logit, with optional class weights or ``pos_weight``.

    Per image ``l_i = -[p y_i log s_i + (1 - y_i) log(1 - s_i)]`` with ``s = sigmoid(logit)``
    and ``p = pos_weight`` (1 by default). With ``class_weights = (w0, w1)`` the loss is
    the weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (as ``nn.CrossEntropyLoss``).
    """

    def __init__(self, pos_weight: float | None = None,
                 class_weights: Sequence[float] | None = None):
        super().__init__()
        self.register_buffer("pos_weight", None if pos_weight is None
                             else torch.tensor(float(pos_weight)))
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = _as_float_targets(targets, logits)
        per = F.binary_cross_entropy_with_logits(logits, y, pos_weight=self.pos_weight,
                                                 reduction="none")
        if self.class_weights is None:
            return per.mean()
        w = self.class_weights.to(per.dtype)[targets.long()]
        return (per * w).sum() / w.sum()

    def extra_repr(self) -> str:
        pw = None if self.pos_weight is None else round(float(self.pos_weight), 4)
        cw = None if self.class_weights is None else [round(v, 4) for v in self.class_weights.tolist()]
        return f"pos_weight={pw}, class_weights={cw}"


class MultiClassLoss(nn.Module):
    """Cross-entropy over K classes, optional class weights (weighted mean)."""

    def __init__(self, num_classes: int, class_weights: Sequence[float] | None = None):
        super().__init__()
        self.num_classes = int(num_classes)
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_multiclass(logits, targets, self.num_classes)
        w = None if self.class_weights is None else self.class_weights.to(logits.dtype)
        return F.cross_entropy(logits, targets.long(), weight=w)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``-alpha_t (1 - p_t)^gamma log p_t``, batch mean.

    Binary: :func:`torchvision.ops.sigmoid_focal_loss` (``alpha`` weights the positive
    class, ``1 - alpha`` the negative; ``alpha=None`` means no weighting). Multi-class:
    the softmax form with ``p_t`` the probability of the true class and ``alpha`` an
    optional per-class weight vector.
    """

    def __init__(self, num_classes: int = 2, gamma: float = 2.0, alpha=None):
        super().__init__()
        self.num_classes = int(num_classes)
        self.gamma = float(gamma)
        if self.num_classes == 2:
            if alpha is not None and not (0.0 <= float(alpha) <= 1.0):
                raise ValueError(f"binary focal loss: alpha must be in [0, 1] or None, got {alpha}")
            self.alpha = -1.0 if alpha is None else float(alpha)
            self.register_buffer("alpha_vec", None)
        else:
            self.alpha = None
            self.register_buffer("alpha_vec", None if alpha is None
                                 else torch.as_tensor(alpha, dtype=torch.float32))
            if self.alpha_vec is not None and self.alpha_vec.numel() != self.num_classes:
                raise ValueError(f"focal loss: alpha needs {self.num_classes} values, "
                                 f"got {self.alpha_vec.numel()}")

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.num_classes == 2:
            from torchvision.ops import sigmoid_focal_loss

            y = _as_float_targets(targets, logits)
            return sigmoid_focal_loss(logits, y, alpha=self.alpha, gamma=self.gamma,
                                      reduction="mean")
        _check_multiclass(logits, targets, self.num_classes)
        t = targets.long()
        logp = F.log_softmax(logits, dim=1).gather(1, t[:, None])[:, 0]
        loss = -((1.0 - logp.exp()) ** self.gamma) * logp
        if self.alpha_vec is not None:
            loss = loss * self.alpha_vec.to(loss.dtype)[t]
        return loss.mean()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}"


class FNCostLoss(nn.Module):
    """Cross-entropy with a cost ``c = fn_cost`` on missing a disease.

    Binary (one logit, ``s = sigmoid(logit)``)::

        l_i = -[c * y_i * log(s_i) + (1 - y_i) * log(1 - s_i)]

    i.e. the positive (missed pneumonia) term is multiplied by ``c``; the same as
    BCE with ``pos_weight = c``. Multi-class (class 0 = normal)::

        l_i = CE_i + (c - 1) * [y_i != 0] * (-log(1 - p_i0))

    which adds a penalty for the probability mass a diseased image puts on
    "normal" (for K = 2 this is exactly the binary form). Both reduce to plain
    BCE/CE at ``c = 1``. The loss is the batch mean.
    """

    def __init__(self, num_classes: int = 2, fn_cost: float = 5.0):
        super().__init__()
        if not float(fn_cost) > 0:
            raise ValueError(f"fn_cost must be > 0, got {fn_cost}")
        self.num_classes = int(num_classes)
        self.fn_cost = float(fn_cost)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.num_classes == 2:
            y = _as_float_targets(targets, logits)
            pos = y * F.logsigmoid(logits)
            neg = (1.0 - y) * F.logsigmoid(-logits)
            return -(self.fn_cost * pos + neg).mean()
        _check_multiclass(logits, targets, self.num_classes)
        t = targets.long()
        logp = F.log_softmax(logits, dim=1)
        ce = -logp.gather(1, t[:, None])[:, 0]
        # log(1 - p0) = logsumexp over the disease classes of log p
        log_not_normal = torch.logsumexp(logp[:, 1:], dim=1)
        missed = (t != 0).to(logits.dtype) * (-log_not_normal)
        return (ce + (self.fn_cost - 1.0) * missed).mean()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, fn_cost={self.fn_cost}"


def create_loss(name: str, num_classes: int = 2, *, labels=None,
                pos_weight: float | str | None = None,
                class_weights: Sequence[float] | None = None, gamma: float = 2.0,
                alpha=None, fn_cost: float = 5.0) -> nn.Module:
    """Build a loss module by name (see :func:`available_losses`).

    Parameters
    ----------
    name : ``"bce"``/``"ce"``, ``"weighted"``, ``"focal"`` or ``"fn_cost"``.
    num_classes : 2 for the binary one-logit form, K > 2 for the multi-class form.
    labels : training labels; needed for ``"weighted"`` without ``class_weights``
        and for ``pos_weight="auto"``.
    pos_weight : binary ``"bce"`` only: a float multiplying the positive term, or
        ``"auto"`` for ``n_negative / n_positive`` from ``labels``.
    class_weights : per-class weights for ``"weighted"`` (default: from ``labels``).
    gamma, alpha : focal loss parameters.
    fn_cost : cost of a false negative relative to a false positive (``"fn_cost"``).

    >>> create_loss("weighted", labels=[0, 1, 1, 1])
    BinaryLoss(pos_weight=None, class_weights=[2.0, 0.6667])
    >>> create_loss("hinge")
    Traceback (most recent call last):
    ...
    ValueError: unknown loss 'hinge'; choose one of: bce, ce, weighted, focal, fn_cost
    """
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(_LOSSES)}")
    k = int(num_classes)
    if k < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if pos_weight is not None and (name not in ("bce", "ce") or k != 2):
        raise ValueError("pos_weight applies to the binary 'bce' loss only; use 'weighted' "
                         "or 'fn_cost' otherwise")
    if name in ("bce", "ce"):
        if k > 2:
            return MultiClassLoss(k)
        if isinstance(pos_weight, str):
            if pos_weight != "auto":
                raise ValueError(f"pos_weight must be a number, None or 'auto', got {pos_weight!r}")
            if labels is None:
                raise ValueError("pos_weight='auto' needs the training labels (labels=...)")
            w = class_weights_from_labels(labels, 2)
            pos_weight = float(w[1] / w[0])  # = n_negative / n_positive
        return BinaryLoss(pos_weight=pos_weight)
    if name == "weighted":
        if class_weights is None:
            if labels is None:
                raise ValueError("the 'weighted' loss needs class_weights=... or the training "
                                 "labels (labels=...)")
            class_weights = class_weights_from_labels(labels, k)
        class_weights = [float(w) for w in np.asarray(class_weights, dtype=float).reshape(-1)]
        if len(class_weights) != k:
            raise ValueError(f"class_weights needs {k} values, got {len(class_weights)}")
        if any(not np.isfinite(w) or w <= 0 for w in class_weights):
            raise ValueError(f"class_weights must be finite and > 0, got {class_weights}")
        return BinaryLoss(class_weights=class_weights) if k == 2 else MultiClassLoss(k, class_weights)
    if name == "focal":
        return FocalLoss(k, gamma=gamma, alpha=alpha)
    return FNCostLoss(k, fn_cost=fn_cost)
