"""fnlab.ensemble: combinations, stacking, diversity and missed positives."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special
from sklearn.metrics import roc_auc_score

from fnlab import ensemble as E
from fnlab.metrics import binary_metrics
from fnlab.predictions import Predictions


def member(y, strength, seed, name, split="val") -> Predictions:
    """A model whose logit is ``strength * (2y - 1) + noise``."""
    rng = np.random.default_rng(seed)
    z = strength * (2 * np.asarray(y) - 1) + rng.normal(0, 1, len(y))
    return Predictions(y, special.expit(z), model=name, split=split)


@pytest.fixture
def trio():
    y = (np.random.default_rng(0).random(600) < 0.4).astype(int)
    return [member(y, 1.0, 1, "cnn"), member(y, 0.8, 2, "resnet"), member(y, 0.6, 3, "vit")]


def test_mean_of_identical_members_is_the_member(trio):
    a = trio[0]
    m = E.mean_ensemble([a, a, a])
    np.testing.assert_allclose(m.scores, a.scores)
    np.testing.assert_array_equal(m.y_true, a.y_true)
    assert m.model == "mean" and m.meta["members"] == ["cnn", "cnn_2", "cnn_3"]
    np.testing.assert_allclose(E.rank_average([a, a]).scores, E.rank_average([a]).scores)
    np.testing.assert_allclose(E.weighted_ensemble([a, a], [0.3, 0.7]).scores, a.scores)


def test_max_is_at_least_mean_and_every_member(trio):
    mx, mean = E.max_ensemble(trio), E.mean_ensemble(trio)
    assert (mx.scores >= mean.scores - 1e-12).all()
    for p in trio:
        assert (mx.scores >= p.scores).all()
    # so at any threshold the max rule misses no more positives than the mean
    assert binary_metrics(mx, 0.5)["fn"] <= binary_metrics(mean, 0.5)["fn"]


def test_weighted_ensemble(trio):
    a, b, _ = trio
    np.testing.assert_allclose(E.weighted_ensemble([a, b], [1, 0]).scores, a.scores)
    w = E.weighted_ensemble([a, b], [2, 6])
    np.testing.assert_allclose(w.scores, 0.25 * a.scores + 0.75 * b.scores)
    assert w.meta["weights"] == [0.25, 0.75]
    with pytest.raises(ValueError, match="2 weights for 3"):
        E.weighted_ensemble(trio, [1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        E.weighted_ensemble([a, b], [1, -1])


def test_rank_average_is_scale_free(trio):
    a = trio[0]
    stretched = a.with_scores(a.scores**5, model="stretched")  # same order, other scale
    r = E.rank_average([a, stretched])
    assert roc_auc_score(r.y_true, r.scores) == pytest.approx(roc_auc_score(a.y_true, a.scores))
    assert r.scores.min() >= 0 and r.scores.max() <= 1
    # with a validation reference, test scores are placed in the validation distribution
    test = [
        member(a.y_true, 1.0, 9, "cnn", split="test"),
        member(a.y_true, 0.8, 8, "resnet", "test"),
    ]
    ref = E.rank_average(test, reference=trio[:2])
    assert 0 <= ref.scores.min() and ref.scores.max() <= 1 and ref.split == "test"
    with pytest.raises(ValueError, match="reference model 'vit' does not match member 'resnet'"):
        E.rank_average(test, reference=[trio[0], trio[2]])


def test_majority_vote():
    y = [0, 1, 1]
    a = Predictions(y, [0.2, 0.9, 0.6], model="a")
    b = Predictions(y, [0.6, 0.8, 0.1], model="b")
    c = Predictions(y, [0.1, 0.7, 0.2], model="c")
    v = E.majority_vote([a, b, c], 0.5)
    np.testing.assert_allclose(v.scores, [1 / 3, 1, 1 / 3])
    # per-member thresholds, as a list or a mapping
    v2 = E.majority_vote([a, b, c], {"a": 0.5, "b": 0.5, "c": 0.15})
    np.testing.assert_allclose(v2.scores, [1 / 3, 1, 2 / 3])
    np.testing.assert_allclose(E.majority_vote([a, b, c], [0.5, 0.5, 0.15]).scores, v2.scores)
    with pytest.raises(ValueError, match="2 thresholds for 3"):
        E.majority_vote([a, b, c], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        E.majority_vote([a, b, c], 1.5)
    with pytest.raises(ValueError, match="no threshold given for member"):
        E.majority_vote([a, b, c], {"a": 0.5})


def test_stacking_learns_the_informative_member():
    rng = np.random.default_rng(4)
    y_val, y_test = (rng.random(800) < 0.4).astype(int), (rng.random(800) < 0.4).astype(int)
    good_v, good_t = member(y_val, 1.5, 5, "good"), member(y_test, 1.5, 6, "good", "test")
    noise_v = Predictions(y_val, rng.random(800), model="noise", split="val")
    noise_t = Predictions(y_test, rng.random(800), model="noise", split="test")
    stack = E.StackingEnsemble().fit([good_v, noise_v])
    assert stack.weights["good"] > 1.0 and abs(stack.weights["noise"]) < 0.3
    out = stack.predict([good_t, noise_t])
    assert out.split == "test" and out.model == "stacking"
    assert roc_auc_score(y_test, out.scores) >= roc_auc_score(y_test, good_t.scores) - 0.01
    via_combine = E.combine([good_t, noise_t], "stacking", val_members=[good_v, noise_v])
    np.testing.assert_allclose(via_combine.scores, out.scores)
    with pytest.raises(ValueError, match=r"fitted on members \['good', 'noise'\]"):
        stack.predict([noise_t, good_t])
    with pytest.raises(RuntimeError, match="not fitted"):
        E.StackingEnsemble().predict([good_t])
    with pytest.raises(ValueError, match="one class only"):
        E.StackingEnsemble().fit([good_v.subset(np.flatnonzero(y_val == 1))])


def test_mismatched_members_raise_naming_the_model(trio):
    a = trio[0]
    wrong_labels = Predictions(1 - a.y_true, a.scores, model="flipped", split="val")
    with pytest.raises(ValueError, match="member 'flipped' does not match 'cnn': labels"):
        E.mean_ensemble([a, wrong_labels])
    shuffled = Predictions(a.y_true, a.scores, ids=a.ids[::-1], model="shuffled", split="val")
    with pytest.raises(ValueError, match="'shuffled'.*ids differ"):
        E.max_ensemble([a, shuffled])
    shorter = a.subset(np.arange(10))
    shorter.model = "short"
    with pytest.raises(ValueError, match="'short'.*10 cases vs 600"):
        E.combine([a, shorter], "mean")
    other_split = Predictions(a.y_true, a.scores, model="test_preds", split="test")
    with pytest.raises(ValueError, match="'test_preds'.*split 'test' vs 'val'"):
        E.disagreement_matrix([a, other_split])
    with pytest.raises(TypeError, match="a list of Predictions"):
        E.mean_ensemble(a)
    with pytest.raises(ValueError, match="at least 1"):
        E.mean_ensemble([])


def test_combine_rules(trio):
    for rule, kw in [
        ("mean", {}),
        ("weighted", {"weights": [1, 2, 3]}),
        ("rank", {}),
        ("max", {}),
        ("vote", {"thresholds": 0.5}),
    ]:
        out = E.combine(trio, rule, **kw)
        assert out.meta["rule"] == rule and len(out) == len(trio[0])
    with pytest.raises(ValueError, match="mean, weighted, rank, max, vote, stacking"):
        E.combine(trio, "median")
    with pytest.raises(ValueError, match="needs weights"):
        E.combine(trio, "weighted")
    with pytest.raises(ValueError, match="needs val_members"):
        E.combine(trio, "stacking")


def test_multiclass_members():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 50)
    probs = [special.softmax(rng.normal(size=(50, 3)) + 2 * np.eye(3)[y], axis=1) for _ in range(2)]
    a = Predictions(y, probs[0], model="a", class_names=("normal", "bacterial", "viral"))
    b = Predictions(y, probs[1], model="b", class_names=("normal", "bacterial", "viral"))
    m = E.mean_ensemble([a, b])
    assert m.scores.shape == (50, 3) and m.class_names == a.class_names
    mx = E.max_ensemble([a, b])  # "any model says disease" on the any-disease collapse
    assert mx.is_binary and mx.class_names == ("normal", "any disease")
    np.testing.assert_array_equal(mx.y_true, (y != 0).astype(int))
    np.testing.assert_allclose(mx.scores, np.maximum(1 - probs[0][:, 0], 1 - probs[1][:, 0]))


def test_disagreement_and_error_correlation(trio):
    d = E.disagreement_matrix(trio, 0.5)
    assert list(d.index) == ["cnn", "resnet", "vit"]
    np.testing.assert_allclose(np.diag(d), 0)
    np.testing.assert_allclose(d.to_numpy(), d.to_numpy().T)
    da, db = trio[0].predict(0.5), trio[1].predict(0.5)
    assert d.loc["cnn", "resnet"] == pytest.approx((da != db).mean())
    c = E.error_correlation(trio)
    np.testing.assert_allclose(np.diag(c), 1)
    # independent noise: errors only share the label-driven part, far from 1
    assert c.loc["cnn", "resnet"] < 0.8
    same = E.error_correlation([trio[0], trio[0]], thresholds=0.5)
    assert same.iloc[0, 1] == pytest.approx(1.0)


def test_missed_positives_table(trio):
    t = 0.5
    mx = E.max_ensemble(trio)
    table = E.missed_positives(trio, t, ensemble=mx, ensemble_threshold=t)
    assert list(table.columns) == ["cnn", "resnet", "vit", "max"]
    assert table.index.name == "id"
    assert table.to_numpy().dtype == bool and table.any(axis=1).all()
    y = trio[0].y_true
    assert (y[table.index.to_numpy()] == 1).all()
    for p in trio:
        assert table[p.model].sum() == binary_metrics(p, t)["fn"]
    # the max rule misses a case only when every member misses it
    np.testing.assert_array_equal(table["max"], table[["cnn", "resnet", "vit"]].all(axis=1))
    with pytest.raises(ValueError, match="ensemble_threshold"):
        E.missed_positives(trio, t, ensemble=mx)


def test_thresholded_error_correlation_is_not_driven_by_the_label():
    y = (np.random.default_rng(4).random(2000) < 0.5).astype(int)
    good = member(y, 2.0, 5, "good")
    good2 = member(y, 2.0, 6, "good2")
    chance = Predictions(y, np.random.default_rng(7).random(len(y)), model="chance", split="val")
    members = [good, good2, chance]
    residual = E.error_correlation(members)
    # y - score carries the label: even a chance model "correlates" with a good one
    assert residual.loc["good", "chance"] > 0.5
    thresholded = E.error_correlation(members, thresholds=[0.5, 0.5, 0.5])
    wrong = [(p.scores >= 0.5) != y for p in members]
    expected = np.corrcoef(wrong[0].astype(float), wrong[2].astype(float))[0, 1]
    assert thresholded.loc["good", "chance"] == pytest.approx(expected)
    assert abs(thresholded.loc["good", "chance"]) < 0.1
    assert abs(thresholded.loc["good", "good2"]) < 0.1  # independent noise, independent errors
    # a {name: threshold} mapping works too, and equal members correlate fully
    same = E.error_correlation([good, good], thresholds={"good": 0.3, "good_2": 0.3})
    assert same.iloc[0, 1] == pytest.approx(1.0)


def test_logit_mean_ensemble():
    a = Predictions([0, 1, 1], [0.2, 0.99, 0.5], model="a")
    b = Predictions([0, 1, 1], [0.2, 0.5, 0.8], model="b")
    lm = E.logit_mean_ensemble([a, b])
    z = (special.logit(a.scores) + special.logit(b.scores)) / 2
    np.testing.assert_allclose(lm.scores, special.expit(z))
    assert lm.model == "logit mean" and lm.meta["rule"] == "logit"
    np.testing.assert_allclose(E.combine([a, b], "logit").scores, lm.scores)
    # a member equal to itself: the mean of logits is the member
    np.testing.assert_allclose(E.logit_mean_ensemble([a, a]).scores, a.scores)


def test_member_agreement_flags_a_collapsed_rule(trio):
    high = trio[0]
    low = trio[1].with_scores(trio[1].scores * 0.3)  # always below the first member
    mx = E.max_ensemble([high, low])
    np.testing.assert_allclose(mx.scores, np.maximum(high.scores, low.scores))
    agree = E.member_agreement(mx, [high, low], 0.5, [0.5, 0.15])
    assert agree.loc["cnn", "decision agreement"] == pytest.approx(1.0)
    assert bool(agree.loc["cnn", "same FN"])
    assert agree.loc["resnet", "decision agreement"] < 0.95
    mean = E.mean_ensemble(trio)
    agree = E.member_agreement(mean, trio, 0.5, 0.5)
    assert (agree["decision agreement"] < 1).all()
    assert list(agree.columns) == ["decision agreement", "rank correlation", "same FN"]


def test_fn_difference_ci_is_paired():
    y = np.r_[np.ones(200), np.zeros(200)].astype(int)
    rng = np.random.default_rng(0)
    s = np.where(y == 1, rng.uniform(0.3, 1, 400), rng.uniform(0, 0.5, 400))
    a = Predictions(y, s, model="a")
    # b misses the same positives as a plus 10 more
    extra = np.flatnonzero((y == 1) & (s >= 0.5))[:10]
    sb = s.copy()
    sb[extra] = 0.1
    b = Predictions(y, sb, model="b")
    res = E.fn_difference_ci(a, b, 0.5, 0.5, n_resamples=500, seed=1)
    fa, fb = binary_metrics(a, 0.5)["fn"], binary_metrics(b, 0.5)["fn"]
    assert (res["fn_a"], res["fn_b"], res["difference"]) == (fa, fb, fa - fb) and fa - fb == -10
    # paired: only the 10 cases that differ vary, so the interval stays below zero
    assert res["ci_low"] <= -10 <= res["ci_high"] < 0
    assert res["share_below_zero"] == 1.0
    same = E.fn_difference_ci(a, a, 0.5, 0.5)
    assert (same["difference"], same["ci_low"], same["ci_high"]) == (0, 0.0, 0.0)
    with pytest.raises(ValueError, match="does not match"):
        E.fn_difference_ci(a, Predictions(1 - y, s, model="c"), 0.5, 0.5)
