"""Kermany and COVID-19 Radiography folder trees: loading, splitting, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from fnlab.data.folders import (
    DatasetLayoutError,
    SkippedFilesWarning,
    grouped_holdout,
    load_covid_radiography,
    load_kermany,
    parse_kermany_name,
)
from fnlab.data.imageio import ImageReadError
from fnlab.data.imageset import BINARY_CLASSES, FOUR_CLASSES, ImageSet


@pytest.mark.parametrize("name, expected", [
    ("person1_bacteria_1.jpeg", ("person1", "bacterial")),
    ("person1_virus_6.jpeg", ("person1", "viral")),
    ("person1946_bacteria_4874.jpeg", ("person1946", "bacterial")),
    ("IM-0001-0001.jpeg", ("IM-0001", "normal")),
    ("NORMAL2-IM-0035-0001.jpeg", ("NORMAL2-IM-0035", "normal")),
    ("odd_name.png", ("odd_name", "unknown")),
])
def test_parse_kermany_name(name, expected):
    assert parse_kermany_name(name) == expected


def _load(root, **kw):
    kw.setdefault("size", 24)
    kw.setdefault("progress", False)
    return load_kermany(root, **kw)


# --------------------------------------------------------------------------- Kermany
def test_kermany_tree_loads_into_imagesets(kermany_tree):
    sets = _load(kermany_tree.parent)  # the folder above chest_xray/ is found too
    assert list(sets) == ["train", "val", "test"]
    for split, s in sets.items():
        assert isinstance(s, ImageSet) and s.split == split
        assert s.images.shape[1:] == (24, 24) and s.images.dtype == np.uint8
        assert s.class_names == BINARY_CLASSES
        assert len(s.patient_ids) == len(s) and len(s.meta["path"]) == len(s)
        assert s.meta["skipped"] == 0
    train = sets["train"]
    assert train.counts() == {"normal": 18, "pneumonia": 18}
    assert set(train.meta["subtype"]) == {"normal", "bacterial", "viral"}
    # subtype agrees with the label
    assert (train.meta["subtype"][train.labels == 0] == "normal").all()
    assert len(sets["val"]) == 6
    # torch view works
    x, y = train.torch_dataset()[0]
    assert tuple(x.shape) == (1, 24, 24)


def test_kermany_pad_and_crop_differ(kermany_tree):
    crop = _load(kermany_tree, method="crop")["test"].images
    pad = _load(kermany_tree, method="pad")["test"].images
    assert crop.shape == pad.shape
    assert (pad[:, 0, :] == 0).all() and not (crop[:, 0, :] == 0).all()  # pad adds black rows
    with pytest.raises(ValueError, match="method"):
        _load(kermany_tree, method="squash")


def _overlap(sets):
    pats = {k: set(v.patient_ids) for k, v in sets.items()}
    return pats["train"] & pats["val"], pats["train"] & pats["test"], pats["val"] & pats["test"]


def test_patient_grouped_resplit_has_no_overlap(tmp_path, make_kermany_tree):
    root = make_kermany_tree(tmp_path, n_train=20, n_val=2, n_test=6)
    # put one patient in both train and test, as in a leaky source tree
    src = root / "train" / "PNEUMONIA" / "person21_bacteria_1.jpeg"
    shutil.copy(src, root / "test" / "PNEUMONIA" / "person21_bacteria_9.jpeg")
    before = _load(root)
    assert any(_overlap(before))

    sets = _load(root, resplit=True, seed=0)
    assert all(not o for o in _overlap(sets))
    total = sum(len(s) for s in sets.values())
    assert total == sum(len(s) for s in before.values())
    assert len(sets["val"]) > len(before["val"])  # more than the shipped handful
    for s in sets.values():
        assert set(s.labels) == {0, 1}  # stratified: both classes everywhere
        assert s.meta["resplit"] == "all"
    assert 0.1 < len(sets["test"]) / total < 0.35

    with pytest.warns(SkippedFilesWarning, match="also in the test split"):
        tv = _load(root, resplit="trainval", seed=0)
    assert all(not o for o in _overlap(tv))
    assert len(tv["test"]) == len(before["test"])  # the benchmark test set is kept
    assert tv["train"].meta["dropped_for_test_overlap"] == 1

    again = _load(root, resplit=True, seed=0)
    assert (again["val"].meta["path"] == sets["val"].meta["path"]).all()  # deterministic


def test_grouped_holdout_needs_enough_patients():
    with pytest.raises(ValueError, match="only 3 patients"):
        grouped_holdout(np.array([0, 1, 0]), np.array([1, 2, 3]), 0.2)


def test_non_image_file_in_class_folder(kermany_tree):
    bad = kermany_tree / "train" / "NORMAL" / "notes.txt"
    bad.write_text("not an image")
    (kermany_tree / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0")  # ignored silently
    with pytest.raises(DatasetLayoutError) as info:
        _load(kermany_tree)
    assert str(bad) in str(info.value) and "not an image file" in str(info.value)
    with pytest.warns(SkippedFilesWarning, match=r"skipped 1 file") as rec:
        sets = _load(kermany_tree, on_error="skip")
    assert "notes.txt" in str(rec[0].message)
    assert sets["train"].meta["skipped"] == 1
    assert str(bad) in sets["train"].meta["skipped_files"]


def test_unknown_class_folder(kermany_tree, image_files):
    extra = kermany_tree / "train" / "EFFUSION"
    image_files.save(extra / "IM-0999-0001.jpeg", image_files.noise(), "JPEG")
    image_files.save(extra / "IM-0998-0001.jpeg", image_files.noise(), "JPEG")
    with pytest.raises(DatasetLayoutError, match="unknown class folder 'EFFUSION'") as info:
        _load(kermany_tree)
    assert str(extra) in str(info.value)
    with pytest.warns(SkippedFilesWarning, match="skipped 2 file"):
        sets = _load(kermany_tree, on_error="skip")
    assert sets["train"].meta["skipped"] == 2
    assert len(sets["train"]) == 36


def test_empty_split(kermany_tree):
    for cls in ("NORMAL", "PNEUMONIA"):
        for f in (kermany_tree / "val" / cls).iterdir():
            f.unlink()
    with pytest.raises(DatasetLayoutError, match="empty split 'val'") as info:
        _load(kermany_tree)
    assert str(kermany_tree / "val") in str(info.value)
    with pytest.warns(SkippedFilesWarning, match="empty split 'val'"):
        sets = _load(kermany_tree, on_error="skip")
    assert len(sets["val"]) == 0 and sets["val"].images.shape == (0, 24, 24)
    # re-splitting does not need the shipped val split
    assert len(_load(kermany_tree, resplit=True)["val"]) > 0


def test_missing_split_folder(kermany_tree):
    shutil.rmtree(kermany_tree / "val")
    with pytest.raises(DatasetLayoutError, match="missing split folder 'val'"):
        _load(kermany_tree)


def test_corrupt_truncated_and_zero_byte_images(kermany_tree, image_files):
    folder = kermany_tree / "train" / "PNEUMONIA"
    cut = image_files.truncated_jpeg(folder / "person900_bacteria_1.jpeg")
    empty = folder / "person901_virus_1.jpeg"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError) as info:
        _load(kermany_tree)
    assert info.value.path in (str(cut), str(empty))
    assert "on_error='skip'" in str(info.value)
    with pytest.warns(SkippedFilesWarning) as rec:
        sets = _load(kermany_tree, on_error="skip")
    msg = str(rec[0].message)
    assert "skipped 2 file" in msg and str(cut) in msg and str(empty) in msg
    assert "empty file" in msg and "truncated" in msg
    assert sets["train"].meta["skipped"] == 2 and len(sets["train"]) == 36


def test_decompression_bomb_sized_image_is_refused(kermany_tree, image_files):
    bomb = image_files.bomb_png(kermany_tree / "test" / "NORMAL" / "IM-0950-0001.png")
    with pytest.raises(ImageReadError, match="decompression bomb") as info:
        _load(kermany_tree)
    assert info.value.path == str(bomb)
    with pytest.warns(SkippedFilesWarning, match="decompression bomb"):
        assert _load(kermany_tree, on_error="skip")["test"].meta["skipped"] == 1


def test_mixed_sizes_and_pixel_formats(kermany_tree, image_files):
    folder = kermany_tree / "train" / "NORMAL"
    Image.fromarray(np.arange(50 * 60, dtype=np.uint16).reshape(50, 60) * 20).save(
        folder / "IM-0960-0001.png")  # 16-bit
    image_files.save(folder / "IM-0961-0001.png", np.full((70, 30, 4), 200, np.uint8))  # RGBA
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).convert("P").save(
        folder / "IM-0962-0001.png")  # palette
    sets = _load(kermany_tree, size=32)
    assert sets["train"].images.shape == (39, 32, 32)
    with pytest.raises(ValueError, match="mixed sizes") as info:
        _load(kermany_tree, size=None)
    assert "IM-0960-0001.png" in str(info.value) or "IM-0961-0001.png" in str(info.value)
    assert "size=N" in str(info.value)


def test_on_error_value_is_checked(kermany_tree):
    with pytest.raises(ValueError, match="on_error"):
        _load(kermany_tree, on_error="ignore")
    with pytest.raises(ValueError, match="resplit"):
        _load(kermany_tree, resplit="patients")


def test_not_a_kermany_tree(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetLayoutError, match="no train/, val/ or test/"):
        _load(tmp_path)


# --------------------------------------------------------------------------- COVID-19 Radiography
def test_covid_tree_loads_4_classes_with_3_1_1_split(covid_tree):
    sets = load_covid_radiography(covid_tree.parent, size=24, progress=False)
    assert list(sets) == ["train", "val", "test"]
    for s in sets.values():
        assert s.class_names == FOUR_CLASSES and s.patient_ids is None
        assert s.images.shape[1:] == (24, 24)
        assert set(s.labels) == {0, 1, 2, 3}  # stratified
        assert not any("masks" in p for p in s.meta["path"])
    n = {k: len(v) for k, v in sets.items()}
    assert sum(n.values()) == 24
    assert n["train"] >= 2.5 * n["val"] and abs(n["val"] - n["test"]) <= 2
    paths = [set(s.meta["path"]) for s in sets.values()]
    assert not (paths[0] & paths[1]) and not (paths[0] & paths[2]) and not (paths[1] & paths[2])


def test_covid_kfold(tmp_path, make_covid_tree):
    root = make_covid_tree(tmp_path, per_class=8)
    tests = []
    for fold in range(4):
        sets = load_covid_radiography(root, size=16, folds=4, fold=fold, progress=False, seed=1)
        assert len(sets["test"]) == len(sets["val"]) == 8 and len(sets["train"]) == 16
        tests.append(set(sets["test"].meta["path"]))
    assert set().union(*tests) == {f for s in tests for f in s}
    assert len(set().union(*tests)) == 32  # every image is a test image exactly once
    with pytest.raises(ValueError, match="fold must be in 0..3"):
        load_covid_radiography(root, folds=4, fold=4, progress=False)
    with pytest.raises(ValueError, match="at least 3"):
        load_covid_radiography(root, folds=2, progress=False)


def test_covid_unknown_class_folder_and_non_image(covid_tree, image_files):
    image_files.save(covid_tree / "Tuberculosis" / "TB-1.png", image_files.noise())
    (covid_tree / "Normal" / "list.csv").write_text("a,b")
    with pytest.raises(DatasetLayoutError) as info:
        load_covid_radiography(covid_tree, size=16, progress=False)
    msg = str(info.value)
    assert "unknown class folder 'Tuberculosis'" in msg and "list.csv" in msg
    with pytest.warns(SkippedFilesWarning, match="skipped 2 file"):
        sets = load_covid_radiography(covid_tree, size=16, progress=False, on_error="skip")
    assert sets["train"].meta["skipped"] == 2


def test_covid_aliases_and_too_few_images(tmp_path, image_files):
    for name in ("normal", "Lung Opacity", "Viral_Pneumonia", "COVID-19"):
        for i in range(2):
            image_files.save(tmp_path / name / f"{i}.png", image_files.noise())
    with pytest.raises(ValueError, match="needs at least 5 per class"):
        load_covid_radiography(tmp_path, size=16, progress=False)
