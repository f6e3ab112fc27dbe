"""Losses checked against hand-computed values and torchvision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from fnlab.losses import available_losses, class_weights_from_labels, create_loss

LOGITS = torch.tensor([2.0, -1.0, 0.5, -0.3])
Y = torch.tensor([1, 0, 0, 1])


def _sig(z):
    return 1 / (1 + math.exp(-z))


def _bce_terms(pos_cost=1.0):
    out = []
    for z, y in zip(LOGITS.tolist(), Y.tolist()):
        s = _sig(z)
        out.append(-(pos_cost * y * math.log(s) + (1 - y) * math.log(1 - s)))
    return out


def test_bce_matches_formula():
    assert float(create_loss("bce")(LOGITS, Y)) == pytest.approx(np.mean(_bce_terms()), rel=1e-6)
    assert float(create_loss("ce")(LOGITS, Y)) == pytest.approx(np.mean(_bce_terms()), rel=1e-6)


def test_class_weights_from_labels_balanced_rule():
    w = class_weights_from_labels([0, 1, 1, 1, 1])
    assert w.tolist() == pytest.approx([5 / 2, 5 / 8])
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] have no training labels"):
        class_weights_from_labels([0, 1], num_classes=3)
    with pytest.raises(ValueError, match="empty"):
        class_weights_from_labels([])


def test_weighted_bce_formula_from_labels():
    labels = [0, 1, 1, 1]  # w0 = 4/2 = 2, w1 = 4/6
    loss = create_loss("weighted", labels=labels)
    w = [2.0 if y == 0 else 4 / 6 for y in Y.tolist()]
    terms = _bce_terms()
    expected = sum(wi * ti for wi, ti in zip(w, terms)) / sum(w)
    assert float(loss(LOGITS, Y)) == pytest.approx(expected, rel=1e-6)


def test_weighted_given_and_errors():
    loss = create_loss("weighted", class_weights=[1.0, 3.0])
    w = [3.0 if y else 1.0 for y in Y.tolist()]
    expected = sum(wi * ti for wi, ti in zip(w, _bce_terms())) / sum(w)
    assert float(loss(LOGITS, Y)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="needs class_weights"):
        create_loss("weighted")
    with pytest.raises(ValueError, match="needs 2 values"):
        create_loss("weighted", class_weights=[1, 2, 3])


def test_pos_weight_auto():
    loss = create_loss("bce", pos_weight="auto", labels=[0, 1, 1, 1])  # 1/3
    assert float(loss.pos_weight) == pytest.approx(1 / 3)
    assert float(loss(LOGITS, Y)) == pytest.approx(np.mean(_bce_terms(1 / 3)), rel=1e-6)
    with pytest.raises(ValueError, match="needs the training labels"):
        create_loss("bce", pos_weight="auto")


def test_focal_matches_torchvision():
    loss = create_loss("focal", gamma=2.0, alpha=0.25)
    ref = sigmoid_focal_loss(LOGITS, Y.float(), alpha=0.25, gamma=2.0, reduction="mean")
    assert float(loss(LOGITS, Y)) == pytest.approx(float(ref))
    no_alpha = create_loss("focal", gamma=0.0)  # gamma 0, no alpha: plain BCE
    assert float(no_alpha(LOGITS, Y)) == pytest.approx(np.mean(_bce_terms()), rel=1e-6)


def test_fn_cost_reduces_to_bce_and_scales_positive_term():
    assert float(create_loss("fn_cost", fn_cost=1.0)(LOGITS, Y)) == pytest.approx(
        np.mean(_bce_terms()), rel=1e-6)
    assert float(create_loss("fn_cost", fn_cost=4.0)(LOGITS, Y)) == pytest.approx(
        np.mean(_bce_terms(4.0)), rel=1e-6)
    with pytest.raises(ValueError, match="fn_cost must be > 0"):
        create_loss("fn_cost", fn_cost=0)


def test_multiclass_forms():
    torch.manual_seed(0)
    z = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    assert float(create_loss("ce", 4)(z, y)) == pytest.approx(float(F.cross_entropy(z, y)))
    w = class_weights_from_labels([0, 0, 1, 2, 3, 3, 3, 3], 4)
    weighted = create_loss("weighted", 4, labels=[0, 0, 1, 2, 3, 3, 3, 3])
    assert float(weighted(z, y)) == pytest.approx(
        float(F.cross_entropy(z, y, weight=torch.tensor(w, dtype=torch.float32))), rel=1e-6)
    # softmax focal with gamma 0 is CE; with gamma 2 it is smaller than CE
    assert float(create_loss("focal", 4, gamma=0.0)(z, y)) == pytest.approx(
        float(F.cross_entropy(z, y)), rel=1e-6)
    logp = F.log_softmax(z, 1)[torch.arange(6), y]
    focal = float((-(1 - logp.exp()) ** 2 * logp).mean())
    assert float(create_loss("focal", 4, gamma=2.0)(z, y)) == pytest.approx(focal, rel=1e-6)
    # fn_cost: CE at cost 1; extra -log(1 - p0) term for diseased images otherwise
    assert float(create_loss("fn_cost", 4, fn_cost=1.0)(z, y)) == pytest.approx(
        float(F.cross_entropy(z, y)), rel=1e-6)
    p0 = F.softmax(z, 1)[:, 0]
    extra = (-(torch.log(1 - p0)) * (y != 0)).mean()
    assert float(create_loss("fn_cost", 4, fn_cost=3.0)(z, y)) == pytest.approx(
        float(F.cross_entropy(z, y) + 2.0 * extra), rel=1e-5)


def test_fn_cost_multiclass_formula_matches_binary_at_k2():
    # the multi-class formula on two classes (logits 0 and z) is the binary form
    z = torch.stack([torch.zeros(4), LOGITS], 1)
    logp = F.log_softmax(z, 1)
    ce = -logp[torch.arange(4), Y]
    missed = (Y != 0) * -torch.logsumexp(logp[:, 1:], 1)
    assert float((ce + 3.0 * missed).mean()) == pytest.approx(np.mean(_bce_terms(4.0)), rel=1e-5)


def test_unknown_names_and_shape_errors():
    with pytest.raises(ValueError, match="choose one of: bce, ce, weighted, focal, fn_cost"):
        create_loss("hinge")
    assert available_losses() == ["bce", "ce", "weighted", "focal", "fn_cost"]
    with pytest.raises(ValueError, match="one logit per image"):
        create_loss("bce")(torch.zeros(4, 2), Y)
    with pytest.raises(ValueError, match="expected logits N x 4"):
        create_loss("ce", 4)(torch.zeros(4), Y)
    with pytest.raises(ValueError, match="pos_weight applies"):
        create_loss("focal", pos_weight=2.0)


def test_losses_backprop():
    for name in ("bce", "weighted", "focal", "fn_cost"):
        z = LOGITS.clone().requires_grad_()
        create_loss(name, labels=[0, 1, 1])(z, Y).backward()
        assert torch.isfinite(z.grad).all()
