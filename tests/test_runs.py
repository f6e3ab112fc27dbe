"""Run folders: round trip, mismatch and tamper errors, missing files, the config-hash cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from support import tiny_data

from fnlab import models
from fnlab.runs import (
    REQUIRED_FILES,
    Run,
    RunError,
    add_document,
    check_out_dir,
    config_key,
    get_or_train,
    load_checkpoint,
    save_checkpoint,
    sign_run,
    train_run,
)
from fnlab.train import TrainConfig, predict

REQUIRED_SPLIT_KEYS = {"n", "auc", "auc_ci", "sensitivity", "specificity", "ppv", "npv", "f1",
                       "tp", "fp", "tn", "fn", "threshold", "threshold_rule"}


CFG = TrainConfig(dataset="tiny", model="smallcnn", model_kwargs={"width": 8}, epochs=2,
                  batch_size=16, augment=None, progress=False, device="cpu", seed=0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run1"
    train_run(CFG, out_dir=out, data=tiny_data(), ci=False)
    return out


def test_run_folder_contents_and_metrics(run_dir):
    for name in REQUIRED_FILES:
        assert (run_dir / name).is_file(), name
    m = json.loads((run_dir / "metrics.json").read_text())
    for key in ("model", "dataset", "seed", "train_seconds", "images_per_second"):
        assert key in m, key
    assert m["model"] == "smallcnn" and m["dataset"] == "tiny" and m["seed"] == 0
    for split in ("val", "test"):
        assert REQUIRED_SPLIT_KEYS <= set(m[split]), split
        assert m[split]["threshold_rule"] == "recall>=0.98"
    assert m["val"]["n"] == 40 and m["val"]["sensitivity"] >= 0.98
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["arch"] == "smallcnn" and ckpt["class_names"] == ["normal", "pneumonia"]
    assert ckpt["num_classes"] == 2 and ckpt["in_channels"] == 1 and ckpt["image_size"] == 16
    assert ckpt["threshold"] == pytest.approx(m["threshold"])
    assert set(ckpt["normalization"]) == {"mean", "std"}
    assert ckpt["config"]["model_kwargs"] == {"width": 8}


def test_round_trip_same_predictions(run_dir):
    run = Run.load(run_dir, expect_model="smallcnn")
    model = run.model()
    again = predict(model, tiny_data()["test"])
    np.testing.assert_allclose(again.scores, run.test.scores, rtol=1e-5, atol=1e-6)
    assert run.val.split == "val" and len(run.test) == 40
    assert run.metrics["test"]["n"] == 40
    assert len(run.history) == 2
    assert "smallcnn" in repr(run)


def test_architecture_mismatch(run_dir, tmp_path):
    with pytest.raises(RunError, match="holds a 'smallcnn' model, not the requested 'resnet18'"):
        Run.load(run_dir, expect_model="resnet18")
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    ckpt["arch"] = "attention_cnn"
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    from fnlab.runs import model_from_checkpoint

    with pytest.raises(RunError, match="do not match architecture 'attention_cnn'"):
        model_from_checkpoint(load_checkpoint(tmp_path / "checkpoint.pt"), source="x.pt")


def test_tampered_and_corrupt_files(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    data = bytearray((copy / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "checkpoint.pt").write_bytes(bytes(data))
    with pytest.raises(RunError, match=r"checkpoint\.pt was modified after the run was written"):
        Run.load(copy)
    (copy / "manifest.json").unlink()  # no manifest: refused, never trusted
    with pytest.raises(RunError, match=r"has no manifest\.json.*fnlab evaluate .* --resign"):
        Run.load(copy)
    (copy / "checkpoint.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(RunError, match=r"checkpoint\.pt: corrupt or tampered checkpoint"):
        sign_run(copy)  # signing deliberately still reads the checkpoint with weights_only
    assert not (copy / "manifest.json").exists()


class Evil:
    """An arbitrary object: weights_only loading must refuse to build it."""


def test_checkpoint_with_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "fnlab-checkpoint", "payload": Evil()}, path)
    with pytest.raises(RunError, match=r"evil\.pt: corrupt or tampered"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(RunError, match="not an fnlab checkpoint"):
        load_checkpoint(path)


def test_missing_files_listed(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "test_predictions.npz").unlink()
    (copy / "history.csv").unlink()
    with pytest.raises(RunError, match="missing history.csv, test_predictions.npz"):
        Run.load(copy)


def test_checkpoint_atomic_save_leaves_no_temp(tmp_path):
    m = models.create("smallcnn", width=8)
    save_checkpoint(tmp_path / "c.pt", m, class_names=["normal", "pneumonia"], threshold=0.3)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert load_checkpoint(tmp_path / "c.pt")["threshold"] == 0.3


def test_evaluate_rethresholds_and_writes(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    run = Run.load(copy)
    m = run.evaluate("specificity", 0.9, ci=False)
    assert m["test"]["threshold_rule"] == "specificity>=0.9"
    again = Run.load(copy)  # manifest updated, checkpoint threshold updated
    assert again.threshold == pytest.approx(m["threshold"])
    assert again.metrics["train_seconds"] == run.metrics["train_seconds"]


def test_cache_hit_skips_training(tmp_path, monkeypatch):
    data = tiny_data(seed=1)
    first = get_or_train(CFG, data=data, root=tmp_path, ci=False)
    assert not first.cached
    import fnlab.train

    def boom(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(fnlab.train, "fit", boom)
    second = get_or_train(CFG.replace(device="auto", progress=True), data=data, root=tmp_path,
                          ci=False)
    assert second.cached and second.path == first.path
    np.testing.assert_array_equal(second.test.scores, first.test.scores)
    other_rule = get_or_train(CFG, threshold_rule="youden", data=data, root=tmp_path, ci=False)
    assert other_rule.cached and other_rule.threshold_rule == "youden"
    # another seed, or other data, is another key
    assert config_key(CFG, data) != config_key(CFG.replace(seed=5), data)
    assert config_key(CFG, data) != config_key(CFG, tiny_data(seed=2))


def test_cache_key_follows_the_models_architecture_revision(monkeypatch):
    from fnlab import models
    from fnlab.runs import config_key
    from fnlab.train import TrainConfig

    att, cnn = TrainConfig(model="attention_cnn"), TrainConfig(model="smallcnn")
    before = config_key(att), config_key(cnn)
    monkeypatch.setitem(models.ARCHITECTURE_REVISIONS, "attention_cnn", 99)
    assert config_key(att) != before[0], "a changed architecture must not reuse old weights"
    assert config_key(cnn) == before[1], "other models keep their cache"


def test_a_fold_judged_on_its_held_out_part_is_cached_and_loads(tmp_path):
    # notebook 08's cross-validation passes the held-out fold (split "val") as val and test;
    # the Run's files are its val and test roles, and the cached Run must load again
    data = tiny_data(seed=3)
    held_out = data["val"]
    fold = {"train": data["train"], "val": held_out, "test": held_out}
    first = get_or_train(CFG, data=fold, root=tmp_path, ci=False)
    again = get_or_train(CFG, data=fold, root=tmp_path, ci=False)
    assert not first.cached and again.cached
    assert (again.val.split, again.test.split) == ("val", "test")
    assert again.test.meta["source_split"] == "val"
    np.testing.assert_allclose(again.test.scores, again.val.scores)


def test_a_model_card_is_added_to_the_run_and_signed_with_it(tmp_path):
    # notebook 08 writes the card into the cached Run: the Run must stay loadable (CI once
    # found every later notebook refused the poisoned cache entry)
    from fnlab.report import write_model_card

    data = tiny_data(seed=5)
    run = get_or_train(CFG, data=data, root=tmp_path, ci=False)
    card = write_model_card(run)
    assert card == run.path / "model_card.md" and card.read_text().startswith("# Model card")
    again = get_or_train(CFG, data=data, root=tmp_path, ci=False)
    assert again.cached
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert "model_card.md" in json.dumps(manifest)
    card.write_text("# Model card\nall clear, ship it\n")  # edited behind the manifest
    with pytest.raises(RunError, match="model_card.md"):
        Run.load(run.path)
    check_out_dir(run.path, overwrite=True)  # a Run with a card is still a Run to replace
    with pytest.raises(RunError, match="only these documents"):
        add_document(run.path, "notes.txt", "x")
