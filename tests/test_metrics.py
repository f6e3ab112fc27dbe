"""fnlab.metrics checked against scikit-learn on hand-checkable and random inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from fnlab import metrics as M
from fnlab.predictions import Predictions

# Hand-checkable set: 4 positives, 4 negatives.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
S = np.array([0.05, 0.20, 0.45, 0.60, 0.30, 0.55, 0.80, 0.95])


def random_preds(n=400, prevalence=0.4, separation=1.5, seed=0) -> Predictions:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    logits = rng.normal(separation * (2 * y - 1) / 2, 1.0)
    return Predictions(y, 1 / (1 + np.exp(-logits)), model="rand", split="val")


def test_confusion_counts_hand_and_sklearn():
    assert M.confusion_counts([0, 0, 1, 1, 1], [0, 1, 1, 0, 1]) == dict(tp=2, fp=1, tn=1, fn=1)
    rng = np.random.default_rng(1)
    yt, yp = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    tn, fp, fn, tp = confusion_matrix(yt, yp).ravel()
    assert M.confusion_counts(yt, yp) == dict(tp=tp, fp=fp, tn=tn, fn=fn)
    assert M.confusion_counts([], []) == dict(tp=0, fp=0, tn=0, fn=0)


def test_confusion_counts_bad_input():
    with pytest.raises(ValueError, match="3 labels but 2"):
        M.confusion_counts([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="y_pred must hold only 0 and 1"):
        M.confusion_counts([0, 1], [0, 2])


def test_binary_metrics_hand_checked():
    m = M.binary_metrics(Predictions(Y, S), threshold=0.5)
    # predicted positive: 0.60 (neg), 0.55, 0.80, 0.95 (pos)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 3, 1)
    assert m["sensitivity"] == 0.75 and m["specificity"] == 0.75
    assert m["ppv"] == 0.75 and m["npv"] == 0.75 and m["f1"] == 0.75
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.75
    assert m["prevalence"] == 0.5 and m["n"] == 8 and m["threshold"] == 0.5
    # 16 pos/neg pairs; misordered: (0.30 < 0.45), (0.30 < 0.60), (0.55 < 0.60) -> 13/16
    assert m["auc"] == pytest.approx(13 / 16)
    # score equal to the threshold counts as positive, as in Predictions.predict
    assert M.binary_metrics(Predictions(Y, S), threshold=0.55)["tp"] == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.77])
def test_binary_metrics_match_sklearn(seed, threshold):
    p = random_preds(seed=seed)
    m = M.binary_metrics(p, threshold)
    y, yhat = p.y_true, p.predict(threshold)
    assert m["sensitivity"] == pytest.approx(recall_score(y, yhat))
    assert m["specificity"] == pytest.approx(recall_score(y, yhat, pos_label=0))
    assert m["ppv"] == pytest.approx(precision_score(y, yhat))
    assert m["npv"] == pytest.approx(precision_score(y, yhat, pos_label=0))
    assert m["f1"] == pytest.approx(f1_score(y, yhat))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, yhat))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, yhat))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p.scores))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p.scores))
    assert m["fnr"] == pytest.approx(1 - m["sensitivity"])


def test_undefined_ratios_are_nan():
    no_pos = M.binary_metrics(Predictions([0, 0, 0], [0.1, 0.2, 0.3]), 0.5)
    assert math.isnan(no_pos["sensitivity"]) and math.isnan(no_pos["auc"])
    assert math.isnan(no_pos["pr_auc"]) and math.isnan(no_pos["ppv"])  # nothing called positive
    assert math.isnan(no_pos["f1"])  # 0 / 0
    assert no_pos["specificity"] == 1.0
    no_neg = M.binary_metrics(Predictions([1, 1], [0.9, 0.2]), 0.5)
    assert math.isnan(no_neg["specificity"]) and math.isnan(no_neg["balanced_accuracy"])
    assert no_neg["sensitivity"] == 0.5


def test_bad_threshold_is_a_clear_error():
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        M.binary_metrics(Predictions(Y, S), 1.5)
    with pytest.raises(ValueError, match=r"thresholds must be in \[0, 1\]"):
        M.metrics_at_thresholds(Predictions(Y, S), [0.5, -0.1])


def test_multiclass_predictions_use_any_disease_collapse():
    scores = np.array([[0.7, 0.2, 0.1], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])
    p = Predictions([0, 2, 2, 1], scores, class_names=("normal", "bacterial", "viral"))
    m = M.binary_metrics(p, 0.5)
    # any-disease scores 0.3, 0.4, 0.9, 0.8 -> the viral case at 0.4 is the one false negative
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (2, 1, 1, 0)
    c = M.any_disease_collapse(p)
    assert c.is_binary and c.y_true.tolist() == [0, 1, 1, 1]
    np.testing.assert_allclose(c.scores, [0.3, 0.4, 0.9, 0.8])
    assert c.class_names == ("normal", "any disease") and c.model == p.model


def test_metrics_at_thresholds_matches_binary_metrics():
    p = random_preds(seed=3)
    grid = np.linspace(0, 1, 21)
    frame = M.metrics_at_thresholds(p, grid)
    assert isinstance(frame, pd.DataFrame) and len(frame) == 21
    for row in frame.itertuples():
        m = M.binary_metrics(p, row.threshold)
        for key in ("tp", "fp", "tn", "fn"):
            assert getattr(row, key) == m[key]
        for key in ("sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy"):
            a, b = getattr(row, key), m[key]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)
    assert frame["sensitivity"].is_monotonic_decreasing


def test_bootstrap_ci_contains_point_and_narrows_with_n():
    small, large = random_preds(n=120, seed=4), random_preds(n=2000, seed=4)
    widths = []
    for p in (small, large):
        point = M.binary_metrics(p)
        for metric in ("auc", "sensitivity", "specificity"):
            low, high = M.bootstrap_ci(p, metric, n_resamples=400, seed=0)
            assert low <= point[metric] <= high, (metric, low, point[metric], high)
        low, high = M.bootstrap_ci(p, "auc", n_resamples=400)
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(n): 120 -> 2000 cases
    # deterministic for a seed
    assert M.bootstrap_ci(small, "auc", n_resamples=200, seed=3) == M.bootstrap_ci(
        small, "auc", n_resamples=200, seed=3
    )


def test_bootstrap_vectorised_auc_agrees_with_sklearn_callable():
    p = random_preds(n=150, seed=5)
    fast = M.bootstrap_ci(p, "auc", n_resamples=100, seed=1)
    slow = M.bootstrap_ci(p, roc_auc_score, n_resamples=100, seed=1)
    np.testing.assert_allclose(fast, slow, atol=1e-12)
    low, high = M.bootstrap_ci(p, "pr_auc", n_resamples=50)
    assert low <= M.binary_metrics(p)["pr_auc"] <= high


def test_bootstrap_handles_one_class_resamples():
    # one positive among 12: many resamples draw no positive at all
    p = Predictions([0] * 11 + [1], np.linspace(0.05, 0.95, 12))
    with pytest.warns(RuntimeWarning, match="left out"):
        low, high = M.bootstrap_ci(p, "auc", n_resamples=300)
    assert 0.0 <= low <= high <= 1.0
    no_pos = Predictions([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4])
    assert all(math.isnan(v) for v in M.bootstrap_ci(no_pos, "sensitivity", n_resamples=50))


def test_bootstrap_bad_arguments():
    p = random_preds(n=50)
    with pytest.raises(ValueError, match="unknown metric 'bogus'"):
        M.bootstrap_ci(p, "bogus")
    with pytest.raises(ValueError, match="confidence"):
        M.bootstrap_ci(p, "auc", confidence=1.5)
    with pytest.raises(ValueError, match="unknown bootstrap method"):
        M.bootstrap_ci(p, "auc", method="jackknife")


def test_binary_report_schema_and_json():
    p = random_preds(n=200, seed=6)
    r = M.binary_report(p, threshold=0.4, threshold_rule="recall>=0.95", n_resamples=200)
    needed = {
        "n",
        "auc",
        "auc_ci",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "f1",
        "tp",
        "fp",
        "tn",
        "fn",
        "threshold",
        "threshold_rule",
        "sensitivity_ci",
        "specificity_ci",
        "accuracy",
        "balanced_accuracy",
        "pr_auc",
        "prevalence",
    }
    assert needed <= set(r)
    assert r["threshold_rule"] == "recall>=0.95" and r["threshold"] == 0.4
    assert r["auc_ci"][0] <= r["auc"] <= r["auc_ci"][1]
    assert type(r["tp"]) is int and type(r["auc"]) is float
    json.dumps(r, allow_nan=False)
    # NaN -> None, still JSON-safe
    r2 = M.binary_report(Predictions([0, 0, 0], [0.1, 0.6, 0.3]), 0.5, ci=True, n_resamples=20)
    assert r2["sensitivity"] is None and r2["auc"] is None and r2["auc_ci"] == [None, None]
    json.dumps(r2, allow_nan=False)
    assert M.binary_report(p, ci=False)["auc_ci"] == [None, None]


def test_prevalence_helpers():
    assert M.missed_per_1000(0.95, 0.10) == pytest.approx(5.0)
    assert M.false_alarms_per_1000(0.90, 0.10) == pytest.approx(90.0)
    # Bayes PPV/NPV equal the empirical ones at the sample's own prevalence
    p = random_preds(n=1000, seed=7)
    m = M.binary_metrics(p, 0.5)
    assert M.ppv_at_prevalence(m["sensitivity"], m["specificity"], m["prevalence"]) == (
        pytest.approx(m["ppv"])
    )
    assert M.npv_at_prevalence(m["sensitivity"], m["specificity"], m["prevalence"]) == (
        pytest.approx(m["npv"])
    )
    assert m["fn"] == pytest.approx(M.missed_per_1000(m["sensitivity"], m["prevalence"]))
    # vectorised over prevalence; PPV falls as the disease gets rarer
    ppv = M.ppv_at_prevalence(0.95, 0.9, np.array([0.4, 0.1, 0.01]))
    assert ppv.shape == (3,) and np.all(np.diff(ppv) < 0)
    with pytest.raises(ValueError, match="prevalence must be in"):
        M.missed_per_1000(0.9, 1.2)
    with pytest.raises(ValueError, match="sensitivity must be in"):
        M.ppv_at_prevalence(float("nan"), 0.9, 0.1)


def test_multiclass_report_matches_sklearn():
    rng = np.random.default_rng(8)
    n, k = 300, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    names = ("normal", "bacterial", "viral", "covid")
    p = Predictions(y, scores, class_names=names)
    r = M.multiclass_report(p)
    yhat = scores.argmax(1)
    assert list(r.index) == [*names, "macro"]
    np.testing.assert_allclose(
        r.loc[list(names), "sensitivity"], recall_score(y, yhat, average=None)
    )
    np.testing.assert_allclose(r.loc[list(names), "ppv"], precision_score(y, yhat, average=None))
    np.testing.assert_allclose(r.loc[list(names), "f1"], f1_score(y, yhat, average=None))
    assert r.loc["macro", "sensitivity"] == pytest.approx(recall_score(y, yhat, average="macro"))
    assert r.loc["macro", "f1"] == pytest.approx(f1_score(y, yhat, average="macro"))
    for c, name in enumerate(names):
        assert r.loc[name, "auc"] == pytest.approx(roc_auc_score(y == c, scores[:, c]))
        assert r.loc[name, "specificity"] == pytest.approx(recall_score(y != c, yhat != c))
    assert r.loc["macro", "auc"] == pytest.approx(roc_auc_score(y, scores, multi_class="ovr"))
    assert r["support"].tolist() == [*np.bincount(y).tolist(), n]


def test_net_benefit_formula():
    p = Predictions(Y, S)
    nb = M.net_benefit(p, [0.0, 0.25, 0.5])
    prev = 0.5
    odds = np.array([0.0, 1 / 3, 1.0])
    np.testing.assert_allclose(nb["treat_all"], prev - (1 - prev) * odds)
    assert (nb["treat_none"] == 0).all()
    # at 0.5: TP=3, FP=1 of n=8 -> 3/8 - 1/8 * 1
    assert nb.loc[2, "model"] == pytest.approx(3 / 8 - 1 / 8)
    # at pt = 0 the model treats everyone
    assert nb.loc[0, "model"] == pytest.approx(nb.loc[0, "treat_all"])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        M.net_benefit(p, [1.0])


def test_net_benefit_at_a_deployment_prevalence():
    # the balanced test set reweighted to a clinic's prevalence:
    # NB = sens * pi - (1 - spec) * (1 - pi) * pt / (1 - pt)
    p = Predictions(Y, S)
    pts = np.array([0.0, 0.25, 0.5, 0.7])
    pi = 0.1
    nb = M.net_benefit(p, pts, prevalence=pi)
    sens = np.array([(S[Y == 1] >= t).mean() for t in pts])
    spec = np.array([(S[Y == 0] < t).mean() for t in pts])
    odds = pts / (1 - pts)
    np.testing.assert_allclose(nb["model"], sens * pi - (1 - spec) * (1 - pi) * odds)
    np.testing.assert_allclose(nb["treat_all"], pi - (1 - pi) * odds)
    assert (nb["treat_none"] == 0).all()
    # at 0.5: sens 3/4, 1 - spec 1/4 -> 0.075 - 0.225
    assert nb.loc[2, "model"] == pytest.approx(0.75 * 0.1 - 0.25 * 0.9)
    # the test set's own prevalence gives the unweighted TP/n - FP/n form
    np.testing.assert_allclose(M.net_benefit(p, pts, prevalence=0.5)["model"],
                               M.net_benefit(p, pts)["model"])
    with pytest.raises(ValueError, match="prevalence"):
        M.net_benefit(p, pts, prevalence=1.5)
    with pytest.raises(ValueError, match="both pneumonias and normals"):
        M.net_benefit(Predictions([1, 1], [0.2, 0.7]), pts, prevalence=0.1)


def test_useful_range():
    dca = pd.DataFrame({"threshold": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3],
                        "model": [0.0, 0.2, 0.2, 0.2, -0.1, 0.1],
                        "treat_all": [0.1, 0.05, 0.0, -0.05, -0.1, -0.15], "treat_none": 0.0})
    assert M.useful_range(dca) == (0.1, 0.2)  # the longest run, not the isolated 0.3
    never = dca.assign(model=-1.0)
    assert all(math.isnan(v) for v in M.useful_range(never))
    # from a real decision curve: a perfect ranker whose negatives score below every p_t
    # is useful over the whole grid
    p = Predictions([0, 0, 1, 1], [0.001, 0.002, 0.8, 0.9])
    low, high = M.useful_range(M.net_benefit(p, np.arange(0.01, 0.6, 0.01), prevalence=0.1))
    assert low == pytest.approx(0.01) and high == pytest.approx(0.59)
    with pytest.raises(ValueError, match="increasing"):
        M.useful_range(dca.iloc[::-1])


def test_to_jsonable():
    out = M.to_jsonable({"a": np.float32(0.5), "b": [np.nan, np.int64(2)], "c": np.bool_(True)})
    assert out == {"a": 0.5, "b": [None, 2], "c": True}
    json.dumps(out, allow_nan=False)


def test_pure_modules_do_not_import_torch():
    import subprocess
    import sys

    modules = ["metrics", "thresholds", "ensemble", "calibration"]
    present = [m for m in modules if (Path(M.__file__).parent / f"{m}.py").is_file()]
    code = (
        f"import sys, importlib; [importlib.import_module('fnlab.' + m) for m in {present!r}]; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _partial_area_by_hand(y, s, min_sensitivity):
    """Area under specificity as a function of the miss rate (FNR) on [0, 1 - min_sens],
    by trapezoids on the exact ROC steps, standardised as McClish does."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    fnr, spec = 1 - tpr[::-1], 1 - fpr[::-1]  # increasing miss rate
    m = 1 - min_sensitivity
    grid = np.linspace(0, m, 20001)
    # specificity at miss rate f: the best specificity among points with fnr <= f
    # (the ROC interpolates linearly between its points)
    curve = np.interp(grid, fnr, spec)
    raw = np.trapezoid(curve, grid)
    lo, hi = m * m / 2, m
    return 0.5 * (1 + (raw - lo) / (hi - lo))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_high_sensitivity_auc_matches_the_area_by_hand(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = np.clip(0.5 * y + rng.normal(0.3, 0.3, 300), 0, 1)
    p = Predictions(y, s)
    for min_sens in (0.8, 0.9, 0.95):
        assert M.high_sensitivity_auc(p, min_sens) == pytest.approx(
            _partial_area_by_hand(y, s, min_sens), abs=2e-3)
    assert M.high_sensitivity_auc(p, 0.0) == pytest.approx(roc_auc_score(y, s))


def test_high_sensitivity_auc_prefers_the_model_that_misses_less_at_high_recall():
    # A puts two normals above every pneumonia (full AUC 0.8) but catches every
    # pneumonia while clearing 80% of the normals; B ranks better overall (0.9) but
    # its last pneumonia sits below every normal: full recall costs all of them
    y = np.array([0] * 10 + [1] * 10)
    a = np.r_[np.linspace(0.0, 0.35, 8), 0.95, 0.97, np.linspace(0.5, 0.9, 10)]
    b = np.r_[np.linspace(0.3, 0.75, 10), np.linspace(0.8, 0.99, 9), 0.05]
    pa, pb = Predictions(y, a), Predictions(y, b)
    assert M.binary_metrics(pa)["auc"] == pytest.approx(0.8)
    assert M.binary_metrics(pb)["auc"] == pytest.approx(0.9)
    assert M.high_sensitivity_auc(pa) > 0.85 > 0.5 > M.high_sensitivity_auc(pb)
    assert M.high_sensitivity_auc(Predictions(y, (y == 1).astype(float))) == 1.0


def test_high_sensitivity_auc_bad_input():
    p = Predictions([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8])
    with pytest.raises(ValueError, match="min_sensitivity"):
        M.high_sensitivity_auc(p, 1.0)
    assert math.isnan(M.high_sensitivity_auc(Predictions([1, 1, 1], [0.2, 0.5, 0.9])))
