"""The benchmark scripts' --smoke forms, their JSON schema and the README generator.

Each script runs once (module fixture) in its smoke form into a temporary folder;
the real-data benchmark skips when ../shared/data is absent. No timings are
asserted (speed figures belong to the benchmarks themselves), and README.md itself
is never modified: the generator writes to a temporary copy.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

C = importlib.import_module("_common")
run_all = importlib.import_module("run_all")
bench_models = importlib.import_module("bench_models")
bench_recipe = importlib.import_module("bench_recipe")

SHARED_NPZ = bench_models.default_data_path()
UNION_NPZ = bench_recipe.default_data_path()
OWN = ["models", "inference", "course"]
OTHERS = {"trainer": "bench_trainer.py", "synthetic": "bench_synthetic.py"}


def _run(script: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    """Every benchmark's --smoke form, run once into one folder (name.json)."""
    out = tmp_path_factory.mktemp("bench-smoke")
    jobs = {"inference": "bench_inference.py", "course": "bench_course.py",
            "lessons": "bench_lessons.py"}
    if SHARED_NPZ is not None:
        jobs["models"] = "bench_models.py"
    if UNION_NPZ is not None:
        jobs["recipe"] = "bench_recipe.py"
    for name, script in OTHERS.items():
        if (BENCH / script).is_file():
            jobs[name] = script
    for name, script in jobs.items():
        proc = _run(script, "--smoke", "--out", str(out / f"{name}.json"))
        (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
    return out


def _load(smoke_dir: Path, name: str) -> dict:
    path = smoke_dir / f"{name}.json"
    log = smoke_dir / f"{name}.log"
    assert path.is_file(), f"{name}: no JSON written; output:\n{log.read_text()[-3000:]}"
    return json.loads(path.read_text())


def _check_schema(data: dict, name: str) -> None:
    missing = [k for k in C.REQUIRED_KEYS if k not in data]
    assert not missing, f"{name}.json lacks {missing}"
    assert data["name"] == name
    assert data["smoke"] is True
    assert data["schema_version"] == C.SCHEMA_VERSION
    assert data["cpu_count"] >= 1
    assert data["torch_version"] and data["device"]
    assert data["command"].startswith("python benchmarks/")
    assert "--smoke" in data["command"]
    assert set(data["load_average"]) == {"start", "end"}
    assert 0 < data["wall_seconds"] < 900  # measured, and within the run's timeout
    for key in ("cpu_count", "torch_version", "cpu_model", "python"):
        assert key in data["machine"]
    table = data.get("table")
    assert table and table["rows"], f"{name}.json has no table"
    assert all(len(r) == len(table["columns"]) for r in table["rows"])


# --------------------------------------------------------------------------- own scripts
@pytest.mark.skipif(SHARED_NPZ is None, reason="no PneumoniaMNIST file in ../shared/data "
                                               "(real-data benchmark)")
def test_models_smoke(smoke_dir):
    data = _load(smoke_dir, "models")
    _check_schema(data, "models")
    fig = data["figures"]
    runs = fig["per_run"]
    assert {r["model"] for r in runs} == set(bench_models.SMOKE["models"])
    for r in runs:
        assert 0.0 <= r["test_auc"] <= 1.0
        low, high = r["test_auc_ci"]
        assert low <= r["test_auc"] <= high
        assert 0.0 <= r["sensitivity"] <= 1.0 and 0.0 <= r["specificity"] <= 1.0
        assert r["fn"] + r["tp"] == bench_models.SMOKE["test"] - (r["tn"] + r["fp"])
        assert r["epochs"] == 1 and r["train_seconds"] > 0
        assert r["n_train"] <= bench_models.SMOKE["train"]
    # the best single model is chosen on validation, the ensemble from the zoo only
    zoo = [m for m in bench_models.SMOKE["models"] if m != bench_models.REFERENCE]
    assert fig["best_single"] == max(zoo, key=lambda m: fig["models"][m]["summary"]["val_auc"]
                                     ["mean"])
    assert set(fig["ensemble"]["members"]) <= set(zoo)
    texts = [g["goal"] for g in data["goals"]]
    assert any("0.975" in t for t in texts) and any("ensemble" in t for t in texts)
    assert all(isinstance(g["met"], bool) for g in data["goals"])
    assert any("MedMNIST" in r[0] for r in data["table"]["rows"])
    # the recipe and the fair side-by-side of bench_recipe, on the same file
    recipe = fig["recipe"]
    assert recipe["winner"] in ("recipe_today", "ema")
    assert set(recipe["rows"]) == set(bench_recipe.SMOKE_ROWS)
    labels = [r[0] for r in data["table"]["rows"]]
    assert any("the recipe's wall-clock" in label for label in labels)
    assert sum("published" in label for label in labels) == len(bench_recipe.PUBLISHED)
    assert [g["goal"] for g in data["goals"] if g["goal"].startswith("recipe: ")], texts


@pytest.mark.skipif(UNION_NPZ is None, reason="../shared/data/pneumoniamnist_28_union.npz "
                                              "absent (real-data benchmark)")
def test_recipe_smoke(smoke_dir):
    data = _load(smoke_dir, "recipe")
    _check_schema(data, "recipe")
    fig = data["figures"]
    rows = {r["row"]: r for r in fig["rows"]}
    assert list(rows) == ["recipe_today", "ema", bench_recipe.REFERENCE_ROW]
    for r in rows.values():
        (s,) = r["per_seed"]
        assert 0.0 <= s["test_auc"] <= 1.0 and s["train_seconds"] > 0
        low, high = s["test_auc_ci"]
        assert low <= s["test_auc"] <= high
    # the winner is chosen on validation among the fnlab rows, never the reference
    assert fig["winner"] in ("recipe_today", "ema")
    assert fig["winner"] == bench_recipe.choose_winner(fig["rows"])["row"]
    assert fig["winner_seconds_alone"] > 0  # the winner was timed alone
    assert [g["goal"][:6] for g in data["goals"]] == ["winner"] * 3
    labels = [row[0] for row in data["table"]["rows"]]
    assert any("published" in label for label in labels)


def test_recipe_pieces():
    import numpy as np

    from fnlab.data.imageset import ImageSet

    x = np.random.default_rng(0).integers(0, 255, (10, 8, 8), dtype=np.uint8)
    s = ImageSet(x, np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1]))
    under = bench_recipe.undersample(s, seed=0)
    assert np.bincount(under.labels).tolist() == [3, 3]
    dark = ImageSet((x // 4).astype(np.uint8), s.labels)
    f = bench_recipe.standardiser(s)
    a, b = f(s).images.astype(float), f(dark).images.astype(float)
    assert abs(a.mean() - b.mean()) < 3 and abs(a.std() - b.std()) < 3  # the shift is gone
    def fake(row, spec, auc, passes):
        return {"row": row, "per_seed": [{"val_specificity": spec}], "image_passes": passes,
                "summary": {"val_auc": {"mean": auc}}}

    # validation specificity at the recall target first, validation AUC on ties; "longer"
    # costs more than the budget allows (2.5x the baseline's image passes)
    rows = [fake("recipe_today", 0.90, 0.99, 100), fake("ema", 0.95, 0.95, 110),
            fake("mixup", 0.95, 0.96, 200), fake("longer", 0.99, 0.99, 250)]
    assert bench_recipe.choose_winner(rows)["row"] == "mixup"
    members = bench_recipe.member_configs("seed_ensemble", 1)
    assert [m[1]["seed"] for m in members] == [1, 101, 201]
    assert bench_recipe.member_configs("tta", 0) == bench_recipe.member_configs("recipe_today", 0)
    proc = _run("bench_recipe.py", "--rows", "nope", timeout=300)
    assert proc.returncode == 2 and "unknown row(s) nope" in proc.stderr


def test_inference_smoke(smoke_dir):
    data = _load(smoke_dir, "inference")
    _check_schema(data, "inference")
    rows = data["figures"]["rows"]
    assert [r["model"] for r in rows] == ["smallcnn", "attention_cnn"]
    for r in rows:
        assert 0 < r["batch1_ms_p50"] <= r["batch1_ms_p95"]
        assert r["batch256_images_per_second"] > 0 and r["mflops_per_image"] > 0
    assert rows[0]["throughput_vs_smallcnn"] == pytest.approx(1.0)


def test_course_smoke(smoke_dir):
    data = _load(smoke_dir, "course")
    _check_schema(data, "course")
    fig = data["figures"]
    assert fig["profile"] == "smoke"
    assert [nb["name"][:2] for nb in fig["notebooks"]] == ["00"]
    assert fig["notebooks"][0]["status"] == "ok", fig["notebooks"][0]
    assert fig["total_seconds"] > 0


def test_lessons_smoke(smoke_dir):
    data = _load(smoke_dir, "lessons")
    _check_schema(data, "lessons")
    fig = data["figures"]
    assert fig["profile"] == "smoke" and fig["seeds"] == [0]
    (cell,) = fig["cells"]
    assert cell["failed"] == [] and list(cell["seconds"]) == ["01_data_and_preprocessing"]
    assert cell["claims"], "notebook 01 records its claim"
    for claim in cell["claims"].values():
        assert {"id", "statement", "value", "bound", "holds"} <= set(claim)
    claims_table, (seconds_table,) = data["table"], data["tables"]
    assert claims_table["columns"][:2] == ["claim", "bound"]
    assert [r[0] for r in claims_table["rows"]] == list(cell["claims"])
    assert seconds_table["rows"][-1][0] == "**total**"


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_others_smoke(smoke_dir, name):
    """bench_trainer.py / bench_synthetic.py (owned by other engineers), when present."""
    if not (BENCH / OTHERS[name]).is_file():
        pytest.skip(f"benchmarks/{OTHERS[name]} not present")
    data = _load(smoke_dir, name)
    flat = json.dumps(data)
    assert "cpu_count" in flat and "torch" in flat and "device" in flat


# --------------------------------------------------------------------------- README
def test_readme_block_from_smoke_jsons(smoke_dir, tmp_path):
    readme = tmp_path / "README.md"
    original = (ROOT / "README.md").read_text()
    readme.write_text(original)
    block = run_all.render_results(smoke_dir)
    run_all.update_readme(readme, block)
    text = readme.read_text()
    head, rest = original.split(run_all.START, 1)
    _, tail = rest.split(run_all.END, 1)
    assert text.startswith(head) and text.endswith(tail)  # only the block changed
    inside = text.split(run_all.START, 1)[1].split(run_all.END, 1)[0]
    assert "### Inference speed at 28 px (SMOKE run" in inside
    assert "| model | device |" in inside and "|---|" in inside
    assert "Rerun: `python benchmarks/bench_inference.py --smoke" in inside
    assert "load average" in inside
    if SHARED_NPZ is not None:
        assert "**goal not met**" in inside or "**goal met**" in inside
    # regenerating is idempotent
    run_all.update_readme(readme, block)
    assert readme.read_text() == text
    assert (ROOT / "README.md").read_text() == original


def test_render_generic_json_and_goals(tmp_path):
    rec = C.Recorder("other", "Someone else's benchmark", argv=["benchmarks/other.py"])
    result = rec.finish({"images_per_second": 1234.5, "ratio": {"fnlab_vs_bare": 0.97}},
                        smoke=False, goals=[C.goal("ratio >= 0.95", True, "0.97"),
                                            C.goal("never measured", None)])
    C.write_result(result, tmp_path / "other.json")
    (tmp_path / "broken.json").write_text("{not json")
    block = run_all.render_results(tmp_path)
    assert "| figure | value |" in block
    assert "| ratio.fnlab_vs_bare | 0.970 |" in block
    assert "**goal met** — ratio >= 0.95: 0.97" in block
    assert "**goal not measured** — never measured" in block
    assert "Goals at a glance" in block


def test_render_empty_and_bad_readme(tmp_path):
    assert "Not yet measured" in run_all.render_results(tmp_path)
    bad = tmp_path / "README.md"
    bad.write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        run_all.update_readme(bad, "x\n")


# --------------------------------------------------------------------------- pieces
def test_reference_protocol_pieces():
    import torch

    assert bench_models.reference_milestones(100) == [50, 75]
    assert bench_models.reference_milestones(8) == [4, 6]
    net = bench_models.medmnist_resnet18()
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 2)


def test_models_bad_arguments(tmp_path):
    proc = _run("bench_models.py", "--data", str(tmp_path / "nope.npz"), "--out",
                str(tmp_path / "x.json"), timeout=300)
    assert proc.returncode == 2 and "nope.npz: file not found" in proc.stderr
    proc = _run("bench_models.py", "--models", "smallcnn,lenet", timeout=300)
    assert proc.returncode == 2 and "unknown model(s) ['lenet']" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_common_helpers():
    assert C.fmt(None) == "—" and C.fmt(float("nan")) == "—" and C.fmt(3) == "3"
    assert C.mean_sd([1.0, 3.0], 1) == "2.0 ± 1.4"
    assert C.summary_stats([None, 2.0])["n"] == 1
    assert C.jsonable({"x": float("inf")}) == {"x": None}
    table = C.markdown_table(["m", "auc"], [["a|b", 0.5]])
    assert "a\\|b" in table and "|---|---:|" in table


@pytest.mark.slow
def test_lessons_speedup_smoke(tmp_path):
    """bench_lessons.py --speedup: the same grid on a 1-worker and a 2-worker Dask cluster."""
    out = tmp_path / "lessons_speedup.json"
    proc = _run("bench_lessons.py", "--speedup", "--smoke", "--out", str(out))
    assert proc.returncode == 0 and out.is_file(), (proc.stdout + proc.stderr)[-3000:]
    data = json.loads(out.read_text())
    _check_schema(data, "lessons_speedup")
    runs = data["figures"]["runs"]
    assert [r["workers"] for r in runs] == [1, 2]
    assert all(r["cells_ok"] == r["cells"] == 2 for r in runs)
    assert runs[0]["speedup"] == 1.0 and runs[1]["speedup"] > 0
    assert data["figures"]["speedup"] == runs[1]["speedup"]
    assert data["goals"][0]["goal"].startswith("a 2-worker local cluster")


def test_external_claims_are_judged_at_every_seed():
    bench_external = importlib.import_module("bench_external")

    def seed(drop, ci_low, sens, spec, gain):
        gains = {m: 0.0 for m in bench_external.ADAPTATIONS if m != "none"}
        gains["histogram_match"] = gain
        return {"report": {"drop": {"drop": drop, "drop_ci": [ci_low, drop + 0.1]}},
                "curve": [{"n": 100, "sensitivity_mean": sens, "specificity_mean": spec}],
                "adaptation_gain": gains}

    ok = bench_external.claims([seed(0.4, 0.3, 0.95, 0.1, 0.08), seed(0.3, 0.2, 0.9, 0.2, 0.06)])
    assert all(ok[c]["holds"] for c in ok) and ok["local_adaptation_helps"]["best"] == \
        "histogram_match"
    one_bad = bench_external.claims([seed(0.4, 0.3, 0.95, 0.1, 0.08),
                                     seed(0.08, -0.02, 0.95, 0.6, 0.04)])
    assert not any(one_bad[c]["holds"] for c in one_bad)
