"""Tests of fnlab.robustness: shift transforms and sweeps, FGSM/PGD, flip epsilons, adversarial training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fnlab import robustness as R
from fnlab.data.imageset import ImageSet
from fnlab.predictions import Predictions

SIZE = 24


# --------------------------------------------------------------------------- fixtures
def _structured_images(n: int = 4, size: int = SIZE) -> np.ndarray:
    """Smooth gradients plus a bright disc: enough structure for blur/JPEG to change."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = []
    for i in range(n):
        disc = ((yy - 0.3 - 0.1 * i) ** 2 + (xx - 0.5) ** 2) < 0.04
        img = 0.2 + 0.4 * xx + 0.1 * np.sin(8 * yy + i) + 0.3 * disc
        out.append(np.clip(img, 0, 1))
    return (np.stack(out) * 255).round().astype(np.uint8)


@pytest.fixture()
def imageset():
    images = _structured_images()
    masks = np.zeros(images.shape, bool)
    masks[1, 5:9, 5:9] = True
    return ImageSet(images, [0, 1, 0, 1], patient_ids=["p0", "p1", "p2", "p3"], masks=masks,
                    split="test", source="toy",
                    meta={"site": np.array([0, 1, 0, 1]), "note": "dataset-level"})


def _hf_energy(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return float(np.abs(np.diff(x, axis=-1)).mean() + np.abs(np.diff(x, axis=-2)).mean())


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())


STATISTICS = {  # kind -> (statistic of (shifted, clean), expected direction)
    "contrast": (lambda s, c: s.astype(float).std(), -1),
    "gamma": (lambda s, c: s.astype(float).mean(), -1),
    "brightness": (lambda s, c: s.astype(float).mean(), +1),
    "noise": (_mse, +1),
    "blur": (lambda s, c: _hf_energy(s), -1),
    "jpeg": (_mse, +1),
}


# --------------------------------------------------------------------------- shifts
@pytest.mark.parametrize("kind", list(R.SHIFTS))
def test_shift_statistics_move_monotonically_with_severity(kind, imageset):
    stat, direction = STATISTICS[kind]
    values = [stat(R.apply_shift(imageset, kind, sev).images, imageset.images)
              for sev in range(6)]
    steps = np.diff(values) * direction
    assert np.all(steps > 0), (kind, values)


@pytest.mark.parametrize("kind", list(R.SHIFTS))
def test_shift_keeps_labels_masks_and_meta(kind, imageset):
    out = R.apply_shift(imageset, kind, 3, seed=1)
    assert out is not imageset and out.images.dtype == np.uint8
    assert out.images.shape == imageset.images.shape
    np.testing.assert_array_equal(out.labels, imageset.labels)
    np.testing.assert_array_equal(out.masks, imageset.masks)
    np.testing.assert_array_equal(out.patient_ids, imageset.patient_ids)
    np.testing.assert_array_equal(out.meta["site"], imageset.meta["site"])
    assert out.meta["note"] == "dataset-level" and out.split == "test"
    assert out.meta["shift"] == {"kind": kind, "severity": 3, "parameter": R.SHIFTS[kind][0],
                                 "value": R.shift_parameter(kind, 3)}
    assert "shift" not in imageset.meta  # the input is untouched
    assert len(out.subset([0, 1])) == 2


def test_severity_zero_is_identity_and_noise_is_seeded(imageset):
    for kind in R.SHIFTS:
        np.testing.assert_array_equal(R.apply_shift(imageset, kind, 0).images, imageset.images)
    a = R.apply_shift(imageset, "noise", 4, seed=0).images
    np.testing.assert_array_equal(a, R.apply_shift(imageset, "noise", 4, seed=0).images)
    assert not np.array_equal(a, R.apply_shift(imageset, "noise", 4, seed=1).images)


def test_shift_on_arrays_and_tensors_keeps_type_shape_and_dtype(imageset):
    u8 = imageset.images
    out = R.apply_shift(u8, "blur", 2)
    assert out.dtype == np.uint8 and out.shape == u8.shape
    f32 = u8.astype(np.float32) / 255
    out = R.apply_shift(f32, "gamma", 2)
    assert out.dtype == np.float32 and out.shape == f32.shape
    np.testing.assert_allclose(out, f32 ** R.shift_parameter("gamma", 2), rtol=1e-5, atol=1e-6)
    t = torch.from_numpy(f32)[:, None].double()
    out = R.apply_shift(t, "brightness", 5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == t.shape
    assert float(out.max()) <= 1.0
    assert R.apply_shift(torch.from_numpy(u8), "contrast", 1).dtype == torch.uint8


def test_shift_errors_are_clear(imageset):
    with pytest.raises(ValueError, match="unknown shift 'fog'.*contrast"):
        R.apply_shift(imageset, "fog", 1)
    with pytest.raises(ValueError, match="severity must be an integer in 0..5"):
        R.apply_shift(imageset, "noise", 6)
    with pytest.raises(ValueError, match="severity"):
        R.apply_shift(imageset, "noise", 1.5)
    with pytest.raises(TypeError, match="ImageSet, a NumPy array or a tensor"):
        R.apply_shift([1, 2, 3], "noise", 1)


def test_describe_shifts_lists_every_kind_and_severity():
    table = R.describe_shifts()
    assert len(table) == len(R.SHIFTS) * 6
    assert set(table.columns) >= {"kind", "severity", "parameter", "value", "description"}
    assert table.query("kind == 'jpeg' and severity == 1")["value"].item() == 75


def _brightness_predictor(calls: list):
    """Predicts pneumonia from the mean brightness (a fragile model on purpose)."""
    def predict_fn(s: ImageSet) -> Predictions:
        calls.append(s.meta.get("shift"))
        score = np.clip((s.images.astype(float).mean(axis=(1, 2)) / 255 - 0.3) * 3, 0, 1)
        return Predictions(s.labels, score, split=s.split)
    return predict_fn


def test_shift_sweep_columns_rows_and_clean_reuse(imageset):
    calls: list = []
    table = R.shift_sweep(_brightness_predictor(calls), imageset, ["contrast", "gamma"],
                          [0, 1, 5], threshold=0.5, progress=False)
    assert list(table.columns) == ["kind", "severity", "parameter", "value", "n", "threshold",
                                   "auc", "sensitivity", "specificity", "fn", "fp", "tp", "tn",
                                   "sensitivity_drop"]
    assert len(table) == 6
    assert len(calls) == 5  # the clean set is predicted once
    assert (table["n"] == 4).all()
    clean = table[table["severity"] == 0]
    assert (clean["sensitivity_drop"] == 0).all()
    gamma = table[table["kind"] == "gamma"].set_index("severity")
    assert gamma.loc[5, "fn"] >= gamma.loc[0, "fn"]
    assert (table["fn"] + table["tp"] == 2).all()


def test_shift_sweep_accepts_a_single_kind_and_checks_arguments(imageset):
    table = R.shift_sweep(_brightness_predictor([]), imageset, "noise", [2], progress=False)
    assert table["kind"].tolist() == ["noise"] and np.isnan(table["sensitivity_drop"]).all()
    with pytest.raises(ValueError, match="threshold"):
        R.shift_sweep(_brightness_predictor([]), imageset, threshold=2)
    with pytest.raises(ValueError, match="unknown shift"):
        R.shift_sweep(_brightness_predictor([]), imageset, ["fog"])


# --------------------------------------------------------------------------- adversarial
class Linear(nn.Module):
    """Brighter = pneumonia: logit = 8 * (mean pixel - 0.5); outputs (N,), (N, 1) or (N, 2)."""

    def __init__(self, shape: str = "N"):
        super().__init__()
        self.fc = nn.Linear(SIZE * SIZE, 1)
        with torch.no_grad():
            self.fc.weight.fill_(8.0 / (SIZE * SIZE))
            self.fc.bias.fill_(-4.0)
        self.shape = shape

    def forward(self, x):
        logit = self.fc(x.flatten(1))
        if self.shape == "N":
            return logit[:, 0]
        if self.shape == "N1":
            return logit
        return torch.cat([-logit, logit], dim=1)


class TinyCNN(nn.Module):
    def __init__(self, outputs: int = 1):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4),
                                 nn.ReLU(inplace=True), nn.Dropout(0.5),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, outputs))
        self.outputs = outputs

    def forward(self, x):
        out = self.net(x)
        return out[:, 0] if self.outputs == 1 else out


def _loss(model, x, y):
    with torch.no_grad():
        model.eval()
        out = model(x)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim == 1:
            return float(F.binary_cross_entropy_with_logits(out, y.float()))
        return float(F.cross_entropy(out, y))


@pytest.fixture()
def batch():
    torch.manual_seed(0)
    x = torch.rand(6, 1, SIZE, SIZE) * 0.6 + 0.2
    y = torch.tensor([1, 1, 1, 0, 0, 0])
    return x, y


MODELS = {
    "single_N": lambda: Linear("N"),
    "single_N1": lambda: Linear("N1"),
    "two_logit": lambda: Linear("two"),
    "cnn_binary": lambda: TinyCNN(1),
    "cnn_4class": lambda: TinyCNN(4),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_fgsm_eps_zero_is_identity_and_larger_eps_raises_the_loss(kind, batch):
    torch.manual_seed(1)
    model = MODELS[kind]()
    x, y = batch
    if kind == "cnn_4class":
        y = torch.tensor([1, 2, 3, 0, 0, 0])
    model.train()
    assert torch.equal(R.fgsm(model, x, y, eps=0.0), x)
    losses = [_loss(model, R.fgsm(model, x, y, eps=e), y) for e in (0.0, 0.02, 0.08)]
    assert losses[0] < losses[1] < losses[2], losses
    model.train()
    R.fgsm(model, x, y, eps=0.05)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind", ["single_N", "two_logit", "cnn_binary"])
def test_pgd_stays_in_the_eps_ball_and_unit_range(kind, batch):
    torch.manual_seed(2)
    model = MODELS[kind]()
    x, y = batch
    x = x.clone()
    x[0] = 0.0  # corners of [0, 1] force the clamp
    x[1] = 1.0
    eps = 0.05
    adv = R.pgd(model, x, y, eps=eps, steps=5)
    assert adv.shape == x.shape
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert _loss(model, adv, y) > _loss(model, x, y)
    torch.testing.assert_close(adv, R.pgd(model, x, y, eps=eps, steps=5))  # seeded
    plain = R.pgd(model, x, y, eps=eps, steps=5, random_start=False, alpha=0.01)
    assert float((plain - x).abs().max()) <= eps + 1e-6


def test_pgd_is_at_least_as_strong_as_fgsm_on_a_nonlinear_model(batch):
    torch.manual_seed(3)
    model = TinyCNN(1)
    x, y = batch
    assert _loss(model, R.pgd(model, x, y, 0.05, steps=10), y) >= \
        _loss(model, R.fgsm(model, x, y, 0.05), y) - 1e-6


def test_attack_arguments_are_checked(batch):
    x, y = batch
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        R.fgsm(Linear(), x, y, eps=-0.1)
    with pytest.raises(ValueError, match="labels for 6 images"):
        R.fgsm(Linear(), x, [1, 0], eps=0.1)
    with pytest.raises(ValueError, match="steps"):
        R.pgd(Linear(), x, y, eps=0.1, steps=0)
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        R.fgsm(Linear(), x * 255, y, eps=0.1)


def test_attack_with_folded_normalisation(batch):
    x, y = batch
    core = Linear()

    class Normalised(nn.Module):
        def forward(self, t):
            return core((t - 0.5) / 0.25)

    torch.testing.assert_close(R.pgd(core, x, y, 0.03, steps=3, normalize=(0.5, 0.25)),
                               R.pgd(Normalised(), x, y, 0.03, steps=3))


def _sweep_set() -> ImageSet:
    rng = np.random.default_rng(0)
    labels = np.array([1] * 6 + [0] * 6)
    level = np.where(labels == 1, 170, 90)[:, None, None]
    images = np.clip(level + rng.normal(0, 10, (12, SIZE, SIZE)), 0, 255).astype(np.uint8)
    return ImageSet(images, labels, split="test")


def test_adversarial_sweep_flips_more_pneumonias_as_eps_grows():
    s = _sweep_set()
    table = R.adversarial_sweep(Linear(), s, [0.0, 0.05, 0.1, 0.3], attack="fgsm",
                                progress=False)
    assert list(table.columns) == ["attack", "eps", "eps_grey_levels", "n", "n_pneumonia", "auc",
                                   "sensitivity", "specificity", "fn", "fp",
                                   "flipped_to_normal", "mean_pneumonia_score"]
    assert table.loc[0, "sensitivity"] == 1.0 and table.loc[0, "flipped_to_normal"] == 0.0
    assert table["flipped_to_normal"].is_monotonic_increasing
    assert table["sensitivity"].is_monotonic_decreasing
    assert table["mean_pneumonia_score"].is_monotonic_decreasing
    assert table.iloc[-1]["flipped_to_normal"] == 1.0 and table.iloc[-1]["fn"] == 6
    pgd = R.adversarial_sweep(Linear(), s, [0.3], attack="pgd", steps=3, progress=False)
    assert pgd.loc[0, "attack"] == "pgd" and pgd.loc[0, "fn"] == 6
    with pytest.raises(ValueError, match="unknown attack"):
        R.adversarial_sweep(Linear(), s, [0.1], attack="cw")


def test_minimal_flip_eps_matches_the_analytic_answer():
    model = Linear()
    # logit = 8 * (mean - 0.5): FGSM moves the mean by eps, so it flips at |mean - 0.5|
    x = torch.stack([torch.full((1, SIZE, SIZE), v) for v in (0.6, 0.52, 0.45, 0.95)])
    eps = R.minimal_flip_eps(model, x, eps_max=0.25, iters=14)
    np.testing.assert_allclose(eps[:3], [0.1, 0.02, 0.05], atol=1e-3)
    assert np.isinf(eps[3])  # would need 0.45 > eps_max
    eps2, adv = R.minimal_flip_eps(model, x, eps_max=0.25, attack="pgd", steps=5,
                                   return_adversarial=True)
    assert adv.shape == x.shape and torch.equal(adv[3], x[3])
    with torch.no_grad():
        flipped = (torch.sigmoid(model(adv)) >= 0.5) != (torch.sigmoid(model(x)) >= 0.5)
    assert flipped[:3].all()


def test_adversarial_training_step_and_short_training():
    s = _sweep_set()
    torch.manual_seed(4)
    model = TinyCNN(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trained, history = R.adversarial_train(model, s, epochs=3, eps=0.05, batch_size=6,
                                           lr=0.05, progress=False)
    assert list(history.columns) == ["epoch", "loss", "clean_loss", "adv_loss"]
    assert list(history["epoch"]) == [1, 2, 3]
    assert np.all(np.isfinite(history[["loss", "clean_loss", "adv_loss"]].to_numpy()))
    assert (history["adv_loss"] >= history["clean_loss"] - 1e-6).all()
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    for k, v in model.state_dict().items():  # copy_model=True: the input is untouched
        assert torch.equal(v, before[k])
    assert not trained.training
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(4, 1, SIZE, SIZE)
    out = R.adversarial_training_step(model, x, [0, 1, 0, 1], opt, eps=0.03, attack="pgd")
    assert set(out) == {"loss", "clean_loss", "adv_loss"}
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_adversarial_train_sets_identity_normalisation_from_the_data():
    class WithStats(Linear):
        def __init__(self):
            super().__init__()
            self.stats = {"mean": [0.0], "std": [1.0]}

        def normalization(self):
            return self.stats

        def set_normalization(self, mean, std):
            self.stats = {"mean": list(mean), "std": list(std)}

    trained, _ = R.adversarial_train(WithStats(), _sweep_set(), epochs=1, progress=False)
    assert trained.stats["mean"][0] == pytest.approx(_sweep_set().images.mean() / 255, abs=1e-4)


@pytest.mark.parametrize("size", [28, 32, 64])
def test_shift_distortion_grows_with_severity_on_synthetic_xrays(size):
    """Every kind hurts the image more at each higher severity, at every course image size."""
    from fnlab.data.synthetic import generate

    clean = generate(24, image_size=size, seed=3)
    for kind in R.SHIFTS:
        rmse = [np.sqrt(_mse(R.apply_shift(clean, kind, sev).images, clean.images))
                for sev in range(R.MAX_SEVERITY + 1)]
        assert np.all(np.diff(rmse) > 0), (kind, size, rmse)
    hf = [_hf_energy(R.apply_shift(clean, "blur", sev).images) for sev in range(6)]
    assert np.all(np.diff(hf) < 0), (size, hf)  # blur removes more detail each step


def test_adv_weight_zero_is_the_clean_control():
    s = _sweep_set()
    torch.manual_seed(4)
    model = TinyCNN(1)
    runs = []
    for eps in (0.01, 0.3):
        torch.manual_seed(5)  # the same dropout draws in both runs
        runs.append(R.adversarial_train(model, s, epochs=2, eps=eps, batch_size=6, lr=0.05,
                                        adv_weight=0.0, progress=False))
    (a, hist), (b, _) = runs
    assert hist["adv_loss"].isna().all() and np.isfinite(hist["clean_loss"]).all()
    for k, v in a.state_dict().items():  # no attack is made: eps does not matter
        assert torch.equal(v, b.state_dict()[k])
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in a.state_dict().items())
    adv, _ = R.adversarial_train(model, s, epochs=2, eps=0.3, batch_size=6, lr=0.05,
                                 progress=False)
    assert any(not torch.equal(v, adv.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(ValueError, match="adv_weight"):
        R.adversarial_train(model, s, epochs=1, adv_weight=1.5, progress=False)
