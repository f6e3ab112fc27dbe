"""Thin ipywidgets over pure functions: the threshold explorer of notebook 04.

The callback only wires controls to :func:`fnlab.operating.threshold_state`,
:func:`fnlab.thresholds.min_cost_threshold` and :func:`fnlab.plots.threshold_panel`;
tests exercise those without a browser, and ``tests/test_browser.py`` moves the
real slider in JupyterLab.

Contract used by the browser test: a ``FloatSlider`` described ``"threshold"`` and an
``HTML`` readout with CSS class ``fnlab-readout`` whose text holds
``"TP=<n> FP=<n> TN=<n> FN=<n>"``.

In a batch run (papermill, nbval: no browser to move a slider) set
``FNLAB_STATIC_WIDGETS=1`` (``fnlab course run`` and ``make test`` do): the explorer
then shows its readout and figure as ordinary outputs, with no live widget.  Live
ipywidgets in a kernel driven by nbclient occasionally left a cell waiting forever
(twice in notebook 04 in the lessons benchmark, kernel idle, client waiting for the
reply; compare jupyter/nbclient#312), and a book or executed notebook cannot move them
anyway.

Example
-------
>>> from fnlab.predictions import Predictions
>>> p = Predictions([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
>>> ui = ThresholdExplorer(p, show_figure=False)
>>> ui.readout.value.startswith("<b>TP=1 FP=1 TN=1 FN=1")
True
>>> ui.threshold.value = 0.3
>>> "FN=0" in ui.readout.value
True
"""

from __future__ import annotations

import html
import os

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from fnlab.config import STATIC_WIDGETS_ENV
from fnlab.operating import threshold_state
from fnlab.plots import threshold_panel
from fnlab.predictions import Predictions
from fnlab.thresholds import min_cost_threshold

__all__ = ["ThresholdExplorer", "threshold_state", "readout_html",
           "min_cost_state", "static_widgets", "STATIC_ENV"]

STATIC_ENV = STATIC_WIDGETS_ENV


def static_widgets() -> bool:
    """True when ``$FNLAB_STATIC_WIDGETS`` asks for static outputs (batch runs).

    >>> import os
    >>> os.environ["FNLAB_STATIC_WIDGETS"] = "1"; static_widgets()
    True
    >>> del os.environ["FNLAB_STATIC_WIDGETS"]; static_widgets()
    False
    """
    return os.environ.get(STATIC_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def readout_html(state: dict) -> str:
    """The readout line shown beside the slider, as HTML (counts first, then rates)."""
    return (f"<b>{state['readout']}</b> &nbsp; sensitivity {state['sensitivity']:.3f} &nbsp; "
            f"specificity {state['specificity']:.3f} &nbsp; PPV {state['ppv']:.3f} &nbsp; "
            f"NPV {state['npv']:.3f} (in this set) &nbsp; | &nbsp; per 1,000 screened at prevalence "
            f"{state['prevalence']:.0%}: <b>{state['missed_per_1000']:.1f} missed</b>, "
            f"{state['false_alarms_per_1000']:.1f} false alarms, PPV there "
            f"{state['ppv_at_prevalence']:.3f}")


def min_cost_state(tune_preds: Predictions, cost_ratio: float, prevalence: float | None = None) -> dict:
    """The minimum-expected-cost threshold for a FN:FP cost ratio, chosen on ``tune_preds``.

    >>> p = Predictions([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    >>> min_cost_state(p, 10.0)["threshold"] <= min_cost_state(p, 0.5)["threshold"]
    True
    """
    t = float(min_cost_threshold(tune_preds, cost_ratio, prevalence=prevalence))
    return {"cost_ratio": float(cost_ratio), "threshold": t,
            "text": f"minimum-cost threshold for FN:FP = {cost_ratio:g}:1 is {t:.3f}"}


class ThresholdExplorer:
    """A threshold slider with live confusion matrix, ROC/PR points, rates and a FN gallery.

    Parameters
    ----------
    preds : the Predictions to explore (usually the validation split).
    images : optional array indexed by ``preds.ids`` for the false-negative gallery.
    masks : optional lesion masks indexed like ``images``, outlined on each missed case.
    tune_preds : Predictions used to choose the minimum-cost threshold (default: ``preds``).
        Choose thresholds on validation, never on test.
    prevalence : starting prevalence for the per-1,000 numbers (default: the data's).
    static : show a static readout and figure instead of live widgets (default:
        :func:`static_widgets`, i.e. ``$FNLAB_STATIC_WIDGETS``).
    """

    def __init__(self, preds: Predictions, images: np.ndarray | None = None,
                 tune_preds: Predictions | None = None, threshold: float = 0.5,
                 prevalence: float | None = None, cost_ratio: float = 5.0,
                 show_figure: bool = True, masks: np.ndarray | None = None,
                 static: bool | None = None):
        self.preds, self.images, self.masks = preds, images, masks
        self.static = static_widgets() if static is None else bool(static)
        self.tune_preds = tune_preds or preds
        self.show_figure = show_figure
        prev0 = preds.binary_truth().mean() if prevalence is None else prevalence
        self.threshold = widgets.FloatSlider(value=threshold, min=0.0, max=1.0, step=0.01,
                                             description="threshold", continuous_update=False,
                                             readout_format=".2f")
        self.prevalence = widgets.FloatSlider(value=float(prev0), min=0.01, max=0.99, step=0.01,
                                              description="prevalence", continuous_update=False)
        self.cost_ratio = widgets.FloatLogSlider(value=cost_ratio, base=10, min=-1, max=2,
                                                 step=0.05, description="FN:FP cost",
                                                 continuous_update=False)
        self.use_min_cost = widgets.Button(description="use min-cost threshold",
                                           layout=widgets.Layout(width="220px"))
        self.readout = widgets.HTML()
        self.readout.add_class("fnlab-readout")
        self.cost_text = widgets.HTML()
        self.output = widgets.Output()
        self.fig = None
        for control in (self.threshold, self.prevalence):
            control.observe(self._update, names="value")
        self.cost_ratio.observe(self._update_cost, names="value")
        self.use_min_cost.on_click(self._snap)
        self._update_cost()
        self._update()

    @property
    def state(self) -> dict:
        return threshold_state(self.preds, self.threshold.value, self.prevalence.value)

    def _update(self, change=None) -> None:
        state = self.state
        self.readout.value = readout_html(state)
        if not self.show_figure or self.static:  # static: drawn once, when displayed
            return
        from IPython.display import display

        with self.output:
            self.output.clear_output(wait=True)
            self.fig = threshold_panel(self.preds, state["threshold"], state["prevalence"],
                                       images=self.images, masks=self.masks)
            display(self.fig)
            plt.close(self.fig)  # shown once, inside the widget's output area

    def _update_cost(self, change=None) -> None:
        self.min_cost = min_cost_state(self.tune_preds, self.cost_ratio.value, self.prevalence.value)
        self.cost_text.value = html.escape(self.min_cost["text"])

    def _snap(self, button=None) -> None:
        self.threshold.value = round(self.min_cost["threshold"], 2)

    def widget(self) -> widgets.VBox:
        """The assembled controls, readout and figure."""
        return widgets.VBox([
            widgets.HBox([self.threshold, self.prevalence]),
            widgets.HBox([self.cost_ratio, self.use_min_cost, self.cost_text]),
            self.readout,
            self.output,
        ])

    def _ipython_display_(self):  # shows itself when it is the last value of a cell
        from IPython.display import HTML, display

        if not self.static:
            display(self.widget())
            return
        state = self.state
        display(HTML(f"<p><i>Static view (a batch run has no sliders to move): threshold "
                     f"{state['threshold']:.2f}, prevalence {state['prevalence']:.2f}. Open the "
                     "notebook in JupyterLab to explore.</i></p>" + self.readout.value
                     + f"<p>{self.cost_text.value}</p>"))
        if self.show_figure:
            self.fig = threshold_panel(self.preds, state["threshold"], state["prevalence"],
                                       images=self.images, masks=self.masks)
            display(self.fig)
            plt.close(self.fig)
