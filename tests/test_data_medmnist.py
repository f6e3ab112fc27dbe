"""PneumoniaMNIST registry, download (local server only) and .npz validation."""

from __future__ import annotations

import functools
import http.server
import re
import threading
import warnings

import numpy as np
import pytest

from fnlab.data import medmnist
from fnlab.data.medmnist import (
    ChecksumError,
    ChecksumWarning,
    DownloadError,
    NpzFormatError,
    download,
    load_npz,
    md5sum,
)


# --------------------------------------------------------------------------- registry
def test_registry_has_the_official_files():
    assert medmnist.SIZES == (28, 64, 128, 224)
    names = [medmnist.file_info(s).filename for s in medmnist.SIZES]
    assert names == ["pneumoniamnist.npz", "pneumoniamnist_64.npz", "pneumoniamnist_128.npz",
                     "pneumoniamnist_224.npz"]
    for s in medmnist.SIZES:
        info = medmnist.file_info(s)
        assert info.url == (f"https://zenodo.org/records/10519652/files/{info.filename}"
                            "?download=1")
        assert re.fullmatch(r"[0-9a-f]{32}", info.md5), info.md5
    assert medmnist.file_info(28).md5 == "28209eda62fecd6e6a2d98b1501bb15f"
    assert "CC BY 4.0" == medmnist.LICENCE and "MedMNIST v2" in medmnist.CITATION
    with pytest.raises(ValueError, match="28, 64, 128, 224"):
        medmnist.file_info(32)


def test_cached_path_uses_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FNLAB_DATA_DIR", str(tmp_path))
    assert medmnist.cached_path(28) is None
    (tmp_path / "pneumoniamnist_64.npz").write_bytes(b"x")
    assert medmnist.cached_path(64) == tmp_path / "pneumoniamnist_64.npz"


# --------------------------------------------------------------------------- loading
def test_load_valid_npz(tiny_npz):
    path = tiny_npz()
    with pytest.warns(ChecksumWarning):
        sets = load_npz(path)
    assert list(sets) == ["train", "val", "test"]
    train = sets["train"]
    assert train.images.shape == (6, 28, 28) and train.images.dtype == np.uint8
    assert train.labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert train.patient_ids is None  # MedMNIST has no patient ids
    assert train.meta["md5"] == md5sum(path) and train.meta["official"] is False
    assert train.meta["index"].tolist() == list(range(6))


def test_npz_missing_keys_names_file_and_keys(tiny_npz):
    path = tiny_npz(val_labels=None, test_images=None)
    with pytest.raises(NpzFormatError) as info:
        load_npz(path, verify="off")
    msg = str(info.value)
    assert str(path) in msg and "missing keys" in msg
    assert "val_labels" in msg and "test_images" in msg


def test_npz_images_and_labels_of_different_lengths(tiny_npz):
    path = tiny_npz(train_labels=np.zeros((5, 1), np.uint8))
    with pytest.raises(NpzFormatError, match=r"train: 6 images \(train_images\) but 5 labels") as info:
        load_npz(path, verify="off")
    assert str(path) in str(info.value)


def test_npz_labels_out_of_range(tiny_npz):
    path = tiny_npz(test_labels=np.array([[0], [1], [2], [7]]))
    with pytest.raises(NpzFormatError, match="out of range") as info:
        load_npz(path, verify="off")
    msg = str(info.value)
    assert str(path) in msg and "test_labels" in msg and "2, 7" in msg
    # with more classes the same file is fine
    sets = load_npz(path, verify="off", class_names=tuple("abcdefgh"))
    assert sets["test"].labels.max() == 7


def test_npz_images_of_mixed_sizes(tiny_npz):
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((28, 28), np.uint8), np.zeros((30, 30), np.uint8)
    path = tiny_npz(train_images=ragged, train_labels=np.array([0, 1]))
    with pytest.raises(NpzFormatError, match="mixed sizes") as info:
        load_npz(path, verify="off")
    assert str(path) in str(info.value) and "train_images" in str(info.value)
    # different sizes between splits
    path2 = tiny_npz("split_sizes.npz", test_images=np.zeros((4, 64, 64), np.uint8))
    with pytest.raises(NpzFormatError, match="mixed sizes"):
        load_npz(path2, verify="off")


def test_npz_dtypes(tiny_npz):
    floats = np.random.default_rng(0).random((4, 28, 28))
    sets = load_npz(tiny_npz(val_images=floats), verify="off")
    assert sets["val"].images.dtype == np.uint8 and sets["val"].images.max() > 200
    bad = np.full((4, 28, 28), 1000.0)
    with pytest.raises(NpzFormatError, match="val_images: dtype float64 with values 1000"):
        load_npz(tiny_npz("bad.npz", val_images=bad), verify="off")
    rgb = np.zeros((6, 28, 28, 3), np.uint8)
    assert load_npz(tiny_npz("rgb.npz", train_images=rgb), verify="off")["train"].images.ndim == 3
    with pytest.raises(NpzFormatError, match="multi-label"):
        load_npz(tiny_npz("ml.npz", train_labels=np.zeros((6, 3))), verify="off")


def test_not_an_npz(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(NpzFormatError, match="not a readable .npz") as info:
        load_npz(bad)
    assert str(bad) in str(info.value)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(NpzFormatError, match="empty file"):
        load_npz(empty)
    with pytest.raises(NpzFormatError, match="not found"):
        load_npz(tmp_path / "absent.npz")


def test_checksum_mismatch_warns_with_both_checksums(tiny_npz):
    path = tiny_npz()
    with pytest.warns(ChecksumWarning) as record:
        load_npz(path)
    msg = str(record[0].message)
    assert md5sum(path) in msg and medmnist.file_info(28).md5 in msg and str(path) in msg
    with pytest.raises(ChecksumError, match=md5sum(path)):
        load_npz(path, verify="strict")


def test_official_checksum_loads_silently(tiny_npz, monkeypatch):
    path = tiny_npz()
    official = medmnist.MedMNISTFile(28, "pneumoniamnist.npz", md5sum(path))
    monkeypatch.setitem(medmnist.PNEUMONIAMNIST, 28, official)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sets = load_npz(path)
    assert sets["test"].meta["official"] is True


def test_size_argument_is_checked(tiny_npz):
    with pytest.raises(NpzFormatError, match="28 px but size=64"):
        load_npz(tiny_npz(), size=64, verify="off")


@pytest.mark.realdata
def test_shared_variant_loads_with_warning_and_readme_counts(shared_variant_npz):
    with pytest.warns(ChecksumWarning) as record:
        sets = load_npz(shared_variant_npz)
    msg = str(record[0].message)
    assert "f5b994ec7c2fe8bc81ae15cbab7c3df8" in msg and "28209eda62fecd6e6a2d98b1501bb15f" in msg
    expected = {"train": (3882, 388, 3494), "val": (524, 135, 389), "test": (624, 234, 390)}
    for split, (n, normal, pneumonia) in expected.items():
        s = sets[split]
        assert len(s) == n and s.counts() == {"normal": normal, "pneumonia": pneumonia}
        assert s.images.shape[1:] == (28, 28)


# --------------------------------------------------------------------------- download
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def local_server(tmp_path):
    """Serve ``tmp_path/served`` on 127.0.0.1; yields (folder, base_url)."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_good_file_is_verified(local_server, tmp_path, tiny_npz):
    folder, base = local_server
    src = tiny_npz()
    (folder / "pn.npz").write_bytes(src.read_bytes())
    dest = tmp_path / "cache"
    path = download(28, dest, url=f"{base}/pn.npz", md5=md5sum(src), progress=False, timeout=10)
    assert path == dest / "pneumoniamnist.npz" and md5sum(path) == md5sum(src)
    assert not list(dest.glob("*.part"))
    # second call: already there, no network needed
    again = download(28, dest, url="http://127.0.0.1:9/unused", md5=md5sum(src), progress=False)
    assert again == path


def test_download_bad_checksum_is_deleted_and_reported(local_server, tmp_path):
    folder, base = local_server
    (folder / "pn.npz").write_bytes(b"not the real file")
    dest = tmp_path / "cache"
    with pytest.raises(ChecksumError) as info:
        download(28, dest, url=f"{base}/pn.npz", progress=False, timeout=10)
    msg = str(info.value)
    assert "deleted" in msg and medmnist.file_info(28).md5 in msg
    assert md5sum(folder / "pn.npz") in msg
    assert not (dest / "pneumoniamnist.npz").exists()
    assert not list(dest.glob("*"))


def test_download_http_error(local_server, tmp_path):
    _, base = local_server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(64, tmp_path, url=f"{base}/missing.npz", progress=False, timeout=10)
    assert not list(tmp_path.glob("*.npz*"))


def test_download_unreachable_gives_manual_steps(tmp_path):
    url = "http://127.0.0.1:9/pneumoniamnist_64.npz"  # nothing listens on the discard port
    with pytest.raises(DownloadError) as info:
        download(64, tmp_path, url=url, progress=False, timeout=5)
    msg = str(info.value)
    assert "Manual steps" in msg and url in msg
    assert medmnist.file_info(64).md5 in msg
    assert str(tmp_path / "pneumoniamnist_64.npz") in msg
    assert not list(tmp_path.glob("*.part"))


def test_download_refuses_to_overwrite_a_different_file(tmp_path):
    (tmp_path / "pneumoniamnist.npz").write_bytes(b"my variant")
    with pytest.raises(DownloadError, match="force=True"):
        download(28, tmp_path, url="http://127.0.0.1:9/x", progress=False)
    assert (tmp_path / "pneumoniamnist.npz").read_bytes() == b"my variant"


def test_manual_steps_text():
    text = medmnist.manual_steps(224, "/data/pneumoniamnist_224.npz")
    assert "pneumoniamnist_224.npz?download=1" in text
    assert "d6a3c71de1b945ea11211b03746c1fe1" in text and "/data/pneumoniamnist_224.npz" in text
