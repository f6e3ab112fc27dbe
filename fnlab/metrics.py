"""Metrics on :class:`~fnlab.predictions.Predictions`: what a model got right and what it missed.

Pure NumPy / scikit-learn / SciPy (no torch), so every function here is fast and
testable without a model.  A case is called positive (pneumonia) when its positive
score is ``>= threshold``, exactly as :meth:`Predictions.predict` does.  For
multi-class Predictions the binary functions work on the "any disease vs normal"
collapse (label != 0, score = 1 - P(normal)), which is what defines a false negative
in the 4-class case.

Ratios that are undefined (0/0, e.g. sensitivity on a set without positives) are
NaN, never an error; :func:`binary_report` turns them into ``None`` for JSON.

Example
-------
>>> from fnlab.predictions import Predictions
>>> p = Predictions(y_true=[0, 0, 1, 1], scores=[0.1, 0.6, 0.4, 0.9])
>>> m = binary_metrics(p, threshold=0.5)
>>> m["tp"], m["fn"], m["sensitivity"], m["specificity"], m["auc"]
(1, 1, 0.5, 0.5, 0.75)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from fnlab.predictions import Predictions, check_threshold

__all__ = [
    "COUNT_METRICS",
    "any_disease_collapse",
    "binary_metrics",
    "binary_report",
    "bootstrap_ci",
    "confusion_counts",
    "false_alarms_per_1000",
    "high_sensitivity_auc",
    "metrics_at_thresholds",
    "missed_per_1000",
    "multiclass_report",
    "net_benefit",
    "useful_range",
    "npv_at_prevalence",
    "ppv_at_prevalence",
    "to_jsonable",
]

#: Metrics computed from the four confusion counts (vectorised everywhere).
COUNT_METRICS = (
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "accuracy",
    "balanced_accuracy",
    "fnr",
    "fpr",
    "prevalence",
)
#: Metric names accepted by :func:`bootstrap_ci` (besides a callable).
BOOTSTRAP_METRICS = COUNT_METRICS + ("auc", "pr_auc")


# --------------------------------------------------------------------------- helpers
def _binary_arrays(preds: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """``(y, s)``: binary truth (any disease = 1) and positive scores of ``preds``."""
    if not isinstance(preds, Predictions):
        raise TypeError(f"expected fnlab Predictions, got {type(preds).__name__}")
    return preds.binary_truth(), preds.positive_scores()


def _div(num, den):
    """Element-wise ``num / den`` with NaN where ``den == 0`` (no warnings)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


def _rates(tp, fp, tn, fn) -> dict[str, np.ndarray]:
    """All count metrics from (arrays of) confusion counts; 0/0 gives NaN."""
    tp, fp, tn, fn = (np.asarray(a, dtype=np.float64) for a in (tp, fp, tn, fn))
    pos, neg = tp + fn, tn + fp
    sens = _div(tp, pos)
    spec = _div(tn, neg)
    return {
        "sensitivity": sens,
        "specificity": spec,
        "ppv": _div(tp, tp + fp),
        "npv": _div(tn, tn + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "accuracy": _div(tp + tn, pos + neg),
        "balanced_accuracy": (sens + spec) / 2.0,
        "fnr": _div(fn, pos),
        "fpr": _div(fp, neg),
        "prevalence": _div(pos, pos + neg),
    }


def _counts_at(y: np.ndarray, s: np.ndarray, thresholds: np.ndarray):
    """Vectorised confusion counts for many thresholds (positive when ``s >= t``)."""
    pos = np.sort(s[y == 1])
    neg = np.sort(s[y == 0])
    tp = len(pos) - np.searchsorted(pos, thresholds, side="left")
    fp = len(neg) - np.searchsorted(neg, thresholds, side="left")
    return tp, fp, len(neg) - fp, len(pos) - tp


def _safe_auc(y: np.ndarray, s: np.ndarray, max_fpr: float | None = None) -> float:
    return float(roc_auc_score(y, s, max_fpr=max_fpr)) if 0 < y.sum() < len(y) else math.nan


def _safe_pr_auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(average_precision_score(y, s)) if y.sum() > 0 else math.nan


def _check_unit(name: str, value, *, open_low: bool = False) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    low_ok = arr > 0 if open_low else arr >= 0
    if arr.size == 0 or np.any(np.isnan(arr)) or not np.all(low_ok & (arr <= 1)):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return arr


def _scalar_or_array(arr: np.ndarray):
    return float(arr) if arr.ndim == 0 else arr


def to_jsonable(value):
    """Python floats/ints/lists/dicts only, NaN and inf -> ``None`` (for ``metrics.json``).

    >>> to_jsonable({"a": np.float64("nan"), "b": np.int64(3), "c": np.array([0.5, 1.0])})
    {'a': None, 'b': 3, 'c': [0.5, 1.0]}
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# --------------------------------------------------------------------------- binary
def confusion_counts(y_true, y_pred) -> dict[str, int]:
    """Confusion counts of binary decisions (positive class = 1).

    >>> confusion_counts([0, 0, 1, 1, 1], [0, 1, 1, 0, 1])
    {'tp': 2, 'fp': 1, 'tn': 1, 'fn': 1}
    """
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if len(y_true) != len(y_pred):
        raise ValueError(f"confusion_counts: {len(y_true)} labels but {len(y_pred)} decisions")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        bad = ~np.isin(arr, (0, 1))
        if bad.any():
            raise ValueError(
                f"confusion_counts: {name} must hold only 0 and 1, found {arr[bad][0]!r}"
            )
    if len(y_true) == 0:
        return {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


def binary_metrics(preds: Predictions, threshold: float = 0.5) -> dict:
    """Counts, rates and AUCs of ``preds`` at one threshold (positive when ``score >= t``).

    Keys: n, threshold, tp, fp, tn, fn, sensitivity, specificity, ppv, npv, f1,
    accuracy, balanced_accuracy, fnr, fpr, prevalence, auc, pr_auc.  Undefined ratios
    are NaN (e.g. sensitivity without positives, AUC with one class only).

    >>> p = Predictions([0, 1, 1, 1], [0.2, 0.3, 0.7, 0.9])
    >>> m = binary_metrics(p, 0.5)
    >>> m["fn"], round(m["sensitivity"], 3), m["ppv"]
    (1, 0.667, 1.0)
    """
    t = check_threshold(threshold)
    y, s = _binary_arrays(preds)
    counts = confusion_counts(y, (s >= t).astype(np.int64))
    rates = _rates(counts["tp"], counts["fp"], counts["tn"], counts["fn"])
    out: dict = {"n": int(len(y)), "threshold": t, **counts}
    out.update({k: float(v) for k, v in rates.items()})
    out["auc"] = _safe_auc(y, s)
    out["pr_auc"] = _safe_pr_auc(y, s)
    return out


def high_sensitivity_auc(preds: Predictions, min_sensitivity: float = 0.9) -> float:
    """Partial AUC over the screening end of the ROC curve: the operating points that
    catch at least ``min_sensitivity`` of the positives, standardised (McClish) so that
    0.5 is chance and 1.0 is perfect.

    It averages the specificity a model keeps while missing at most
    ``1 - min_sensitivity`` of the pneumonias, so it ranks models by the false alarms
    they pay for high recall, with no threshold to choose. Computed as scikit-learn's
    ``roc_auc_score(..., max_fpr=1 - min_sensitivity)`` with the roles of the classes
    swapped (the false-negative rate takes the place of the false-positive rate). NaN
    when ``preds`` holds one class only.

    >>> p = Predictions([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    >>> round(high_sensitivity_auc(p, 0.9), 3), round(binary_metrics(p)["auc"], 3)
    (0.737, 0.75)
    >>> high_sensitivity_auc(Predictions([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]))
    1.0
    """
    min_sensitivity = float(min_sensitivity)
    if not 0.0 <= min_sensitivity < 1.0:
        raise ValueError(f"min_sensitivity must be in [0, 1), got {min_sensitivity}")
    y, s = _binary_arrays(preds)
    return _safe_auc(1 - y, -s, max_fpr=(1.0 - min_sensitivity) if min_sensitivity else None)


def metrics_at_thresholds(preds: Predictions, thresholds) -> pd.DataFrame:
    """One row per threshold: counts and rates (vectorised; widgets and sweeps use it).

    >>> p = Predictions([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    >>> metrics_at_thresholds(p, [0.3, 0.5])[["threshold", "tp", "fp", "sensitivity"]]
       threshold  tp  fp  sensitivity
    0        0.3   2   1          1.0
    1        0.5   1   1          0.5
    """
    thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    if thresholds.ndim != 1:
        raise ValueError(f"thresholds must be a 1-D sequence, got shape {thresholds.shape}")
    bad = ~((thresholds >= 0) & (thresholds <= 1))
    if bad.any():
        raise ValueError(f"thresholds must be in [0, 1], got {thresholds[bad][0]!r}")
    y, s = _binary_arrays(preds)
    tp, fp, tn, fn = _counts_at(y, s, thresholds)
    frame = pd.DataFrame({"threshold": thresholds, "tp": tp, "fp": fp, "tn": tn, "fn": fn})
    for name, values in _rates(tp, fp, tn, fn).items():
        frame[name] = values
    frame["youden_j"] = frame["sensitivity"] + frame["specificity"] - 1.0
    frame["predicted_positive_rate"] = _div(tp + fp, len(y))
    return frame


# --------------------------------------------------------------------------- bootstrap
def rank_auc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Vectorised ROC AUC (Mann-Whitney U with mid-ranks) along the last axis."""
    ranks = stats.rankdata(s, axis=-1)
    n_pos = y.sum(axis=-1).astype(np.float64)
    n_neg = y.shape[-1] - n_pos
    u = (ranks * y).sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
    return _div(u, n_pos * n_neg)


def _vectorised_statistic(metric: str, threshold: float):
    def statistic(y, s, axis=-1):
        y = np.moveaxis(np.asarray(y), axis, -1)
        s = np.moveaxis(np.asarray(s), axis, -1)
        if metric == "auc":
            return rank_auc(y, s)
        pred = s >= threshold
        tp = (pred & (y == 1)).sum(axis=-1)
        fp = (pred & (y == 0)).sum(axis=-1)
        fn = (~pred & (y == 1)).sum(axis=-1)
        tn = (~pred & (y == 0)).sum(axis=-1)
        return _rates(tp, fp, tn, fn)[metric]

    return statistic


def bootstrap_ci(
    preds: Predictions,
    metric: str | Callable = "auc",
    threshold: float = 0.5,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float]:
    """Bootstrap confidence interval of a metric (``scipy.stats.bootstrap``, paired).

    Cases are resampled with replacement (labels and scores together).  ``metric``
    is one of :data:`BOOTSTRAP_METRICS` or a callable ``f(y_true, scores) -> float``
    on the binary collapse.  Resamples where the metric is undefined (e.g. no
    positive drawn, for AUC) are left out; when the metric is undefined on the
    whole set the interval is ``(nan, nan)``.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> p = Predictions(y, np.clip(0.5 * y + rng.random(300) * 0.6, 0, 1))
    >>> low, high = bootstrap_ci(p, "auc", n_resamples=200)
    >>> low < binary_metrics(p)["auc"] < high
    True
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if int(n_resamples) < 2:
        raise ValueError(f"n_resamples must be at least 2, got {n_resamples!r}")
    methods = ("percentile", "basic", "BCa")
    if method not in methods:
        raise ValueError(f"unknown bootstrap method {method!r}; choose one of {methods}")
    threshold = check_threshold(threshold)
    y, s = _binary_arrays(preds)

    if callable(metric):
        user = metric

        def statistic(yy, ss):
            try:
                return float(user(yy, ss))
            except ValueError:  # e.g. sklearn refusing a one-class resample
                return math.nan

        vectorised = False
    elif metric == "pr_auc":
        statistic, vectorised = _safe_pr_auc, False
    elif metric in BOOTSTRAP_METRICS:
        statistic, vectorised = _vectorised_statistic(metric, threshold), True
    else:
        raise ValueError(
            f"unknown metric {metric!r}; choose one of {BOOTSTRAP_METRICS} or pass a callable"
        )

    point = float(statistic(y, s)) if not vectorised else float(statistic(y, s, axis=-1))
    if len(y) < 2 or not math.isfinite(point):
        return (math.nan, math.nan)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on NaN / degenerate distributions
        res = stats.bootstrap(
            (y, s),
            statistic,
            paired=True,
            vectorized=vectorised,
            n_resamples=int(n_resamples),
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):
        dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
        finite = dist[np.isfinite(dist)]
        if len(finite) == 0:
            return (math.nan, math.nan)
        if method != "percentile" or len(finite) < len(dist):
            warnings.warn(
                f"bootstrap_ci({metric if isinstance(metric, str) else 'callable'}): "
                f"{len(dist) - len(finite)} of {len(dist)} resamples had an undefined value "
                "and were left out; using the percentile interval of the rest",
                RuntimeWarning,
                stacklevel=2,
            )
        tail = (1 - confidence) / 2 * 100
        low, high = (float(v) for v in np.percentile(finite, [tail, 100 - tail]))
    return (low, high)


def binary_report(
    preds: Predictions,
    threshold: float = 0.5,
    threshold_rule: str = "fixed",
    ci: bool = True,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """JSON-safe summary of one split, the schema of ``metrics.json`` (NaN -> ``None``).

    Keys: n, auc, auc_ci [low, high], sensitivity, sensitivity_ci, specificity,
    specificity_ci, ppv, npv, f1, accuracy, balanced_accuracy, pr_auc, prevalence,
    tp, fp, tn, fn, threshold, threshold_rule.  With ``ci=False`` the ``*_ci``
    entries are ``[None, None]``.

    >>> r = binary_report(Predictions([0, 1, 1, 0], [0.1, 0.8, 0.6, 0.3]), 0.5, ci=False)
    >>> r["sensitivity"], r["auc"], r["auc_ci"], r["threshold_rule"]
    (1.0, 1.0, [None, None], 'fixed')
    """
    m = binary_metrics(preds, threshold)
    report = {
        "n": m["n"],
        "auc": m["auc"],
        "auc_ci": [math.nan, math.nan],
        "sensitivity": m["sensitivity"],
        "sensitivity_ci": [math.nan, math.nan],
        "specificity": m["specificity"],
        "specificity_ci": [math.nan, math.nan],
        "ppv": m["ppv"],
        "npv": m["npv"],
        "f1": m["f1"],
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "pr_auc": m["pr_auc"],
        "prevalence": m["prevalence"],
        "tp": m["tp"],
        "fp": m["fp"],
        "tn": m["tn"],
        "fn": m["fn"],
        "threshold": m["threshold"],
        "threshold_rule": str(threshold_rule),
    }
    if ci:
        for name in ("auc", "sensitivity", "specificity"):
            report[f"{name}_ci"] = list(
                bootstrap_ci(preds, name, threshold, n_resamples=n_resamples, seed=seed)
            )
    return to_jsonable(report)


# --------------------------------------------------------------------------- prevalence
def missed_per_1000(sensitivity, prevalence):
    """Missed cases (false negatives) per 1,000 people screened: ``1000 * prev * (1 - sens)``.

    >>> missed_per_1000(0.95, 0.10)
    5.0
    """
    sens = _check_unit("sensitivity", sensitivity)
    prev = _check_unit("prevalence", prevalence)
    return _scalar_or_array(np.round(1000.0 * prev * (1.0 - sens), 10))


def false_alarms_per_1000(specificity, prevalence):
    """False alarms (false positives) per 1,000 screened: ``1000 * (1 - prev) * (1 - spec)``.

    >>> false_alarms_per_1000(0.90, 0.10)
    90.0
    """
    spec = _check_unit("specificity", specificity)
    prev = _check_unit("prevalence", prevalence)
    return _scalar_or_array(np.round(1000.0 * (1.0 - prev) * (1.0 - spec), 10))


def ppv_at_prevalence(sensitivity, specificity, prevalence):
    """PPV by Bayes' rule at a given prevalence: ``sens*p / (sens*p + (1-spec)*(1-p))``.

    The same model has a much lower PPV where the disease is rare:

    >>> round(ppv_at_prevalence(0.95, 0.90, 0.40), 3), round(ppv_at_prevalence(0.95, 0.90, 0.02), 3)
    (0.864, 0.162)
    """
    sens = _check_unit("sensitivity", sensitivity)
    spec = _check_unit("specificity", specificity)
    prev = _check_unit("prevalence", prevalence)
    return _scalar_or_array(_div(sens * prev, sens * prev + (1 - spec) * (1 - prev)))


def npv_at_prevalence(sensitivity, specificity, prevalence):
    """NPV by Bayes' rule: ``spec*(1-p) / (spec*(1-p) + (1-sens)*p)``.

    >>> round(npv_at_prevalence(0.95, 0.90, 0.40), 3)
    0.964
    """
    sens = _check_unit("sensitivity", sensitivity)
    spec = _check_unit("specificity", specificity)
    prev = _check_unit("prevalence", prevalence)
    return _scalar_or_array(_div(spec * (1 - prev), spec * (1 - prev) + (1 - sens) * prev))


# --------------------------------------------------------------------------- multi-class
def any_disease_collapse(preds: Predictions) -> Predictions:
    """Binary "any disease vs normal" view: y = label != 0, score = 1 - P(normal).

    In the 4-class case a false negative is an ill patient called *normal*;
    confusing two diseases is not a false negative.

    >>> p = Predictions([0, 2, 1], [[0.7, 0.2, 0.1], [0.5, 0.1, 0.4], [0.1, 0.8, 0.1]],
    ...                 class_names=("normal", "bacterial", "viral"))
    >>> c = any_disease_collapse(p)
    >>> c.y_true.tolist(), np.round(c.scores, 2).tolist(), c.class_names
    ([0, 1, 1], [0.3, 0.5, 0.9], ('normal', 'any disease'))
    """
    if not isinstance(preds, Predictions):
        raise TypeError(f"expected fnlab Predictions, got {type(preds).__name__}")
    names = tuple(preds.class_names)
    if not preds.is_binary:
        names = (names[0] if names else "normal", "any disease")
    meta = dict(preds.meta)
    return Predictions(
        preds.binary_truth(),
        preds.positive_scores().copy(),
        preds.ids,
        preds.split,
        preds.model,
        names,
        meta,
    )


def multiclass_report(preds: Predictions) -> pd.DataFrame:
    """Per-class one-vs-rest sensitivity, specificity, PPV, F1 and AUC, plus a macro row.

    Decisions are the arg-max class.  Binary Predictions are treated as two classes
    (scores ``[1 - p, p]``).

    >>> p = Predictions([0, 1, 2, 2], [[.8, .1, .1], [.2, .7, .1], [.1, .2, .7], [.3, .4, .3]],
    ...                 class_names=("normal", "bacterial", "viral"))
    >>> r = multiclass_report(p)
    >>> r.index.tolist()
    ['normal', 'bacterial', 'viral', 'macro']
    >>> float(r.loc["viral", "sensitivity"]), round(float(r.loc["macro", "sensitivity"]), 3)
    (0.5, 0.833)
    """
    if not isinstance(preds, Predictions):
        raise TypeError(f"expected fnlab Predictions, got {type(preds).__name__}")
    scores = preds.scores if not preds.is_binary else np.stack([1 - preds.scores, preds.scores], 1)
    k = scores.shape[1]
    names = list(preds.class_names)
    if len(names) != k:
        names = [f"class_{i}" for i in range(k)]
    y = preds.y_true
    bad = (y < 0) | (y >= k)
    if bad.any():
        raise ValueError(
            f"Predictions({preds.model!r}): label {y[bad][0]} outside 0..{k - 1} for {k} classes"
        )
    pred = scores.argmax(axis=1)
    rows = []
    for c in range(k):
        yt, yp = (y == c), (pred == c)
        tp, fp = int((yt & yp).sum()), int((~yt & yp).sum())
        fn, tn = int((yt & ~yp).sum()), int((~yt & ~yp).sum())
        r = _rates(tp, fp, tn, fn)
        rows.append(
            {
                "class": names[c],
                "support": int(yt.sum()),
                "sensitivity": float(r["sensitivity"]),
                "specificity": float(r["specificity"]),
                "ppv": float(r["ppv"]),
                "f1": float(r["f1"]),
                "auc": _safe_auc(yt.astype(int), scores[:, c]),
            }
        )
    frame = pd.DataFrame(rows).set_index("class")
    macro = frame.drop(columns="support").mean(axis=0, skipna=True)
    frame.loc["macro"] = {"support": int(len(y)), **macro.to_dict()}
    frame["support"] = frame["support"].astype(int)
    return frame


# --------------------------------------------------------------------------- decision curve
def net_benefit(preds: Predictions, thresholds, prevalence: float | None = None) -> pd.DataFrame:
    """Decision-curve analysis (Vickers & Elkin 2006): net benefit per threshold probability.

    ``NB = TP/n - FP/n * pt / (1 - pt)`` for the model (positive when ``score >= pt``),
    for treating everyone (``prev - (1 - prev) * pt / (1 - pt)``) and for treating
    no one (0).  ``pt`` must lie in ``[0, 1)``.

    ``prevalence`` is the share of pneumonia where the model will be used. When
    given, the test positives and negatives are reweighted to it (the test set may
    be balanced, the clinic is not): ``NB = sens * prev - (1 - spec) * (1 - prev) *
    pt / (1 - pt)``, with ``sens`` and ``spec`` measured at ``score >= pt``. The
    scores themselves should be probabilities *for that prevalence* (see
    :func:`fnlab.calibration.adjust_prevalence`). Default: the test set's own
    prevalence, which gives the ``TP/n - FP/n`` form above.

    >>> p = Predictions([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    >>> net_benefit(p, [0.5]).round(3).to_dict("records")
    [{'threshold': 0.5, 'model': 0.0, 'treat_all': 0.0, 'treat_none': 0.0}]
    >>> net_benefit(p, [0.5], prevalence=0.1).round(3).to_dict("records")  # 0.5*0.1 - 0.5*0.9
    [{'threshold': 0.5, 'model': -0.4, 'treat_all': -0.8, 'treat_none': 0.0}]
    """
    pt = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    bad = ~((pt >= 0) & (pt < 1))
    if bad.any():
        raise ValueError(
            f"net_benefit: threshold probabilities must be in [0, 1), got {pt[bad][0]!r}"
        )
    y, s = _binary_arrays(preds)
    n = len(y)
    if n == 0:
        raise ValueError(f"net_benefit: Predictions({preds.model!r}, {preds.split!r}) are empty")
    tp, fp, _, _ = _counts_at(y, s, pt)
    odds = pt / (1 - pt)
    if prevalence is None:
        prev = y.mean()
        model = tp / n - fp / n * odds
    else:
        prev = float(_check_unit("prevalence", prevalence))
        n_pos, n_neg = int(y.sum()), int(n - y.sum())
        if n_pos == 0 or n_neg == 0:
            raise ValueError("net_benefit: reweighting to a prevalence needs both pneumonias "
                             f"and normals; Predictions({preds.model!r}, {preds.split!r}) have "
                             f"{n_pos} and {n_neg}")
        model = tp / n_pos * prev - fp / n_neg * (1 - prev) * odds
    return pd.DataFrame(
        {
            "threshold": pt,
            "model": model,
            "treat_all": prev - (1 - prev) * odds,
            "treat_none": np.zeros_like(pt),
        }
    )


def useful_range(dca: pd.DataFrame, margin: float = 1e-9) -> tuple[float, float]:
    """The longest run of consecutive threshold probabilities where the model is useful.

    ``dca`` is a :func:`net_benefit` table (threshold probabilities in increasing
    order); useful means the model's net benefit beats both treating everyone and
    treating no one by more than ``margin``. Returns ``(low, high)``, the first and
    last threshold probability of that run, or ``(nan, nan)`` when the model is never
    useful. ``high - low`` is the width of the range.

    >>> dca = pd.DataFrame({"threshold": [0.1, 0.2, 0.3, 0.4, 0.5],
    ...                     "model": [0.1, 0.3, 0.3, 0.0, 0.3],
    ...                     "treat_all": [0.2, 0.1, 0.0, -0.1, -0.2], "treat_none": 0.0})
    >>> useful_range(dca)
    (0.2, 0.3)
    """
    pt = dca["threshold"].to_numpy(dtype=np.float64)
    if np.any(np.diff(pt) <= 0):
        raise ValueError("useful_range: threshold probabilities must be increasing")
    best = np.maximum(dca["treat_all"].to_numpy(dtype=np.float64),
                      dca["treat_none"].to_numpy(dtype=np.float64))
    wins = dca["model"].to_numpy(dtype=np.float64) > best + margin
    longest, start, span = 0, None, (math.nan, math.nan)
    for i, w in enumerate(np.r_[wins, False]):
        if w and start is None:
            start = i
        elif not w and start is not None:
            if i - start > longest:
                longest, span = i - start, (float(pt[start]), float(pt[i - 1]))
            start = None
    return span
