"""The operating point at one threshold: counts, rates and clinical read-outs.

A pure function of Predictions (no torch, no widgets), so the slider in
notebook 04, its static companion figure and the tests all call the same code.

Example
-------
>>> from fnlab.predictions import Predictions
>>> p = Predictions([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
>>> s = threshold_state(p, 0.5, prevalence=0.1)
>>> s["readout"]
'TP=1 FP=1 TN=1 FN=1'
>>> s["fn_ids"], s["missed_per_1000"]
([2], 50.0)
"""

from __future__ import annotations

import numpy as np

from fnlab.metrics import (
    binary_metrics,
    false_alarms_per_1000,
    missed_per_1000,
    npv_at_prevalence,
    ppv_at_prevalence,
)
from fnlab.predictions import Predictions, check_threshold


def threshold_state(preds: Predictions, threshold: float, prevalence: float | None = None) -> dict:
    """Everything the threshold lesson shows at ``threshold``.

    Keys: the counts (tp, fp, tn, fn) and rates of :func:`fnlab.metrics.binary_metrics`;
    ``prevalence`` (the given one, else the data's); ``ppv_at_prevalence`` and
    ``npv_at_prevalence``; ``missed_per_1000`` and ``false_alarms_per_1000`` screened
    at that prevalence; ``fn_ids`` (ids of the missed positives, most confident miss
    first); ``readout`` (``"TP=.. FP=.. TN=.. FN=.."``) and ``text`` (a multi-line summary).
    """
    t = check_threshold(threshold)
    m = binary_metrics(preds, t)
    prev = m["prevalence"] if prevalence is None else float(prevalence)
    if not 0.0 <= prev <= 1.0:
        raise ValueError(f"prevalence must be in [0, 1], got {prevalence!r}")
    sens, spec = m["sensitivity"], m["specificity"]
    finite = np.isfinite(sens) and np.isfinite(spec)
    state = dict(m)
    state["prevalence"] = prev
    state["ppv_at_prevalence"] = float(ppv_at_prevalence(sens, spec, prev)) if finite else float("nan")
    state["npv_at_prevalence"] = float(npv_at_prevalence(sens, spec, prev)) if finite else float("nan")
    state["missed_per_1000"] = float(missed_per_1000(sens, prev)) if finite else float("nan")
    state["false_alarms_per_1000"] = (
        float(false_alarms_per_1000(spec, prev)) if finite else float("nan"))
    y, s = preds.binary_truth(), preds.positive_scores()
    missed = np.flatnonzero((y == 1) & (s < t))
    missed = missed[np.argsort(s[missed])]  # lowest score first: the most confident misses
    state["fn_ids"] = preds.ids[missed].tolist()
    state["readout"] = f"TP={m['tp']} FP={m['fp']} TN={m['tn']} FN={m['fn']}"
    state["text"] = "\n".join([
        state["readout"],
        f"sensitivity  {sens:.3f}",
        f"specificity  {spec:.3f}",
        f"PPV          {m['ppv']:.3f}",
        f"NPV          {m['npv']:.3f}",
        f"at prevalence {prev:.1%},",
        "per 1,000 screened:",
        f"  missed       {state['missed_per_1000']:.1f}",
        f"  false alarms {state['false_alarms_per_1000']:.1f}",
        f"  PPV {state['ppv_at_prevalence']:.3f}",
        f"  NPV {state['npv_at_prevalence']:.3f}",
    ])
    return state
