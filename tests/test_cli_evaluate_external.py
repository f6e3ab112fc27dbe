"""``fnlab evaluate RUN --data PATH``: a folder of real PNGs end to end with a tiny Run
trained here, and one line (no traceback) for every bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fnlab.cli import main


def _tree_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A Run trained once for this module on 16 px images: noise, with a bright block on
    the pneumonias (a few seconds)."""
    root = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in (("train", 96), ("val", 40), ("test", 40)):
        y = np.arange(k) % 2
        x = (rng.random((k, 16, 16)) * 90).astype(np.uint8)
        x[y == 1, 4:10, 4:12] += 120
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
    np.savez(root / "data.npz", **arrays)
    out = root / "run"
    code = main(["train", "--dataset", "pneumoniamnist", "--data-path", str(root / "data.npz"),
                 "--width", "4", "--epochs", "3", "--batch-size", "16", "--augment", "none",
                 "--quiet", "--device", "cpu", "--seed", "0", "--out", str(out)])
    assert code == 0
    return out


def _site(root: Path, n=30, side=48, broken=0) -> Path:
    """A folder of real PNG files, NORMAL/ and PNEUMONIA/, at ``side`` px (not the Run's)."""
    rng = np.random.default_rng(1)
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            x = (rng.random((side, side)) * 90).astype(np.uint8)
            if cls == "PNEUMONIA":
                x[12:30, 12:36] += 120
            Image.fromarray(x).save(root / cls / f"{cls.lower()}_{i}.png")
    for i in range(broken):
        (root / "NORMAL" / f"broken_{i}.png").write_bytes(b"\x89PNG truncated")
    return root


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_folder_of_real_pngs_end_to_end(tiny_run, tmp_path, capsys):
    site = _site(tmp_path / "site", n=60)
    before = _tree_digest(tiny_run)
    out = tmp_path / "report" / "site.json"
    code = main(["evaluate", str(tiny_run), "--data", str(site), "--calibrate", "50",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = captured.out
    assert "home test" in text and "external" in text and "AUC drop" in text
    assert "local recalibration: " in text and "held back" in text
    report = json.loads(out.read_text())
    away = report["away"]
    assert report["n"] == 120 and away["pneumonias"] == 60
    assert away["auc_ci"][0] <= away["auc"] <= away["auc_ci"][1]
    assert away["missed"] == away["fn"] and "ece" in away and "ece" in report["home"]
    assert report["drop"]["drop"] == pytest.approx(report["home"]["auc"] - away["auc"])
    local = report["local"]
    assert local["n_choose"] + local["n_judge"] == 120
    assert [row["n"] for row in report["curve"]] == [25, 50, 100]  # 200 > the set
    assert out.with_suffix(".reliability.png").stat().st_size > 0
    assert _tree_digest(tiny_run) == before  # the signed Run is never written


def test_markdown_report(tiny_run, tmp_path, capsys):
    out = tmp_path / "site.md"
    assert main(["evaluate", str(tiny_run), "--data", str(_site(tmp_path / "s")),
                 "--out", str(out)]) == 0
    assert "# External validation" in out.read_text() and "AUC drop" in out.read_text()


def test_unreadable_files_are_skipped_and_counted_or_refused_with_strict(tiny_run, tmp_path,
                                                                         capsys):
    site = _site(tmp_path / "site", broken=2)
    assert main(["evaluate", str(tiny_run), "--data", str(site)]) == 0
    assert "skipped 2 unreadable file(s)" in capsys.readouterr().out
    assert main(["evaluate", str(tiny_run), "--data", str(site), "--strict"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "2 unreadable file(s)" in line and "--strict" in line


def _empty(tmp: Path) -> Path:
    (tmp / "e" / "NORMAL").mkdir(parents=True)
    (tmp / "e" / "PNEUMONIA").mkdir()
    return tmp / "e"


def _one_class(tmp: Path) -> Path:
    site = _site(tmp / "one")
    for f in (site / "PNEUMONIA").iterdir():
        f.unlink()
    return site


def _other_size_npz(tmp: Path) -> Path:
    rng = np.random.default_rng(2)
    y = np.arange(40) % 2
    x = (rng.random((40, 64, 64)) * 200).astype(np.uint8)
    np.savez(tmp / "big.npz", test_images=x, test_labels=y[:, None])
    return tmp / "big.npz"


@pytest.mark.parametrize("make, extra, code, expected", [
    (lambda t: t / "nowhere", [], 1, "no such file or folder"),
    (_empty, [], 1, "no readable images"),
    (_one_class, [], 1, "no pneumonia images"),
    (lambda t: _site(t / "s"), ["--calibrate", "55"], 2, "leaves 5 of the 60"),
    (lambda t: _site(t / "s"), ["--calibrate", "10"], 2, "at least 20"),
    (lambda t: _site(t / "s"), ["--calibrate", "lots"], 2, "count or a fraction"),
    (lambda t: _site(t / "s"), ["--out", "x.txt"], 2, "--out must end in .json or .md"),
    (lambda t: _site(t / "s"), ["--youden"], 2, "cannot go with --data"),
    (lambda t: t / "x.npz", [], 1, "no such file or folder"),
])
def test_bad_inputs_are_one_line(tiny_run, tmp_path, capsys, make, extra, code, expected):
    path = make(tmp_path)
    assert main(["evaluate", str(tiny_run), "--data", str(path), *extra]) == code
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("fnlab evaluate: error:") and expected in line


def test_images_of_another_size_are_resized_with_a_note(tiny_run, tmp_path, capsys):
    assert main(["evaluate", str(tiny_run), "--data", str(_other_size_npz(tmp_path))]) == 0
    assert "64x64 px; the Run's input is 16 px" in capsys.readouterr().out


def test_out_inside_the_run_folder_is_refused(tiny_run, tmp_path, capsys):
    before = _tree_digest(tiny_run)
    assert main(["evaluate", str(tiny_run), "--data", str(_site(tmp_path / "s")),
                 "--out", str(tiny_run / "external.json")]) == 1
    assert "inside the Run folder" in _one_line(capsys.readouterr().err)
    assert _tree_digest(tiny_run) == before


def test_external_flags_without_data_are_usage_errors(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--calibrate", "50"]) == 2
    assert "go(es) with --data" in _one_line(capsys.readouterr().err)


def test_missing_run_is_one_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "norun"), "--data", str(_site(tmp_path / "s"))]) == 1
    assert "not a Run folder" in _one_line(capsys.readouterr().err)


def test_lesson_functions_on_a_tiny_run(tiny_run, tmp_path):
    from fnlab.external import adaptation_gain, home_vs_away, load_external, to_run_input
    from fnlab.runs import Run

    run = Run.load(tiny_run)
    ext = load_external(_site(tmp_path / "s", n=40), size=16)
    images = to_run_input(ext.images, run)
    d = home_vs_away(run, images, n_resamples=200)
    assert d["drop"] == pytest.approx(d["home"] - d["away"])
    assert d["holds"] == (d["drop"] >= 0.10 and d["drop_ci"][0] > 0)
    home_train = np.load(tiny_run.parent / "data.npz")["train_images"]
    for method in ("none", "histogram_match", "standardise", "fine_tune"):
        g = adaptation_gain(run, images, method, n=30, reference=home_train, epochs=1)
        assert g["n_local"] + g["n_judge"] == 80 and 0 <= g["auc_after"] <= 1
        assert g["gain"] == pytest.approx(g["auc_after"] - g["auc_before"])
    assert adaptation_gain(run, images, "none", n=30)["gain"] == 0
    with pytest.raises(ValueError, match="reference"):
        adaptation_gain(run, images, "histogram_match", n=30)
