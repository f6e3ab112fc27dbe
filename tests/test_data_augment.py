"""Augmentation presets: ranges, flips, the harmful preset, errors."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from fnlab.data.augment import PRESETS, RandomGamma, elastic, get_augment, list_presets


def _types(pipeline):
    found = []

    def walk(t):
        found.append(type(t))
        for child in getattr(t, "transforms", []) or []:
            walk(child)

    walk(pipeline)
    return found


def _phantom(size=32):
    x = torch.zeros(1, size, size)
    x[:, size // 4 : 3 * size // 4, size // 8 : size // 2] = 0.8  # an asymmetric block
    return x


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_keeps_shape_dtype_and_range(preset):
    torch.manual_seed(0)
    aug = get_augment(preset, image_size=32)
    for _ in range(5):
        y = aug(torch.rand(1, 32, 32))
        assert y.shape == (1, 32, 32) and y.dtype == torch.float32
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_none_is_identity():
    x = torch.rand(1, 28, 28)
    assert torch.equal(get_augment("none", 28)(x), x)


def test_horizontal_flip_is_off_by_default_and_documented():
    for preset in ("light", "standard", "strong"):
        assert v2.RandomHorizontalFlip not in _types(get_augment(preset, 32))
        assert v2.RandomHorizontalFlip in _types(get_augment(preset, 32, hflip=True))
    import fnlab.data.augment as mod

    assert "heart" in mod.__doc__ and "situs" in mod.__doc__


def test_over_preset_is_harmful_on_purpose():
    types = _types(get_augment("over", 32))
    for t in (v2.RandomHorizontalFlip, v2.RandomVerticalFlip, v2.RandomInvert,
              v2.RandomResizedCrop, v2.RandomRotation):
        assert t in types
    x = _phantom()
    torch.manual_seed(0)
    over = torch.stack([(get_augment("over", 32)(x) - x).abs().mean() for _ in range(10)])
    torch.manual_seed(0)
    light = torch.stack([(get_augment("light", 32)(x) - x).abs().mean() for _ in range(10)])
    assert over.mean() > 3 * light.mean()


def test_plausible_presets_stay_within_clinical_ranges():
    for preset in ("light", "standard", "strong"):
        for t in _types(get_augment(preset, 64)):
            assert t not in (v2.RandomVerticalFlip, v2.RandomInvert, v2.RandomRotation)
    affine = [t for t in get_augment("standard", 64).transforms if isinstance(t, v2.RandomAffine)][0]
    assert max(abs(d) for d in affine.degrees) <= 10
    assert max(affine.translate) <= 0.08
    assert affine.scale == (0.9, 1.1)


def test_seeded_pipelines_are_repeatable():
    x = torch.rand(1, 32, 32)
    torch.manual_seed(3)
    a = get_augment("standard", 32)(x)
    torch.manual_seed(3)
    b = get_augment("standard", 32)(x)
    assert torch.equal(a, b)


def test_elastic_displacement_scales_with_image_size():
    torch.manual_seed(0)
    shares = []
    for size in (28, 96):
        ramp = torch.arange(size, dtype=torch.float32).repeat(size, 1)[None]
        m = size // 4
        rms = torch.stack([((elastic(size, 2.0)(ramp) - ramp)[0, m:-m, m:-m] ** 2).mean().sqrt()
                           for _ in range(10)]).mean()
        shares.append(float(rms) / size * 100)
    assert all(1.5 < s < 2.7 for s in shares), shares  # about 2 % at every size
    with pytest.raises(ValueError, match="percent"):
        elastic(32, -1.0)


def test_random_gamma_and_errors():
    x = torch.full((1, 2, 2), 0.25)
    assert torch.allclose(RandomGamma((0.5, 0.5), p=1.0)(x), torch.full((1, 2, 2), 0.5))
    assert torch.equal(RandomGamma(p=0.0)(x), x)
    with pytest.raises(ValueError, match="gamma"):
        RandomGamma((2.0, 1.0))
    with pytest.raises(ValueError, match="choose one of: none, light"):
        get_augment("medium", 32)
    with pytest.raises(ValueError, match="image_size"):
        get_augment("standard", 4)


def test_list_presets_has_one_line_each():
    presets = list_presets()
    assert list(presets) == ["none", "light", "standard", "strong", "over", "site"]
    assert all(isinstance(v, str) and "\n" not in v for v in presets.values())


def test_works_with_imageset_dataset():
    import numpy as np

    from fnlab.data.imageset import ImageSet

    ds = ImageSet(np.full((3, 32, 32), 128, np.uint8), [0, 1, 0]).torch_dataset(
        transform=get_augment("standard", 32))
    x, y = ds[1]
    assert x.shape == (1, 32, 32) and y == 1


def test_site_preset_changes_acquisition_style_but_not_geometry():
    from fnlab.data.augment import SiteStyle

    types = _types(get_augment("site", 32))
    assert SiteStyle in types
    for t in (v2.RandomAffine, v2.RandomRotation, v2.RandomResizedCrop, v2.RandomHorizontalFlip):
        assert t not in types
    x = _phantom()
    torch.manual_seed(0)
    outs = torch.stack([get_augment("site", 32)(x) for _ in range(40)])
    # intensity and texture vary from draw to draw ...
    assert outs.mean(dim=(1, 2, 3)).std() > 0.02 and outs.std(dim=(1, 2, 3)).std() > 0.01
    # ... but the block stays where it was: the bright region does not move
    inside = outs[:, :, 8:24, 4:16].mean(dim=(1, 2, 3))
    outside = outs[:, :, 8:24, 20:30].mean(dim=(1, 2, 3))
    assert bool((inside > outside).all())
    assert v2.RandomHorizontalFlip in _types(get_augment("site", 32, hflip=True))
