"""Ensembles of Predictions: several models vote, and fewer pneumonias slip through.

Every function takes a list of :class:`~fnlab.predictions.Predictions` of the
*same* cases (same split, ids and labels; checked, and a mismatch names the
model) and returns a new Predictions, so that metrics and thresholds apply to an
ensemble exactly as to a single model.

- :func:`mean_ensemble`, :func:`weighted_ensemble`: (weighted) average of scores.
- :func:`logit_mean_ensemble`: average of the members' logits (log-odds), turned
  back into a probability; a confident member is not flattened towards 0.5.
- :func:`rank_average`: average of each model's rank (its empirical CDF), for
  models whose scores live on different scales.
- :func:`max_ensemble`: the highest score, i.e. "any model says pneumonia"; the
  most sensitive combination.
- :func:`majority_vote`: the share of models that call the case positive.
- :class:`StackingEnsemble`: a logistic regression on the members' logits, fitted
  on validation predictions and applied to test.
- Diversity: :func:`disagreement_matrix`, :func:`error_correlation` (with
  thresholds: correlation of 0/1 wrong-decision indicators), and
  :func:`missed_positives` (which false negatives each model and the ensemble
  still miss, for an UpSet-style plot).
- Judging an ensemble: :func:`member_agreement` (does a rule collapse onto one
  member?) and :func:`fn_difference_ci` (paired bootstrap of the difference in
  missed positives between two models at their own thresholds).

Pure NumPy / pandas / scikit-learn (no torch).

Example
-------
>>> from fnlab.predictions import Predictions
>>> a = Predictions([0, 1, 1], [0.2, 0.9, 0.3], model="cnn")
>>> b = Predictions([0, 1, 1], [0.4, 0.7, 0.6], model="vit")
>>> np.round(mean_ensemble([a, b]).scores, 2).tolist()
[0.3, 0.8, 0.45]
>>> max_ensemble([a, b]).scores.tolist()
[0.4, 0.9, 0.6]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special
from sklearn.linear_model import LogisticRegression

from fnlab.predictions import Predictions, check_threshold

__all__ = [
    "RULES",
    "StackingEnsemble",
    "check_members",
    "combine",
    "disagreement_matrix",
    "error_correlation",
    "fn_difference_ci",
    "logit_mean_ensemble",
    "majority_vote",
    "max_ensemble",
    "mean_ensemble",
    "member_agreement",
    "member_names",
    "missed_positives",
    "rank_average",
    "weighted_ensemble",
]

#: Combination rules understood by :func:`combine`.
RULES = ("mean", "weighted", "rank", "max", "vote", "stacking", "logit")
_EPS = 1e-7


# --------------------------------------------------------------------------- checks
def member_names(members: Sequence[Predictions]) -> list[str]:
    """Display names: each model's name, suffixed ``_2``, ``_3`` ... when repeated.

    >>> member_names([Predictions([0], [0.1], model="cnn")] * 2)
    ['cnn', 'cnn_2']
    """
    seen: dict[str, int] = {}
    out = []
    for p in members:
        base = str(p.model)
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return out


def check_members(members: Sequence[Predictions], min_members: int = 1) -> list[Predictions]:
    """Check that Predictions describe the same cases; raise naming the odd one out.

    Same length, ids and labels, and the same kind of scores (binary or K classes).

    >>> a = Predictions([0, 1], [0.1, 0.9], model="cnn")
    >>> check_members([a, Predictions([1, 1], [0.2, 0.8], model="vit")])
    Traceback (most recent call last):
    ...
    ValueError: ensemble member 'vit' does not match 'cnn': labels (y_true) differ at 1 case(s) (first at index 0)
    """
    if isinstance(members, Predictions):
        raise TypeError(
            "expected a list of Predictions (the ensemble members), got one Predictions"
        )
    members = list(members)
    if len(members) < min_members:
        raise ValueError(f"an ensemble needs at least {min_members} member(s), got {len(members)}")
    for i, p in enumerate(members):
        if not isinstance(p, Predictions):
            raise TypeError(f"ensemble member {i} is a {type(p).__name__}, not fnlab Predictions")
    first = members[0]
    names = member_names(members)
    for name, p in zip(names[1:], members[1:]):
        where = f"ensemble member {name!r} does not match {names[0]!r}"
        if len(p) != len(first):
            raise ValueError(f"{where}: {len(p)} cases vs {len(first)}")
        if p.split != first.split:
            raise ValueError(f"{where}: split {p.split!r} vs {first.split!r}")
        if p.scores.shape[1:] != first.scores.shape[1:]:
            raise ValueError(f"{where}: scores of shape {p.scores.shape} vs {first.scores.shape}")
        if not np.array_equal(np.asarray(p.ids), np.asarray(first.ids)):
            raise ValueError(f"{where}: case ids differ (same cases in the same order needed)")
        diff = np.flatnonzero(p.y_true != first.y_true)
        if len(diff):
            raise ValueError(
                f"{where}: labels (y_true) differ at {len(diff)} case(s) (first at index {diff[0]})"
            )
    return members


def _thresholds(members: Sequence[Predictions], thresholds) -> np.ndarray:
    """One threshold per member from a number, a sequence or a ``{name: t}`` mapping."""
    names = member_names(members)
    if isinstance(thresholds, Mapping):
        missing = [n for n in names if n not in thresholds]
        if missing:
            raise ValueError(
                f"no threshold given for member(s) {missing}; got {sorted(thresholds)}"
            )
        values = [thresholds[n] for n in names]
    elif np.ndim(thresholds) == 0:
        values = [thresholds] * len(members)
    else:
        values = list(thresholds)
        if len(values) != len(members):
            raise ValueError(f"{len(values)} thresholds for {len(members)} ensemble members")
    return np.array([check_threshold(t) for t in values])


def _positive_matrix(members: Sequence[Predictions]) -> np.ndarray:
    """``(N, M)`` positive ("any disease") scores, one column per member."""
    return np.stack([p.positive_scores() for p in members], axis=1)


def _make(members: Sequence[Predictions], scores, name: str, rule: str, **meta) -> Predictions:
    first = members[0]
    scores = np.asarray(scores, dtype=np.float64)
    info = {"rule": rule, "members": member_names(members), **meta}
    if scores.ndim == 1 and not first.is_binary:  # a binary ensemble of multi-class members
        names = (first.class_names[0] if first.class_names else "normal", "any disease")
        return Predictions(first.binary_truth(), scores, first.ids, first.split, name, names, info)
    return Predictions(first.y_true, scores, first.ids, first.split, name, first.class_names, info)


# --------------------------------------------------------------------------- averages
def mean_ensemble(members: Sequence[Predictions], name: str = "mean") -> Predictions:
    """Average of the members' scores (class probabilities too, for multi-class).

    >>> a = Predictions([0, 1], [0.2, 0.6], model="a")
    >>> mean_ensemble([a, a]).scores.tolist()
    [0.2, 0.6]
    """
    members = check_members(members)
    return _make(members, np.mean([p.scores for p in members], axis=0), name, "mean")


def logit_mean_ensemble(members: Sequence[Predictions], name: str = "logit mean") -> Predictions:
    """Average of the members' logits (log-odds), turned back into a probability.

    Averaging log-odds keeps a confident member confident (``mean`` of 0.99 and
    0.5 is 0.745, of their logits 0.909); for binary members it ranks cases like a
    geometric mean of the odds.  Scores are clipped to ``[1e-7, 1 - 1e-7]`` first.
    Multi-class members are collapsed to "any disease" (``1 - P(normal)``).

    >>> a = Predictions([0, 1], [0.5, 0.99], model="a")
    >>> b = Predictions([0, 1], [0.5, 0.5], model="b")
    >>> np.round(logit_mean_ensemble([a, b]).scores, 3).tolist()
    [0.5, 0.909]
    """
    members = check_members(members)
    z = _logit_features(members).mean(axis=1)
    return _make(members, special.expit(z), name, "logit")


def weighted_ensemble(
    members: Sequence[Predictions], weights, name: str = "weighted"
) -> Predictions:
    """Weighted average of scores; weights are non-negative and rescaled to sum to 1.

    >>> a = Predictions([0, 1], [0.0, 1.0], model="a")
    >>> b = Predictions([0, 1], [1.0, 0.0], model="b")
    >>> weighted_ensemble([a, b], [3, 1]).scores.tolist()
    [0.25, 0.75]
    """
    members = check_members(members)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != len(members):
        raise ValueError(f"{len(w)} weights for {len(members)} ensemble members")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    w = w / w.sum()
    scores = np.tensordot(w, np.stack([p.scores for p in members]), axes=1)
    return _make(members, scores, name, "weighted", weights=w.tolist())


def rank_average(
    members: Sequence[Predictions],
    reference: Sequence[Predictions] | None = None,
    name: str = "rank",
) -> Predictions:
    """Average of each member's rank, as its empirical CDF in ``[0, 1]``.

    With ``reference`` (the same models' *validation* predictions) each score is
    placed in that model's validation distribution, so a threshold chosen on
    validation keeps its meaning on test.  Without it the members' own scores are
    the reference (fine for AUC, not for transferring a threshold).  Ties count
    half.

    >>> a = Predictions([0, 1, 1], [0.1, 0.5, 0.9], model="a")
    >>> b = Predictions([0, 1, 1], [10., 30., 20.], model="b")   # another scale
    >>> np.round(rank_average([a, b]).scores, 3).tolist()
    [0.167, 0.667, 0.667]
    """
    members = check_members(members)
    if reference is None:
        reference = members
    else:
        reference = check_members(reference)
        if len(reference) != len(members):
            raise ValueError(f"{len(reference)} reference Predictions for {len(members)} members")
        for ref, p, name_ in zip(reference, members, member_names(members)):
            if ref.model != p.model:
                raise ValueError(
                    f"reference model {ref.model!r} does not match member {name_!r}; "
                    "give the same models in the same order"
                )
    cdfs = []
    for ref, p in zip(reference, members):
        r = np.sort(ref.positive_scores())
        s = p.positive_scores()
        below = np.searchsorted(r, s, side="left")
        upto = np.searchsorted(r, s, side="right")
        cdfs.append((below + upto) / (2.0 * len(r)))
    return _make(members, np.mean(cdfs, axis=0), name, "rank")


def max_ensemble(members: Sequence[Predictions], name: str = "max") -> Predictions:
    """The highest positive score: "any model says pneumonia" (most sensitive rule).

    >>> a = Predictions([0, 1], [0.2, 0.3], model="a")
    >>> b = Predictions([0, 1], [0.1, 0.8], model="b")
    >>> max_ensemble([a, b]).scores.tolist()
    [0.2, 0.8]
    """
    members = check_members(members)
    return _make(members, _positive_matrix(members).max(axis=1), name, "max")


def majority_vote(
    members: Sequence[Predictions], thresholds=0.5, name: str = "vote"
) -> Predictions:
    """Share of members that call the case positive (each at its own threshold).

    A threshold of 0.5 on the result is a majority vote (a tie counts as positive),
    ``1 / n_members`` is "any model", ``1.0`` is "all models".

    >>> a = Predictions([0, 1, 1], [0.2, 0.9, 0.6], model="a")
    >>> b = Predictions([0, 1, 1], [0.6, 0.8, 0.1], model="b")
    >>> c = Predictions([0, 1, 1], [0.1, 0.7, 0.2], model="c")
    >>> np.round(majority_vote([a, b, c], 0.5).scores, 3).tolist()
    [0.333, 1.0, 0.333]
    """
    members = check_members(members)
    t = _thresholds(members, thresholds)
    votes = _positive_matrix(members) >= t
    return _make(members, votes.mean(axis=1), name, "vote", thresholds=t.tolist())


# --------------------------------------------------------------------------- stacking
def _logit_features(members: Sequence[Predictions]) -> np.ndarray:
    return special.logit(np.clip(_positive_matrix(members), _EPS, 1 - _EPS))


class StackingEnsemble:
    """Logistic regression on the members' logits, fitted on validation predictions.

    Fit on validation (never on test), then apply to the test predictions of the
    same models in the same order.  ``weights`` shows how much each member counts.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> good = Predictions(y, np.clip(0.6 * y + 0.4 * rng.random(400), 0, 1), model="good")
    >>> noise = Predictions(y, rng.random(400), model="noise")
    >>> stack = StackingEnsemble().fit([good, noise])
    >>> bool(stack.weights["good"] > stack.weights["noise"])
    True
    >>> stack.predict([good, noise]).model
    'stacking'
    """

    def __init__(self, C: float = 1.0, class_weight=None, name: str = "stacking"):
        self.C = C
        self.class_weight = class_weight
        self.name = name
        self.model_: LogisticRegression | None = None
        self.member_names_: list[str] | None = None

    def fit(self, val_members: Sequence[Predictions]) -> StackingEnsemble:
        """Fit the combiner on the members' validation predictions."""
        members = check_members(val_members)
        y = members[0].binary_truth()
        if y.min() == y.max():
            raise ValueError(
                "StackingEnsemble.fit: validation predictions hold one class only "
                f"({'positive' if y[0] else 'negative'}); stacking needs both"
            )
        self.model_ = LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=1000)
        self.model_.fit(_logit_features(members), y)
        self.member_names_ = member_names(members)
        return self

    @property
    def weights(self) -> pd.Series:
        """Fitted coefficient of each member's logit."""
        if self.model_ is None:
            raise RuntimeError("StackingEnsemble is not fitted; call fit(val_members) first")
        return pd.Series(self.model_.coef_[0], index=self.member_names_, name="weight")

    def predict(self, members: Sequence[Predictions]) -> Predictions:
        """Combined Predictions (positive probability) for the same models' predictions."""
        if self.model_ is None:
            raise RuntimeError("StackingEnsemble is not fitted; call fit(val_members) first")
        members = check_members(members)
        names = member_names(members)
        if names != self.member_names_:
            raise ValueError(
                f"StackingEnsemble was fitted on members {self.member_names_}, got {names}"
            )
        proba = self.model_.predict_proba(_logit_features(members))[:, 1]
        return _make(members, proba, self.name, "stacking", weights=self.weights.tolist())


def combine(members: Sequence[Predictions], rule: str = "mean", **kw) -> Predictions:
    """Ensemble by rule name: mean, weighted (``weights``), rank (``reference``), max,
    vote (``thresholds``), stacking (``val_members``, fitted there; ``C``), logit
    (mean of logits).

    >>> a = Predictions([0, 1], [0.2, 0.6], model="a")
    >>> b = Predictions([0, 1], [0.4, 0.4], model="b")
    >>> combine([a, b], "max").scores.tolist()
    [0.4, 0.6]
    """
    if rule not in RULES:
        raise ValueError(f"unknown ensemble rule {rule!r}; choose one of {', '.join(RULES)}")
    if rule == "mean":
        return mean_ensemble(members, **kw)
    if rule == "weighted":
        if "weights" not in kw:
            raise ValueError("ensemble rule 'weighted' needs weights=[...]")
        return weighted_ensemble(members, **kw)
    if rule == "rank":
        return rank_average(members, **kw)
    if rule == "max":
        return max_ensemble(members, **kw)
    if rule == "logit":
        return logit_mean_ensemble(members, **kw)
    if rule == "vote":
        return majority_vote(members, **kw)
    val_members = kw.pop("val_members", None)
    if val_members is None:
        raise ValueError("ensemble rule 'stacking' needs val_members=[...] to fit on")
    name = kw.pop("name", "stacking")
    return StackingEnsemble(name=name, **kw).fit(val_members).predict(members)


# --------------------------------------------------------------------------- diversity
def disagreement_matrix(members: Sequence[Predictions], thresholds=0.5) -> pd.DataFrame:
    """Pairwise share of cases on which two members' decisions differ.

    >>> a = Predictions([0, 1, 1, 0], [0.1, 0.9, 0.6, 0.2], model="a")
    >>> b = Predictions([0, 1, 1, 0], [0.1, 0.9, 0.4, 0.7], model="b")
    >>> float(disagreement_matrix([a, b]).loc["a", "b"])
    0.5
    """
    members = check_members(members)
    decisions = _positive_matrix(members) >= _thresholds(members, thresholds)
    d = (decisions[:, :, None] != decisions[:, None, :]).mean(axis=0)
    names = member_names(members)
    return pd.DataFrame(d, index=names, columns=names)


def error_correlation(members: Sequence[Predictions], thresholds=None) -> pd.DataFrame:
    """Pearson correlation of the members' errors (low = they fail on different cases).

    Without ``thresholds`` the error is the residual ``y - score``; with them (one
    per member, e.g. each chosen on validation) it is the 0/1 indicator of a wrong
    decision, and the result is the correlation of those indicators (the "phi"
    coefficient).  Prefer thresholds: the residual is dominated by the label, so
    even a chance-level model's residual correlates strongly with a good model's.
    A member without any error gives NaN.

    >>> a = Predictions([0, 1, 1, 0], [0.1, 0.9, 0.6, 0.2], model="a")
    >>> float(error_correlation([a, a]).loc["a", "a_2"])
    1.0
    >>> y = [0, 0, 1, 1, 0, 1]
    >>> b = Predictions(y, [0.7, 0.2, 0.9, 0.3, 0.1, 0.8], model="b")  # wrong on cases 0, 3
    >>> c = Predictions(y, [0.6, 0.1, 0.8, 0.4, 0.2, 0.3], model="c")  # wrong on cases 0, 3, 5
    >>> round(float(error_correlation([b, c], thresholds=[0.5, 0.5]).loc["b", "c"]), 3)
    0.707
    """
    members = check_members(members)
    y = members[0].binary_truth()[:, None]
    scores = _positive_matrix(members)
    if thresholds is None:
        errors = y - scores
    else:
        errors = ((scores >= _thresholds(members, thresholds)) != y).astype(np.float64)
    return pd.DataFrame(errors, columns=member_names(members)).corr()


def missed_positives(
    members: Sequence[Predictions],
    thresholds=0.5,
    ensemble: Predictions | None = None,
    ensemble_threshold: float | None = None,
) -> pd.DataFrame:
    """Which positive cases each member (and the ensemble) misses.

    Rows: positive cases missed by at least one model, indexed by id; columns: one
    boolean per member (and the ensemble), True = missed.  Sum a column for that
    model's false negatives; ``frame.value_counts()`` gives the UpSet intersections.

    >>> a = Predictions([1, 1, 1, 0], [0.9, 0.3, 0.2, 0.6], model="a")
    >>> b = Predictions([1, 1, 1, 0], [0.8, 0.7, 0.1, 0.1], model="b")
    >>> m = missed_positives([a, b], 0.5)
    >>> m.index.tolist(), m["a"].tolist(), m["b"].tolist()
    ([1, 2], [True, True], [False, True])
    """
    members = check_members(members)
    t = _thresholds(members, thresholds)
    missed = _positive_matrix(members) < t
    names = member_names(members)
    frame = pd.DataFrame(missed, columns=names)
    if ensemble is not None:
        if ensemble_threshold is None:
            raise ValueError("missed_positives: give ensemble_threshold with the ensemble")
        first = members[0]
        if (
            not isinstance(ensemble, Predictions)
            or len(ensemble) != len(first)
            or not (
                np.array_equal(ensemble.binary_truth(), first.binary_truth())
                and np.array_equal(np.asarray(ensemble.ids), np.asarray(first.ids))
            )
        ):
            raise ValueError(
                f"missed_positives: ensemble {getattr(ensemble, 'model', ensemble)!r} does not "
                f"describe the same cases (ids and labels) as {names[0]!r}"
            )
        col = ensemble.model if ensemble.model not in names else f"{ensemble.model} (ensemble)"
        frame[col] = ensemble.positive_scores() < check_threshold(ensemble_threshold)
    frame.index = pd.Index(np.asarray(members[0].ids), name="id")
    positive = members[0].binary_truth() == 1
    return frame[positive & frame.any(axis=1).to_numpy()]


# --------------------------------------------------------------------------- judging
def member_agreement(
    ensemble: Predictions,
    members: Sequence[Predictions],
    ensemble_threshold: float,
    thresholds=0.5,
) -> pd.DataFrame:
    """How closely an ensemble follows each member: has the rule collapsed onto one?

    One row per member: ``decision agreement`` (share of cases where the ensemble at
    ``ensemble_threshold`` and the member at its own threshold decide alike),
    ``rank correlation`` (Spearman correlation of their scores) and ``same FN``
    (whether both miss exactly the same positives).  A rule whose agreement with a
    member is ~1 is that member in disguise (for example ``max`` when one member's
    scores sit above the others').

    >>> a = Predictions([0, 1, 1, 0], [0.1, 0.9, 0.6, 0.2], model="a")
    >>> b = Predictions([0, 1, 1, 0], [0.05, 0.4, 0.3, 0.1], model="b")
    >>> agree = member_agreement(max_ensemble([a, b]), [a, b], 0.5, 0.5)
    >>> agree["decision agreement"].tolist()
    [1.0, 0.5]
    >>> bool(agree.loc["a", "same FN"])
    True
    """
    members = check_members(members)
    check_members([members[0], ensemble])
    t = _thresholds(members, thresholds)
    s_ens = ensemble.positive_scores()
    dec_ens = s_ens >= check_threshold(ensemble_threshold)
    positive = members[0].binary_truth() == 1
    rows = {}
    for name, p, ti in zip(member_names(members), members, t):
        s = p.positive_scores()
        dec = s >= ti
        if np.ptp(s) == 0 or np.ptp(s_ens) == 0:
            rho = np.nan
        else:
            rho = float(pd.Series(s).corr(pd.Series(s_ens), method="spearman"))
        rows[name] = {
            "decision agreement": float((dec == dec_ens).mean()),
            "rank correlation": rho,
            "same FN": bool(np.array_equal(~dec & positive, ~dec_ens & positive)),
        }
    return pd.DataFrame(rows).T.astype(
        {"decision agreement": float, "rank correlation": float, "same FN": bool}
    )


def fn_difference_ci(
    a: Predictions,
    b: Predictions,
    threshold_a: float,
    threshold_b: float,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Paired bootstrap of ``FN(a) - FN(b)``: missed positives of two models, same cases.

    Each model keeps its own threshold (chosen beforehand, e.g. on validation for
    the same specificity).  Cases are resampled with replacement, the same draw for
    both models (``scipy.stats.bootstrap``, percentile interval), so the interval
    reflects which cases happened to be in the test set.  Returns a dict:
    ``difference`` (on the whole set), ``fn_a``, ``fn_b``, ``ci_low``, ``ci_high``,
    ``share_below_zero`` (share of resamples where ``a`` misses fewer),
    ``n_resamples`` and ``confidence``.

    >>> y = np.r_[np.ones(50), np.zeros(50)]
    >>> a = Predictions(y, np.r_[np.full(45, 0.9), np.full(5, 0.1), np.full(50, 0.2)], model="a")
    >>> b = Predictions(y, np.r_[np.full(40, 0.9), np.full(10, 0.1), np.full(50, 0.2)], model="b")
    >>> res = fn_difference_ci(a, b, 0.5, 0.5, n_resamples=200)
    >>> res["difference"], res["ci_high"] < 0
    (-5, True)
    """
    from scipy import stats

    check_members([a, b])
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if int(n_resamples) < 2:
        raise ValueError(f"n_resamples must be at least 2, got {n_resamples!r}")
    positive = a.binary_truth() == 1
    miss_a = positive & (a.positive_scores() < check_threshold(threshold_a))
    miss_b = positive & (b.positive_scores() < check_threshold(threshold_b))
    d = miss_a.astype(np.float64) - miss_b.astype(np.float64)
    out = {
        "difference": int(d.sum()),
        "fn_a": int(miss_a.sum()),
        "fn_b": int(miss_b.sum()),
        "n_resamples": int(n_resamples),
        "confidence": float(confidence),
    }
    if not d.any():  # identical misses: every resample gives 0
        return {**out, "ci_low": 0.0, "ci_high": 0.0, "share_below_zero": 0.0}
    res = stats.bootstrap(
        (d,),
        np.sum,
        vectorized=True,
        n_resamples=int(n_resamples),
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    dist = np.asarray(res.bootstrap_distribution)
    return {
        **out,
        "ci_low": float(res.confidence_interval.low),
        "ci_high": float(res.confidence_interval.high),
        "share_below_zero": float((dist < 0).mean()),
    }
