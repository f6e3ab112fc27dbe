"""Run folders are written whole, checked always, and trained once per cache key.

Crashes are simulated two ways: an exception raised between two steps (the writer's
own clean-up runs), and a forked child that ``os._exit``s between two steps (nothing
runs after it, as with ``kill -9``); the folder then holds the complete old Run or the
complete new one, and the next write removes what the dead writer left.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from support import tiny_data as _tiny_data

import fnlab.runs as runs
from fnlab.cli import main
from fnlab.runs import (
    Run,
    RunError,
    clean_stale,
    get_or_train,
    load_checkpoint,
    model_from_checkpoint,
    sign_run,
    train_run,
)
from fnlab.train import TrainConfig

linux_fork = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="simulates kill -9 with a forked child (Linux)")



def tiny_data(seed=0, n=40, size=16):
    return _tiny_data(seed, n, size, n_eval=20)


CFG = TrainConfig(dataset="tiny", model="smallcnn", model_kwargs={"width": 8}, epochs=1,
                  batch_size=16, augment=None, progress=False, device="cpu", seed=0)
ATT = CFG.replace(model="attention_cnn")


@pytest.fixture(scope="module")
def runs_made(tmp_path_factory):
    base = tmp_path_factory.mktemp("made")
    train_run(CFG, out_dir=base / "small", data=tiny_data(), ci=False)
    train_run(ATT, out_dir=base / "attention", data=tiny_data(), ci=False)
    return base


@pytest.fixture
def small(runs_made, tmp_path):
    """A fresh copy of the smallcnn Run in ``tmp_path/work/run``."""
    out = tmp_path / "work" / "run"
    shutil.copytree(runs_made / "small", out)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def copier(src: Path, stop_after: int | None = None):
    """A ``fill`` for runs._publish that copies a Run's files (minus its manifest)."""
    def fill(tmp: Path) -> None:
        names = [n for n in sorted(os.listdir(src)) if n != "manifest.json"]
        for i, name in enumerate(names):
            if stop_after is not None and i == stop_after:
                os._exit(9)  # killed mid-write
            shutil.copyfile(src / name, tmp / name)
    return fill


def in_child(target) -> int:
    """Run ``target`` in a forked child; return its exit code."""
    proc = multiprocessing.get_context("fork").Process(target=target)
    proc.start()
    proc.join(60)
    return proc.exitcode


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------- --out / --force
def test_cli_out_refused_before_any_data(tmp_path, capsys, monkeypatch):
    import fnlab.data.registry

    def boom(*a, **k):
        raise AssertionError("data loaded before --out was checked")

    monkeypatch.setattr(fnlab.data.registry, "load_dataset", boom)
    monkeypatch.setattr(runs, "_load_data", boom)
    base = ["train", "--dataset", "synthetic", "--profile", "smoke", "--out"]

    user = tmp_path / "mine"
    user.mkdir()
    (user / "metrics.json").write_text('{"mine": 1}')
    assert main([*base, str(user)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds a Run" in err and "--force" in err
    assert (user / "metrics.json").read_text() == '{"mine": 1}'

    afile = tmp_path / "a.txt"
    afile.write_text("x")
    for extra in ([], ["--force"]):
        assert main([*base, str(afile), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is a file, not a folder" in err

    (user / "notes.txt").write_text("my notes")
    assert main([*base, str(user), "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not part of a Run (notes.txt)" in err
    assert sorted(os.listdir(user)) == ["metrics.json", "notes.txt"]


def test_train_run_refuses_an_existing_run_before_loading(small, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("data loaded")

    monkeypatch.setattr(runs, "_load_data", boom)
    before = snapshot(small)
    with pytest.raises(RunError, match="already holds a Run"):
        train_run(ATT, out_dir=small)
    assert snapshot(small) == before


def test_cli_force_replaces_the_whole_run(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic", "--profile", "smoke", "--image-size", "28",
            "--max-train-images", "40", "--width", "8", "--epochs", "1", "--device", "cpu",
            "--quiet", "--out", str(out)]
    assert main([*args, "--model", "smallcnn"]) == 0
    assert main([*args, "--model", "attention_cnn"]) == 2
    assert "--force" in capsys.readouterr().err
    assert Run.load(out).arch == "smallcnn"
    assert main([*args, "--model", "attention_cnn", "--force"]) == 0, capsys.readouterr().err
    run = Run.load(out)
    assert run.arch == "attention_cnn" and run.config["model"] == "attention_cnn"
    assert hidden(tmp_path) == []


# --------------------------------------------------------------------------- whole or nothing
def test_exception_mid_write_keeps_the_old_run(small, monkeypatch):
    before = snapshot(small)
    real = runs._write_json

    def interrupted(path, data):
        if path.name == "metrics.json":
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(runs, "_write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_run(ATT, out_dir=small, data=tiny_data(), ci=False, overwrite=True)
    assert snapshot(small) == before
    assert Run.load(small).arch == "smallcnn"
    assert hidden(small.parent) == []


def test_exception_mid_swap_puts_the_old_run_back(small, runs_made, monkeypatch):
    before = snapshot(small)
    monkeypatch.setattr(runs, "_exchange", lambda a, b: False)  # the two-rename path
    real, calls = runs._rename, []

    def rename(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 3:  # 1: tmp -> run (refused, not empty), 2: run -> aside, 3: tmp -> run
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(runs, "_rename", rename)
    with pytest.raises(KeyboardInterrupt):
        runs._publish(small, copier(runs_made / "attention"), overwrite=True)
    assert ".fnlab-old-" in calls[1][1]
    assert snapshot(small) == before and Run.load(small).arch == "smallcnn"
    assert hidden(small.parent) == []


@linux_fork
def test_killed_mid_write_leaves_old_run_and_next_write_cleans(small, runs_made):
    before = snapshot(small)
    code = in_child(lambda: runs._publish(small, copier(runs_made / "attention", stop_after=3),
                                          overwrite=True))
    assert code == 9
    assert snapshot(small) == before and Run.load(small).arch == "smallcnn"
    left = hidden(small.parent)
    assert len(left) == 1 and ".fnlab-tmp-" in left[0]  # the dead writer's folder
    Run.load(small).evaluate("youden", None, ci=False)  # the next write
    assert hidden(small.parent) == []


@linux_fork
def test_killed_between_the_two_renames_restores_the_old_run(small, runs_made, monkeypatch):
    before = snapshot(small)
    monkeypatch.setattr(runs, "_exchange", lambda a, b: False)  # inherited by the child
    real, calls = runs._rename, []

    def rename(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # after run -> aside, before tmp -> run
            os._exit(9)
        real(src, dst)

    monkeypatch.setattr(runs, "_rename", rename)
    code = in_child(lambda: runs._publish(small, copier(runs_made / "attention"), overwrite=True))
    monkeypatch.setattr(runs, "_rename", real)
    assert code == 9
    assert not small.exists()  # the moment of the kill: moved aside, the new one not in yet
    assert any(".fnlab-old-" in n for n in hidden(small.parent))
    run = Run.load(small)  # puts back the old Run, complete
    assert run.arch == "smallcnn" and snapshot(small) == before
    run.evaluate("youden", None, ci=False)  # the next write removes the new Run's leftovers
    assert hidden(small.parent) == []


@linux_fork
def test_killed_after_the_exchange_leaves_the_new_run(small, runs_made, monkeypatch):
    probe = small.parent / "probe"
    (probe / "a").mkdir(parents=True)
    (probe / "b").mkdir()
    if not runs._exchange(probe / "a", probe / "b"):
        pytest.skip("this file system cannot exchange two folders atomically")
    shutil.rmtree(probe)
    real = runs._exchange

    def exchange_then_die(a, b):
        assert real(a, b)
        os._exit(9)  # before the old Run (now in the temporary folder) is removed

    monkeypatch.setattr(runs, "_exchange", exchange_then_die)
    code = in_child(lambda: runs._publish(small, copier(runs_made / "attention"), overwrite=True))
    monkeypatch.setattr(runs, "_exchange", real)
    assert code == 9
    assert Run.load(small).arch == "attention_cnn"  # the complete new Run
    assert len(hidden(small.parent)) == 1
    Run.load(small).evaluate("youden", None, ci=False)
    assert hidden(small.parent) == []


def test_readers_see_old_or_new_never_a_mix(small, runs_made):
    """Replace the Run 12 times while another thread keeps loading it."""
    seen, errors, stop = set(), [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.add(Run.load(small).arch)
            except Exception as exc:  # noqa: BLE001 - any failure is a torn read
                errors.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(12):
            src = runs_made / ("attention" if i % 2 == 0 else "small")
            runs._publish(small, copier(src), overwrite=True)
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert seen <= {"smallcnn", "attention_cnn"} and seen


def test_stale_temporary_folders(tmp_path):
    host, dead = runs._host_tag(), dead_pid()
    (tmp_path / "keep").mkdir()
    names = {
        "dead": f".keep.fnlab-tmp-{host}-{dead}-aa",
        "live": f".keep.fnlab-tmp-{host}-{os.getppid()}-bb",
        "old": f".keep.fnlab-tmp-{host}-{os.getppid()}-cc",
        "other_host": f".keep.fnlab-tmp-00000000-{dead}-dd",
        "aside": f".gone.fnlab-old-{host}-{dead}-ee",
        "user": ".keep.notours",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    (tmp_path / names["aside"] / "metrics.json").write_text("{}")
    two_hours_ago = time.time() - 7200
    os.utime(tmp_path / names["old"], (two_hours_ago, two_hours_ago))
    done = {p.name for p in clean_stale(tmp_path)}
    assert done == {names["dead"], names["old"], names["aside"]}
    assert (tmp_path / "gone" / "metrics.json").is_file()  # moved back, not deleted
    assert hidden(tmp_path) == sorted([names["live"], names["other_host"], names["user"]])


# --------------------------------------------------------------------------- integrity
def test_missing_manifest_is_refused_until_signed_deliberately(small, capsys):
    (small / "manifest.json").unlink()
    with pytest.raises(RunError, match=r"has no manifest\.json.*fnlab evaluate .* --resign"):
        Run.load(small)
    assert main(["evaluate", str(small), "--no-ci"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--resign" in err
    assert not (small / "manifest.json").exists()  # evaluate did not sign it
    assert main(["evaluate", str(small), "--resign", "--youden"]) == 2
    assert "--resign only signs" in capsys.readouterr().err
    assert main(["evaluate", str(small), "--resign"]) == 0
    assert "signed 6 files" in capsys.readouterr().out
    assert Run.load(small).arch == "smallcnn"


def test_an_older_manifest_is_refused(small):
    old = {"fnlab_version": "0.1.0", "sha256": {
        n: json.loads((small / "manifest.json").read_text())["sha256"][n]
        for n in ("checkpoint.pt", "val_predictions.npz", "test_predictions.npz")}}
    (small / "manifest.json").write_text(json.dumps(old))
    with pytest.raises(RunError, match="written by an older fnlab"):
        Run.load(small)
    assert sign_run(small)["previous"] is False
    Run.load(small)


def _change(path: Path) -> None:
    if path.suffix == ".npz":
        z = dict(np.load(path))
        z["scores"] = np.clip(z["scores"] + 0.3, 0, 1)
        with open(path, "wb") as f:
            np.savez(f, **z)
    elif path.suffix == ".pt":
        ckpt = torch.load(path, weights_only=True)
        ckpt["state_dict"] = {k: v + 0.5 if v.is_floating_point() else v
                              for k, v in ckpt["state_dict"].items()}
        torch.save(ckpt, path)
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        data["seed"] = 7
        path.write_text(json.dumps(data))
    else:
        path.write_text(path.read_text().replace("0.", "0.9", 1))


@pytest.mark.parametrize("name", ["config.json", "metrics.json", "history.csv",
                                  "val_predictions.npz", "test_predictions.npz", "checkpoint.pt"])
def test_every_file_is_covered(small, name):
    _change(small / name)
    with pytest.raises(RunError, match=rf"{name.replace('.', '[.]')} was modified after the run"):
        Run.load(small)


def test_an_added_file_is_refused(small):
    (small / "extra.pt").write_bytes(b"x")
    with pytest.raises(RunError, match=r"extra\.pt is not listed in manifest\.json"):
        Run.load(small)
    (small / "extra.pt").unlink()
    (small / ".DS_Store").write_bytes(b"x")  # hidden clutter is ignored
    Run.load(small)


def test_evaluate_never_resigns_changed_weights(small, capsys):
    _change(small / "checkpoint.pt")  # loadable, same architecture, other weights
    before = snapshot(small)
    assert main(["evaluate", str(small), "--youden", "--no-ci"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint.pt was modified" in err
    assert snapshot(small) == before


def test_evaluate_refuses_files_changed_after_loading(small):
    run = Run.load(small)
    weights = {k: v.clone() for k, v in run._weights().items()}
    before = snapshot(small)
    _change(small / "history.csv")
    with pytest.raises(RunError, match="history.csv changed after the run was loaded"):
        run.evaluate("youden", None, ci=False)
    assert (small / "manifest.json").read_bytes() == before["manifest.json"]
    (small / "history.csv").write_bytes(before["history.csv"])
    # a clean rewrite carries the verified weights into the new checkpoint
    again = Run.load(small)
    again.evaluate("specificity", 0.9, ci=False)
    reloaded = Run.load(small)
    assert reloaded.threshold_rule == "specificity>=0.9"
    for k, v in reloaded._weights().items():
        assert torch.equal(v, weights[k]), k


def test_foreign_checkpoint_is_refused(small, runs_made, capsys):
    shutil.copyfile(runs_made / "attention" / "checkpoint.pt", small / "checkpoint.pt")
    with pytest.raises(RunError, match="checkpoint.pt was modified"):
        Run.load(small)
    manifest = (small / "manifest.json").read_bytes()
    with pytest.raises(RunError, match="holds a 'attention_cnn' model but config.json says "
                                       "'smallcnn'"):
        sign_run(small)
    assert main(["evaluate", str(small), "--resign"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'attention_cnn' model but config.json" in err
    assert (small / "manifest.json").read_bytes() == manifest
    # relabelled as smallcnn, the weights' names and shapes still give it away
    ckpt = torch.load(small / "checkpoint.pt", weights_only=True)
    ckpt["arch"] = "smallcnn"
    torch.save(ckpt, small / "checkpoint.pt")
    with pytest.raises(RunError, match="do not match architecture 'smallcnn'.*unexpected"):
        load_checkpoint(small / "checkpoint.pt")
    with pytest.raises(RunError, match="do not match architecture 'smallcnn'"):
        sign_run(small)


@pytest.mark.parametrize("arch,options,message", [
    ("smallcnn", {"width": 100_000}, r"would have 2,790,004,100,001 parameters"),
    ("vit_tiny", {"num_layers": 10**6}, r"num_layers=1000000 is out of range"),
    ("smallcnn", {"pretrained": True}, r"may not set \['pretrained'\]"),
])
def test_huge_model_options_are_refused_without_allocating(small, arch, options, message):
    import resource

    ckpt = torch.load(small / "checkpoint.pt", weights_only=True)
    ckpt.update(arch=arch, model_kwargs=options)
    path = small.parent / "huge.pt"
    torch.save(ckpt, path)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(RunError, match=message):
        load_checkpoint(path)
    with pytest.raises(RunError, match=message):
        model_from_checkpoint(ckpt, source=path)
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 500_000  # KiB


def test_a_huge_model_in_the_config_is_refused_before_training(tmp_path, monkeypatch):
    import fnlab.train

    def boom(*a, **k):
        raise AssertionError("trained")

    monkeypatch.setattr(fnlab.train, "fit", boom)
    with pytest.raises(RunError, match="parameters"):
        train_run(CFG.replace(model_kwargs={"width": 100_000}), out_dir=tmp_path / "r",
                  data=tiny_data(), ci=False)
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- the cache
def test_cached_entry_with_an_older_manifest_is_trained_again(tmp_path):
    data = tiny_data(seed=3)
    first = get_or_train(CFG, data=data, root=tmp_path, ci=False)
    (first.path / "manifest.json").write_text('{"sha256": {}}')
    legacy = tmp_path / f".{first.path.name}.abc12_xy"  # an fnlab 0.2.0 writer's leftover
    legacy.mkdir()
    (legacy / "config.json").write_text("{}")
    os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    with pytest.warns(UserWarning, match="cached run unusable, training again.*older fnlab"):
        second = get_or_train(CFG, data=data, root=tmp_path, ci=False)
    assert not second.cached and second.path == first.path
    assert get_or_train(CFG, data=data, root=tmp_path, ci=False).cached
    assert not legacy.exists()
    assert hidden(tmp_path) == [".locks"]


def _cache_worker(root: str, counter: str, out: str, barrier) -> None:
    import fnlab.train

    real_fit = fnlab.train.fit

    def counting_fit(*a, **k):
        with open(counter, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)  # the other process asks meanwhile
        return real_fit(*a, **k)

    fnlab.train.fit = counting_fit
    barrier.wait(60)
    run = get_or_train(CFG, data=tiny_data(seed=4), root=root, ci=False)
    Path(out).write_text(json.dumps({"path": str(run.path), "cached": run.cached,
                                     "scores": run.test.scores.tolist()}))


@pytest.mark.slow  # two fresh interpreters import torch
def test_two_processes_train_a_key_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    counter = tmp_path / "trainings.txt"
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_cache_worker,
                         args=(str(tmp_path / "cache"), str(counter), str(o), barrier))
             for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(counter.read_text().splitlines()) == 1
    results = [json.loads(o.read_text()) for o in outs]
    assert results[0]["path"] == results[1]["path"]
    assert sorted(r["cached"] for r in results) == [False, True]
    assert results[0]["scores"] == results[1]["scores"]
    Run.load(results[0]["path"])
