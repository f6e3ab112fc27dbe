"""Figures the notebooks share: confusion heat maps, ROC/PR with operating points, galleries.

Pure plotting on :class:`~fnlab.predictions.Predictions` and arrays (matplotlib and
seaborn); no model and no torch. Each function draws on a given ``ax`` when one is
passed and returns the figure or axes it drew on.

Example
-------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> from fnlab.predictions import Predictions
>>> p = Predictions([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
>>> fig = threshold_panel(p, 0.5)
>>> len(fig.axes) >= 3
True
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import precision_recall_curve, roc_curve

from fnlab.metrics import binary_metrics
from fnlab.operating import threshold_state
from fnlab.predictions import Predictions

#: Row/column labels of the clinical confusion matrix (truth down, decision across).
TRUTH_LABELS = ("pneumonia", "normal")
DECISION_LABELS = ("pneumonia", "normal")


def confusion_heatmap(counts: dict, ax=None, title: str | None = None):
    """Seaborn heat map of TP/FN/FP/TN with the false negatives outlined in red.

    ``counts`` is a dict with tp, fp, tn, fn (e.g. from :func:`fnlab.metrics.binary_metrics`).
    """
    ax = ax or plt.subplots(figsize=(3.6, 3.0))[1]
    grid = np.array([[counts["tp"], counts["fn"]], [counts["fp"], counts["tn"]]])
    labels = np.array([[f"TP\n{counts['tp']}", f"FN missed\n{counts['fn']}"],
                       [f"FP false\nalarm {counts['fp']}", f"TN\n{counts['tn']}"]])
    sns.heatmap(grid, annot=labels, fmt="", cbar=False, cmap="Blues", ax=ax,
                xticklabels=DECISION_LABELS, yticklabels=TRUTH_LABELS, linewidths=1,
                annot_kws={"fontsize": 9})
    ax.add_patch(plt.Rectangle((1, 0), 1, 1, fill=False, edgecolor="crimson", lw=3))
    ax.tick_params(axis="x", labelrotation=0)
    ax.tick_params(axis="y", labelrotation=90)
    ax.set_ylabel("truth")
    ax.set_xlabel("model says")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def roc_with_points(preds_list: Sequence[Predictions] | Predictions, ax=None,
                    thresholds: Sequence[float] | float | None = None):
    """ROC curves of one or more Predictions; the operating point at each threshold marked."""
    ax = ax or plt.subplots(figsize=(4, 4))[1]
    preds_list = [preds_list] if isinstance(preds_list, Predictions) else list(preds_list)
    thresholds = [] if thresholds is None else np.atleast_1d(thresholds)
    for p in preds_list:
        y, s = p.binary_truth(), p.positive_scores()
        fpr, tpr, _ = roc_curve(y, s)
        auc = binary_metrics(p, 0.5)["auc"]
        line, = ax.plot(fpr, tpr, label=f"{p.model} (AUC {auc:.3f})")
        for t in thresholds:
            m = binary_metrics(p, float(t))
            ax.plot(1 - m["specificity"], m["sensitivity"], "o", color=line.get_color(), ms=7,
                    mec="black")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set_xlabel("1 - specificity (false alarms)")
    ax.set_ylabel("sensitivity (pneumonias caught)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    return ax


def pr_with_points(preds_list: Sequence[Predictions] | Predictions, ax=None,
                   thresholds: Sequence[float] | float | None = None):
    """Precision-recall curves with the operating point at each threshold marked."""
    ax = ax or plt.subplots(figsize=(4, 4))[1]
    preds_list = [preds_list] if isinstance(preds_list, Predictions) else list(preds_list)
    thresholds = [] if thresholds is None else np.atleast_1d(thresholds)
    for p in preds_list:
        precision, recall, _ = precision_recall_curve(p.binary_truth(), p.positive_scores())
        line, = ax.plot(recall, precision, label=p.model)
        for t in thresholds:
            m = binary_metrics(p, float(t))
            if np.isfinite(m["ppv"]):
                ax.plot(m["sensitivity"], m["ppv"], "o", color=line.get_color(), ms=7, mec="black")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(0, 1.01)
    return ax


def image_gallery(images: np.ndarray, titles: Sequence[str] | None = None, ncols: int = 6,
                  axes=None, size: float = 1.6, empty_text: str = "none",
                  masks: np.ndarray | None = None, mask_color: str = "red"):
    """Show up to ``len(axes)`` images in a grid; returns the figure.

    ``masks`` (boolean ``N x H x W``, one per image, e.g. an ImageSet's lesion masks)
    are drawn as ``mask_color`` outlines over their images, so a reader sees where the
    finding is on a missed case.

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> img, mask = np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), bool)
    >>> mask[0, 2:5, 2:5] = True
    >>> fig = image_gallery(img, masks=mask, ncols=1)
    >>> len(fig.axes[0].collections) > 0  # the outline
    True
    """
    images = np.asarray(images)
    if masks is not None:
        masks = np.asarray(masks)
        if len(masks) != len(images):
            raise ValueError(f"image_gallery: {len(masks)} masks for {len(images)} images")
    if axes is None:
        nrows = max(1, int(np.ceil(max(len(images), 1) / ncols)))
        fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3))
    else:
        fig = np.ravel(axes)[0].figure
    axes = np.ravel(axes)
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < len(images):
            img = images[i]
            ax.imshow(img if img.ndim == 2 else np.moveaxis(img, 0, -1).squeeze(), cmap="gray")
            if masks is not None and np.any(masks[i]):
                ax.contour(np.asarray(masks[i], dtype=float), levels=[0.5], colors=mask_color,
                           linewidths=1.0)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if len(images) == 0:
        axes[0].text(0.5, 0.5, empty_text, ha="center", va="center", transform=axes[0].transAxes)
    return fig


def threshold_panel(preds: Predictions, threshold: float, prevalence: float | None = None,
                    images: np.ndarray | None = None, max_gallery: int = 6, fig=None,
                    masks: np.ndarray | None = None):
    """The threshold lesson on one figure: confusion matrix, ROC and PR operating points,
    rates at a chosen prevalence and (when ``images`` are given) the false negatives.

    ``images`` (and ``masks``, the lesion masks outlined in red on each missed case)
    are indexed by ``preds.ids``. Used by the slider and as its static companion.
    """
    state = threshold_state(preds, threshold, prevalence)
    with_gallery = images is not None
    fig = fig or plt.figure(figsize=(12, 6.2 if with_gallery else 3.8))
    fig.clear()
    rows = 2 if with_gallery else 1
    gs = fig.add_gridspec(rows, 4, height_ratios=[3, 1.6][:rows], width_ratios=[1, 1, 1, 1.1],
                          wspace=0.4, hspace=0.45, left=0.06, right=0.98)
    confusion_heatmap(state, fig.add_subplot(gs[0, 0]), title=f"threshold {state['threshold']:.2f}")
    roc_with_points(preds, fig.add_subplot(gs[0, 1]), state["threshold"])
    pr_with_points(preds, fig.add_subplot(gs[0, 2]), state["threshold"])
    ax = fig.add_subplot(gs[0, 3])
    ax.axis("off")
    ax.text(0, 1, state["text"], va="top", family="monospace", fontsize=9)
    if with_gallery:
        fn_ids = state["fn_ids"][:max_gallery]
        sub = gs[1, :].subgridspec(1, max_gallery)
        gallery_axes = np.array([fig.add_subplot(sub[0, i]) for i in range(max_gallery)])
        scores = dict(zip(preds.ids.tolist(), preds.positive_scores().tolist()))
        gallery_masks = None if masks is None or not fn_ids else np.asarray(masks)[fn_ids]
        image_gallery(np.asarray(images)[fn_ids] if fn_ids else np.zeros((0, 2, 2)),
                      [f"missed, score {scores[i]:.2f}" for i in fn_ids], axes=gallery_axes,
                      empty_text="no false negatives at this threshold", masks=gallery_masks)
        if gallery_masks is not None:
            box = gallery_axes[0].get_position()
            fig.text(box.x0, box.y0 - 0.015, "red outline: the lesion the model missed",
                     va="top", fontsize=8, color="red")
    return fig


def thresholds_side_by_side(preds: Predictions, thresholds: Sequence[float],
                            prevalence: float | None = None):
    """Static companion of the slider: confusion matrices at a few thresholds in one row."""
    fig, axes = plt.subplots(1, len(thresholds), figsize=(3.3 * len(thresholds), 3.4))
    for ax, t in zip(np.ravel(axes), thresholds):
        s = threshold_state(preds, t, prevalence)
        confusion_heatmap(s, ax, title=f"t={t:.2f}  sens {s['sensitivity']:.2f}  "
                                       f"spec {s['specificity']:.2f}")
    fig.tight_layout()
    return fig


def history_plot(history, metrics: Sequence[str] = ("train_loss", "val_loss", "val_auc"), ax=None):
    """Training curves from a trainer history table (one line per metric present).

    Epochs are whole numbers, so the x axis only gets integer ticks (a 3-epoch run
    shows 1, 2, 3 and never 1.5).

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> ax = history_plot({"epoch": [1, 2, 3], "train_loss": [0.7, 0.5, 0.4]})
    >>> all(float(t).is_integer() for t in ax.get_xticks())
    True
    """
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    for name in metrics:
        if name in history:
            ax.plot(history["epoch"], history[name], marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return ax


def reliability_diagram(preds_list: Sequence[Predictions] | Predictions,
                        labels: Sequence[str] | None = None, n_bins: int = 10, ax=None):
    """Reliability diagram: observed pneumonia rate against mean predicted probability
    per bin (:func:`fnlab.calibration.reliability_curve`), one line per Predictions, the
    diagonal for a calibrated model, and the ECE in the legend.

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> ax = reliability_diagram(Predictions([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]), ["home"])
    >>> ax.get_xlabel()
    'mean predicted probability'
    """
    from fnlab.calibration import expected_calibration_error, reliability_curve

    preds_list = [preds_list] if isinstance(preds_list, Predictions) else list(preds_list)
    labels = list(labels) if labels is not None else [p.split for p in preds_list]
    ax = ax or plt.subplots(figsize=(4.2, 4.0))[1]
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="calibrated")
    for p, name in zip(preds_list, labels):
        curve = reliability_curve(p, n_bins=n_bins)
        ece = expected_calibration_error(p, n_bins=n_bins)
        ax.plot(curve["mean_predicted"], curve["fraction_positive"], marker="o",
                label=f"{name} (ECE {ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed pneumonia rate")
    ax.legend(fontsize=8, loc="upper left")
    return ax
