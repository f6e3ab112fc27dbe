"""``.npz`` members are checked against a size limit from their headers before anything
is inflated (a decompression bomb is refused), and odd dtypes are one clear problem."""

from __future__ import annotations

import warnings
import zipfile

import numpy as np
import pytest
from support import write_npz_bomb

from fnlab.cli import main
from fnlab.data import npzcheck
from fnlab.data.medmnist import NpzFormatError, inspect_npz, load_npz

BOMB_REASON = ("train_images: array of 76000 x 224 x 224 uint8 = 3,813,376,000 bytes exceeds "
               "the limit of 2,147,483,648 bytes (possible decompression bomb)")


@pytest.fixture
def bomb(tmp_path):
    """3.8 MB on disk, 3.8 GB of zeros once inflated."""
    return write_npz_bomb(tmp_path / "bomb.npz")


@pytest.fixture
def inflated(monkeypatch):
    """Counts the bytes read out of zip members (what NumPy inflates)."""
    count = {"bytes": 0}
    original = zipfile.ZipExtFile.read

    def read(self, n=-1):
        data = original(self, n)
        count["bytes"] += len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    return count


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_the_bomb_is_a_real_one(bomb):
    """The member really inflates to zeros (a reader without the check would go on)."""
    assert bomb.stat().st_size < 5e6
    with zipfile.ZipFile(bomb) as z:
        info = z.getinfo("train_images.npy")
        assert info.file_size > 3.8e9
        with z.open(info) as member:
            member.read(128)
            assert member.read(1 << 20) == b"\0" * (1 << 20)


def test_data_check_refuses_the_bomb_before_inflating(bomb, capsys, inflated):
    assert main(["data", "check", str(bomb)]) == 1
    out = capsys.readouterr().out
    assert BOMB_REASON in out and "FAILED: 1 problem(s)" in out
    assert inflated["bytes"] < 4096  # the .npy header, nothing of the array


def test_train_and_preview_refuse_the_bomb_in_one_line(bomb, tmp_path, capsys, inflated):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "pneumoniamnist", "--data-path", str(bomb), "--quiet",
                 "--device", "cpu", "--out", str(run)]) == 1
    line = _one_line(capsys)
    assert line.startswith(f"fnlab train: error: {bomb}: ") and BOMB_REASON in line
    assert not run.exists()
    assert main(["data", "preview", str(bomb), "--out", str(tmp_path / "g.png")]) == 1
    line = _one_line(capsys)
    assert line.startswith("fnlab data preview: error: ") and BOMB_REASON in line
    assert not (tmp_path / "g.png").exists()
    assert inflated["bytes"] < 3 * 4096


def test_load_npz_names_the_file_and_the_limit(bomb):
    with pytest.raises(NpzFormatError) as info:
        load_npz(bomb)
    assert str(info.value) == f"{bomb}: {BOMB_REASON}; pass max_bytes=... to raise the limit"


def test_limit_applies_to_each_member_and_can_be_raised(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, x=np.zeros((4, 100, 100), np.uint8), y=np.zeros(3, np.int64))
    assert npzcheck.member_problems(path) == []
    assert npzcheck.member_problems(path, max_bytes=40_000) == []
    problems = npzcheck.member_problems(path, max_bytes=39_999)
    assert problems == [npzcheck.too_many_bytes("x: array of 4 x 100 x 100 uint8", 40_000,
                                                39_999)]
    with npzcheck.open_npz(path) as z:
        assert z["x"].shape == (4, 100, 100)


def test_a_member_that_is_not_npy_is_checked_by_its_zip_size(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, x=np.zeros(3, np.uint8))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("train_images", b"\0" * 100_000)  # np.load would read it whole
    problems = npzcheck.member_problems(path, max_bytes=50_000)
    assert problems == ["train_images: member inflating to 100,000 bytes exceeds the limit of "
                        "50,000 bytes (possible decompression bomb); pass max_bytes=... to "
                        "raise the limit"]


def test_a_member_compressed_far_too_well_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(npzcheck, "RATIO_FLOOR_BYTES", 10_000)
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, x=np.zeros(1_000_000, np.uint8))
    (problem,) = npzcheck.member_problems(path)
    assert problem.startswith("x: member inflating from ") and "times) exceeds the limit of " \
        "100 times for members over 10,000 bytes (possible decompression bomb)" in problem
    random = tmp_path / "noise.npz"
    np.savez_compressed(random, x=np.random.default_rng(0).integers(0, 256, 1_000_000,
                                                                       dtype=np.uint8))
    assert npzcheck.member_problems(random) == []


def test_a_single_npy_file_is_still_named_as_such(tmp_path):
    path = tmp_path / "x.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(NpzFormatError, match="holds a single array"):
        load_npz(path)


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("key,value,expected", [
    ("train_images", np.zeros((6, 28, 28), np.complex64),
     "train_images: dtype complex64 holds complex numbers, not image values"),
    ("train_labels", (np.arange(6) % 2).astype(np.complex128),
     "train_labels: dtype complex128 holds complex numbers; labels are whole numbers"),
    ("train_labels", np.array([0, 1, np.inf, 0, 1, 0]),
     "train_labels: 1 label(s) are not finite (e.g. inf); labels are whole numbers"),
    ("train_images", np.full((6, 28, 28), np.nan, np.float32),
     "train_images: 4,704 values are not finite (nan or inf)"),
])
def test_odd_dtypes_are_one_problem_without_warnings(tiny_npz, capsys, key, value, expected):
    path = tiny_npz("odd.npz", **{key: value})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the RuntimeWarnings of np.mod(inf, 1) were printed
        sets, problems, _notes = inspect_npz(path)
    assert sets == {} and len(problems) == 1 and expected in problems[0], problems
    assert main(["data", "check", str(path)]) == 1
    captured = capsys.readouterr()
    assert expected in captured.out and "Traceback" not in captured.err and not captured.err
