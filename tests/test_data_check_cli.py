"""check_path, preview_grid and the ``fnlab data`` command line."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from fnlab.cli import main
from fnlab.data.check import check_path
from fnlab.data.preview import preview_grid


def _seed_every_bad_input(root, image_files):
    """A Kermany tree with every bad input of the issue; returns {name: path}."""
    train_n = root / "train" / "NORMAL"
    bad = {
        "truncated": image_files.truncated_jpeg(train_n / "IM-0900-0001.jpeg"),
        "zero_byte": train_n / "IM-0901-0001.jpeg",
        "non_image": train_n / "notes.txt",
        "unknown_class": root / "train" / "EFFUSION",
        "bomb": image_files.bomb_png(train_n / "IM-0906-0001.png"),
        "corrupt": train_n / "IM-0907-0001.png",
        "empty_split": root / "val",
    }
    bad["zero_byte"].write_bytes(b"")
    bad["non_image"].write_text("x")
    bad["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    image_files.save(bad["unknown_class"] / "IM-0902-0001.jpeg", image_files.noise(), "JPEG")
    for cls in ("NORMAL", "PNEUMONIA"):
        shutil.rmtree(root / "val" / cls)
        (root / "val" / cls).mkdir()
    # readable but unusual pixel formats and sizes
    Image.fromarray(np.arange(40 * 40, dtype=np.uint16).reshape(40, 40)).save(
        train_n / "IM-0903-0001.png")
    image_files.save(train_n / "IM-0904-0001.png", np.zeros((20, 24, 4), np.uint8))
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).convert("P").save(
        train_n / "IM-0905-0001.png")
    # a patient in two splits
    shutil.copy(root / "train" / "PNEUMONIA" / "person21_bacteria_1.jpeg",
                root / "test" / "PNEUMONIA" / "person21_bacteria_7.jpeg")
    return bad


def test_check_clean_tree(kermany_tree):
    report = check_path(kermany_tree.parent)
    assert report.ok, report.format()
    assert report.kind == "kermany"
    assert report.counts["train"] == {"normal": 18, "pneumonia": 18}
    assert report.counts["val"] == {"normal": 3, "pneumonia": 3}
    assert "OK" in report.format()


def test_check_reports_every_bad_input(kermany_tree, image_files):
    bad = _seed_every_bad_input(kermany_tree, image_files)
    report = check_path(kermany_tree)
    text = report.format(max_lines=200)
    assert not report.ok
    expect = {
        "truncated": "truncated or corrupt", "zero_byte": "empty file (0 bytes)",
        "non_image": "not an image file", "unknown_class": "unknown class folder 'EFFUSION'",
        "bomb": "decompression bomb", "corrupt": "",
        "empty_split": "empty split 'val'",
    }
    for key, phrase in expect.items():
        lines = [p for p in report.problems if p.startswith(str(bad[key]))]
        assert lines, f"{key} not reported:\n{text}"
        assert phrase in lines[0]
    assert str(bad["truncated"]) in report.bad_files
    assert "train/test" in report.patient_overlap
    assert "person21" in report.patient_overlap["train/test"]
    assert any("patient overlap between train and test" in p for p in report.problems)
    assert any("mixed sizes" in n for n in report.notes)
    for mode in ("I;16", "RGBA", "P"):
        assert any(f"mode {mode} " in n for n in report.notes), mode
    assert "FAILED" in text


def test_check_npz(tiny_npz):
    good = check_path(tiny_npz())
    assert good.ok and good.kind == "npz" and good.counts["val"] == {"normal": 2, "pneumonia": 2}
    assert any("differs from the official" in n for n in good.notes)
    bad = check_path(tiny_npz("bad.npz", val_labels=None, train_labels=np.arange(6) + 1))
    assert not bad.ok
    assert any("missing keys val_labels" in p for p in bad.problems)
    assert any("train_labels" in p and "out of range" in p for p in bad.problems)
    length = check_path(tiny_npz("len.npz", test_labels=np.zeros(3)))
    assert any("4 images" in p and "3 labels" in p for p in length.problems)


def test_check_covid_and_dicom_trees(covid_tree, tmp_path, write_dicom):
    report = check_path(covid_tree)
    assert report.ok and report.kind == "covid"
    assert report.counts["all"]["COVID"] == 6
    for i in range(2):
        write_dicom(tmp_path / "dcm" / "NORMAL" / f"{i}.dcm")
        write_dicom(tmp_path / "dcm" / "PNEUMONIA" / f"{i}.dcm")
    nopix = write_dicom(tmp_path / "dcm" / "PNEUMONIA" / "sr.dcm", pixels=None)
    report = check_path(tmp_path / "dcm")
    assert report.kind == "dicom" and not report.ok
    assert report.counts["all"] == {"NORMAL": 2, "PNEUMONIA": 2}
    assert any(p.startswith(str(nopix)) and "no PixelData" in p for p in report.problems)


def test_check_unrecognised(tmp_path):
    (tmp_path / "a").mkdir()
    report = check_path(tmp_path)
    assert not report.ok and "unrecognised layout" in report.problems[0]
    (tmp_path / "x.csv").write_text("a")
    assert not check_path(tmp_path / "x.csv").ok


def test_preview_grid_from_sets_and_paths(tmp_path, kermany_tree, tiny_npz):
    from fnlab.data.folders import load_kermany

    sets = load_kermany(kermany_tree, size=16, progress=False)
    out = preview_grid(sets, tmp_path / "a" / "grid.png", n=6)
    assert out.is_file() and out.stat().st_size > 1000
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[0] > 100
    assert preview_grid(tiny_npz(), tmp_path / "b.png", n=4).is_file()
    assert preview_grid(kermany_tree, tmp_path / "c.png", n=4, size=16).is_file()


# --------------------------------------------------------------------------- CLI
def test_cli_list(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("synthetic", "synthetic4", "pneumoniamnist", "kermany", "covid_radiography"):
        assert name in out
    assert main(["data", "list", "--verbose"]) == 0
    assert "CC BY 4.0" in capsys.readouterr().out


def test_cli_check_exit_codes(kermany_tree, image_files, tmp_path, capsys):
    assert main(["data", "check", str(kermany_tree)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = _seed_every_bad_input(kermany_tree, image_files)
    assert main(["data", "check", str(kermany_tree)]) == 1
    out = capsys.readouterr().out
    for path in bad.values():
        assert str(path) in out
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_preview(tmp_path, tiny_npz, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "preview", str(tiny_npz()), "--out", str(out), "-n", "4"]) == 0
    assert out.is_file() and str(out) in capsys.readouterr().out
    assert main(["data", "preview", "nonexistent_name", "--out", str(out)]) == 2
    capsys.readouterr()
    (tmp_path / "empty" / "chest_xray" / "train" / "NORMAL").mkdir(parents=True)
    assert main(["data", "preview", str(tmp_path / "empty"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("fnlab data preview: error: ")


def test_cli_download_usage_errors(capsys):
    assert main(["data", "download", "kermany"]) == 2
    assert "only 'pneumoniamnist'" in capsys.readouterr().err
    assert main(["data", "download", "pneumoniamnist", "--size", "32"]) == 2
    assert "28, 64, 128, 224" in capsys.readouterr().err
    assert main(["data"]) == 2


def test_cli_download_failure_is_reported(tmp_path, monkeypatch, capsys):
    from fnlab.data import medmnist

    def offline(*args, **kwargs):
        raise medmnist.DownloadError("could not download pneumoniamnist.npz: offline\n"
                                     + medmnist.manual_steps(28))

    monkeypatch.setattr(medmnist, "download", offline)
    assert main(["data", "download", "pneumoniamnist", "--dest", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Manual steps" in err and "md5" in err  # the steps, on one line
    assert len(err.strip().splitlines()) == 1 and err.startswith("fnlab data download: error:")


# --------------------------------------------------------------------------- what train refuses
def test_check_flags_single_class_splits_and_tiny_images(tiny_npz, capsys):
    one_class = tiny_npz("one.npz", val_labels=np.zeros(4, np.uint8))
    report = check_path(one_class)
    assert not report.ok
    assert any(p.startswith("val: one class only (4 'normal' image(s))") for p in report.problems)
    tiny = tiny_npz("tiny.npz", side=1)
    report = check_path(tiny)
    assert not report.ok
    assert any("1 x 1 px is smaller than 8 px on a side" in p for p in report.problems)
    for path in (one_class, tiny):
        assert main(["data", "check", str(path), "--quiet"]) == 1
        assert capsys.readouterr().out.startswith("FAILED")
    assert main(["data", "check", str(tiny_npz("fine.npz", side=8)), "--quiet"]) == 0


def test_check_tree_flags_single_class_and_tiny_images(kermany_tree, image_files):
    shutil.rmtree(kermany_tree / "val" / "PNEUMONIA")
    (kermany_tree / "val" / "PNEUMONIA").mkdir()
    image_files.save(kermany_tree / "val" / "NORMAL" / "IM-0990-0001.png",
                     np.zeros((5, 30), np.uint8))
    report = check_path(kermany_tree)
    assert any(p.startswith("val: one class only") for p in report.problems), report.format()
    tiny = str(kermany_tree / "val" / "NORMAL" / "IM-0990-0001.png")
    assert report.bad_files[tiny] == ("image of 30 x 5 px is smaller than 8 px on a side, the "
                                      "smallest the models accept")


def test_check_dicom_tree_flags_a_bomb_and_a_missing_class(tmp_path, write_dicom):
    import pydicom  # the write_dicom fixture skips the test without it

    for i in range(2):
        write_dicom(tmp_path / "dcm" / "NORMAL" / f"{i}.dcm")
    ds = pydicom.dcmread(write_dicom(tmp_path / "dcm" / "PNEUMONIA" / "bomb.dcm"))
    ds.Rows = ds.Columns = 12000
    ds.save_as(tmp_path / "dcm" / "PNEUMONIA" / "bomb.dcm", enforce_file_format=True)
    report = check_path(tmp_path / "dcm")
    assert not report.ok
    bomb = str(tmp_path / "dcm" / "PNEUMONIA" / "bomb.dcm")
    assert "12000 x 12000 = 144,000,000 pixels exceeds the limit" in report.bad_files[bomb]
    assert any(p.startswith("all: one class only") for p in report.problems), report.format()
