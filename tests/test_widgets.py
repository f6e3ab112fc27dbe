"""The threshold lesson's pure functions and the widget wiring, without a browser."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fnlab.metrics import binary_metrics  # noqa: E402
from fnlab.operating import threshold_state  # noqa: E402
from fnlab.plots import threshold_panel, thresholds_side_by_side  # noqa: E402
from fnlab.predictions import Predictions  # noqa: E402
from fnlab.widgets import ThresholdExplorer, min_cost_state, readout_html  # noqa: E402


@pytest.fixture
def preds():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(60, int), np.ones(40, int)]
    s = np.clip(np.r_[rng.normal(0.3, 0.15, 60), rng.normal(0.65, 0.15, 40)], 0, 1)
    return Predictions(y, s, split="val", model="toy")


def test_counts_match_a_direct_count(preds):
    s = threshold_state(preds, 0.5)
    y, p = preds.y_true, preds.scores >= 0.5
    assert s["tp"] == int(((y == 1) & p).sum()) and s["fn"] == int(((y == 1) & ~p).sum())
    assert s["fp"] == int(((y == 0) & p).sum()) and s["tn"] == int(((y == 0) & ~p).sum())
    assert s["readout"] == f"TP={s['tp']} FP={s['fp']} TN={s['tn']} FN={s['fn']}"
    assert len(s["fn_ids"]) == s["fn"]


def test_lowering_the_threshold_never_adds_false_negatives(preds):
    states = [threshold_state(preds, t) for t in np.linspace(1, 0, 21)]
    fns = [s["fn"] for s in states]
    fps = [s["fp"] for s in states]
    assert fns == sorted(fns, reverse=True) and fps == sorted(fps)
    assert states[-1]["fn"] == 0 and states[-1]["sensitivity"] == 1.0
    assert states[0]["fp"] == 0


def test_missed_per_1000_uses_the_chosen_prevalence(preds):
    a = threshold_state(preds, 0.5, prevalence=0.05)
    b = threshold_state(preds, 0.5, prevalence=0.30)
    assert a["sensitivity"] == b["sensitivity"]
    assert b["missed_per_1000"] == pytest.approx(6 * a["missed_per_1000"])
    assert a["missed_per_1000"] == pytest.approx(1000 * 0.05 * (1 - a["sensitivity"]))
    assert b["ppv_at_prevalence"] > a["ppv_at_prevalence"]


def test_fn_gallery_order_is_most_confident_miss_first(preds):
    ids = threshold_state(preds, 0.6)["fn_ids"]
    scores = preds.scores[ids]
    assert list(scores) == sorted(scores)
    assert all(preds.y_true[i] == 1 for i in ids)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_threshold_is_a_clear_error(preds, bad):
    with pytest.raises(ValueError, match="threshold must be in"):
        threshold_state(preds, bad)


def test_bad_prevalence_is_a_clear_error(preds):
    with pytest.raises(ValueError, match="prevalence must be in"):
        threshold_state(preds, 0.5, prevalence=2)


def test_min_cost_threshold_falls_as_misses_get_dearer(preds):
    ts = [min_cost_state(preds, c)["threshold"] for c in (0.5, 1, 5, 20, 100)]
    assert ts == sorted(ts, reverse=True) and ts[0] > ts[-1]


def test_slider_moves_the_readout_and_snaps_to_min_cost(preds):
    ui = ThresholdExplorer(preds, static=False, show_figure=False)
    before = ui.readout.value
    ui.threshold.value = 0.2
    after = ui.readout.value
    assert before != after
    assert threshold_state(preds, 0.2)["readout"] in after
    assert "fnlab-readout" in ui.readout._dom_classes
    assert ui.threshold.description == "threshold"
    ui.cost_ratio.value = 50
    ui._snap()
    assert ui.threshold.value == pytest.approx(round(min_cost_state(preds, 50, ui.prevalence.value)["threshold"], 2))
    assert readout_html(ui.state) == ui.readout.value


def test_widget_draws_the_panel_with_gallery(preds):
    images = np.random.default_rng(1).integers(0, 255, (len(preds), 16, 16), dtype=np.uint8)
    ui = ThresholdExplorer(preds, static=False, images=images, show_figure=True)
    assert ui.fig is not None and len(ui.fig.axes) >= 4
    first = ui.fig
    ui.threshold.value = 0.7
    assert ui.fig is not first  # redrawn for the new threshold
    plt.close("all")


def test_static_companions(preds):
    fig = thresholds_side_by_side(preds, [0.2, 0.5, 0.8])
    assert len(fig.axes) == 3
    fig2 = threshold_panel(preds, 0.99)
    assert fig2.axes
    plt.close("all")


def test_missed_case_gallery_outlines_the_lesion_masks(preds):
    images = np.zeros((len(preds), 8, 8), np.uint8)
    masks = np.zeros((len(preds), 8, 8), bool)
    masks[:, 2:5, 3:6] = True
    n_fn = threshold_state(preds, 0.5)["fn"]
    assert n_fn > 0
    fig = threshold_panel(preds, 0.5, images=images, masks=masks, max_gallery=4)
    gallery = [ax for ax in fig.axes if ax.get_title().startswith("missed")]
    assert len(gallery) == min(4, n_fn)
    assert all(ax.collections for ax in gallery)  # a contour per missed case
    plain = threshold_panel(preds, 0.5, images=images, max_gallery=4)
    assert not any(ax.collections for ax in plain.axes if ax.get_title().startswith("missed"))
    ui = ThresholdExplorer(preds, static=False, images=images, masks=masks, show_figure=True)
    assert any(ax.collections for ax in ui.fig.axes if ax.get_title().startswith("missed"))
    plt.close("all")


def test_state_agrees_with_metrics(preds):
    s = threshold_state(preds, 0.42)
    m = binary_metrics(preds, 0.42)
    for k in ("tp", "fp", "tn", "fn", "sensitivity", "specificity", "auc"):
        assert s[k] == m[k]


def test_batch_runs_get_a_static_view_with_no_live_widget(preds, monkeypatch):
    # FNLAB_STATIC_WIDGETS=1 (fnlab course run, make test): readout and figure as plain outputs
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    monkeypatch.setenv("FNLAB_STATIC_WIDGETS", "1")
    images = np.zeros((len(preds), 8, 8), np.uint8)
    ui = ThresholdExplorer(preds, images=images, threshold=0.4)
    assert ui.static and ui.fig is None  # nothing drawn into a live Output widget
    assert "FN=" in ui.readout.value  # the state is still computed
    InteractiveShell.instance()
    with capture_output() as shown:
        ui._ipython_display_()
    kinds = [sorted(o.data) for o in shown.outputs]
    figure = [o for o in shown.outputs  # a PNG under the inline backend, its repr under Agg
              if "image/png" in o.data or o.data.get("text/plain", "").startswith("<Figure")]
    assert any("text/html" in k for k in kinds) and figure and ui.fig is not None
    assert not any("application/vnd.jupyter.widget-view+json" in k for k in kinds)
    html = next(o.data["text/html"] for o in shown.outputs if "text/html" in o.data)
    assert "Static view" in html and readout_html(ui.state) in html and "0.40" in html
    assert ThresholdExplorer(preds, show_figure=False, static=False).static is False
    plt.close("all")
