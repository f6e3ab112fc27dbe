"""``fnlab train`` and ``fnlab evaluate``: bad names exit 2, a small real run end to end."""

from __future__ import annotations

import json

import pytest

from fnlab.cli import main

SPLIT_KEYS = {"n", "auc", "auc_ci", "sensitivity", "specificity", "ppv", "npv", "f1", "tp",
              "fp", "tn", "fn", "threshold", "threshold_rule"}


@pytest.mark.parametrize("flag,value,expected", [
    ("--model", "alexnet", "unknown model 'alexnet'; choose one of: smallcnn, attention_cnn"),
    ("--loss", "hinge", "unknown loss 'hinge'; choose one of: bce, ce, weighted"),
    ("--dataset", "mnist", "unknown dataset 'mnist'; choose one of: auto, synthetic"),
    ("--optimizer", "lion", "unknown optimizer 'lion'; choose one of: adamw, adam, sgd"),
    ("--target-recall", "1.5", "--target-recall must be in (0, 1]"),
])
def test_bad_names_exit_2_with_one_line(tmp_path, capsys, flag, value, expected):
    code = main(["train", "--dataset", "synthetic", flag, value, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_evaluate_bad_values(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--specificity", "2"]) == 2
    assert "--specificity must be in (0, 1]" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope")]) == 1
    assert "not a Run folder" in capsys.readouterr().err


def test_train_then_evaluate_on_synthetic(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "synthetic", "--profile", "smoke", "--image-size", "32",
                 "--model", "smallcnn", "--width", "8", "--epochs", "1", "--seed", "1",
                 "--device", "cpu", "--quiet", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "test: n=" in text and f"wrote {out}" in text
    m = json.loads((out / "metrics.json").read_text())
    for key in ("model", "dataset", "seed", "train_seconds", "images_per_second"):
        assert key in m
    assert (m["model"], m["dataset"], m["seed"]) == ("smallcnn", "synthetic", 1)
    for split in ("val", "test"):
        assert SPLIT_KEYS <= set(m[split])
        assert m[split]["threshold_rule"] == "recall>=0.98"
        assert len(m[split]["auc_ci"]) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["model_kwargs"] == {"width": 8} and config["epochs"] == 1

    assert main(["evaluate", str(out), "--specificity", "0.9", "--no-ci"]) == 0
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["test"]["threshold_rule"] == "specificity>=0.9"
    assert m2["val"]["specificity"] >= 0.9
    assert m2["train_seconds"] == m["train_seconds"]
    assert main(["evaluate", str(out), "--cost-ratio", "10", "--no-ci"]) == 0
    assert json.loads((out / "metrics.json").read_text())["threshold_rule"] == "cost_ratio=10"
    assert main(["evaluate", str(out), "--no-ci"]) == 0
    assert json.loads((out / "metrics.json").read_text())["threshold_rule"] == "recall>=0.98"


def test_train_defaults_are_the_recipe_and_flags_override_it(tmp_path):
    from fnlab.cli import build_parser
    from fnlab.cli.train import config_from_args
    from fnlab.train import RECIPE_28PX, TrainConfig, recipe_config

    base = ["train", "--dataset", "synthetic", "--out", str(tmp_path / "r")]
    config = config_from_args(build_parser().parse_args(base))
    expected = recipe_config(dataset="synthetic", profile="full")
    for field, value in RECIPE_28PX.items():
        assert getattr(config, field) == value != getattr(TrainConfig(), field)
    for field in ("epochs", "batch_size", "lr", "loss", "augment", "balanced_sampler", "ema"):
        assert getattr(config, field) == getattr(expected, field), field
    config = config_from_args(build_parser().parse_args(
        [*base, "--augment", "xray", "--balanced-sampler"]))
    assert (config.augment, config.balanced_sampler) == ("xray", True)
    config = config_from_args(build_parser().parse_args([*base, "--no-balanced-sampler"]))
    assert config.balanced_sampler is False


def test_the_recipe_is_the_recipe_benchmarks_winner():
    """RECIPE_28PX is what benchmarks/results/recipe.json chose (the benchmark's row config)."""
    import importlib
    import sys
    from pathlib import Path

    from fnlab.train import RECIPE_28PX

    root = Path(__file__).resolve().parents[1]
    result = root / "benchmarks" / "results" / "recipe.json"
    if not result.is_file():
        pytest.skip("benchmarks/results/recipe.json absent")
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        bench_recipe = importlib.import_module("bench_recipe")
    finally:
        sys.path.remove(str(root / "benchmarks"))
    winner = json.loads(result.read_text())["figures"]["winner"]
    spec = bench_recipe.ROWS[winner]
    assert not {"members", "undersample", "standardise", "tta"} & set(spec), spec
    assert spec.get("config", {}) == RECIPE_28PX
