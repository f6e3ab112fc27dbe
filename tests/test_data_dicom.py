"""DICOM: modality LUT, windowing, MONOCHROME1, missing pixel data, folder loading."""

from __future__ import annotations

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from fnlab.data.dicom import (  # noqa: E402
    is_dicom_file,
    load_dicom_folder,
    read_dicom,
    window_linear,
)
from fnlab.data.folders import DatasetLayoutError, SkippedFilesWarning  # noqa: E402
from fnlab.data.imageio import ImageReadError  # noqa: E402

RAMP = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (12, 1))  # as in conftest.write_dicom

def test_monochrome2_minmax(tmp_path, write_dicom):
    out = read_dicom(write_dicom(tmp_path / "a.dcm"))
    assert out.dtype == np.uint8 and out.shape == (12, 40)
    assert out[0, 0] == 0 and out[0, -1] == 255
    assert np.all(np.diff(out[0].astype(int)) >= 0)


def test_monochrome1_is_inverted(tmp_path, write_dicom):
    m2 = read_dicom(write_dicom(tmp_path / "m2.dcm"))
    m1 = read_dicom(write_dicom(tmp_path / "m1.dcm", photometric="MONOCHROME1"))
    np.testing.assert_array_equal(m1, 255 - m2)
    assert m1[0, 0] == 255


def test_rescale_and_header_window(tmp_path, write_dicom):
    # values = 2 * raw - 1000 -> -1000..6800; window 1000 +- 1000 -> raw 500..1500
    path = write_dicom(tmp_path / "w.dcm", slope=2, intercept=-1000, center=1000, width=2000)
    out = read_dicom(path)
    raw = RAMP[0].astype(float)
    expected = window_linear(raw * 2 - 1000, 1000, 2000)
    np.testing.assert_array_equal(out[0], expected)
    assert out[0, 4] == 0 and out[0, 16] == 255  # raw 400 below, raw 1600 above the window
    # an explicit window wins over the header; "minmax" ignores it
    wide = read_dicom(path, window=(2900, 9800))  # -2000..7800 holds all values
    assert 0 < wide[0, 0] < wide[0, -1] < 255
    mm = read_dicom(path, window="minmax")
    assert mm[0, 0] == 0 and mm[0, -1] == 255
    with pytest.raises(ValueError, match="window"):
        read_dicom(path, window="lung")


def test_dicom_without_pixel_data(tmp_path, write_dicom):
    path = write_dicom(tmp_path / "report.dcm", pixels=None)
    with pytest.raises(ImageReadError) as info:
        read_dicom(path)
    assert info.value.path == str(path) and "no PixelData" in info.value.reason
    assert str(path) in str(info.value)


def test_not_a_dicom_and_empty(tmp_path, write_dicom):
    txt = tmp_path / "x.dcm"
    txt.write_text("hello")
    with pytest.raises(ImageReadError, match="not a DICOM file") as info:
        read_dicom(txt)
    assert str(txt) in str(info.value)
    empty = tmp_path / "e.dcm"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file"):
        read_dicom(empty)


def test_is_dicom_file_detects_extensionless(tmp_path, write_dicom):
    path = write_dicom(tmp_path / "IMG0001")
    assert is_dicom_file(path) and is_dicom_file("x.DCM") and not is_dicom_file("x.png")


def _tree(write_dicom, root, n=3, classes=("NORMAL", "PNEUMONIA")):
    for c in classes:
        for i in range(n):
            write_dicom(root / c / f"{i}.dcm", patient=f"{c}-{i}")
    return root


def test_load_dicom_folder_from_class_folders(tmp_path, write_dicom):
    root = _tree(write_dicom, tmp_path / "dcm")
    s = load_dicom_folder(root, size=16, progress=False)
    assert s.images.shape == (6, 16, 16) and s.class_names == ("NORMAL", "PNEUMONIA")
    assert s.counts() == {"NORMAL": 3, "PNEUMONIA": 3}
    assert list(s.patient_ids[:2]) == ["NORMAL-0", "NORMAL-1"]
    assert s.meta["skipped"] == 0


def test_load_dicom_folder_skips_missing_pixel_data_with_count(tmp_path, write_dicom):
    root = _tree(write_dicom, tmp_path / "dcm")
    bad = write_dicom(root / "PNEUMONIA" / "sr.dcm", pixels=None)
    with pytest.raises(ImageReadError, match="no PixelData") as info:
        load_dicom_folder(root, size=16, progress=False)
    assert info.value.path == str(bad)
    with pytest.warns(SkippedFilesWarning, match="skipped 1 file"):
        s = load_dicom_folder(root, size=16, progress=False, on_error="skip")
    assert len(s) == 6 and s.meta["skipped"] == 1 and str(bad) in s.meta["skipped_files"]


def test_load_dicom_folder_with_csv_and_layout_errors(tmp_path, write_dicom):
    root = tmp_path / "flat"
    for i in range(4):
        write_dicom(root / f"{i}.dcm")
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n0.dcm,normal\n1.dcm,pneumonia\n2.dcm,pneumonia\n3.dcm,normal\n")
    s = load_dicom_folder(root, labels_csv=csv, size=8, progress=False)
    assert s.labels.tolist() == [0, 1, 1, 0] and s.class_names == ("normal", "pneumonia")
    with pytest.raises(DatasetLayoutError, match="outside a class folder"):
        load_dicom_folder(root, size=8, progress=False)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,diagnosis\n0.dcm,0\n")
    with pytest.raises(DatasetLayoutError, match="'path'"):
        load_dicom_folder(root, labels_csv=bad_csv, progress=False)
