"""Decision thresholds: chosen on validation predictions, applied to test.

A model outputs a score; a *threshold* turns it into "pneumonia" (``score >= t``)
or "normal".  Where that line sits decides how many pneumonias are missed.  Every
rule here looks only at **validation** predictions; the chosen threshold is then
applied unchanged to test predictions (choosing it on test would be peeking).

Rules
-----
- ``fixed``: a given threshold (0.5 by default).
- ``recall``: the *largest* threshold whose validation recall (sensitivity) reaches
  a target, so that specificity is as high as it can be at that recall.
- ``specificity``: the *smallest* threshold whose validation specificity reaches a
  target (the most sensitive rule that keeps false alarms at that level).
- ``youden``: maximises Youden's J = sensitivity + specificity - 1.
- ``cost``: minimises the expected cost ``cost_ratio * FN + FP`` (``cost_ratio`` =
  cost of a missed pneumonia / cost of a false alarm), optionally re-weighted to a
  deployment prevalence.
- ``conformal``: conformal risk control of the false-negative rate (Angelopoulos
  et al., "Conformal Risk Control", 2022): for exchangeable data the *expected*
  test FNR is at most ``alpha``.  ``method="crc"`` is the closed form below,
  ``method="mapie"`` the same rule computed by MAPIE's
  ``MultiLabelClassificationController(risk="recall", method="crc")`` and
  ``method="ltt"`` MAPIE's ``BinaryClassificationController`` (Learn Then Test:
  the FNR is at most ``alpha`` *with probability* ``confidence``; stricter).

Pure NumPy / scikit-learn / MAPIE (no torch).

Example
-------
>>> from fnlab.predictions import Predictions
>>> val = Predictions([0, 0, 0, 1, 1, 1, 1], [0.1, 0.3, 0.5, 0.4, 0.6, 0.7, 0.9], split="val")
>>> threshold_for_recall(val, 0.75)       # 3 of 4 positives have score >= 0.6
0.6
>>> choose_threshold(val, "recall", 0.75).rule
'recall'
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve
from sklearn.model_selection import StratifiedShuffleSplit

from fnlab.metrics import binary_metrics, metrics_at_thresholds
from fnlab.predictions import Predictions, check_threshold

__all__ = [
    "CONFORMAL_METHODS",
    "RULES",
    "ThresholdChoice",
    "check_conformal_guarantee",
    "choose_threshold",
    "conformal_fnr_threshold",
    "min_cost_threshold",
    "threshold_for_recall",
    "threshold_for_specificity",
    "youden_threshold",
]

#: Threshold rules understood by :func:`choose_threshold`.
RULES = ("fixed", "recall", "specificity", "youden", "cost", "conformal")
#: Methods of :func:`conformal_fnr_threshold`.
CONFORMAL_METHODS = ("crc", "mapie", "ltt")
_EPS = 1e-9  # guards ceil/floor of products such as 0.9 * 10 = 9.000000000000002


# --------------------------------------------------------------------------- checks
def _val_arrays(
    val: Predictions, who: str, need_positives: bool = True, need_negatives: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(val, Predictions):
        raise TypeError(f"{who}: expected fnlab Predictions, got {type(val).__name__}")
    name = f"Predictions({val.model!r}, split={val.split!r})"
    if len(val) == 0:
        raise ValueError(f"{who}: validation {name} are empty; a threshold needs cases")
    y, s = val.binary_truth(), val.positive_scores()
    if need_positives and not y.any():
        raise ValueError(
            f"{who}: validation {name} hold no positive (pneumonia) case; "
            "recall and false-negative rates are undefined"
        )
    if need_negatives and y.all():
        raise ValueError(
            f"{who}: validation {name} hold no negative (normal) case; specificity is undefined"
        )
    if s.min() < 0 or s.max() > 1:
        raise ValueError(
            f"{who}: {name} scores must be probabilities in [0, 1], "
            f"found values in [{s.min():.3g}, {s.max():.3g}]"
        )
    return y, s


def _check_level(name: str, value, low_open: bool = True, high_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    low_ok = v > 0 if low_open else v >= 0
    high_ok = v < 1 if high_open else v <= 1
    if math.isnan(v) or not (low_ok and high_ok):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


# --------------------------------------------------------------------------- rules
def threshold_for_recall(val: Predictions, target_recall: float) -> float:
    """Largest threshold whose validation recall is ``>= target_recall``.

    It is the score of the ``ceil(target * n_pos)``-th highest positive: any higher
    threshold would lose that positive.  Being the largest such threshold, it keeps
    specificity as high as possible at the target recall.

    >>> val = Predictions([1, 1, 1, 1, 0], [0.9, 0.8, 0.3, 0.2, 0.25])
    >>> threshold_for_recall(val, 0.5), threshold_for_recall(val, 1.0)
    (0.8, 0.2)
    """
    target = _check_level("target_recall", target_recall)
    y, s = _val_arrays(val, "threshold_for_recall")
    pos = np.sort(s[y == 1])[::-1]
    k = max(1, math.ceil(target * len(pos) - _EPS))
    return float(pos[k - 1])


def threshold_for_specificity(val: Predictions, target_specificity: float) -> float:
    """Smallest threshold whose validation specificity is ``>= target_specificity``.

    The most sensitive threshold that still keeps false alarms at the target level;
    it is a validation score (the first one above the last negative that must be
    called normal), as in :func:`sklearn.metrics.roc_curve`.

    >>> val = Predictions([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
    >>> threshold_for_specificity(val, 0.75)   # 3 of 4 negatives below it
    0.5
    """
    target = _check_level("target_specificity", target_specificity)
    y, s = _val_arrays(val, "threshold_for_specificity", need_positives=False, need_negatives=True)
    neg = np.sort(s[y == 0])
    m = max(1, math.ceil(target * len(neg) - _EPS))
    last_normal = neg[m - 1]  # this negative (and all below) must fall under t
    above = s[s > last_normal]
    if len(above):
        return float(above.min())
    t = float(np.nextafter(last_normal, np.inf))
    if t > 1.0:
        warnings.warn(
            f"threshold_for_specificity: a negative scores 1.0, so specificity "
            f"{target} cannot be reached with a threshold in [0, 1]; returning 1.0",
            RuntimeWarning,
            stacklevel=2,
        )
        return 1.0
    return t


def youden_threshold(val: Predictions) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 on validation.

    Uses :func:`sklearn.metrics.roc_curve`; among equal J the largest threshold wins.

    >>> youden_threshold(Predictions([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]))
    0.8
    """
    y, s = _val_arrays(val, "youden_threshold", need_negatives=True)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    finite = np.isfinite(thr) & (thr <= 1.0)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(thr[int(np.argmax(j))])


def _candidates(s: np.ndarray) -> np.ndarray:
    """Every distinct validation score, plus one just above the top (call no one)."""
    cand = np.unique(s)
    top = np.nextafter(cand[-1], np.inf)
    return np.append(cand, top) if top <= 1.0 else cand


def min_cost_threshold(
    val: Predictions, cost_ratio: float, prevalence: float | None = None
) -> float:
    """Threshold minimising the expected cost ``cost_ratio * FN + FP`` on validation.

    ``cost_ratio`` = cost of a missed pneumonia / cost of a false alarm.  With
    ``prevalence`` the cost is re-weighted to a deployment population:
    ``cost_ratio * prevalence * FNR + (1 - prevalence) * FPR``.  Ties go to the
    lower (more sensitive) threshold.  On calibrated scores the optimum is close
    to ``1 / (1 + cost_ratio)``.

    >>> val = Predictions([0, 0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.5, 0.6, 0.9])
    >>> min_cost_threshold(val, 0.5), min_cost_threshold(val, 10.0)
    (0.6, 0.3)
    """
    try:
        ratio = float(cost_ratio)
    except (TypeError, ValueError):
        raise ValueError(f"cost_ratio must be a positive number, got {cost_ratio!r}") from None
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(
            f"cost_ratio (cost of a missed case / cost of a false alarm) must be a positive "
            f"finite number, got {cost_ratio!r}"
        )
    y, s = _val_arrays(val, "min_cost_threshold", need_negatives=True)
    prev = (
        y.mean() if prevalence is None else _check_level("prevalence", prevalence, high_open=True)
    )
    table = metrics_at_thresholds(val, _candidates(s))
    cost = ratio * prev * table["fnr"].to_numpy() + (1 - prev) * table["fpr"].to_numpy()
    best = np.flatnonzero(cost <= cost.min() + 1e-12)[0]
    return float(table["threshold"].iloc[best])


# --------------------------------------------------------------------------- conformal
def _crc_threshold(pos: np.ndarray, alpha: float) -> float | None:
    """Closed-form CRC threshold on calibration positive scores, or None if infeasible."""
    n = len(pos)
    k = math.floor(alpha * (n + 1) - 1 + _EPS)  # misses allowed: (k + 1) / (n + 1) <= alpha
    if k < 0:
        return None
    return float(np.sort(pos)[min(k, n - 1)])


def _mapie_crc_threshold(pos: np.ndarray, alpha: float) -> float:
    from mapie.risk_control import MultiLabelClassificationController

    # Pre-computed scores: the "model" is the identity on a one-column X.  MAPIE
    # predicts positive when score > lambda; lambda just below each positive score
    # makes that the same as fnlab's score >= t.
    lambdas = np.nextafter(np.unique(pos), -np.inf)
    controller = MultiLabelClassificationController(
        predict_function=_score_column,
        risk="recall",
        method="crc",
        target_level=1.0 - alpha,
        predict_params=lambdas,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        controller.calibrate(pos.reshape(-1, 1), np.ones((len(pos), 1), dtype=np.int64))
    best = float(np.asarray(controller.best_predict_param).reshape(-1)[0])
    return float(np.nextafter(best, np.inf))


def _mapie_ltt_threshold(y: np.ndarray, s: np.ndarray, alpha: float, confidence: float):
    from mapie.risk_control import BinaryClassificationController

    controller = BinaryClassificationController(
        predict_function=_two_column_proba,
        risk="recall",
        target_level=float(1.0 - alpha),
        confidence_level=float(confidence),
        best_predict_param_choice="fpr",
        list_predict_params=_ltt_grid(s),
        fwer_method="fixed_sequence",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        controller.calibrate(s.reshape(-1, 1), y)
    best = controller.best_predict_param
    return None if best is None else float(best)


def _ltt_grid(s: np.ndarray, max_size: int = 400) -> np.ndarray:
    """Candidate thresholds for LTT: the distinct scores, thinned to quantiles when many."""
    grid = np.unique(s)
    if len(grid) > max_size:
        grid = np.unique(np.quantile(s, np.linspace(0.0, 1.0, max_size), method="lower"))
    return grid


def _score_column(X) -> np.ndarray:
    """``predict_function`` for MAPIE over pre-computed scores: X is the score column."""
    return np.asarray(X, dtype=np.float64).reshape(-1, 1)


def _two_column_proba(X) -> np.ndarray:
    """``predict_proba``-like ``[1 - p, p]`` for MAPIE over pre-computed scores."""
    p = np.asarray(X, dtype=np.float64).reshape(-1)
    return np.stack([1.0 - p, p], axis=1)


def conformal_fnr_threshold(
    val: Predictions, alpha: float, method: str = "crc", confidence: float = 0.9
) -> float:
    """Conformal threshold controlling the false-negative rate at ``alpha``.

    ``method="crc"`` (conformal risk control): with ``n`` calibration positives the
    largest ``t`` such that ``n/(n+1) * FNR_cal(t) + 1/(n+1) <= alpha``; for a new
    exchangeable positive, ``P(score < t) = E[FNR] <= alpha``.  It is the
    ``(floor(alpha*(n+1)) - 1)``-th lowest positive score (0-based).
    ``method="mapie"`` computes the same rule with MAPIE (which uses a strict ``<``,
    so it can sit one positive lower when ``alpha*(n+1)`` is a whole number).
    ``method="ltt"`` uses MAPIE's Learn-Then-Test controller (fixed-sequence
    testing over the distinct validation scores, thinned to 400 quantiles): FNR <=
    alpha with probability ``confidence`` (a lower, safer threshold).
    ``"mapie"`` loops in Python over positives x candidate thresholds (about a second
    for 300 positives); use ``"crc"`` for many repetitions.

    When too few positives exist for ``alpha`` (``alpha < 1/(n+1)``) no threshold
    qualifies: a warning is raised and 0.0 (call everyone positive) is returned.

    >>> rng = np.random.default_rng(0)
    >>> val = Predictions(np.r_[np.ones(99), np.zeros(100)], np.r_[rng.random(99), rng.random(100) / 2])
    >>> t = conformal_fnr_threshold(val, alpha=0.1)  # 9 of 99 may fall below: (9+1)/100 <= 0.1
    >>> t == float(np.sort(val.scores[:99])[9])
    True
    """
    a = _check_level("alpha", alpha, high_open=True)
    if method not in CONFORMAL_METHODS:
        raise ValueError(f"unknown conformal method {method!r}; choose one of {CONFORMAL_METHODS}")
    y, s = _val_arrays(val, "conformal_fnr_threshold")
    pos = s[y == 1]

    def infeasible() -> float:
        warnings.warn(
            f"conformal_fnr_threshold: {len(pos)} calibration positives are too few for "
            f"alpha={a} (need at least {math.ceil(1 / a - 1)}); returning threshold 0.0, "
            "which calls every case positive",
            RuntimeWarning,
            stacklevel=3,
        )
        return 0.0

    if method == "ltt":
        conf = _check_level("confidence", confidence, high_open=True)
        t = _mapie_ltt_threshold(y, s, a, conf)
        return infeasible() if t is None else t
    t = _crc_threshold(pos, a)
    if t is None:
        return infeasible()
    return t if method == "crc" else _mapie_crc_threshold(pos, a)


def check_conformal_guarantee(
    preds: Predictions,
    alpha: float,
    n_splits: int = 200,
    cal_fraction: float = 0.5,
    seed: int = 0,
    method: str = "crc",
    confidence: float = 0.9,
    progress: bool = False,
) -> dict:
    """Check the conformal FNR guarantee empirically over random calibration/test splits.

    ``preds`` are split ``n_splits`` times (stratified, ``cal_fraction`` for
    calibration); each time a threshold is chosen on the calibration part with
    :func:`conformal_fnr_threshold` and its FNR measured on the rest.  CRC promises
    ``E[FNR] <= alpha`` (and, for continuous scores, ``>= alpha - 2/(n_pos+1)``);
    LTT promises ``FNR <= alpha`` in a share ``confidence`` of the splits.

    Returns a dict: ``per_split`` (DataFrame: split, threshold, n_cal_pos,
    n_test_pos, test_fnr, test_specificity), ``mean_fnr``, ``fnr_se``,
    ``share_within_alpha`` (share of splits with test FNR <= alpha), ``alpha``,
    ``lower_bound``, ``method``, ``guarantee`` (text) and ``holds``
    (``mean_fnr <= alpha + 2 * fnr_se``).

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 600)
    >>> p = Predictions(y, np.clip(0.3 * y + 0.7 * rng.random(600), 0, 1))
    >>> res = check_conformal_guarantee(p, alpha=0.1, n_splits=50)
    >>> res["holds"], abs(res["mean_fnr"] - 0.1) < 0.03
    (True, True)
    """
    a = _check_level("alpha", alpha, high_open=True)
    frac = _check_level("cal_fraction", cal_fraction, high_open=True)
    if int(n_splits) != n_splits or n_splits < 1:
        raise ValueError(f"n_splits must be a positive integer, got {n_splits!r}")
    if method not in CONFORMAL_METHODS:
        raise ValueError(f"unknown conformal method {method!r}; choose one of {CONFORMAL_METHODS}")
    y, s = _val_arrays(preds, "check_conformal_guarantee", need_negatives=True)
    splitter = StratifiedShuffleSplit(n_splits=int(n_splits), train_size=frac, random_state=seed)
    splits = splitter.split(np.zeros(len(y)), y)
    if progress:
        from fnlab.config import progress_bar as tqdm

        splits = tqdm(splits, total=int(n_splits), desc=f"conformal check ({method})")
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, (cal, test) in enumerate(splits):
            t = conformal_fnr_threshold(preds.subset(cal), a, method=method, confidence=confidence)
            yt, st = y[test], s[test]
            called = st >= t
            n_pos, n_neg = int(yt.sum()), int((1 - yt).sum())
            rows.append(
                {
                    "split": i,
                    "threshold": t,
                    "n_cal_pos": int(y[cal].sum()),
                    "n_test_pos": n_pos,
                    "test_fnr": float((~called & (yt == 1)).sum() / n_pos) if n_pos else math.nan,
                    "test_specificity": float((~called & (yt == 0)).sum() / n_neg)
                    if n_neg
                    else math.nan,
                }
            )
    per_split = pd.DataFrame(rows)
    fnr = per_split["test_fnr"].dropna()
    mean = float(fnr.mean())
    se = float(fnr.std(ddof=1) / math.sqrt(len(fnr))) if len(fnr) > 1 else math.nan
    n_cal_pos = float(per_split["n_cal_pos"].mean())
    guarantee = (
        f"FNR <= {a} with probability {confidence} over calibration sets"
        if method == "ltt"
        else f"E[FNR] <= {a} (averaged over calibration and test draws)"
    )
    return {
        "method": method,
        "alpha": a,
        "n_splits": int(n_splits),
        "cal_fraction": frac,
        "per_split": per_split,
        "mean_fnr": mean,
        "fnr_se": se,
        "share_within_alpha": float((fnr <= a).mean()),
        "mean_threshold": float(per_split["threshold"].mean()),
        "mean_test_specificity": float(per_split["test_specificity"].mean()),
        "lower_bound": max(0.0, a - 2.0 / (n_cal_pos + 1.0)),
        "guarantee": guarantee,
        "holds": bool(mean <= a + 2.0 * (se if math.isfinite(se) else 0.0)),
    }


# --------------------------------------------------------------------------- front door
@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold, the rule and value that chose it, and a sentence saying so.

    ``label`` is a short tag for tables and ``metrics.json`` (``threshold_rule``).
    """

    threshold: float
    rule: str
    value: float | None
    description: str

    @property
    def label(self) -> str:
        """Short tag, e.g. ``recall>=0.98``, ``cost_ratio=10``, ``youden``."""
        if self.rule in ("fixed", "youden") or self.value is None:
            return self.rule
        op = {"recall": ">=", "specificity": ">=", "cost": "_ratio=", "conformal": "_fnr<="}
        return f"{self.rule}{op[self.rule]}{self.value:g}"

    def to_dict(self) -> dict:
        """Plain dict (JSON-safe) with the label added."""
        return {**asdict(self), "label": self.label}


def choose_threshold(val: Predictions | None, rule: str, value=None, **kwargs) -> ThresholdChoice:
    """Choose a threshold on validation predictions by name (the notebooks' front door).

    ========== ======================================= =====================
    rule       value                                   extra keyword
    ========== ======================================= =====================
    fixed      the threshold (default 0.5)
    recall     target recall in (0, 1] (required)
    specificity target specificity in (0, 1] (required)
    youden     (none)
    cost       cost(FN) / cost(FP) > 0 (required)      ``prevalence``
    conformal  alpha = tolerated FNR in (0, 1) (req.)  ``method``, ``confidence``
    ========== ======================================= =====================

    >>> val = Predictions([0, 0, 1, 1], [0.2, 0.6, 0.4, 0.9], split="val")
    >>> c = choose_threshold(val, "recall", 1.0)
    >>> c.threshold, c.label
    (0.4, 'recall>=1')
    >>> choose_threshold(val, "fixed").threshold
    0.5
    """
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; choose one of {', '.join(RULES)}")
    allowed = {"cost": {"prevalence"}, "conformal": {"method", "confidence"}}.get(rule, set())
    extra = set(kwargs) - allowed
    if extra:
        raise ValueError(
            f"choose_threshold(rule={rule!r}) got unexpected options {sorted(extra)}; "
            f"allowed: {sorted(allowed) or 'none'}"
        )
    needs_value = {
        "recall": "target recall",
        "specificity": "target specificity",
        "cost": "cost ratio",
        "conformal": "alpha",
    }
    if rule in needs_value and value is None:
        raise ValueError(f"threshold rule {rule!r} needs a value (the {needs_value[rule]})")

    if rule == "fixed":
        t = check_threshold(0.5 if value is None else value)
        value = t
        if val is not None:
            _val_arrays(val, "choose_threshold")
        why = f"fixed threshold {t:g}"
    else:
        if val is None:
            raise ValueError(f"threshold rule {rule!r} needs validation Predictions, got None")
        if rule == "recall":
            t = threshold_for_recall(val, value)
            why = f"largest threshold with validation recall >= {float(value):g}"
        elif rule == "specificity":
            t = threshold_for_specificity(val, value)
            why = f"smallest threshold with validation specificity >= {float(value):g}"
        elif rule == "youden":
            _val_arrays(val, "choose_threshold")
            t = youden_threshold(val)
            why = "threshold maximising Youden's J on validation"
        elif rule == "cost":
            t = min_cost_threshold(val, value, **kwargs)
            prev = kwargs.get("prevalence")
            at = f" at prevalence {prev:g}" if prev is not None else ""
            why = f"minimum expected cost with a missed case costing {float(value):g} false alarms{at}"
        else:
            method = kwargs.get("method", "crc")
            t = conformal_fnr_threshold(val, value, **kwargs)
            why = f"conformal ({method}) threshold for false-negative rate <= {float(value):g}"
        value = None if rule == "youden" else float(value)
        _val_arrays(val, "choose_threshold")
    if val is not None and len(val):
        m = binary_metrics(val, t)
        why += (
            f" (t = {t:.4g}; on {val.split!r}: sensitivity {m['sensitivity']:.3f}, "
            f"specificity {m['specificity']:.3f}, {m['fn']} missed of {m['tp'] + m['fn']})"
        )
    return ThresholdChoice(float(t), rule, value, why)
