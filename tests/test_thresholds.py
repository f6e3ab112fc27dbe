"""fnlab.thresholds on constructed scores, and the conformal guarantee holding its level."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from fnlab import thresholds as T
from fnlab.metrics import binary_metrics, metrics_at_thresholds
from fnlab.predictions import Predictions


def simulated(n=1000, prevalence=0.4, separation=1.5, seed=0, calibrated=False) -> Predictions:
    rng = np.random.default_rng(seed)
    if calibrated:  # labels drawn from the scores themselves
        z = rng.normal(0, 2, n)
        y = (rng.random(n) < special.expit(z)).astype(int)
    else:
        y = (rng.random(n) < prevalence).astype(int)
        z = rng.normal(separation * (2 * y - 1) / 2, 1.0)
    return Predictions(y, special.expit(z), model="sim", split="val")


# Ten positives scoring 0.10 ... 1.00 and five negatives.
KNOWN = Predictions(
    np.r_[np.ones(10), np.zeros(5)],
    np.r_[np.linspace(0.1, 1.0, 10), [0.05, 0.15, 0.25, 0.35, 0.45]],
    split="val",
)


# ----------------------------------------------------------------------------- recall
@pytest.mark.parametrize("target, expected", [(0.8, 0.3), (0.9, 0.2), (1.0, 0.1), (0.15, 0.9)])
def test_recall_rule_hits_the_target_exactly(target, expected):
    t = T.threshold_for_recall(KNOWN, target)
    assert t == pytest.approx(expected)
    assert binary_metrics(KNOWN, t)["sensitivity"] >= target - 1e-12
    # 0.8 and 0.9 of 10 are whole numbers: the rule lands on them exactly
    if target in (0.8, 0.9):
        assert binary_metrics(KNOWN, t)["sensitivity"] == pytest.approx(target)
    # it is the largest such threshold: any higher loses recall below the target
    assert binary_metrics(KNOWN, min(1.0, t + 1e-6))["sensitivity"] < target


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("target", [0.9, 0.95, 0.98])
def test_recall_rule_is_largest_on_random_scores(seed, target):
    val = simulated(seed=seed)
    t = T.threshold_for_recall(val, target)
    table = metrics_at_thresholds(val, np.unique(val.scores))
    ok = table[table["sensitivity"] >= target - 1e-12]
    assert t == pytest.approx(ok["threshold"].max())


# ----------------------------------------------------------------------------- specificity
def test_specificity_rule_is_smallest_threshold_reaching_target():
    val = simulated(seed=3)
    for target in (0.5, 0.8, 0.95):
        t = T.threshold_for_specificity(val, target)
        assert binary_metrics(val, t)["specificity"] >= target
        lower = val.scores[val.scores < t]
        if len(lower):
            assert binary_metrics(val, float(lower.max()))["specificity"] < target
    # known set: negatives 0.05 .. 0.45, 4 of 5 must be below -> first score above 0.35
    assert T.threshold_for_specificity(KNOWN, 0.8) == pytest.approx(0.4)


# ----------------------------------------------------------------------------- youden
def test_youden_separates_separable_data():
    val = Predictions([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    t = T.youden_threshold(val)
    m = binary_metrics(val, t)
    assert m["sensitivity"] == 1.0 and m["specificity"] == 1.0
    assert 0.3 < t <= 0.6


def test_youden_matches_brute_force():
    val = simulated(seed=4)
    t = T.youden_threshold(val)
    table = metrics_at_thresholds(val, np.unique(val.scores))
    assert binary_metrics(val, t)["sensitivity"] + binary_metrics(val, t)["specificity"] - 1 == (
        pytest.approx(table["youden_j"].max())
    )


# ----------------------------------------------------------------------------- cost
def test_cost_rule_moves_down_as_cost_ratio_rises():
    val = simulated(seed=5)
    ratios = [0.2, 0.5, 1, 2, 5, 10, 50]
    ts = [T.min_cost_threshold(val, r) for r in ratios]
    assert all(a >= b for a, b in zip(ts, ts[1:])), ts
    assert ts[0] > ts[-1]
    # sensitivity therefore rises with the cost of a miss
    sens = [binary_metrics(val, t)["sensitivity"] for t in ts]
    assert sens[-1] > sens[0]


def test_cost_rule_is_optimal_and_near_bayes_on_calibrated_scores():
    val = simulated(n=4000, seed=6, calibrated=True)
    for ratio in (1.0, 4.0, 9.0):
        t = T.min_cost_threshold(val, ratio)
        assert t == pytest.approx(1 / (1 + ratio), abs=0.05)
        table = metrics_at_thresholds(val, np.unique(val.scores))
        cost = ratio * table["fn"] + table["fp"]
        m = binary_metrics(val, t)
        assert ratio * m["fn"] + m["fp"] == pytest.approx(cost.min())


def test_cost_rule_prevalence_reweighting():
    val = simulated(seed=7)
    base = T.min_cost_threshold(val, 5.0)
    rare = T.min_cost_threshold(val, 5.0, prevalence=0.05)
    common = T.min_cost_threshold(val, 5.0, prevalence=0.8)
    assert rare > base > common


@pytest.mark.parametrize("prevalence", [0.02, 0.1, 0.5, 0.9])
def test_cost_rule_at_a_deployment_prevalence_reweights_the_validation_counts(prevalence):
    """At a stated prevalence the rule minimises the cost per case of a population with
    that prevalence: each validation positive counts prevalence / n_pos, each negative
    (1 - prevalence) / n_neg, whatever the validation set's own prevalence."""
    val = simulated(n=800, prevalence=0.5, seed=11)
    ratio = 10.0
    t = T.min_cost_threshold(val, ratio, prevalence=prevalence)
    table = metrics_at_thresholds(val, np.unique(val.scores))
    n_pos, n_neg = int(val.y_true.sum()), int((1 - val.y_true).sum())
    cost = (ratio * table["fn"] * prevalence / n_pos + table["fp"] * (1 - prevalence) / n_neg)
    m = binary_metrics(val, t)
    assert ratio * m["fn"] * prevalence / n_pos + m["fp"] * (1 - prevalence) / n_neg == (
        pytest.approx(cost.min()))
    # the validation prevalence (0.5 here) is the default; a rare disease raises the threshold
    if prevalence < 0.5:
        assert t >= T.min_cost_threshold(val, ratio)


def test_cost_rule_rejects_a_prevalence_outside_0_1():
    with pytest.raises(ValueError, match="prevalence"):
        T.min_cost_threshold(simulated(), 5.0, prevalence=1.0)
    with pytest.raises(ValueError, match="prevalence"):
        T.min_cost_threshold(simulated(), 5.0, prevalence=0.0)


# ----------------------------------------------------------------------------- conformal
def test_crc_threshold_formula():
    rng = np.random.default_rng(8)
    pos = rng.random(99)
    val = Predictions(np.r_[np.ones(99), np.zeros(50)], np.r_[pos, rng.random(50)])
    for alpha in (0.02, 0.05, 0.1, 0.25):
        t = T.conformal_fnr_threshold(val, alpha)
        n = 99
        misses = int((pos < t).sum())
        assert (n / (n + 1)) * misses / n + 1 / (n + 1) <= alpha + 1e-12
        # the next positive up would break the bound
        above = np.sort(pos[pos > t])
        if len(above):
            assert (int((pos < above[0]).sum()) + 1) / (n + 1) > alpha


def test_crc_infeasible_with_too_few_positives_warns_and_calls_everyone():
    val = Predictions([1, 1, 1, 0, 0], [0.9, 0.8, 0.7, 0.2, 0.1])
    with pytest.warns(RuntimeWarning, match="too few"):
        assert T.conformal_fnr_threshold(val, 0.05) == 0.0


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.2])
def test_crc_guarantee_holds_over_200_splits(alpha):
    preds = simulated(n=800, seed=9)
    res = T.check_conformal_guarantee(preds, alpha, n_splits=200, seed=1)
    assert res["holds"]
    assert len(res["per_split"]) == 200
    assert res["mean_fnr"] <= alpha + 0.01
    # CRC is tight: E[FNR] >= alpha - 2/(n_pos + 1) for continuous scores
    assert res["mean_fnr"] >= res["lower_bound"] - 0.01
    assert 0 < res["share_within_alpha"] < 1
    assert set(res["per_split"].columns) >= {"threshold", "test_fnr", "test_specificity"}


def test_mapie_crc_agrees_with_closed_form():
    for seed in range(2):
        val = simulated(n=150, seed=10 + seed)
        n_pos = int(val.y_true.sum())
        for alpha in (0.05, 0.13):
            if float(alpha * (n_pos + 1)).is_integer():
                continue  # MAPIE's strict '<' differs only on exact ties
            crc = T.conformal_fnr_threshold(val, alpha, method="crc")
            mapie = T.conformal_fnr_threshold(val, alpha, method="mapie")
            assert mapie == crc


def test_mapie_crc_guarantee_holds():
    preds = simulated(n=200, seed=11)
    res = T.check_conformal_guarantee(preds, 0.1, n_splits=12, method="mapie", seed=2)
    crc = T.check_conformal_guarantee(preds, 0.1, n_splits=12, method="crc", seed=2)
    assert res["holds"] and res["mean_fnr"] <= 0.1 + 0.02
    np.testing.assert_allclose(res["per_split"]["test_fnr"], crc["per_split"]["test_fnr"])


def test_ltt_is_stricter_and_holds_with_high_probability():
    preds = simulated(n=2000, seed=12)
    ltt = T.check_conformal_guarantee(preds, 0.1, n_splits=30, method="ltt", confidence=0.9)
    crc = T.check_conformal_guarantee(preds, 0.1, n_splits=30, method="crc")
    assert ltt["mean_fnr"] < 0.1 and ltt["share_within_alpha"] >= 0.8
    assert ltt["mean_threshold"] < crc["mean_threshold"]
    assert ltt["share_within_alpha"] > crc["share_within_alpha"]


def test_conformal_bad_arguments():
    val = simulated(n=100)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        T.conformal_fnr_threshold(val, 1.0)
    with pytest.raises(ValueError, match="unknown conformal method 'bogus'"):
        T.conformal_fnr_threshold(val, 0.1, method="bogus")
    with pytest.raises(ValueError, match="n_splits"):
        T.check_conformal_guarantee(val, 0.1, n_splits=0)


# ----------------------------------------------------------------------------- front door
def test_choose_threshold_matches_each_rule():
    val = simulated(seed=13)
    cases = {
        ("fixed", 0.3): 0.3,
        ("recall", 0.95): T.threshold_for_recall(val, 0.95),
        ("specificity", 0.9): T.threshold_for_specificity(val, 0.9),
        ("youden", None): T.youden_threshold(val),
        ("cost", 10.0): T.min_cost_threshold(val, 10.0),
        ("conformal", 0.05): T.conformal_fnr_threshold(val, 0.05),
    }
    for (rule, value), expected in cases.items():
        choice = T.choose_threshold(val, rule, value)
        assert isinstance(choice, T.ThresholdChoice)
        assert choice.threshold == expected and choice.rule == rule
        assert "sensitivity" in choice.description
        assert choice.to_dict()["label"] == choice.label
    assert T.choose_threshold(val, "recall", 0.98).label == "recall>=0.98"
    assert T.choose_threshold(val, "cost", 10, prevalence=0.1).label == "cost_ratio=10"
    assert T.choose_threshold(val, "conformal", 0.05, method="ltt").label == "conformal_fnr<=0.05"
    assert T.choose_threshold(None, "fixed").threshold == 0.5
    assert T.choose_threshold(val, "youden").value is None


def test_threshold_chosen_on_val_applies_to_test():
    val, test = simulated(n=2000, seed=14), simulated(n=2000, seed=15)
    choice = T.choose_threshold(val, "recall", 0.95)
    assert binary_metrics(test, choice.threshold)["sensitivity"] == pytest.approx(0.95, abs=0.03)


def test_choose_threshold_bad_input():
    val = simulated(n=100)
    with pytest.raises(ValueError, match="fixed, recall, specificity, youden, cost, conformal"):
        T.choose_threshold(val, "magic", 0.5)
    with pytest.raises(ValueError, match=r"target_recall must be in \(0, 1\]"):
        T.choose_threshold(val, "recall", 1.5)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        T.choose_threshold(val, "fixed", -0.1)
    with pytest.raises(ValueError, match="target_specificity"):
        T.choose_threshold(val, "specificity", 0)
    with pytest.raises(ValueError, match="cost_ratio"):
        T.choose_threshold(val, "cost", -2)
    with pytest.raises(ValueError, match="needs a value"):
        T.choose_threshold(val, "recall")
    with pytest.raises(ValueError, match="unexpected options"):
        T.choose_threshold(val, "recall", 0.9, method="crc")
    with pytest.raises(ValueError, match="needs validation Predictions"):
        T.choose_threshold(None, "youden")
    empty = Predictions([], [], split="val", model="m")
    no_pos = Predictions([0, 0, 0], [0.1, 0.5, 0.9], split="val", model="m")
    for rule, value in [
        ("recall", 0.9),
        ("youden", None),
        ("cost", 5),
        ("conformal", 0.1),
        ("specificity", 0.9),
        ("fixed", 0.5),
    ]:
        with pytest.raises(ValueError, match="are empty"):
            T.choose_threshold(empty, rule, value)
        with pytest.raises(ValueError, match="no positive"):
            T.choose_threshold(no_pos, rule, value)
    with pytest.raises(ValueError, match="no negative"):
        T.choose_threshold(Predictions([1, 1], [0.2, 0.8]), "youden")
    with pytest.raises(TypeError, match="expected fnlab Predictions"):
        T.threshold_for_recall(np.array([0.1, 0.2]), 0.9)
    assert not math.isnan(T.choose_threshold(val, "youden").threshold)
