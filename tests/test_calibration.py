"""fnlab.calibration: reliability curve, ECE, Brier and temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from fnlab import calibration as C
from fnlab.predictions import Predictions


def simulated(n=5000, sharpness=1.0, seed=0) -> Predictions:
    """Labels drawn from true probabilities sigmoid(z); scores sigmoid(sharpness * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < special.expit(z)).astype(int)
    return Predictions(y, special.expit(sharpness * z), model="sim", split="val")


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_curve_matches_sklearn(strategy):
    p = simulated(n=800, seed=1)
    curve = C.reliability_curve(p, n_bins=8, strategy=strategy)
    prob_true, prob_pred = calibration_curve(p.y_true, p.scores, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(curve["fraction_positive"], prob_true)
    np.testing.assert_allclose(curve["mean_predicted"], prob_pred, rtol=1e-6)
    assert curve["count"].sum() == len(p)
    assert (curve["bin_lower"] <= curve["mean_predicted"] + 1e-9).all()
    assert (curve["mean_predicted"] <= curve["bin_upper"] + 1e-9).all()


def test_ece_hand_checked_and_zero_when_calibrated():
    # bin [0, .5): 4 cases at 0.25, one positive; bin [.5, 1]: 4 cases at 0.75, three positive
    calibrated = Predictions([0, 0, 0, 1, 1, 1, 1, 0], [0.25] * 4 + [0.75] * 4)
    assert C.expected_calibration_error(calibrated, n_bins=2) == pytest.approx(0.0, abs=1e-6)
    p = Predictions([0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.8, 0.9])
    assert C.expected_calibration_error(p, n_bins=2) == pytest.approx((2 * 0.15 + 3 * 0.2) / 5)


def test_brier_and_nll_match_sklearn():
    p = simulated(n=500, seed=2)
    assert C.brier_score(p) == pytest.approx(brier_score_loss(p.y_true, p.scores))
    assert C.negative_log_likelihood(p) == pytest.approx(log_loss(p.y_true, p.scores))
    assert C.brier_score(Predictions([0, 1], [0.2, 0.6])) == pytest.approx(0.1)


def test_temperature_fixes_over_confidence():
    over = simulated(sharpness=3.0, seed=3)
    t = C.fit_temperature(over)
    assert 2.5 < t < 3.5  # the scores are exactly 3x too sharp
    fixed = C.apply_temperature(over, t)
    assert C.negative_log_likelihood(fixed) < C.negative_log_likelihood(over) - 0.05
    assert C.expected_calibration_error(fixed) < C.expected_calibration_error(over) / 2
    assert C.expected_calibration_error(fixed) < 0.03
    assert C.brier_score(fixed) < C.brier_score(over)
    # ranking (hence AUC) unchanged; labels, ids and name kept
    assert roc_auc_score(fixed.y_true, fixed.scores) == pytest.approx(
        roc_auc_score(over.y_true, over.scores)
    )
    assert fixed.model == over.model and fixed.meta["temperature"] == t
    np.testing.assert_array_equal(fixed.ids, over.ids)


def test_temperature_below_one_for_timid_scores_and_near_one_when_calibrated():
    assert C.fit_temperature(simulated(sharpness=0.5, seed=4)) < 0.7
    assert C.fit_temperature(simulated(sharpness=1.0, seed=5)) == pytest.approx(1.0, abs=0.1)
    p = simulated(n=50, seed=6)
    np.testing.assert_allclose(C.apply_temperature(p, 1.0).scores, p.scores, atol=1e-6)


def test_temperature_multiclass():
    rng = np.random.default_rng(7)
    n, k = 3000, 3
    logits = rng.normal(0, 1.5, (n, k))
    probs = special.softmax(logits, axis=1)
    y = np.array([rng.choice(k, p=row) for row in probs])
    over = Predictions(y, special.softmax(2.5 * logits, axis=1), class_names=("n", "a", "b"))
    t = C.fit_temperature(over)
    assert 2.0 < t < 3.0
    fixed = C.apply_temperature(over, t)
    assert fixed.scores.shape == (n, k)
    np.testing.assert_allclose(fixed.scores.sum(1), 1.0)
    assert C.negative_log_likelihood(fixed) < C.negative_log_likelihood(over)
    np.testing.assert_array_equal(fixed.scores.argmax(1), over.scores.argmax(1))


def test_bad_input_is_a_clear_error():
    p = simulated(n=20)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        C.apply_temperature(p, 0.0)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        C.apply_temperature(p, float("nan"))
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        C.fit_temperature(Predictions([0, 1], [-2.0, 3.0], model="logits"))
    with pytest.raises(ValueError, match="are empty"):
        C.brier_score(Predictions([], []))
    with pytest.raises(ValueError, match="unknown strategy"):
        C.reliability_curve(p, strategy="kmeans")
    with pytest.raises(ValueError, match="n_bins"):
        C.expected_calibration_error(p, n_bins=0)


def test_adjust_prevalence_is_bayes_rule():
    # scores calibrated on a balanced set, moved to a clinic with 10% prevalence
    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 2.0, 20000)
    y = (rng.random(20000) < special.expit(z)).astype(int)
    balanced = Predictions(y, special.expit(z))
    moved = C.adjust_prevalence(balanced, 0.1, from_prevalence=0.5)
    np.testing.assert_allclose(special.logit(moved.scores),
                               z + special.logit(0.1) - special.logit(0.5), atol=1e-6)
    assert moved.meta["prevalence"] == 0.1
    assert roc_auc_score(y, moved.scores) == pytest.approx(roc_auc_score(y, balanced.scores))
    # where the prevalence really is 10% (keep fewer pneumonias, same images per class),
    # the moved scores are calibrated and the original ones overstate the risk
    prev0 = y.mean()
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    clinic = np.r_[pos[: len(neg) // 9], neg]
    rare = balanced.subset(clinic)
    fixed = C.adjust_prevalence(rare, 0.1, from_prevalence=prev0)
    assert rare.binary_truth().mean() == pytest.approx(0.1, abs=0.005)
    assert C.expected_calibration_error(fixed) < 0.02 < C.expected_calibration_error(rare)
    with pytest.raises(ValueError, match="prevalence must be in"):
        C.adjust_prevalence(balanced, 0.0, from_prevalence=0.5)
    with pytest.raises(ValueError, match="binary"):
        C.adjust_prevalence(Predictions([0, 1], [[0.6, 0.4], [0.2, 0.8]]), 0.1, 0.5)


def test_platt_removes_a_shift_that_one_temperature_cannot():
    # scores of a model trained with a false-negative cost: every logit pushed up by log(8)
    rng = np.random.default_rng(11)
    z = rng.normal(0.0, 2.0, 6000)
    y = (rng.random(6000) < special.expit(z)).astype(int)
    shifted = Predictions(y, special.expit(z + np.log(8.0)), model="fn_cost 8")
    val, test = shifted.subset(np.arange(3000)), shifted.subset(np.arange(3000, 6000))
    a, b = C.fit_platt(val)
    assert a == pytest.approx(1.0, abs=0.1) and b == pytest.approx(-np.log(8.0), abs=0.15)
    fixed = C.apply_platt(test, a, b)
    by_temperature = C.apply_temperature(test, C.fit_temperature(val))
    ece_raw = C.expected_calibration_error(test)
    assert C.expected_calibration_error(fixed) < 0.03 < ece_raw
    assert C.expected_calibration_error(fixed) < C.expected_calibration_error(by_temperature) / 2
    assert roc_auc_score(fixed.y_true, fixed.scores) == pytest.approx(
        roc_auc_score(test.y_true, test.scores))
    assert fixed.meta["platt"] == (a, b) and fixed.model == "fn_cost 8"


def test_platt_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="one class only"):
        C.fit_platt(Predictions([1, 1, 1], [0.2, 0.5, 0.9]))
    with pytest.raises(ValueError, match="must be finite"):
        C.apply_platt(simulated(n=10), float("inf"), 0.0)
    four = Predictions([0, 1], [[0.7, 0.3], [0.2, 0.8]], class_names=("n", "p"))
    with pytest.raises(ValueError, match="binary Predictions"):
        C.fit_platt(four)
