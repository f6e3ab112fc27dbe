"""Trainer: learns an easy set, is deterministic, and fails clearly on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fnlab import models
from fnlab.data.imageset import ImageSet
from fnlab.train import (
    BATCH_AUGMENTS,
    BatchAugment,
    TrainConfig,
    TrainingError,
    fit,
    normalization_stats,
    predict,
)


def easy_sets(n=96, size=16, classes=2, seed=0):
    """Class c has a bright square in a class-specific place: trivially learnable."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = (rng.random((n, size, size)) * 60).astype(np.uint8)
    for i, c in enumerate(y):
        if c:
            r = 2 + 3 * (c - 1)
            x[i, r:r + 5, 3:10] = 220
    names = ("normal", "pneumonia") if classes == 2 else tuple(f"c{i}" for i in range(classes))
    tr = ImageSet(x, y, class_names=names, split="train")
    va = ImageSet(x[: n // 2], y[: n // 2], class_names=names, split="val")
    return tr, va


def tiny(classes=2, size=16):
    return models.create("smallcnn", num_classes=classes, image_size=size, width=8)


CFG = TrainConfig(epochs=3, batch_size=16, lr=1e-2, augment=None, progress=False, device="cpu",
                  monitor="val_loss")


def test_learns_easy_set_and_history():
    tr, va = easy_sets()
    torch.manual_seed(0)
    res = fit(tiny(), tr, va, CFG.replace(epochs=4))
    h = res.history
    assert list(h.columns) == ["epoch", "train_loss", "val_loss", "val_auc", "val_sensitivity",
                               "val_specificity", "lr", "seconds"]
    assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    assert h.val_auc.max() > 0.95
    assert res.best_epoch == int(h.loc[h.val_loss.idxmin(), "epoch"])
    assert res.images_per_second > 0 and res.n_train == len(tr)
    assert res.normalization == normalization_stats(tr)
    assert res.model.normalization()["mean"] == pytest.approx(res.normalization["mean"])
    p = predict(res.model, va)
    assert p.split == "val" and p.scores.shape == (len(va),) and p.model == "smallcnn"
    assert predict(res.model, va, tta=True).scores.shape == (len(va),)


def test_deterministic_on_cpu():
    tr, va = easy_sets()
    states = []
    for _ in range(2):
        torch.manual_seed(1)
        res = fit(tiny(), tr, va, CFG.replace(augment="xray", balanced_sampler=True, seed=3))
        states.append(res.model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_nan_loss_names_epoch_and_batch():
    tr, va = easy_sets()
    calls = {"n": 0}

    class NanAtSeven(torch.nn.Module):
        def forward(self, logits, y):
            calls["n"] += 1
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
            return loss * float("nan") if calls["n"] == 8 else loss  # 6 batches + 1 val call, then epoch 2

    with pytest.raises(TrainingError, match="at epoch 2, batch 1 of 6"):
        fit(tiny(), tr, va, CFG, loss_fn=NanAtSeven())


def test_bad_inputs_are_clear():
    tr, va = easy_sets()
    with pytest.raises(ValueError, match="validation split is empty"):
        fit(tiny(), tr, va.subset(np.array([], dtype=int)), CFG)
    with pytest.raises(ValueError, match="the model has 4 classes but the data has 2"):
        fit(tiny(classes=4), tr, va, CFG)
    rgb = ImageSet(np.zeros((4, 3, 16, 16), np.uint8), [0, 1, 0, 1], split="train")
    with pytest.raises(ValueError, match="1-channel images but the 'train' images have 3"):
        fit(tiny(), rgb, rgb, CFG)
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="unknown monitor"):
        TrainConfig(monitor="val_f1")
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"modle": "x"})
    with pytest.raises(ValueError, match="unknown augment"):
        fit(tiny(), tr, va, CFG.replace(augment="wild"))


def test_options_run_multiclass_sgd_cosine_early_stop_per_image_augment():
    tr, va = easy_sets(n=60, classes=3)
    res = fit(tiny(classes=3), tr, va,
              CFG.replace(optimizer="sgd", schedule="cosine", monitor="val_auc", patience=1,
                          epochs=6, lr=1e-4, augment="light", loss="focal"))
    assert 1 <= len(res.history) <= 6
    assert res.stopped_early == (len(res.history) < 6)
    p = predict(res.model, va)
    assert p.scores.shape == (len(va), 3)
    assert np.allclose(p.scores.sum(1), 1)


def test_max_train_images_is_stratified():
    tr, va = easy_sets(n=96)
    res = fit(tiny(), tr, va, CFG.replace(epochs=1, max_train_images=40))
    assert res.n_train == 40


def test_batch_augment_is_seeded_and_keeps_range():
    x = torch.rand(6, 1, 16, 16)
    aug = BATCH_AUGMENTS["xray_strong"]
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(BatchAugment()(x), x)


def test_history_validation_figures_are_the_saved_models():
    """Validation runs in eval mode without touching BatchNorm's running statistics, so the
    last history row describes exactly the model that is returned (monitor=None keeps it)."""
    from fnlab.metrics import binary_metrics

    tr, va = easy_sets()
    torch.manual_seed(0)
    res = fit(tiny(), tr, va, CFG.replace(epochs=2, monitor=None))
    p = predict(res.model, va)
    last = res.history.iloc[-1]
    m = binary_metrics(p, 0.5)
    assert last.val_sensitivity == pytest.approx(m["sensitivity"])
    assert last.val_specificity == pytest.approx(m["specificity"])
    assert last.val_auc == pytest.approx(m["auc"])


def test_ema_keeps_the_averaged_weights_that_were_validated():
    """With ``ema`` the history describes the averaged model, and that model is returned."""
    from fnlab.metrics import binary_metrics

    tr, va = easy_sets()
    torch.manual_seed(0)
    plain = fit(tiny(), tr, va, CFG.replace(epochs=2, monitor=None))
    torch.manual_seed(0)
    res = fit(tiny(), tr, va, CFG.replace(epochs=2, monitor=None, ema=0.9))
    m = binary_metrics(predict(res.model, va), 0.5)
    assert res.history.iloc[-1].val_auc == pytest.approx(m["auc"])
    assert res.history.iloc[-1].val_sensitivity == pytest.approx(m["sensitivity"])
    differ = [k for k, v in res.model.state_dict().items()
              if v.is_floating_point() and not torch.equal(v, plain.model.state_dict()[k])]
    assert differ, "the averaged weights are not the last step's weights"


def test_mixup_and_label_smoothing_train_and_repeat():
    tr, va = easy_sets()
    cfg = CFG.replace(epochs=3, mixup=0.2, label_smoothing=0.1, seed=2)
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        runs.append(fit(tiny(), tr, va, cfg))
    assert runs[0].history.val_auc.max() > 0.9
    for k, v in runs[0].model.state_dict().items():
        assert torch.equal(v, runs[1].model.state_dict()[k]), k


def test_label_smoothing_is_bce_on_smoothed_targets():
    from fnlab.train import _train_loss

    logits, y = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1, 0, 1])
    bce = torch.nn.BCEWithLogitsLoss()
    eps = 0.2
    expected = bce(logits, y.float() * (1 - eps) + eps / 2)
    got = _train_loss(lambda lo, t: bce(lo, t.float()), logits, y, eps, binary=True)
    assert got.item() == pytest.approx(expected.item())


@pytest.mark.parametrize("field,value,match", [
    ("ema", 1.0, "ema must be a decay"), ("mixup", -1, "mixup must be"),
    ("label_smoothing", 1.0, "label_smoothing must be"),
])
def test_new_options_reject_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_new_options_at_their_defaults_keep_earlier_cache_keys():
    from fnlab.runs import config_key

    assert config_key(TrainConfig()) == config_key(TrainConfig(ema=None, mixup=0.0))
    assert config_key(TrainConfig()) != config_key(TrainConfig(ema=0.99))
