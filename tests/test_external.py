"""fnlab.external: loading an external site, the local split, recalibration, adaptations,
and ChestMNIST's registration (downloads against a local server only)."""

from __future__ import annotations

import dataclasses
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fnlab.config import shared_data_dir
from fnlab.data import medmnist
from fnlab.data.imageset import ImageSet
from fnlab.external import (
    ExternalDataError,
    auc_drop,
    calibration_split,
    histogram_match,
    load_external,
    local_recalibration,
    local_threshold,
    parse_calibrate,
    recalibration_curve,
    resolve_external_site,
    standardise_to_home,
    to_run_input,
)
from fnlab.predictions import Predictions


def _png(path: Path, value: int, size=(40, 36), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    arr = np.clip(rng.normal(value, 20, size[::-1]), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    (img.convert("RGB") if mode == "RGB" else img).save(path)
    return path


def _site(root: Path, n_normal=6, n_pneumonia=6) -> Path:
    for i in range(n_normal):
        _png(root / "NORMAL" / f"n{i}.png", 60)
    for i in range(n_pneumonia):
        _png(root / "PNEUMONIA" / f"p{i}.png", 150, mode="RGB" if i == 0 else "L")
    return root


# --------------------------------------------------------------------------- loading
def test_missing_path_is_one_line():
    with pytest.raises(ExternalDataError, match="no such file or folder"):
        load_external("/nonexistent/site")


def test_folder_with_both_classes_is_read_at_the_given_size(tmp_path):
    ext = load_external(_site(tmp_path / "site"), size=16)
    assert ext.kind == "folder" and ext.images.images.shape == (12, 16, 16)
    assert ext.images.counts() == {"normal": 6, "pneumonia": 6} and not ext.skipped


def test_empty_class_folders_are_refused(tmp_path):
    (tmp_path / "site" / "NORMAL").mkdir(parents=True)
    (tmp_path / "site" / "PNEUMONIA").mkdir()
    with pytest.raises(ExternalDataError, match="no readable images"):
        load_external(tmp_path / "site", size=16)


def test_one_class_missing_is_refused(tmp_path):
    _site(tmp_path / "site", n_pneumonia=0)
    with pytest.raises(ExternalDataError, match="no PNEUMONIA/ folder"):
        load_external(tmp_path / "site", size=16)
    (tmp_path / "site" / "PNEUMONIA").mkdir()
    with pytest.raises(ExternalDataError, match="no pneumonia images"):
        load_external(tmp_path / "site", size=16)
    z = np.zeros((4, 28, 28), np.uint8)
    np.savez(tmp_path / "normals.npz", test_images=z, test_labels=np.zeros(4, int))
    with pytest.raises(ExternalDataError, match="no pneumonia images"):
        load_external(tmp_path / "normals.npz")


def test_unreadable_files_are_skipped_and_counted_or_refused_with_strict(tmp_path):
    root = _site(tmp_path / "site")
    (root / "NORMAL" / "broken.png").write_bytes(b"not a png")
    (root / "PNEUMONIA" / "notes.txt").write_text("hello")
    ext = load_external(root, size=16)
    assert len(ext.skipped) == 2 and len(ext.images) == 12
    assert any("skipped 2" in n for n in ext.notes)
    with pytest.raises(ExternalDataError, match="2 unreadable file.*--strict"):
        load_external(root, size=16, strict=True)


def test_unknown_layout_and_other_files_are_refused(tmp_path):
    (tmp_path / "misc" / "cats").mkdir(parents=True)
    with pytest.raises(ExternalDataError, match="expected NORMAL/ and PNEUMONIA/"):
        load_external(tmp_path / "misc")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ExternalDataError, match="not a folder or an .npz"):
        load_external(tmp_path / "x.csv")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ExternalDataError, match="not a readable .npz"):
        load_external(tmp_path / "bad.npz")


def test_kermany_tree_is_pooled_with_patient_ids(tmp_path):
    _png(tmp_path / "chest_xray" / "test" / "NORMAL" / "IM-0001-0001.jpeg", 60)
    _png(tmp_path / "chest_xray" / "test" / "NORMAL" / "IM-0001-0002.jpeg", 60)
    _png(tmp_path / "chest_xray" / "val" / "PNEUMONIA" / "person1_virus_6.jpeg", 150)
    ext = load_external(tmp_path / "chest_xray", size=16)
    assert ext.kind == "kermany" and len(ext.images) == 3
    assert sorted(set(ext.images.patient_ids)) == ["IM-0001", "person1"]


def test_npz_test_split_with_patient_ids_and_all_splits(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {f"{s}_images": rng.integers(0, 255, (6, 28, 28), dtype=np.uint8)
              for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": (np.arange(6) % 2)[:, None] for s in ("train", "val", "test")})
    arrays["test_patient_ids"] = np.array(["a", "a", "b", "c", "c", "d"])
    np.savez(tmp_path / "site.npz", **arrays)
    ext = load_external(tmp_path / "site.npz")
    assert len(ext.images) == 6 and list(ext.images.patient_ids[:2]) == ["a", "a"]
    every = load_external(tmp_path / "site.npz", splits="all")
    assert len(every.images) == 18 and every.images.patient_ids is None


class _Run:
    checkpoint = {"image_size": 28, "in_channels": 1}


def test_images_of_another_size_are_brought_to_the_runs_input_with_a_note():
    s = ImageSet(np.full((3, 64, 48), 100, np.uint8), [0, 1, 0])
    notes: list[str] = []
    out = to_run_input(s, _Run(), notes)
    assert out.images.shape == (3, 28, 28) and "64x48" in notes[0]
    same = ImageSet(np.zeros((2, 28, 28), np.uint8), [0, 1])
    assert to_run_input(same, _Run()) is same


def test_colour_images_of_another_modality_are_refused():
    rgb = ImageSet(np.zeros((2, 3, 28, 28), np.uint8), [0, 1])
    with pytest.raises(ExternalDataError, match="3-channel images"):
        to_run_input(rgb, _Run())


# --------------------------------------------------------------------------- the local split
@pytest.mark.parametrize("seed", range(5))
def test_calibration_split_is_disjoint_stratified_and_patient_grouped(seed):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 120, 400).astype(str)
    labels = (rng.random(400) < 0.45).astype(int)
    for n in (25, 50, 100, 200):
        choose, judge = calibration_split(labels, n, groups, seed)
        assert not set(choose) & set(judge)
        assert sorted(np.r_[choose, judge].tolist()) == list(range(400))
        assert not set(groups[choose]) & set(groups[judge])  # no patient straddles
        assert abs(len(choose) - n) <= max(8, n // 5)
        assert set(labels[choose]) == {0, 1}


def test_calibration_split_without_ids_is_exact_and_stratified():
    labels = np.array([0] * 60 + [1] * 40)
    choose, judge = calibration_split(labels, 50, None, 0)
    assert len(choose) == 50 and labels[choose].sum() == 20
    assert not set(choose) & set(judge)


def test_threshold_is_chosen_only_on_the_calibration_part():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    scores = np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1)
    p = Predictions(y, scores)
    r = local_threshold(p, 100, 0.9, seed=4)
    choose, judge = r["choose"], r["judge"]
    assert not set(choose) & set(judge) and r["n_judge"] == len(judge) == 200
    changed = scores.copy()
    changed[judge] = rng.random(len(judge))  # the judging part cannot move the threshold
    again = local_threshold(Predictions(y, changed), 100, 0.9, seed=4)
    assert again["threshold"] == r["threshold"]
    held = p.subset(judge)
    assert r["sensitivity"] == pytest.approx(
        (held.scores[held.y_true == 1] >= r["threshold"]).mean())


def test_local_recalibration_reports_held_back_figures_and_conformal():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 500)
    p = Predictions(y, np.clip(0.4 * y + 0.6 * rng.random(500), 0.01, 0.99))
    r = local_recalibration(p, 300, target_recall=0.9, home_threshold=0.5)
    assert r["n_choose"] + r["n_judge"] == 500
    assert r["conformal"]["feasible"] and 0 <= r["conformal"]["sensitivity"] <= 1
    lo, hi = r["local_threshold"]["specificity_ci"]
    assert lo <= r["local_threshold"]["specificity"] <= hi
    # the scores are over-spread (0.4 * y + noise); Platt fitted on the local part calibrates them
    assert r["platt"]["ece_after"] < 0.6 * r["platt"]["ece_before"]
    small = local_recalibration(p, 25, target_recall=0.98)
    assert not small["conformal"]["feasible"] and "too few" in small["conformal"]["why"]


def test_recalibration_curve_spread_shrinks_with_more_local_images():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 600)
    p = Predictions(y, np.clip(0.4 * y + 0.6 * rng.random(600), 0, 1))
    rows = recalibration_curve(p, (25, 200), 0.9, repeats=30)
    assert [r["n"] for r in rows] == [25, 200]
    assert rows[1]["sensitivity_sd"] < rows[0]["sensitivity_sd"]


@pytest.mark.parametrize("value, n, match", [
    ("500", 300, "leaves"), ("5", 300, "at least"), ("abc", 300, "count or a fraction"),
    ("0", 300, "> 0"), ("2.5", 300, "whole count"),
])
def test_parse_calibrate_refuses_bad_sizes(value, n, match):
    with pytest.raises(ExternalDataError, match=match):
        parse_calibrate(value, n)


def test_auc_drop_ci_excludes_zero_when_ranking_is_lost():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    home = Predictions(y, np.clip(0.6 * y + 0.4 * rng.random(300), 0, 1))
    away = Predictions(y, rng.random(300))
    d = auc_drop(home, away, n_resamples=300)
    assert d["drop"] > 0.3 and d["drop_ci"][0] > 0 and d["drop_ci"][0] <= d["drop"]


def test_histogram_match_and_standardise_move_images_to_the_home_distribution():
    rng = np.random.default_rng(8)
    home = rng.normal(150, 30, (50, 16, 16)).clip(0, 255).astype(np.uint8)
    away = ImageSet(rng.normal(60, 10, (4, 16, 16)).clip(0, 255).astype(np.uint8), [0, 1, 0, 1])
    matched = histogram_match(away, home)
    assert abs(matched.images.mean() - home.mean()) < 5
    a, m = away.images[0].ravel().astype(int), matched.images[0].ravel().astype(int)
    order = np.argsort(a)
    assert np.all(np.diff(m[order]) >= 0)  # grey-level order kept: brighter stays brighter
    std = standardise_to_home(away, 0.6, 0.1)
    assert abs(std.images.mean() / 255 - 0.6) < 0.02


# --------------------------------------------------------------------------- ChestMNIST
def _chest_npz(path: Path) -> Path:
    labels = np.zeros((6, 14), np.uint8)
    labels[1, 6] = 1          # pneumonia
    labels[2, 0] = 1          # atelectasis only: left out
    labels[3, [2, 6]] = 1     # pneumonia with effusion
    np.savez(path, test_images=np.zeros((6, 28, 28), np.uint8), test_labels=labels)
    return path


def test_chestmnist_registered_like_pneumoniamnist():
    info = medmnist.file_info(28, "chestmnist")
    assert info.filename == "chestmnist.npz" and info.md5 == "02c8a6516a18b556561a56cbdd36c4a8"
    assert medmnist.file_info(64, "chestmnist").md5 == "9de6cd0b934ebb5b7426cfba5efbae16"
    assert info.url == "https://zenodo.org/records/10519652/files/chestmnist.npz?download=1"
    with pytest.raises(ValueError, match="ChestMNIST has no 30 px file"):
        medmnist.file_info(30, "chestmnist")


def test_chestmnist_binary_is_pneumonia_against_no_finding(tmp_path):
    ext = load_external(_chest_npz(tmp_path / "chestmnist.npz"))
    assert ext.kind == "chestmnist" and ext.images.labels.tolist() == [0, 1, 1, 0, 0]
    assert ext.images.meta["index"].tolist() == [0, 1, 3, 4, 5]
    assert any("text" in n for n in ext.notes) and any("patient" in n for n in ext.notes)


class _Serve(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        body = self.server.files.get(self.path.lstrip("/").split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def local_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Serve)
    httpd.files = {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_chestmnist_download_is_md5_checked_against_a_local_server(tmp_path, monkeypatch,
                                                                   local_server):
    httpd, url = local_server
    body = _chest_npz(tmp_path / "src.npz").read_bytes()
    httpd.files["chestmnist.npz"] = body
    monkeypatch.setenv("FNLAB_MEDMNIST_URL", url)
    monkeypatch.setenv("FNLAB_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(medmnist.ChecksumError, match="md5"):  # the real md5 differs
        medmnist.download(28, dataset="chestmnist", progress=False)
    assert not list((tmp_path / "cache").glob("*.part"))
    digest = medmnist.md5sum(tmp_path / "src.npz")
    monkeypatch.setitem(medmnist.CHESTMNIST, 28,
                        dataclasses.replace(medmnist.CHESTMNIST[28], md5=digest))
    monkeypatch.delenv("FNLAB_OFFLINE", raising=False)
    path, why = resolve_external_site(28, progress=False)
    assert path == tmp_path / "cache" / "chestmnist.npz" and "downloaded" in why
    again, why = resolve_external_site(28, offline=True)
    assert again == path and "cached" in why


def test_offline_resolution_never_downloads(tmp_path, monkeypatch, local_server):
    httpd, url = local_server
    monkeypatch.setenv("FNLAB_MEDMNIST_URL", url)
    monkeypatch.setenv("FNLAB_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FNLAB_OFFLINE", "1")
    path, why = resolve_external_site(28)
    assert "offline" in why and not (tmp_path / "cache" / "chestmnist.npz").exists()
    assert path is None or path.name == "nih_pneumonia_28_dev.npz"


# --------------------------------------------------------------------------- the dev file
DEV = shared_data_dir() / "nih_pneumonia_28_dev.npz" if shared_data_dir() else None
needs_dev = pytest.mark.skipif(DEV is None or not DEV.is_file(),
                               reason="../shared/data/nih_pneumonia_28_dev.npz is absent")


@needs_dev
def test_dev_file_loads_with_patients_and_splits_by_patient():
    ext = load_external(DEV)
    s = ext.images
    assert len(s) == 495 and s.counts() == {"normal": 267, "pneumonia": 228}
    assert len(np.unique(s.patient_ids)) == 341
    assert any("text processing" in n for n in ext.notes)
    for n in (25, 50, 100, 200):
        choose, judge = calibration_split(s.labels, n, s.patient_ids, seed=n)
        assert not set(s.patient_ids[choose]) & set(s.patient_ids[judge])


def test_cli_downloads_chestmnist_from_a_local_server(tmp_path, monkeypatch, local_server,
                                                      capsys):
    from fnlab.cli import main

    httpd, url = local_server
    httpd.files["chestmnist.npz"] = _chest_npz(tmp_path / "src.npz").read_bytes()
    monkeypatch.setenv("FNLAB_MEDMNIST_URL", url)
    digest = medmnist.md5sum(tmp_path / "src.npz")
    monkeypatch.setitem(medmnist.CHESTMNIST, 28,
                        dataclasses.replace(medmnist.CHESTMNIST[28], md5=digest))
    assert main(["data", "download", "chestmnist", "--dest", str(tmp_path / "d"),
                 "--no-progress"]) == 0
    assert f"md5 {digest} verified" in capsys.readouterr().out
    assert main(["data", "download", "chestmnist", "--size", "30"]) == 2
    assert "choose one of: 28, 64, 128, 224" in capsys.readouterr().err


def test_external_site_for_the_lessons_balances_and_says_which(tmp_path, monkeypatch):
    """07/08's second site: the NIH dev file when no ChestMNIST is cached (at most
    ``per_class`` films a class, patient ids kept, the caveats said), else None and why."""
    from fnlab import config
    from fnlab.external import external_site

    class Run28:
        checkpoint = {"image_size": 28, "in_channels": 1}

    monkeypatch.setenv("FNLAB_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(config, "shared_data_dir", lambda: None)
    images, why = external_site(Run28(), offline=True)
    assert images is None and "synthetic sites" in why

    shared = tmp_path / "shared"
    shared.mkdir()
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(30), np.zeros(700)].astype(np.uint8)[:, None]
    np.savez(shared / "nih_pneumonia_28_dev.npz",
             test_images=rng.integers(0, 256, (730, 28, 28), dtype=np.uint8), test_labels=labels,
             test_patient_ids=np.array([f"p{i // 2}" for i in range(730)]))
    monkeypatch.setattr(config, "shared_data_dir", lambda: shared)
    images, why = external_site(Run28(), per_class=50, offline=True)
    assert np.bincount(images.labels).tolist() == [50, 30]  # every pneumonia, 50 normals
    assert images.patient_ids is not None and images.image_size == 28
    assert "NIH dev file" in why and "30 pneumonia and 50 normal films" in why
    assert "adults" in why  # the caveats travel with it
