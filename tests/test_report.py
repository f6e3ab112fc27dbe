"""Model cards (fnlab.report): every section, and the numbers of the Run they describe."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fnlab.calibration import brier_score, expected_calibration_error
from fnlab.metrics import binary_metrics, binary_report, missed_per_1000
from fnlab.predictions import Predictions
from fnlab.report import (
    SECTIONS,
    failure_modes_from_subgroups,
    model_card,
    subgroup_sensitivity,
    write_model_card,
)

ROOT = Path(__file__).resolve().parents[1]


def _preds(split: str, seed: int, n: int = 200) -> Predictions:
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2, int), np.ones(n - n // 2, int)]
    scores = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    return Predictions(y, scores, split=split, model="smallcnn")


@pytest.fixture()
def stand_in(tmp_path):
    """An object with the attributes of a fnlab Run (metrics.json blocks included)."""
    val, test = _preds("val", 1), _preds("test", 2)
    threshold = 0.45
    metrics = {
        "model": "smallcnn", "dataset": "synthetic", "seed": 0, "n_train": 800,
        "n_parameters": 287009, "epochs_run": 3, "best_epoch": 3, "image_size": 32,
        "class_names": ["normal", "pneumonia"], "train_seconds": 4.2, "device": "cpu",
        "threshold": threshold, "threshold_rule": "recall>=0.98", "fnlab_version": "0.1.0",
        "val": binary_report(val, threshold, "recall>=0.98", n_resamples=300),
        "test": binary_report(test, threshold, "recall>=0.98", n_resamples=300),
    }
    history = pd.DataFrame({"epoch": [1, 2, 3], "val_auc": [0.7, 0.8, 0.85]})
    return SimpleNamespace(
        config={"model": "smallcnn", "dataset": "synthetic", "loss": "weighted", "seed": 0,
                "epochs": 3, "lr": 0.003, "augment": "xray", "profile": "smoke"},
        metrics=metrics, threshold=threshold, threshold_rule="recall>=0.98", val=val,
        test=test, history=history, path=tmp_path / "synthetic-smallcnn-abc", name="demo-run")


def _section(card: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card, re.M | re.S)
    assert match, f"section {title!r} missing"
    return match.group(1)


def test_card_has_every_section_in_order(stand_in):
    card = model_card(stand_in)
    assert card.startswith("# Model card: demo-run")
    positions = [card.index(f"\n## {s}\n") for s in SECTIONS]
    assert positions == sorted(positions)


def test_operating_point_numbers_match_the_run(stand_in):
    card = model_card(stand_in, prevalence=0.1)
    op = _section(card, "Operating point")
    test = stand_in.metrics["test"]
    assert "0.4500" in op and "recall>=0.98" in op
    sens_lo, sens_hi = test["sensitivity_ci"]
    assert f"{test['sensitivity']:.3f} ({sens_lo:.3f}–{sens_hi:.3f})" in op
    assert f"{test['specificity']:.3f}" in op and f"{test['auc']:.3f}" in op
    n_pos = test["tp"] + test["fn"]
    assert f"**{test['fn']} of {n_pos} pneumonias**" in op
    missed = missed_per_1000(test["sensitivity"], 0.1)
    assert f"**{missed:.1f}**" in op and "stated deployment prevalence" in op
    # the CI of the missed count comes from the sensitivity CI (reversed order)
    assert f"{missed_per_1000(sens_hi, 0.1):.1f}–{missed_per_1000(sens_lo, 0.1):.1f}" in op
    # both splits appear in the table
    val = stand_in.metrics["val"]
    assert f"| val | {val['n']} | {val['sensitivity']:.3f}" in op


def test_default_prevalence_is_the_test_splits(stand_in):
    card = model_card(stand_in)
    prev = stand_in.test.binary_truth().mean()
    missed = missed_per_1000(stand_in.metrics["test"]["sensitivity"], prev)
    assert f"{prev:.1%}" in card and "that of the test split" in card
    assert f"**{missed:.1f}**" in card


def test_recomputes_when_metrics_json_is_stale_or_missing(stand_in):
    stand_in.metrics = {}
    stand_in.threshold = 0.5
    card = model_card(stand_in)
    m = binary_metrics(stand_in.test, 0.5)
    assert f"**{m['fn']} of {m['tp'] + m['fn']} pneumonias**" in card
    assert f"{m['sensitivity']:.3f} (" in _section(card, "Operating point")  # CI computed


def test_data_section_counts_and_prevalence(stand_in):
    data = _section(model_card(stand_in), "Data")
    assert "`synthetic`" in data and "| train | 800 |" in data
    assert f"| test | 200 | 100 | {0.5:.3f} |" in data


def test_calibration_default_and_given(stand_in):
    cal = _section(model_card(stand_in), "Calibration")
    assert f"{expected_calibration_error(stand_in.test):.4f}" in cal
    assert f"{brier_score(stand_in.test):.4f}" in cal
    given = _section(model_card(stand_in, calibration={"temperature": 1.7, "ece_before": 0.12,
                                                       "ece_after": 0.031}), "Calibration")
    assert "1.7000" in given and "0.0310" in given and "after temperature scaling" in given


def test_failure_modes_from_subgroups(stand_in):
    test = stand_in.test
    called = test.positive_scores() >= stand_in.threshold
    # site 1 = half of the pneumonias, chosen among the missed ones first
    pos = np.flatnonzero(test.y_true == 1)
    order = pos[np.argsort(called[pos], kind="stable")]
    site = np.zeros(len(test), int)
    site[order[: len(pos) // 2]] = 1
    card = model_card(stand_in, subgroups={"site": (site, {0: "A", 1: "B-portable"})},
                      failure_modes=["Faint retrocardiac opacities"])
    modes = _section(card, "Known failure modes")
    assert "Faint retrocardiac opacities" in modes
    assert "site B-portable" in modes and "site A:" not in modes
    table = subgroup_sensitivity(test, site, stand_in.threshold)
    worst = table.iloc[0]
    assert worst["group"] == 1 and worst["sensitivity"] < table.iloc[1]["sensitivity"]
    assert f"{worst['sensitivity']:.3f}" in modes
    assert int(table["fn"].sum()) == binary_metrics(test, stand_in.threshold)["fn"]


def test_subgroup_helpers_check_input():
    p = Predictions([1, 1, 0], [0.9, 0.1, 0.2])
    with pytest.raises(ValueError, match="one label per prediction"):
        subgroup_sensitivity(p, [0, 1], 0.5)
    assert failure_modes_from_subgroups(p, {"site": [0, 1, 1]}, 0.5, min_positives=5) == []


def test_intended_use_ethics_caveats_and_extra(stand_in):
    card = model_card(stand_in, intended_use="Second reader in a teaching file.",
                      ethical=["Trained on one hospital."], caveats=["Threshold from 300 images."],
                      extra={"Training history": {"best val AUC": 0.85}})
    assert "Second reader in a teaching file." in _section(card, "Intended use")
    assert "clinical" in _section(card, "Out-of-scope use").lower()
    assert "Trained on one hospital." in _section(card, "Ethical considerations")
    caveats = _section(card, "Caveats and recommendations")
    assert "Threshold from 300 images." in caveats and "synthetic" in caveats
    assert card.rstrip().endswith("| best val AUC | 0.850 |")


def test_val_test_gap_is_reported(stand_in):
    stand_in.metrics["val"] = dict(stand_in.metrics["val"], sensitivity=0.99)
    caveats = _section(model_card(stand_in), "Caveats and recommendations")
    assert "below validation" in caveats


def test_bad_input_is_named(stand_in):
    with pytest.raises(TypeError, match="lacks"):
        model_card(SimpleNamespace(config={}, metrics={}))
    with pytest.raises(ValueError, match="prevalence"):
        model_card(stand_in, prevalence=1.5)
    bad = SimpleNamespace(**vars(stand_in))
    bad.test = np.zeros(3)
    with pytest.raises(TypeError, match="run.test"):
        model_card(bad)


def test_write_model_card_default_path(stand_in):
    # the default place is inside a Run folder, signed with it (a real Run: the next test and
    # tests/test_runs.py); a folder that is not a verified Run takes no card
    from fnlab.runs import RunError

    with pytest.raises(RunError):
        write_model_card(stand_in, prevalence=0.05)
    assert not (stand_in.path / "model_card.md").exists()
    out = write_model_card(stand_in, stand_in.path / "card.md", prevalence=0.05)
    assert out.read_text(encoding="utf-8") == model_card(stand_in, prevalence=0.05)
    stand_in.path = None
    with pytest.raises(ValueError, match="pass a path"):
        write_model_card(stand_in)


def test_card_from_a_real_tiny_run(tmp_path):
    pytest.importorskip("torch")
    from fnlab.data.synthetic import synthetic_splits
    from fnlab.runs import train_run
    from fnlab.train import TrainConfig

    data = synthetic_splits(48, 40, 40, seed=0, image_size=28)
    config = TrainConfig(dataset="synthetic", epochs=1, batch_size=16, image_size=28,
                         progress=False, device="cpu")
    run = train_run(config, out_dir=tmp_path / "run", data=data, ci=False)
    card = model_card(run, data=data, subgroups={"subtype": data["test"].meta["subtype"]})
    for section in SECTIONS:
        assert f"\n## {section}\n" in card
    test = run.metrics["test"]
    assert f"{run.threshold:.4f}" in card and f"`{run.threshold_rule}`" in card
    assert f"**{test['fn']} of {test['tp'] + test['fn']} pneumonias**" in card
    assert f"{test['sensitivity']:.3f} (" in card  # CI filled in although ci=False
    assert f"| {int(run.metrics['n_parameters']):,} |" in card
    path = write_model_card(run)
    assert path.parent == run.path and path.read_text(encoding="utf-8").startswith("# Model card")


def test_report_layering():
    """report reads Runs by attribute: it needs no torch, and never imports higher layers."""
    source = (ROOT / "fnlab" / "report.py").read_text()
    for higher in ("fnlab.widgets", "fnlab.course", "fnlab.cli", "fnlab.classroom", "torch"):
        assert f"import {higher}" not in source and f"from {higher}" not in source
    code = "import sys, fnlab.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
