"""Tests for the synthetic chest X-ray generator (fnlab.data.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest

from fnlab.data.imageset import BINARY_CLASSES, FOUR_CLASSES, ImageSet
from fnlab.data.synthetic import (
    SITE_NAMES,
    SITE_PRESETS,
    SUBTYPES,
    SyntheticConfig,
    describe_sites,
    generate,
    synthetic_splits,
)


@pytest.mark.parametrize("size", [28, 64, 256])
def test_shapes_and_dtypes(size):
    n = 6 if size == 256 else 24
    ds = generate(n, seed=0, image_size=size)
    assert isinstance(ds, ImageSet)
    assert ds.images.shape == (n, size, size) and ds.images.dtype == np.uint8
    assert ds.masks.shape == (n, size, size) and ds.masks.dtype == bool
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
    assert ds.class_names == BINARY_CLASSES
    assert ds.source == "synthetic" and ds.split == "train"
    assert ds.patient_ids.shape == (n,)
    assert all(pid.startswith("syn-train-") for pid in ds.patient_ids)
    for key in ("site", "subtype", "difficulty", "shortcut"):
        assert len(ds.meta[key]) == n, key
    assert ds.meta["site"].dtype.kind == "i"
    assert ds.meta["difficulty"].dtype.kind == "f"
    assert ds.meta["shortcut"].dtype == bool
    assert set(ds.meta["subtype"]) <= set(SUBTYPES)
    d = ds.meta["difficulty"]
    assert ((d >= 0) & (d <= 1)).all()
    # images use a real grey range, not a flat field
    assert ds.images.std() > 20 and ds.images.min() < 40 and ds.images.max() > 200


def test_same_seed_same_arrays_and_different_seeds_differ():
    a = generate(40, seed=11, image_size=32, sites=3, images_per_patient=2)
    b = generate(40, seed=11, image_size=32, sites=3, images_per_patient=2)
    c = generate(40, seed=12, image_size=32, sites=3, images_per_patient=2)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.patient_ids, b.patient_ids)
    np.testing.assert_array_equal(a.meta["difficulty"], b.meta["difficulty"])
    assert not np.array_equal(a.images, c.images)


@pytest.mark.parametrize("prevalence", [0.0, 0.1, 0.5, 1.0])
def test_prevalence_is_honoured(prevalence):
    ds = generate(400, seed=1, image_size=28, prevalence=prevalence)
    assert abs(ds.prevalence() - prevalence) <= 0.01


def test_masks_empty_for_normals_and_present_for_positives():
    for size in (28, 64):
        ds = generate(120, seed=4, image_size=size, mode="4class")
        area = ds.masks.reshape(len(ds), -1).sum(axis=1)
        normal = ds.labels == 0
        assert normal.any() and (~normal).any()
        assert (area[normal] == 0).all()
        assert (area[~normal] > 0).all()
        np.testing.assert_allclose(ds.meta["lesion_area"], area / size**2)
        assert (ds.meta["difficulty"][normal] == 0).all()


def test_lesions_brighten_their_mask():
    """A lesion adds density: the masked pixels are brighter than the same pixels
    of a twin image drawn without findings (same seed, prevalence forced)."""
    pos = generate(60, seed=9, image_size=64, prevalence=1.0, difficulty=(0.0, 0.2),
                   noise=0.0)
    assert (pos.meta["subtype"] != "normal").all()
    gain = [pos.images[i][pos.masks[i]].mean() for i in range(len(pos))]
    ref = generate(60, seed=9, image_size=64, prevalence=1.0, difficulty=(0.0, 0.2),
                   noise=0.0, lesion_contrast=0.0)
    base = [ref.images[i][pos.masks[i]].mean() for i in range(len(pos))]
    assert np.mean(np.array(gain) - np.array(base)) > 10


def test_difficulty_range_and_subtlety():
    ds = generate(300, seed=2, image_size=32, prevalence=1.0, difficulty=(0.3, 0.6))
    d = ds.meta["difficulty"]
    assert d.min() >= 0.3 and d.max() <= 0.6
    easy = generate(200, seed=2, image_size=32, prevalence=1.0, difficulty=(0.0, 0.1))
    hard = generate(200, seed=2, image_size=32, prevalence=1.0, difficulty=(0.9, 1.0))
    assert hard.masks.mean() < easy.masks.mean()


def test_four_class_mode():
    ds = generate(200, seed=5, image_size=28, mode="4class", prevalence=0.75)
    assert ds.class_names == FOUR_CLASSES
    assert set(ds.labels.tolist()) == {0, 1, 2, 3}
    expected = {"normal": 0, "bacterial": 1, "viral": 2, "covid": 3}
    for st, lab in zip(ds.meta["subtype"], ds.labels):
        assert expected[st] == lab
    counts = ds.counts()
    assert abs(counts["Lung_Opacity"] - counts["COVID"]) <= 1
    binary = ds.to_binary()
    assert binary.class_names == BINARY_CLASSES
    assert abs(binary.prevalence() - 0.75) <= 0.01
    # binary mode draws the same subtypes but labels them 0/1
    b = generate(200, seed=5, image_size=28, mode="binary", prevalence=0.75)
    np.testing.assert_array_equal(b.labels, (ds.labels > 0).astype(np.int64))


def test_subtype_weights():
    ds = generate(100, seed=0, image_size=28, prevalence=1.0, subtype_weights=(1, 0, 0))
    assert set(ds.meta["subtype"]) == {"bacterial"}


def test_patients_and_splits():
    d = synthetic_splits(60, 30, 30, seed=7, image_size=28, images_per_patient=3)
    assert set(d) == {"train", "val", "test"}
    assert [len(d[k]) for k in ("train", "val", "test")] == [60, 30, 30]
    ids = {k: set(v.patient_ids) for k, v in d.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    for name, ds in d.items():
        assert ds.split == name
        assert all(p.startswith(f"syn-{name}-") for p in ds.patient_ids)
        _, counts = np.unique(ds.patient_ids, return_counts=True)
        assert (counts == 3).all()
        # a patient keeps its label, subtype and site across its images
        for pid in np.unique(ds.patient_ids)[:5]:
            rows = ds.patient_ids == pid
            assert len(set(ds.labels[rows])) == 1
            assert len(set(ds.meta["subtype"][rows])) == 1
            assert len(set(ds.meta["site"][rows])) == 1
    # the splits come from different seeds
    assert not np.array_equal(d["val"].images[:10], d["test"].images[:10])
    # images of one patient look alike (shared anatomy), more than two patients do
    ds = d["train"]
    order = np.argsort(ds.patient_ids, kind="stable")
    imgs = ds.images[order].astype(float).reshape(20, 3, -1)
    within = np.abs(imgs[:, 0] - imgs[:, 1]).mean()
    between = np.abs(imgs[:-1, 0] - imgs[1:, 0]).mean()
    assert within < between


def test_images_per_patient_with_a_remainder():
    ds = generate(10, seed=0, image_size=28, images_per_patient=4)
    _, counts = np.unique(ds.patient_ids, return_counts=True)
    assert sorted(counts.tolist()) == [2, 4, 4]


def test_sites_differ_in_statistics():
    ds = generate(400, seed=3, image_size=32, sites=4, noise=1.0)
    site = ds.meta["site"]
    assert set(site.tolist()) == {0, 1, 2, 3}
    means = [ds.images[site == s].mean() for s in range(4)]
    stds = [ds.images[site == s].reshape(-1, 32 * 32).std(axis=1).mean() for s in range(4)]
    assert max(means) - min(means) > 10
    assert max(stds) - min(stds) > 5
    # site_shift=0 removes the differences apart from the markers
    flat = generate(400, seed=3, image_size=32, sites=4, site_shift=0.0, markers=False)
    fmeans = [flat.images[flat.meta["site"] == s].mean() for s in range(4)]
    assert max(fmeans) - min(fmeans) < 3
    rows = describe_sites()
    assert [r["name"] for r in rows] == list(SITE_NAMES)
    assert len(rows) == len(SITE_PRESETS)


def test_site_weights_and_explicit_site_tuple():
    ds = generate(100, seed=0, image_size=28, sites=(1, 3), site_weights=(1.0, 0.0))
    assert set(ds.meta["site"].tolist()) == {1}


def test_shortcut_correlates_with_label_at_its_site_only():
    ds = generate(500, seed=6, image_size=32, sites=2, shortcut_site=1,
                  shortcut_strength=0.9, shortcut_negative_rate=0.05)
    tag, y, site = ds.meta["shortcut"], ds.labels, ds.meta["site"]
    assert not tag[site == 0].any()
    at = site == 1
    assert tag[at & (y == 1)].mean() > 0.8
    assert tag[at & (y == 0)].mean() < 0.12
    # the tag is burned into the image: a saturated block high on the image's left
    s = 32
    corner = ds.images[:, round(s * 0.2): round(s * 0.36), : round(s * 0.2)]
    saturated = (corner == 255).reshape(len(ds), -1).sum(axis=1)
    assert (saturated[tag] >= 4).all()
    assert saturated[tag].mean() > saturated[at & ~tag].mean() + 3
    none = generate(200, seed=6, image_size=32, sites=2)
    assert not none.meta["shortcut"].any()


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"image_size": 27}, "image_size 27 is outside"),
        ({"image_size": 257}, "image_size 257 is outside"),
        ({"image_size": 64.0}, "image_size must be an integer"),
        ({"prevalence": -0.1}, "prevalence must be in"),
        ({"prevalence": 1.5}, "prevalence must be in"),
        ({"mode": "multiclass"}, "unknown mode 'multiclass'"),
        ({"images_per_patient": 0}, "images_per_patient"),
        ({"sites": 9}, "unknown site 4"),
        ({"sites": (0, 1), "shortcut_site": 2}, "shortcut_site 2"),
        ({"shortcut_strength": 1.2}, "shortcut_strength"),
        ({"difficulty": (0.8, 0.2)}, "difficulty"),
        ({"subtype_weights": (0, 0, 0)}, "subtype_weights"),
        ({"colour": True}, "unknown synthetic setting"),
    ],
)
def test_bad_settings_raise_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        generate(4, **overrides)


def test_bad_n_and_seed():
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        generate(-1)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        generate(2, seed=-3)
    assert len(generate(0)) == 0


def test_config_object_and_overrides():
    cfg = SyntheticConfig(image_size=32, prevalence=0.25, mode="4class")
    ds = generate(40, cfg, seed=0, prevalence=0.5)
    assert ds.image_size == 32 and ds.class_names == FOUR_CLASSES
    assert abs(ds.prevalence() - 0.5) <= 0.01
    assert ds.meta["config"]["prevalence"] == 0.5
    with pytest.raises(TypeError, match="SyntheticConfig"):
        generate(4, config={"image_size": 32})


def test_benchmark_smoke_writes_json(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_synthetic.py"
    out = tmp_path / "synthetic.json"
    proc = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "images/s" in proc.stdout
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["goal_images_per_second_64"] == 2000
    assert isinstance(report["goal_met"], bool)
    assert {r["size"] for r in report["results"]} == {64, 128}
    for r in report["results"]:
        assert r["images"] > 0 and r["seconds"] > 0 and r["images_per_second"] > 0
