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


# --------------------------------------------------------------------------- pixel limit
def _rewrite(path, out, deflated=False, **tags):
    """Copy a DICOM with header tags changed (e.g. Rows, Columns) and maybe deflated."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    if deflated:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(out, enforce_file_format=True)
    return out


def test_pixel_limit_gives_the_same_reason_as_png(tmp_path, write_dicom):
    from PIL import Image

    from fnlab.data.imageio import read_image, too_many_pixels

    dcm = write_dicom(tmp_path / "a.dcm")  # 40 x 12
    png = tmp_path / "a.png"
    Image.fromarray(np.zeros((12, 40), np.uint8)).save(png)
    with pytest.raises(ImageReadError) as d_info:
        read_dicom(dcm, max_pixels=100)
    with pytest.raises(ImageReadError) as p_info:
        read_image(png, max_pixels=100)
    assert d_info.value.reason == p_info.value.reason == too_many_pixels(480, 100, "40 x 12")
    assert read_dicom(dcm, max_pixels=None).shape == (12, 40)


@pytest.mark.parametrize("deflated", [False, True])
def test_huge_header_is_refused_before_decoding(tmp_path, write_dicom, deflated):
    """12000 x 12000 in the header: refused from the header, whatever the pixel data."""
    import tracemalloc

    src = write_dicom(tmp_path / "a.dcm")
    bomb = _rewrite(src, tmp_path / "bomb.dcm", deflated=deflated, Rows=12000, Columns=12000)
    assert bomb.stat().st_size < 5000
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError, match="decompression bomb") as info:
            read_dicom(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.path == str(bomb)
    assert "12000 x 12000 = 144,000,000 pixels exceeds the limit of 100,000,000" in str(info.value)
    assert peak < 20 << 20


def test_frames_count_towards_the_limit(tmp_path, write_dicom):
    src = write_dicom(tmp_path / "a.dcm")
    multi = _rewrite(src, tmp_path / "m.dcm", Rows=4000, Columns=4000, NumberOfFrames=10)
    with pytest.raises(ImageReadError, match=r"4000 x 4000 x 10 frames = 160,000,000 pixels"):
        read_dicom(multi)


def test_deflated_file_reads_like_the_original(tmp_path, write_dicom):
    src = write_dicom(tmp_path / "a.dcm", slope=2, intercept=-1000, center=1000, width=2000)
    deflated = _rewrite(src, tmp_path / "d.dcm", deflated=True)
    np.testing.assert_array_equal(read_dicom(deflated), read_dicom(src))


def test_deflated_data_larger_than_its_header_says_is_refused(tmp_path, write_dicom,
                                                              monkeypatch):
    """A small image in the header but much more data in the deflate stream."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from fnlab.data import dicom

    monkeypatch.setattr(dicom, "_DEFLATE_SLACK", 1 << 20)
    src = write_dicom(tmp_path / "a.dcm")
    ds = pydicom.dcmread(src)
    ds.add_new(0x00091010, "OB", bytes(3 << 20))  # 3 MB of private padding
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "padded.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 50_000
    with pytest.raises(ImageReadError, match="inflates to over .* far more than its 40 x 12 "
                                             "image needs"):
        read_dicom(path)


def test_folder_loader_skips_a_dicom_bomb(tmp_path, write_dicom):
    root = _tree(write_dicom, tmp_path / "dcm", n=2)
    bomb = _rewrite(root / "NORMAL" / "0.dcm", root / "NORMAL" / "bomb.dcm", deflated=True,
                    Rows=12000, Columns=12000)
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        load_dicom_folder(root, size=8, progress=False)
    with pytest.warns(SkippedFilesWarning, match="skipped 1 file"):
        s = load_dicom_folder(root, size=8, progress=False, on_error="skip")
    assert len(s) == 4 and str(bomb) in s.meta["skipped_files"]
