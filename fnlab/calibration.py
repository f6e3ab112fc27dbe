"""Calibration of Predictions: do the scores mean what they say?

A score of 0.2 should mean "pneumonia in about 2 of 10 such images".  This module
measures that (reliability curve, expected calibration error, Brier score, negative
log-likelihood) and fixes the commonest fault of deep networks, over-confidence,
with temperature scaling (Guo et al. 2017): one number ``T`` fitted on validation
predictions, ``p' = sigmoid(logit(p) / T)`` (``softmax(log p / T)`` for several
classes).  One temperature cannot *shift* the logits; scores pushed towards one
class (a model trained with a false-negative cost states too high a risk) need
Platt scaling (Platt 1999): a slope and an intercept, ``p' = sigmoid(a logit(p) + b)``,
fitted on validation with scikit-learn's logistic regression.  Both keep the ranking, so AUC and the sensitivity at a
given *rank* do not change; thresholds chosen on raw scores must be chosen again.
Probabilities calibrated where pneumonia is common mean less where it is rare:
:func:`adjust_prevalence` moves them to another prevalence with Bayes' rule.

Pure NumPy / SciPy / scikit-learn (no torch).  Probabilities are clipped to
``[1e-7, 1 - 1e-7]`` before any logarithm.  Binary measures on multi-class
Predictions use the "any disease vs normal" collapse.

Example
-------
>>> import numpy as np
>>> from fnlab.predictions import Predictions
>>> rng = np.random.default_rng(0)
>>> z = rng.normal(0, 2, 4000)                                 # true log-odds
>>> y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
>>> over = Predictions(y, 1 / (1 + np.exp(-3 * z)))            # 3x over-confident
>>> T = fit_temperature(over)
>>> 2.0 < T < 4.0
True
>>> expected_calibration_error(apply_temperature(over, T)) < expected_calibration_error(over)
True
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize, special
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from fnlab.predictions import Predictions

__all__ = [
    "EPS",
    "adjust_prevalence",
    "apply_platt",
    "apply_temperature",
    "brier_score",
    "calibration_table",
    "expected_calibration_error",
    "fit_platt",
    "fit_temperature",
    "negative_log_likelihood",
    "reliability_curve",
    "reliability_plot",
]

#: Probabilities are clipped to ``[EPS, 1 - EPS]`` before logits and logarithms.
EPS = 1e-7
_STRATEGIES = ("uniform", "quantile")


def _check_preds(preds: Predictions, who: str) -> None:
    if not isinstance(preds, Predictions):
        raise TypeError(f"{who}: expected fnlab Predictions, got {type(preds).__name__}")
    if len(preds) == 0:
        raise ValueError(f"{who}: Predictions({preds.model!r}, {preds.split!r}) are empty")
    s = preds.scores
    if s.min() < 0 or s.max() > 1:
        raise ValueError(
            f"{who}: Predictions({preds.model!r}) scores must be probabilities in [0, 1], "
            f"found values in [{s.min():.3g}, {s.max():.3g}]"
        )


def _binary(preds: Predictions, who: str) -> tuple[np.ndarray, np.ndarray]:
    _check_preds(preds, who)
    return preds.binary_truth(), np.clip(preds.positive_scores(), EPS, 1 - EPS)


def _check_bins(n_bins: int, strategy: str) -> None:
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy not in _STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {_STRATEGIES}")


def reliability_curve(
    preds: Predictions, n_bins: int = 10, strategy: str = "uniform"
) -> pd.DataFrame:
    """Reliability diagram data: per non-empty bin, mean score vs observed positive rate.

    Uses :func:`sklearn.calibration.calibration_curve` and adds the bin edges and the
    number of cases per bin (the same binning as scikit-learn).  A calibrated model
    has ``fraction_positive ~= mean_predicted`` in every bin.

    >>> p = Predictions([0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.8, 0.9])
    >>> reliability_curve(p, n_bins=2)[["mean_predicted", "fraction_positive", "count"]]
       mean_predicted  fraction_positive  count
    0            0.15                0.0      2
    1            0.80                1.0      3
    """
    _check_bins(n_bins, strategy)
    y, p = _binary(preds, "reliability_curve")
    prob_true, prob_pred = calibration_curve(y, p, n_bins=int(n_bins), strategy=strategy)
    if strategy == "quantile":
        edges = np.percentile(p, np.linspace(0, 100, int(n_bins) + 1))
    else:
        edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=int(n_bins))
    nonzero = np.flatnonzero(counts)
    return pd.DataFrame(
        {
            "bin": nonzero,
            "bin_lower": edges[:-1][nonzero],
            "bin_upper": edges[1:][nonzero],
            "mean_predicted": prob_pred,
            "fraction_positive": prob_true,
            "count": counts[nonzero],
        }
    )


def expected_calibration_error(
    preds: Predictions, n_bins: int = 10, strategy: str = "uniform"
) -> float:
    """ECE: case-weighted mean gap ``|fraction_positive - mean_predicted|`` over bins.

    >>> p = Predictions([0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.8, 0.9])
    >>> round(expected_calibration_error(p, n_bins=2), 3)     # (2*0.15 + 3*0.2) / 5
    0.18
    """
    curve = reliability_curve(preds, n_bins=n_bins, strategy=strategy)
    gaps = (curve["fraction_positive"] - curve["mean_predicted"]).abs()
    return float((gaps * curve["count"]).sum() / curve["count"].sum())


def brier_score(preds: Predictions) -> float:
    """Brier score (mean squared error of the positive probability), via scikit-learn.

    >>> brier_score(Predictions([0, 1], [0.2, 0.6]))     # (0.04 + 0.16) / 2
    0.1
    """
    y, p = _binary(preds, "brier_score")
    return round(float(brier_score_loss(y, p, labels=[0, 1])), 12)


def negative_log_likelihood(preds: Predictions) -> float:
    """Mean negative log-likelihood (log loss) of the true labels.

    Binary Predictions: binary log loss of the positive score; multi-class: the
    categorical log loss of the full probability rows.

    >>> round(negative_log_likelihood(Predictions([0, 1], [0.2, 0.6])), 4)
    0.367
    """
    _check_preds(preds, "negative_log_likelihood")
    if preds.is_binary:
        y, p = _binary(preds, "negative_log_likelihood")
        return float(log_loss(y, p, labels=[0, 1]))
    probs = np.clip(preds.scores, EPS, 1.0)
    probs = probs / probs.sum(axis=1, keepdims=True)
    return float(log_loss(preds.y_true, probs, labels=np.arange(probs.shape[1])))


def _logits(preds: Predictions) -> np.ndarray:
    if preds.is_binary:
        return special.logit(np.clip(preds.scores, EPS, 1 - EPS))
    return np.log(np.clip(preds.scores, EPS, 1.0))


def _scaled(logits: np.ndarray, temperature: float, binary: bool) -> np.ndarray:
    if binary:
        return special.expit(logits / temperature)
    return special.softmax(logits / temperature, axis=1)


def fit_temperature(val_preds: Predictions, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature ``T`` minimising the validation NLL of ``logit(p) / T`` (SciPy, bounded).

    ``T > 1`` softens over-confident scores, ``T < 1`` sharpens timid ones.  Fit it
    on validation predictions, then :func:`apply_temperature` to val and test.

    >>> rng = np.random.default_rng(1)
    >>> y = rng.integers(0, 2, 1000)
    >>> p = 1 / (1 + np.exp(-(2 * y - 1) * 4 - rng.normal(0, 4, 1000)))
    >>> fit_temperature(Predictions(y, p)) > 1      # these scores are over-confident
    True
    """
    _check_preds(val_preds, "fit_temperature")
    low, high = (float(b) for b in bounds)
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"fit_temperature: bounds must satisfy 0 < low < high, got {bounds!r}")
    logits = _logits(val_preds)
    binary = val_preds.is_binary
    y = val_preds.y_true if not binary else val_preds.binary_truth()
    k = None if binary else logits.shape[1]

    def nll(log_t: float) -> float:
        t = math.exp(log_t)
        if binary:
            z = logits / t
            # -[y log sigmoid(z) + (1-y) log sigmoid(-z)], numerically stable
            return float(np.mean(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y)))
        logp = special.log_softmax(logits / t, axis=1)
        return float(-np.mean(logp[np.arange(len(y)), np.clip(y, 0, k - 1)]))

    res = optimize.minimize_scalar(
        nll, bounds=(math.log(low), math.log(high)), method="bounded", options={"xatol": 1e-6}
    )
    return float(math.exp(res.x))


def apply_temperature(preds: Predictions, temperature: float) -> Predictions:
    """Scores rescaled by temperature ``T`` (same labels, ids and model name).

    ``meta["temperature"]`` records ``T``.  The order of the scores is unchanged.

    >>> p = apply_temperature(Predictions([0, 1], [0.1, 0.9]), 2.0)
    >>> np.round(p.scores, 3).tolist(), p.meta["temperature"]
    ([0.25, 0.75], 2.0)
    """
    _check_preds(preds, "apply_temperature")
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    scores = _scaled(_logits(preds), t, preds.is_binary)
    out = preds.with_scores(scores)
    out.meta["temperature"] = t
    return out


def fit_platt(val_preds: Predictions) -> tuple[float, float]:
    """Slope ``a`` and intercept ``b`` of ``sigmoid(a logit(p) + b)`` fitted on validation.

    Platt scaling is a logistic regression on the logit (scikit-learn, unregularised).
    Where temperature scaling can only stretch or shrink the logits (``a = 1 / T``,
    ``b = 0``), the intercept also moves them, which is what scores from a weighted loss
    need.  Binary Predictions only.

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(0, 2, 4000)                                 # true log-odds
    >>> y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    >>> shifted = Predictions(y, 1 / (1 + np.exp(-(z + 2))))       # risk overstated
    >>> a, b = fit_platt(shifted)
    >>> round(a, 1), round(b, 1)
    (1.0, -2.0)
    """
    from sklearn.linear_model import LogisticRegression

    _check_preds(val_preds, "fit_platt")
    if not val_preds.is_binary:
        raise ValueError("fit_platt: needs binary Predictions (one score per case)")
    y = val_preds.binary_truth()
    if len(np.unique(y)) < 2:
        raise ValueError("fit_platt: the validation predictions hold one class only; "
                         "a slope and intercept cannot be fitted")
    model = LogisticRegression(C=np.inf, max_iter=1000).fit(_logits(val_preds)[:, None], y)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def apply_platt(preds: Predictions, slope: float, intercept: float) -> Predictions:
    """Scores mapped through ``sigmoid(slope * logit(p) + intercept)`` (see :func:`fit_platt`).

    ``meta["platt"]`` records ``(slope, intercept)``.  A positive slope keeps the order.

    >>> p = apply_platt(Predictions([0, 1], [0.5, 0.9]), 1.0, -math.log(9))
    >>> np.round(p.scores, 3).tolist()      # odds divided by 9: 0.5 -> 0.1, 0.9 -> 0.5
    [0.1, 0.5]
    """
    _check_preds(preds, "apply_platt")
    if not preds.is_binary:
        raise ValueError("apply_platt: needs binary Predictions (one score per case)")
    a, b = float(slope), float(intercept)
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"apply_platt: slope and intercept must be finite, got {slope!r}, "
                         f"{intercept!r}")
    out = preds.with_scores(special.expit(a * _logits(preds) + b))
    out.meta["platt"] = (a, b)
    return out


def adjust_prevalence(preds: Predictions, prevalence: float, from_prevalence: float) -> Predictions:
    """Binary probabilities moved from ``from_prevalence`` to ``prevalence`` (Bayes' rule).

    Scores calibrated on data with pneumonia prevalence ``from_prevalence`` (say a
    balanced validation set) overstate the risk in a clinic where it is rarer. With
    the same images but another prior, only the prior odds change:
    ``logit(p') = logit(p) + logit(prevalence) - logit(from_prevalence)``. The ranking
    (AUC) is unchanged. ``meta["prevalence"]`` records the new prevalence.

    >>> p = adjust_prevalence(Predictions([0, 1, 1], [0.5, 0.9, 0.1]), 0.1, from_prevalence=0.5)
    >>> np.round(p.scores, 3).tolist()   # 0.5 -> 0.1; odds 9 -> 1; odds 1/9 -> 1/81
    [0.1, 0.5, 0.012]
    """
    _check_preds(preds, "adjust_prevalence")
    if not preds.is_binary:
        raise ValueError("adjust_prevalence: needs binary Predictions (one score per case)")
    for name, value in (("prevalence", prevalence), ("from_prevalence", from_prevalence)):
        if not (isinstance(value, (int, float, np.floating)) and 0 < float(value) < 1):
            raise ValueError(f"adjust_prevalence: {name} must be in (0, 1), got {value!r}")
    shift = special.logit(float(prevalence)) - special.logit(float(from_prevalence))
    out = preds.with_scores(special.expit(_logits(preds) + shift))
    out.meta["prevalence"] = float(prevalence)
    return out


def calibration_table(sets: dict, temperature: float) -> pd.DataFrame:
    """ECE and Brier score of each set of Predictions, raw and after one temperature.

    ``sets`` maps a name (``"val"``, ``"test"``, ...) to Predictions; the temperature is
    the one fitted on validation (:func:`fit_temperature`). One column per set, rows
    ``ECE raw``, ``ECE scaled``, ``Brier raw``, ``Brier scaled``.

    >>> y = np.r_[np.zeros(50, int), np.ones(50, int)]
    >>> p = Predictions(y, np.r_[np.full(50, 0.01), np.full(50, 0.99)])
    >>> round(float(calibration_table({"test": p}, 1.0).loc["ECE raw", "test"]), 3)
    0.01
    """
    return pd.DataFrame(
        {name: [expected_calibration_error(preds),
                expected_calibration_error(apply_temperature(preds, temperature)),
                brier_score(preds), brier_score(apply_temperature(preds, temperature))]
         for name, preds in sets.items()},
        index=["ECE raw", "ECE scaled", "Brier raw", "Brier scaled"])


def reliability_plot(ax, versions: dict, n_bins: int = 10, title: str | None = None):
    """Draw the reliability curve of each version of some Predictions on one axes.

    ``versions`` maps a legend label to Predictions (e.g. raw, temperature-scaled and
    Platt-scaled scores of the same test set); the dotted diagonal is perfect
    calibration. Notebook 08 draws its reliability diagrams with it. Returns ``ax``.

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> y = np.r_[np.zeros(50, int), np.ones(50, int)]
    >>> ax = reliability_plot(plt.figure().gca(), {"raw": Predictions(y, np.linspace(0, 1, 100))})
    >>> [line.get_label() for line in ax.get_lines()]
    ['raw', 'perfect calibration']
    """
    for k, (label, preds) in enumerate(versions.items()):
        curve = reliability_curve(preds, n_bins=n_bins)
        ax.plot(curve["mean_predicted"], curve["fraction_positive"], "os^vD"[k % 5] + "-",
                color=f"C{(3, 0, 1, 2)[k % 4]}", label=label)
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed share of pneumonia")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return ax
