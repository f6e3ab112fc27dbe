"""Dataset registry: names, auto resolution, load_dataset for every kind."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fnlab.data import registry
from fnlab.data.imageset import BINARY_CLASSES, FOUR_CLASSES
from fnlab.data.registry import (
    DATASETS,
    DatasetNotAvailable,
    available,
    cached_status,
    cap_train,
    load_dataset,
    resolve_dataset,
)
from fnlab.profiles import get_profile


def test_registry_entries_are_complete():
    assert list(DATASETS) == ["synthetic", "synthetic4", "pneumoniamnist", "kermany",
                              "covid_radiography"]
    for info in DATASETS.values():
        assert info.description and info.licence and info.citation and info.url
        assert info.classes[0].lower() == "normal" and callable(info.loader)
    rows = available()
    assert [r["name"] for r in rows] == list(DATASETS)
    assert all("status" in r for r in rows)
    assert set(cached_status()) == set(DATASETS)


def _make_official(monkeypatch, path):
    """The file at ``path`` counts as the official 28 px file for this test."""
    import dataclasses

    from fnlab.data import medmnist

    info = dataclasses.replace(medmnist.PNEUMONIAMNIST[28], md5=medmnist.md5sum(path))
    monkeypatch.setitem(medmnist.PNEUMONIAMNIST, 28, info)


def test_resolve_auto_prefers_cached_pneumoniamnist(tmp_path, monkeypatch):
    monkeypatch.setenv("FNLAB_DATA_DIR", str(tmp_path))
    name, reason = resolve_dataset("auto")  # the test session is offline
    assert name == "synthetic" and "fnlab data download" in reason
    (tmp_path / "pneumoniamnist.npz").write_bytes(b"x")
    _make_official(monkeypatch, tmp_path / "pneumoniamnist.npz")
    name, reason = resolve_dataset()
    assert name == "pneumoniamnist" and str(tmp_path) in reason and "md5 verified" in reason
    assert "cached" in cached_status()["pneumoniamnist"]


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of: auto, synthetic, synthetic4"):
        resolve_dataset("chexpert")
    with pytest.raises(ValueError, match="covid_radiography"):
        load_dataset("chexpert")


def test_load_synthetic_uses_profile_sizes():
    p = get_profile("smoke")
    sets = load_dataset("synthetic", profile="smoke", seed=0)
    assert {k: len(v) for k, v in sets.items()} == {"train": p.n_train, "val": p.n_val,
                                                    "test": p.n_test}
    assert sets["train"].image_size == p.image_size
    assert sets["train"].class_names == BINARY_CLASSES
    assert sets["test"].meta["dataset"] == "synthetic" and sets["test"].meta["profile"] == "smoke"


def test_load_synthetic4_and_overrides():
    sets = load_dataset("synthetic4", image_size=28, seed=1, prevalence=0.75)
    assert sets["train"].class_names == FOUR_CLASSES and sets["train"].image_size == 28
    again = load_dataset("synthetic4", image_size=28, seed=1, prevalence=0.75)
    np.testing.assert_array_equal(sets["val"].images, again["val"].images)


def test_load_pneumoniamnist_from_path_caps_train(tiny_npz):
    path = tiny_npz(n=(40, 6, 6))
    with pytest.warns(UserWarning, match="md5"):
        sets = load_dataset("pneumoniamnist", data_path=path, max_train_images=10, seed=0)
    train = sets["train"]
    assert len(train) == 10 and train.meta["subsampled_from"] == 40
    assert train.counts() == {"normal": 5, "pneumonia": 5}  # stratified
    assert len(sets["test"]) == 6
    resized = load_dataset("pneumoniamnist", data_path=path, image_size=32, verify="off")
    assert resized["val"].image_size == 32 and resized["val"].meta["resized_from"] == 28


def test_load_pneumoniamnist_from_cache_or_clear_error(tmp_path, monkeypatch, tiny_npz):
    monkeypatch.setenv("FNLAB_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetNotAvailable, match="fnlab data download pneumoniamnist --size 64"):
        load_dataset("pneumoniamnist", image_size=64)
    (tmp_path / "cache").mkdir()
    shutil.copy(tiny_npz(), tmp_path / "cache" / "pneumoniamnist.npz")
    _make_official(monkeypatch, tmp_path / "cache" / "pneumoniamnist.npz")
    sets = load_dataset("auto", verify="off")
    assert sets["train"].meta["dataset"] == "pneumoniamnist"
    assert "cached" in sets["train"].meta["dataset_reason"]


@pytest.mark.realdata
def test_load_shared_variant_in_smoke_profile(shared_variant_npz):
    with pytest.warns(UserWarning):
        sets = load_dataset("pneumoniamnist", data_path=shared_variant_npz, profile="smoke")
    cap = get_profile("smoke").max_train_images
    assert len(sets["train"]) == cap and sets["train"].meta["subsampled_from"] == 3882
    assert len(sets["test"]) == 624


def test_folder_datasets_need_a_path_and_load(kermany_tree, covid_tree):
    for name in ("kermany", "covid_radiography"):
        with pytest.raises(DatasetNotAvailable, match="data_path"):
            load_dataset(name)
    k = load_dataset("kermany", data_path=kermany_tree, image_size=16, progress=False,
                     max_train_images=20, resplit=True)
    assert k["train"].image_size == 16 and len(k["train"]) == 20
    c = load_dataset("covid_radiography", data_path=covid_tree, image_size=16, progress=False)
    assert c["test"].class_names == FOUR_CLASSES


def test_cap_train_is_a_no_op_when_small():
    from fnlab.data.imageset import ImageSet

    sets = {"train": ImageSet(np.zeros((4, 2, 2), np.uint8), [0, 1, 0, 1])}
    registry.cap_train(sets, 10)
    assert len(sets["train"]) == 4 and "subsampled_from" not in sets["train"].meta
    cap_train(sets, None)
    assert len(sets["train"]) == 4


def test_a_file_named_by_env_is_used_by_auto_and_loaded_with_a_warning(tmp_path, monkeypatch,
                                                                        tiny_npz):
    # a rebuilt file (not the official checksum), named explicitly: what --data-path does
    monkeypatch.setenv("FNLAB_DATA_DIR", str(tmp_path / "cache"))
    rebuilt = tiny_npz("rebuilt.npz")
    monkeypatch.setenv("FNLAB_PNEUMONIAMNIST", str(rebuilt))
    name, reason = resolve_dataset("auto")
    assert name == "pneumoniamnist" and f"FNLAB_PNEUMONIAMNIST={rebuilt}" in reason
    with pytest.warns(UserWarning, match="md5"):
        sets = load_dataset("auto")
    assert sets["train"].meta["dataset"] == "pneumoniamnist" and len(sets["test"]) == 4
    assert not (tmp_path / "cache" / "pneumoniamnist.npz").exists(), "never copied into the cache"


def test_a_missing_file_named_by_env_falls_back_or_is_a_clear_error(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv("FNLAB_PNEUMONIAMNIST", str(tmp_path / "nowhere.npz"))
    name, reason = resolve_dataset("auto")
    assert name == "synthetic" and "nowhere.npz: file not found" in reason
    with pytest.raises(DatasetNotAvailable, match="nowhere.npz: file not found"):
        load_dataset("pneumoniamnist")


def test_a_course_runs_failed_download_reason_is_what_every_notebook_says(tmp_path, monkeypatch):
    from fnlab.data.registry import resolve_dataset

    monkeypatch.setenv("FNLAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FNLAB_OFFLINE", "1")
    monkeypatch.delenv("FNLAB_PNEUMONIAMNIST", raising=False)
    assert "offline mode" in resolve_dataset("auto")[1]
    monkeypatch.setenv("FNLAB_AUTO_REASON", "could not download PneumoniaMNIST (timed out)")
    assert resolve_dataset("auto") == ("synthetic", "could not download PneumoniaMNIST (timed out)")
