"""Shared figures: training-history axes show whole epochs only."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from fnlab.plots import history_plot  # noqa: E402


@pytest.mark.parametrize("epochs", [2, 3, 6, 15])
def test_history_plot_epoch_ticks_are_integers(epochs):
    history = {"epoch": list(range(1, epochs + 1)),
               "train_loss": [1.0 / e for e in range(1, epochs + 1)],
               "val_loss": [1.1 / e for e in range(1, epochs + 1)]}
    fig, ax = plt.subplots()
    try:
        history_plot(history, ax=ax)
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert [line.get_label() for line in ax.get_lines()] == ["train_loss", "val_loss"]
    finally:
        plt.close(fig)


def test_history_plot_skips_missing_metrics():
    fig, ax = plt.subplots()
    try:
        history_plot({"epoch": [1, 2], "train_loss": [0.5, 0.4]}, ax=ax)
        assert [line.get_label() for line in ax.get_lines()] == ["train_loss"]
    finally:
        plt.close(fig)
