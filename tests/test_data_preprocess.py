"""Preprocessing: square resizing, statistics, denoising, equalisation, CLAHE."""

from __future__ import annotations

import numpy as np
import pytest

from fnlab.data.preprocess import (
    Normalizer,
    clahe,
    compute_stats,
    denoise,
    equalize,
    preprocess_images,
    resize,
    to_square,
)


def test_to_square_crop_takes_the_center():
    img = np.zeros((10, 20), np.uint8)
    img[:, 5:15] = 200  # the central 10 columns
    out = to_square(img, None, method="crop")
    assert out.shape == (10, 10) and (out == 200).all()


def test_to_square_pad_keeps_everything():
    img = np.full((10, 20), 200, np.uint8)
    out = to_square(img, None, method="pad")
    assert out.shape == (20, 20)
    assert (out[:5] == 0).all() and (out[15:] == 0).all() and (out[5:15] == 200).all()


def test_to_square_resizes_and_requires_an_explicit_method():
    img = np.random.default_rng(0).integers(0, 256, (30, 50)).astype(np.uint8)
    assert to_square(img, 16, method="crop").shape == (16, 16)
    assert to_square(img, 64, method="pad").shape == (64, 64)
    with pytest.raises(ValueError, match="'crop', 'pad'"):
        to_square(img, 16, method="stretch")


def test_resize_shapes_and_errors():
    img = np.zeros((10, 30), np.uint8)
    assert resize(img, 5).shape == (5, 5)
    assert resize(img, (4, 12)).shape == (4, 12)
    with pytest.raises(ValueError, match="resample"):
        resize(img, 4, resample="magic")
    with pytest.raises(ValueError, match="positive"):
        resize(img, 0)


def test_preprocess_images_handles_mixed_sizes_and_colour():
    images = [np.zeros((30, 40), np.uint8), np.ones((9, 7, 3), np.uint8) * 100,
              np.ones((64, 64, 4), np.uint8) * 255, np.linspace(0, 1, 20 * 20).reshape(20, 20)]
    out = preprocess_images(images, 24, method="pad")
    assert out.shape == (4, 24, 24) and out.dtype == np.uint8
    assert preprocess_images([], 8).shape == (0, 8, 8)
    with pytest.raises(ValueError, match="method"):
        preprocess_images(images, 8, method="squash")


def test_compute_stats_matches_numpy():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (50, 16, 16)).astype(np.uint8)
    mean, std = compute_stats(imgs)
    assert mean == pytest.approx(imgs.mean() / 255, abs=1e-9)
    assert std == pytest.approx((imgs / 255).std(), abs=1e-9)
    with pytest.raises(ValueError, match="empty"):
        compute_stats(np.zeros((0, 4, 4), np.uint8))


def test_normalizer_roundtrip_and_checkpoint_dict():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (20, 8, 8)).astype(np.uint8)
    norm = Normalizer.from_images(imgs)
    state = norm.state_dict()
    assert set(state) == {"mean", "std"} and all(isinstance(v, float) for v in state.values())
    again = Normalizer.from_dict(state)
    x = imgs / 255.0
    z = again(x)
    assert z.mean() == pytest.approx(0, abs=1e-9) and z.std() == pytest.approx(1, abs=1e-9)
    np.testing.assert_allclose(again.inverse(z), x)
    import torch

    t = torch.from_numpy(x[:, None].astype(np.float32))
    np.testing.assert_allclose(norm.transform()(t).numpy(), norm(t).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="mean"):
        Normalizer.from_dict({"avg": 1})
    with pytest.raises(ValueError, match="positive std"):
        Normalizer(0.5, 0.0)


def test_denoise_median_and_gaussian():
    img = np.full((9, 9), 100, np.uint8)
    img[4, 4] = 255  # salt
    assert denoise(img, "median")[4, 4] == 100
    g = denoise(img, "gaussian", sigma=1.0)
    assert 100 < g[4, 4] < 255 and g.dtype == np.uint8
    with pytest.raises(ValueError, match="median"):
        denoise(img, "bilateral")


def test_equalize_spreads_a_narrow_histogram():
    img = np.repeat(np.arange(100, 132, dtype=np.uint8), 32).reshape(32, 32)
    out = equalize(img)
    assert out.max() - out.min() > 200


def test_clahe_single_tile_without_clip_is_histogram_equalisation():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 53)).astype(np.uint8)
    out = clahe(img, clip_limit=0, tile_grid=1)
    cdf = np.cumsum(np.bincount(img.ravel(), minlength=256))
    expected = np.rint(cdf[img] / img.size * 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_clahe_boosts_local_contrast_without_tile_seams():
    rng = np.random.default_rng(0)
    # two regions of low contrast at different brightness
    img = np.concatenate([60 + rng.integers(0, 10, (64, 32)),
                          180 + rng.integers(0, 10, (64, 32))], axis=1).astype(np.uint8)
    out = clahe(img, clip_limit=2.0, tile_grid=4)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out[:, :28].std() > img[:, :28].std() * 1.5  # local contrast amplified
    strong = clahe(img, clip_limit=40.0, tile_grid=4)
    assert strong[:, :28].std() > out[:, :28].std()
    ramp = np.tile(np.linspace(60, 90, 128), (128, 1)).astype(np.uint8)
    smooth = clahe(ramp, tile_grid=8)
    assert np.abs(np.diff(smooth.astype(int), axis=1)).max() <= 8  # no jumps at tile edges
    # the clip limit bounds the gain: stronger clip -> less contrast
    weak = clahe(img, clip_limit=1.0, tile_grid=4)
    assert weak[:, :28].std() <= out[:, :28].std()


def test_clahe_odd_sizes_and_constant_images():
    assert clahe(np.zeros((7, 5), np.uint8), tile_grid=8).shape == (7, 5)
    flat = clahe(np.full((32, 32), 90, np.uint8))
    assert flat.std() == 0
    with pytest.raises(ValueError, match="tile_grid"):
        clahe(np.zeros((8, 8), np.uint8), tile_grid=0)
