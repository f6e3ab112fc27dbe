"""Model zoo: shapes at 28 and 64 px, parameter counts, attention maps, pretrained loading."""

from __future__ import annotations

import pytest
import torch

from fnlab import models

ALL = models.available_models()
# parameter counts at num_classes=2, in_channels=1 (the ViT's positional embedding grows
# with the number of patches, so its count depends on the size)
PARAMS = {
    "smallcnn": 287_009,
    "attention_cnn": 292_931,
    "resnet18": 11_168_193,
    "resnet50": 23_501_249,
    "densenet121": 6_946_049,
    "mobilenet_v2": 2_224_577,
    "efficientnet_b0": 4_008_253,
}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("size", [28, 64])
def test_forward_shapes_binary_and_multiclass(name, size):
    torch.manual_seed(0)
    m = models.create(name, num_classes=2, image_size=size).eval()
    with torch.no_grad():
        out = m(torch.rand(2, 1, size, size))
    assert out.shape == (2,)
    assert torch.isfinite(out).all()
    if name in PARAMS:
        assert models.count_parameters(m) == PARAMS[name]
    assert m.arch == name and m.num_classes == 2 and m.image_size == size


@pytest.mark.parametrize("name", ["smallcnn", "resnet18", "vit_tiny", "mobilenet_v2"])
def test_multiclass_head(name):
    m = models.create(name, num_classes=4, image_size=28).eval()
    with torch.no_grad():
        out = m(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 4)
    scores = models.predict_scores(m, [torch.rand(3, 1, 28, 28)])
    assert scores.shape == (3, 4)
    assert abs(scores.sum(1) - 1).max() < 1e-6


def test_vit_sizes_and_params():
    small = models.create("vit_tiny", image_size=28)
    assert small.body.patch_size == 4
    assert 1_000_000 < models.count_parameters(small) < 2_000_000
    big = models.create("vit_tiny", image_size=128)
    assert big.body.patch_size == 8
    with torch.no_grad():
        assert big.eval()(torch.rand(1, 1, 128, 128)).shape == (1,)
    with pytest.raises(ValueError, match="patch"):
        models.create("vit_tiny", image_size=30)


def test_three_channel_input_and_resize():
    m = models.create("smallcnn", in_channels=3, image_size=28, resize_to=56).eval()
    assert m.preprocess(torch.rand(2, 3, 28, 28)).shape == (2, 3, 56, 56)
    with pytest.raises(ValueError, match="expected a batch"):
        m(torch.rand(2, 1, 28, 28))


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="choose one of: smallcnn, attention_cnn"):
        models.create("alexnet")
    with pytest.raises(ValueError, match="num_classes"):
        models.create("smallcnn", num_classes=1)


def test_attention_maps_exposed():
    m = models.create("attention_cnn", image_size=28).eval()
    with pytest.raises(RuntimeError, match="no attention maps yet"):
        _ = m.attention_maps
    with torch.no_grad():
        out, maps = m(torch.rand(5, 1, 28, 28), return_attention=True)
    assert out.shape == (5,)
    assert maps.shape == (5, 1, 7, 7)
    assert ((maps > 0) & (maps < 1)).all()
    # the last block's map is a softmax over positions: one distribution per image
    assert torch.allclose(maps.sum(dim=(1, 2, 3)), torch.ones(5))
    assert m.attention_maps is maps
    with pytest.raises(ValueError, match="attention_cnn"):
        _ = models.create("smallcnn").attention_maps


def test_no_inplace_activations():
    for name in ("smallcnn", "attention_cnn", "resnet18", "mobilenet_v2"):
        m = models.create(name)
        assert not [x for x in m.modules() if getattr(x, "inplace", False) is True], name


@pytest.mark.parametrize("name", ["smallcnn", "attention_cnn", "resnet18", "densenet121",
                                  "mobilenet_v2", "efficientnet_b0"])
def test_target_layer_is_a_conv_block(name):
    m = models.create(name)
    layer = models.target_layer(m)
    assert any(isinstance(x, torch.nn.Conv2d) for x in layer.modules())
    feats = []
    h = layer.register_forward_hook(lambda mod, i, o: feats.append(o))
    with torch.no_grad():
        m.eval()(torch.rand(1, 1, 28, 28))
    h.remove()
    assert feats and feats[0].ndim == 4


def test_target_layer_vit_explains():
    with pytest.raises(ValueError, match="no convolutional feature map"):
        models.target_layer(models.create("vit_tiny"))


def test_small_stem_adaptation():
    r = models.create("resnet18", image_size=28).body
    assert r.conv1.kernel_size == (3, 3) and r.conv1.stride == (1, 1)
    assert isinstance(r.maxpool, torch.nn.Identity)
    big = models.create("resnet18", image_size=128).body
    assert big.conv1.kernel_size == (7, 7) and big.conv1.in_channels == 1


def test_normalization_buffers():
    m = models.create("smallcnn")
    m.set_normalization(0.5, 0.2)
    assert m.normalization() == {"mean": [0.5], "std": [pytest.approx(0.2)]}
    assert "mean" in m.state_dict()
    with pytest.raises(ValueError, match="std must be > 0"):
        m.set_normalization(0.5, 0.0)


def test_pretrained_offline_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        models.create("resnet18", pretrained=True)
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and "weights='IMAGENET1K_V1'" in msg
    assert str(tmp_path / "checkpoints") in msg
    with pytest.raises(ValueError, match="no ImageNet weights"):
        models.create("smallcnn", pretrained=True)


def test_pretrained_loads_local_file_and_averages_rgb(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)
    path = models.pretrained_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    m = models.create("resnet18", pretrained=True, image_size=128)
    assert torch.allclose(m.body.conv1.weight, ref.conv1.weight.mean(1, keepdim=True))
    assert torch.equal(m.body.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    small = models.create("resnet18", pretrained=True, image_size=28)
    assert torch.allclose(small.body.conv1.weight,
                          ref.conv1.weight.mean(1, keepdim=True)[..., 2:5, 2:5])
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read the ImageNet weights"):
        models.create("resnet18", pretrained=True)


def test_stem_option_changes_resolution_not_outputs():
    x = torch.rand(2, 1, 32, 32)
    small = models.create("resnet18", image_size=32)
    imagenet = models.create("resnet18", image_size=32, stem="imagenet")
    assert small.body.conv1.stride == (1, 1) and imagenet.body.conv1.stride == (2, 2)
    assert isinstance(imagenet.body.maxpool, torch.nn.MaxPool2d)
    assert small(x).shape == imagenet(x).shape == (2,)
    with pytest.raises(ValueError, match="unknown stem 'tiny'"):
        models.create("resnet18", image_size=32, stem="tiny")


def test_vit_coarse_patches_leave_a_4x4_grid():
    for size, patch in [(28, 7), (32, 8), (64, 16), (128, 32)]:
        vit = models.create("vit_tiny", image_size=size, patch_size="coarse")
        assert vit.body.patch_size == patch
    with pytest.raises(ValueError, match="patch_size must be"):
        models.create("vit_tiny", image_size=32, patch_size="fine")


def test_smoke_profile_gives_cheaper_heavy_models():
    from fnlab.lessons import lesson_config

    cfg = lesson_config("vit_tiny", dataset="synthetic", profile="smoke")
    assert cfg.model_kwargs == {"patch_size": "coarse"}
    cfg = lesson_config("resnet18", dataset="synthetic", profile="smoke",
                        model_kwargs={"stem": "small"})
    assert cfg.model_kwargs == {"stem": "small"}  # the caller's options win
    assert lesson_config("smallcnn", dataset="synthetic", profile="smoke").model_kwargs == {}


def test_lessons_give_each_family_its_recipe_and_the_callers_settings_win():
    from fnlab.lessons import ARCHITECTURE_RECIPES, lesson_config

    vit = lesson_config("vit_tiny", dataset="synthetic")
    assert vit.lr == ARCHITECTURE_RECIPES["vit_tiny"]["lr"] != lesson_config(dataset="synthetic").lr
    assert vit.model_kwargs == {"patch_size": "coarse"}  # the lessons profile's form
    assert lesson_config("vit_tiny", dataset="synthetic", lr=1e-2).lr == 1e-2
    assert lesson_config("resnet18", dataset="synthetic").model_kwargs == {"stem": "imagenet"}
    assert lesson_config("resnet18", dataset="synthetic", profile="full").model_kwargs == {}
