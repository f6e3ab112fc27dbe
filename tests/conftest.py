"""Shared pytest fixtures (add new fixtures; do not change existing ones).

Data-layer fixtures build small image trees and files in ``tmp_path`` so that no
test reads anything outside its temporary folder (except the optional shared data).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fnlab.config import shared_data_dir


# --------------------------------------------------------------------------- offline
@pytest.fixture(autouse=True, scope="session")
def offline_session():
    """The suite never tries the network: ``FNLAB_OFFLINE=1`` for the whole session (so
    ``dataset="auto"`` never downloads, here and in the kernels and subprocesses tests
    start). Tests of the download path unset it with monkeypatch and point
    ``FNLAB_MEDMNIST_URL`` at a local HTTP server."""
    old = {k: os.environ.get(k) for k in ("FNLAB_OFFLINE", "FNLAB_MEDMNIST_URL")}
    os.environ["FNLAB_OFFLINE"] = "1"
    os.environ.pop("FNLAB_MEDMNIST_URL", None)
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# --------------------------------------------------------------------------- data files
def _noise(rng, h, w):
    base = np.linspace(40, 200, w, dtype=np.float32)[None, :] + rng.normal(0, 20, (h, w))
    return np.clip(base, 0, 255).astype(np.uint8)


def _save(path: Path, array: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def _bomb_png(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _truncated_jpeg(path: Path, rng) -> Path:
    _save(path, _noise(rng, 64, 64), "JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def image_files():
    """Helpers that write image files: ``image_files.png(path, array)`` etc."""

    class Files:
        rng = np.random.default_rng(0)
        noise = staticmethod(lambda h=32, w=40: _noise(Files.rng, h, w))
        save = staticmethod(_save)
        bomb_png = staticmethod(_bomb_png)
        truncated_jpeg = staticmethod(lambda p: _truncated_jpeg(Path(p), Files.rng))

    return Files


def _build_kermany(root: Path, n_train: int = 12, n_val: int = 2, n_test: int = 4,
                   size=(36, 44), seed: int = 0) -> Path:
    """chest_xray/{train,val,test}/{NORMAL,PNEUMONIA} with Kermany file names.

    Patients get 1-2 images each; patient numbers differ between splits.
    """
    rng = np.random.default_rng(seed)
    base = root / "chest_xray"
    pid = 1
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(n):  # normal patients
            for j in range(1 + (i % 2)):
                name = (f"IM-{pid:04d}-{j + 1:04d}.jpeg" if i % 3
                        else f"NORMAL2-IM-{pid:04d}-{j + 1:04d}.jpeg")
                _save(base / split / "NORMAL" / name, _noise(rng, *size), "JPEG")
            pid += 1
        for i in range(n):  # pneumonia patients
            kind = "bacteria" if i % 2 == 0 else "virus"
            for j in range(1 + (i % 2)):
                name = f"person{pid}_{kind}_{j + 1}.jpeg"
                _save(base / split / "PNEUMONIA" / name, _noise(rng, *size), "JPEG")
            pid += 1
    return base


@pytest.fixture
def kermany_tree(tmp_path) -> Path:
    """A small clean Kermany-style tree; returns the ``chest_xray`` folder."""
    return _build_kermany(tmp_path)


@pytest.fixture
def make_kermany_tree():
    """Factory: ``make_kermany_tree(root, n_train=12, n_val=2, n_test=4, size=(36, 44))``."""
    return _build_kermany


def _build_covid(root: Path, per_class: int = 6, size=(40, 40), seed: int = 0) -> Path:
    """COVID-19_Radiography_Dataset with both layouts (images/ + masks/, and flat)."""
    rng = np.random.default_rng(seed)
    base = root / "COVID-19_Radiography_Dataset"
    for cls, nested in (("COVID", True), ("Lung_Opacity", True), ("Normal", False),
                        ("Viral Pneumonia", False)):
        folder = base / cls / "images" if nested else base / cls
        for i in range(per_class):
            _save(folder / f"{cls}-{i + 1}.png", _noise(rng, *size))
            if nested:
                _save(base / cls / "masks" / f"{cls}-{i + 1}.png",
                      np.zeros((8, 8), np.uint8))
    (base / "COVID.metadata.xlsx").write_bytes(b"not really a spreadsheet")
    (base / "README.md.txt").write_text("metadata")
    return base


@pytest.fixture
def covid_tree(tmp_path) -> Path:
    """A small clean COVID-19 Radiography tree; returns its root folder."""
    return _build_covid(tmp_path)


@pytest.fixture
def make_covid_tree():
    """Factory: ``make_covid_tree(root, per_class=6, size=(40, 40))``."""
    return _build_covid


@pytest.fixture
def shared_variant_npz() -> Path:
    """``../shared/data/pneumoniamnist_28_variant.npz``; skips the test when absent."""
    folder = shared_data_dir()
    path = folder / "pneumoniamnist_28_variant.npz" if folder else None
    if path is None or not path.is_file():
        pytest.skip("shared data file pneumoniamnist_28_variant.npz not present")
    return path


@pytest.fixture
def tiny_npz(tmp_path):
    """Factory writing a MedMNIST-layout .npz; keyword overrides replace arrays,
    ``None`` drops a key. Returns the path."""

    def make(name="tiny.npz", n=(6, 4, 4), side=28, **override):
        rng = np.random.default_rng(1)
        arrays = {}
        for split, k in zip(("train", "val", "test"), n):
            arrays[f"{split}_images"] = rng.integers(0, 256, (k, side, side), dtype=np.uint8)
            arrays[f"{split}_labels"] = (np.arange(k) % 2).reshape(-1, 1).astype(np.uint8)
        for key, value in override.items():
            if value is None:
                arrays.pop(key, None)
            else:
                arrays[key] = value
        path = tmp_path / name
        np.savez(path, **arrays)
        return path

    return make


# --------------------------------------------------------------------------- DICOM
DICOM_RAMP = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (12, 1))  # 12 x 40, 0..3900


def _write_dicom(path, pixels="ramp", photometric="MONOCHROME2", slope=None, intercept=None,
                 center=None, width=None, patient="P1") -> Path:
    """A tiny uncompressed DICOM (Explicit VR Little Endian); pixels=None -> no PixelData."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    if isinstance(pixels, str):
        pixels = DICOM_RAMP
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient
    ds.Modality = "DX"
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        if slope is not None:
            ds.RescaleSlope = slope
            ds.RescaleIntercept = intercept or 0
        if center is not None:
            ds.WindowCenter = center
            ds.WindowWidth = width
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def write_dicom():
    """Factory writing a tiny DICOM: ``write_dicom(path, pixels=..., photometric=...,
    slope=..., intercept=..., center=..., width=..., patient=...)``; ``pixels=None``
    writes a file without PixelData. Skips the test when pydicom is missing."""
    pytest.importorskip("pydicom")
    return _write_dicom


@pytest.fixture(scope="session")
def bwrap():
    """Path of bubblewrap, the grading sandbox (`.ci/run` installs it); the test skips, saying
    why, where a sandbox cannot be built."""
    from fnlab import sandbox

    try:
        return sandbox.check_bwrap()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(str(exc))
