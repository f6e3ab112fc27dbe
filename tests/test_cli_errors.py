"""Every bad input to the ``fnlab`` command line gives one line on stderr, never a traceback.

Usage errors (a bad flag value, flags that conflict, a device that is not here) exit 2
and are found before any data is loaded: the ``no_data`` fixture makes loading data or
training fail the test. Data errors (a broken file, a Run that cannot be evaluated)
exit 1. Anything else is an internal error: one line that says so, with a hint to rerun
with ``FNLAB_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fnlab.cli import error_line, main

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_data(monkeypatch):
    """Loading a dataset or training fails the test: validation must come first."""
    import fnlab.data.registry
    import fnlab.train

    def refuse(*args, **kwargs):
        raise AssertionError("data were loaded (or a model trained) before validation")

    monkeypatch.setattr(fnlab.data.registry, "load_dataset", refuse)
    monkeypatch.setattr(fnlab.train, "fit", refuse)


def _cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()


# (extra train arguments, text the error line must hold); every case exits 2.
TRAIN_USAGE = [
    (["--max-train-images", "0"], "argument --max-train-images: must be an integer >= 2"),
    (["--width", "0"], "argument --width: must be an integer >= 1, got '0'"),
    (["--loss", "fn_cost", "--fn-cost", "-1"], "argument --fn-cost: must be a finite number > 0"),
    (["--loss", "fn_cost", "--fn-cost", "nan"], "--fn-cost: must be a finite number > 0, got 'nan'"),
    (["--weight-decay", "nan"], "argument --weight-decay: must be a finite number >= 0"),
    (["--lr", "inf"], "argument --lr: must be a number in (0, 10] (larger rates only "
                      "diverge), got 'inf'"),
    (["--ema", "1"], "argument --ema: must be a number in (0, 1), got '1'"),
    (["--mixup", "-0.2"], "argument --mixup: must be a number in [0, 10]"),
    (["--label-smoothing", "1"], "argument --label-smoothing: must be a number in [0, 1)"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    (["--batch-size", "-3"], "argument --batch-size: must be an integer >= 1"),
    (["--patience", "0"], "argument --patience: must be an integer >= 1"),
    (["--image-size", "-8"], "argument --image-size: must be an image side of 8 px"),
    (["--image-size", "0"], "argument --image-size: must be an image side of 8 px"),
    (["--resize-to", "0"], "argument --resize-to: must be an image side of 8 px"),
    (["--image-size", "12"], "--image-size 12: the synthetic images are 28 to 256 px"),
    (["--epochs", "two"], "argument --epochs: must be an integer >= 1, got 'two'"),
    (["--data-path", "X"], "--data-path conflicts with --dataset synthetic"),
    (["--augment", "sideways"], "unknown augment preset 'sideways'; choose one of: xray"),
    (["--model", "resnet18", "--width", "8"], "--width goes with --model smallcnn or "
                                              "attention_cnn, not resnet18"),
    (["--pretrained"], "no ImageNet weights for 'smallcnn'"),
    (["--fn-cost", "3"], "--fn-cost goes with --loss fn_cost"),
    (["--target-recall", "nan"], "--target-recall must be in (0, 1]"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    # issue 23, item 6: internal errors and silently accepted values, now refused up front
    (["--seed", "99999999999999999999999"], "argument --seed: must be a seed from 0 to "
                                            "4294967295"),
    (["--seed", "-1"], "argument --seed: must be a seed from 0 to 4294967295"),
    (["--lr", "1e308"], "argument --lr: must be a number in (0, 10] (larger rates only "
                        "diverge), got '1e308'"),
    (["--resize-to", "50000"], "argument --resize-to: must be an image side of 8 px (the "
                               "smallest the models accept) to 1024 px, got '50000'"),
    (["--image-size", "50000"], "argument --image-size: must be an image side of 8 px"),
    (["--mixup", "1e300"], "argument --mixup: must be a number in [0, 10] (0 is off; above 10"),
    (["--device", ""], "--device '' is empty; use auto, cpu, cuda, cuda:N or mps"),
    (["--device", "  "], "--device '  ' is empty"),
    (["--dataset", ""], "--dataset '' is empty; name a dataset"),
    (["--out", ""], "--out '' is empty; name the Run folder to write"),
    (["--out", "."], "'.' is the current folder or one that holds it"),
    (["--out", ".."], "'..' is the current folder or one that holds it"),
    pytest.param(["--device", "cuda"], "CUDA is not available here; use --device cpu",
                 marks=pytest.mark.skipif("_cuda_here()", reason="CUDA is available here")),
]


@pytest.mark.parametrize("extra,expected", TRAIN_USAGE)
def test_train_usage_errors_exit_2_before_loading_data(tmp_path, capsys, no_data, extra,
                                                       expected):
    out = tmp_path / "run"
    code = main(["train", "--dataset", "synthetic", "--quiet", "--out", str(out), *extra])
    line = _one_line(capsys)
    assert code == 2, line
    assert line.startswith("fnlab train: error: ") and expected in line, line
    assert not out.exists()


@pytest.mark.parametrize("argv,expected", [
    (["train", "--dataset", "kermany"], "--dataset kermany needs --data-path"),
    (["train", "--dataset", "pneumoniamnist", "--data-path", "{tmp}/missing.npz"],
     "missing.npz: no such file or folder"),
    (["train", "--dataset", "synthetic"], "the following arguments are required: --out"),
    (["evaluate", "{tmp}", "--cost-ratio", "inf"],
     "argument --cost-ratio: must be a finite number > 0, got 'inf'"),
    (["evaluate", "{tmp}", "--cost-ratio", "0"], "argument --cost-ratio: must be a finite"),
    (["evaluate", "{tmp}", "--specificity", "nan"], "--specificity must be in (0, 1]"),
    (["evaluate", "{tmp}", "--threshold", "nan"], "--threshold must be in [0, 1]"),
    (["data", "preview", "synthetic", "--out", "{tmp}/g.png", "-n", "0"],
     "argument -n/--n: must be an integer >= 1"),
    (["data", "preview", "{tmp}", "--out", "{tmp}/g.png", "--size", "0"],
     "argument --size: must be an image side of 8 px"),
    (["data", "download", "pneumoniamnist", "--timeout", "nan"],
     "argument --timeout: must be a finite number > 0"),
    (["data", "check", "{tmp}/missing"], "no such file or folder"),
    (["data", "check"], "the following arguments are required: path"),
    (["nonsense"], "invalid choice: 'nonsense'"),
    # issue 23, item 6
    (["data", "preview", "synthetic", "--out", "{tmp}/x.txt"],
     "--out {tmp}/x.txt: the preview is a PNG file; name it NAME.png"),
    (["data", "preview", "synthetic", "--out", "{tmp}"],
     "--out {tmp}: the preview is a PNG file"),
    (["data", "preview", "synthetic", "--out", "{tmp}/dir.png"],
     "--out {tmp}/dir.png: is a folder; name the PNG file to write"),
    (["data", "preview", "synthetic", "--out", "{tmp}/g.png", "--seed", "99999999999999999999"],
     "argument --seed: must be a seed from 0 to 4294967295"),
    (["data", "preview", "{tmp}", "--out", "{tmp}/g.png", "--size", "50000"],
     "argument --size: must be an image side of 8 px (the smallest the models accept) to "
     "1024 px"),
    (["course", "run", "00", "--device", "tpu", "--out", "{tmp}/course"],
     "unknown device 'tpu'"),
    (["course", "run", "00", "--device", "", "--out", "{tmp}/course"],
     "--device '' is empty"),
    (["course", "sweep", "00", "--device", "tpu", "--out", "{tmp}/sweep"],
     "unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps"),
    (["course", "sweep", "00", "--seeds", "99999999999999999999999", "--out", "{tmp}/sweep"],
     "seeds are non-negative integers up to 4294967295"),
    (["course", "run", "00", "--dataset", "", "--out", "{tmp}/course"],
     "unknown dataset ''"),
])
def test_other_usage_errors_exit_2(tmp_path, capsys, no_data, argv, expected):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    expected = expected.replace("{tmp}", str(tmp_path))
    (tmp_path / "dir.png").mkdir()
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run")] if "--out" not in expected else []
    code = main(argv)
    line = _one_line(capsys)
    assert code == 2, line
    assert "error: " in line and expected in line, line
    for made in ("course", "sweep", "x.txt", "g.png", "dir.png/preview.png"):
        assert not (tmp_path / made).exists(), made


def test_out_inside_the_run_cache_is_refused_before_loading(tmp_path, capsys, no_data,
                                                             monkeypatch):
    monkeypatch.setenv("FNLAB_DATA_DIR", str(tmp_path / "data"))
    for out in (tmp_path / "data" / "runs", tmp_path / "data" / "runs" / "mine"):
        code = main(["train", "--dataset", "synthetic", "--quiet", "--out", str(out)])
        line = _one_line(capsys)
        assert code == 2 and f"--out {out}: inside the Run cache" in line, line
        assert not out.exists()


def test_out_dot_in_an_empty_folder_is_refused_before_training(tmp_path, capsys, no_data,
                                                               monkeypatch):
    """It used to train fully, then refuse naming fnlab's own temporary folder."""
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--dataset", "synthetic", "--quiet", "--out", "."])
    line = _one_line(capsys)
    assert code == 2 and "'.' is the current folder" in line and "fnlab-tmp" not in line
    assert list(tmp_path.iterdir()) == []


def test_folder_loading_has_no_progress_bar_under_quiet(tmp_path, capsys, monkeypatch):
    import fnlab.data.folders

    seen = {}

    def load_kermany(path, **kwargs):
        seen.update(kwargs)
        raise FileNotFoundError("stopped here by the test")

    monkeypatch.setattr(fnlab.data.folders, "load_kermany", load_kermany)
    code = main(["train", "--dataset", "kermany", "--data-path", str(tmp_path), "--quiet",
                 "--device", "cpu", "--out", str(tmp_path / "run")])
    assert code == 1 and "stopped here by the test" in _one_line(capsys)
    assert seen["progress"] is False


@pytest.mark.parametrize("key,value,expected", [
    ("train_labels", np.array([0, 1, np.inf, 0, 1, 0]), "train_labels: 1 label(s) are not "
                                                         "finite (e.g. inf)"),
    ("train_images", np.zeros((6, 28, 28), np.complex64), "train_images: dtype complex64 "
                                                           "holds complex numbers"),
])
def test_inf_labels_and_complex_images_are_one_line_under_train(tmp_path, capsys, tiny_npz,
                                                                key, value, expected):
    import warnings

    path = tiny_npz("odd.npz", **{key: value})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # four of them used to be printed
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        code = main(["train", "--dataset", "pneumoniamnist", "--data-path", str(path),
                     "--quiet", "--device", "cpu", "--out", str(tmp_path / "run")])
    line = _one_line(capsys)
    assert code == 1 and line.startswith("fnlab train: error: ") and expected in line, line
    assert not (tmp_path / "run").exists()


def test_warnings_are_one_line_without_source():
    from fnlab.cli import _warning_line
    from fnlab.data.medmnist import ChecksumWarning

    fmt = _warning_line("fnlab train")
    assert fmt(ChecksumWarning("x.npz: md5 1 differs\nsecond"), ChecksumWarning, "/a/b.py", 12,
               "sets = load_npz(path)") == "fnlab train: warning: x.npz: md5 1 differs second\n"
    assert fmt(RuntimeWarning("odd"), RuntimeWarning, "/a/b.py", 1) == \
        "fnlab train: warning: RuntimeWarning: odd\n"


# --------------------------------------------------------------------------- data errors
def test_uncached_pneumoniamnist_is_one_line_before_loading(tmp_path, capsys, no_data,
                                                            monkeypatch):
    monkeypatch.setenv("FNLAB_DATA_DIR", str(tmp_path / "empty"))
    code = main(["train", "--dataset", "pneumoniamnist", "--quiet", "--out",
                 str(tmp_path / "run")])
    line = _one_line(capsys)
    assert code == 1 and "PneumoniaMNIST (28 px) is not cached in" in line, line
    assert "fnlab data download pneumoniamnist --size 28" in line


def test_npz_format_error_under_train_is_one_line(tmp_path, capsys, tiny_npz):
    bad = tiny_npz("bad.npz", val_images=None, test_labels=None)
    code = main(["train", "--dataset", "pneumoniamnist", "--data-path", str(bad), "--quiet",
                 "--out", str(tmp_path / "run")])
    line = _one_line(capsys)
    assert code == 1
    assert line.startswith("fnlab train: error: ") and "missing keys val_images" in line
    assert not (tmp_path / "run").exists()


def test_train_rejects_tiny_images_as_one_line(tmp_path, capsys, tiny_npz):
    one_px = tiny_npz("px.npz", side=1)
    code = main(["train", "--dataset", "pneumoniamnist", "--data-path", str(one_px), "--quiet",
                 "--device", "cpu", "--out", str(tmp_path / "run")])
    line = _one_line(capsys)
    assert code == 1 and "image_size must be >= 8 px" in line, line


def test_layout_errors_are_one_line(tmp_path, capsys):
    tree = tmp_path / "chest_xray"
    for split in ("train", "val", "test"):
        (tree / split / "NORMAL").mkdir(parents=True)
        (tree / split / "PNEUMONIA").mkdir(parents=True)
        (tree / split / "EFFUSION").mkdir(parents=True)
    code = main(["train", "--dataset", "kermany", "--data-path", str(tmp_path), "--quiet",
                 "--device", "cpu", "--out", str(tmp_path / "run")])
    line = _one_line(capsys)
    assert code == 1 and "problem(s)" in line and "fnlab data check" in line, line


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A Run trained once for this module with the smallest settings (about a second)."""
    root = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in (("train", 8), ("val", 6), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, 16, 16), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(k) % 2
    np.savez(root / "data.npz", **arrays)
    out = root / "run"
    code = main(["train", "--dataset", "pneumoniamnist", "--data-path", str(root / "data.npz"),
                 "--width", "4", "--epochs", "1", "--batch-size", "8", "--augment", "none",
                 "--quiet", "--device", "cpu", "--seed", "0", "--out", str(out)])
    assert code == 0
    return out


def _copy_run(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "run")


def test_evaluate_one_class_val_split_is_one_line(tmp_path, capsys, trained_run):
    from fnlab.predictions import Predictions
    from fnlab.runs import Run, sign_run

    run_dir = _copy_run(trained_run, tmp_path)
    capsys.readouterr()
    val = Run.load(run_dir).val
    keep = np.asarray(val.y_true) == 0
    Predictions(np.asarray(val.y_true)[keep], np.asarray(val.scores)[keep],
                np.asarray(val.ids)[keep], val.split, val.model, val.class_names).save(
        run_dir / "val_predictions.npz")
    sign_run(run_dir)  # a deliberate change: sign the folder again
    code = main(["evaluate", str(run_dir), "--no-ci"])
    line = _one_line(capsys)
    assert code == 1
    assert line.startswith("fnlab evaluate: error: ") and "no positive (pneumonia) case" in line


def _pickled_checkpoint_error(tmp_path, trained_run):
    import argparse

    import torch

    from fnlab.runs import RunError, load_checkpoint

    run_dir = _copy_run(trained_run, tmp_path)
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    ckpt["options"] = argparse.Namespace(lr=0.1)  # a pickled object, not a tensor
    path = tmp_path / "pickled.pt"
    torch.save(ckpt, path)
    with pytest.raises(RunError) as info:
        load_checkpoint(path)
    return path, info.value


def test_pickle_refusal_line_is_complete_and_safe(tmp_path, trained_run):
    path, exc = _pickled_checkpoint_error(tmp_path, trained_run)
    line = error_line(exc)
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith(f"{path}: refused to load") and "argparse.Namespace" in line
    assert line.endswith("restore the checkpoint.pt that fnlab wrote")
    for unsafe in ("weights_only=False", "weights_only", "add_safe_globals", "safe_globals"):
        assert unsafe not in line


def test_evaluate_pickled_checkpoint_is_one_complete_line(tmp_path, capsys, trained_run):
    from fnlab.runs import sign_run

    path, _ = _pickled_checkpoint_error(tmp_path, trained_run)
    run_dir = tmp_path / "run"
    shutil.copy(path, run_dir / "checkpoint.pt")
    try:
        sign_run(run_dir)
    except ValueError:  # signing checks the checkpoint too; write the manifest directly
        from fnlab.runs import _write_manifest

        _write_manifest(run_dir)
    capsys.readouterr()
    code = main(["evaluate", str(run_dir), "--no-ci"])
    line = _one_line(capsys)
    assert code == 1 and f"{run_dir / 'checkpoint.pt'}: refused to load" in line
    assert "argparse.Namespace" in line
    assert "weights_only" not in line and "\x1b" not in line


# --------------------------------------------------------------------------- bugs
def test_unexpected_exception_is_one_line_with_debug_hint(tmp_path, capsys, monkeypatch):
    import fnlab.data.check

    def broken(*args, **kwargs):
        return {}["no such key"]

    monkeypatch.setattr(fnlab.data.check, "check_path", broken, raising=True)
    monkeypatch.delenv("FNLAB_DEBUG", raising=False)
    code = main(["data", "check", str(tmp_path)])
    line = _one_line(capsys)
    assert code == 1
    assert line.startswith("fnlab data check: internal error: KeyError: no such key")
    assert "FNLAB_DEBUG=1" in line
    monkeypatch.setenv("FNLAB_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["data", "check", str(tmp_path)])


def test_deliberate_errors_are_not_called_bugs():
    from fnlab.cli import is_expected
    from fnlab.data.registry import resolve_dataset

    with pytest.raises(ValueError) as info:
        resolve_dataset("mnist")
    assert is_expected(info.value)
    with pytest.raises(ZeroDivisionError) as info:
        _ = 1 / 0
    assert not is_expected(info.value)
    assert is_expected(FileNotFoundError("x"))


# --------------------------------------------------------------------------- a real process
def test_real_process_gives_one_line_without_traceback(tmp_path, tiny_npz):
    """The NpzFormatError that used to end ``fnlab train`` with a traceback."""
    bad = tiny_npz("bad.npz", val_images=None)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("FNLAB_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "fnlab", "train", "--dataset", "pneumoniamnist", "--data-path",
         str(bad), "--quiet", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("fnlab train: error: ") and "missing keys val_images" in proc.stderr


def test_checksum_warning_is_one_line_in_a_real_process(tmp_path):
    """warnings.warn's default format adds the source line; the CLI prints one line."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in (("train", 8), ("val", 6), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, 16, 16), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(k) % 2
    np.savez(tmp_path / "mine.npz", **arrays)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("FNLAB_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "fnlab", "train", "--dataset", "pneumoniamnist", "--data-path",
         str(tmp_path / "mine.npz"), "--width", "4", "--epochs", "1", "--batch-size", "8",
         "--augment", "none", "--quiet", "--device", "cpu", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("fnlab train: warning: ") for line in lines), lines
    assert any("no official PneumoniaMNIST file has 16 px images" in line for line in lines)
    assert "load_npz(" not in proc.stderr and "Traceback" not in proc.stderr


def test_the_parser_is_built_without_torch():
    """``fnlab --help`` and every usage error come before torch is imported (issue 22: the
    parser used to import torch, 2-3 s on these machines; see benchmarks/bench_cli.py)."""
    code = ("import sys\nfrom fnlab.cli import build_parser\nbuild_parser()\n"
            "heavy = sorted(m for m in ('torch', 'torchvision', 'pandas', 'sklearn') "
            "if m in sys.modules)\nprint(','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"building the parser imported {proc.stdout.strip()}"
