"""Tests of fnlab.explain: Captum methods, traps (channels, in-place, targets), mask scores, figures."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn as nn

matplotlib.use("Agg")

from fnlab import explain as E  # noqa: E402
from fnlab.data.imageset import ImageSet  # noqa: E402

SIZE = 16
GRADIENT_METHODS = ["saliency", "integrated_gradients", "gradcam", "occlusion"]


# --------------------------------------------------------------------------- stand-in models
class TinyCNN(nn.Module):
    """conv-ReLU-conv-ReLU-pool-linear with ``outputs`` logits; ``squeeze`` gives (N,)."""

    def __init__(self, outputs: int = 1, inplace: bool = False, squeeze: bool = False,
                 clamp_input: bool = False):
        super().__init__()
        pre = [nn.Hardtanh(0.0, 1.0, inplace=inplace)] if clamp_input else []
        self.features = nn.Sequential(
            *pre,
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=inplace),
            nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=inplace),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, outputs))
        self.squeeze = squeeze

    def forward(self, x):
        out = self.head(self.features(x))
        return out.reshape(-1) if self.squeeze else out


class TinyAttention(nn.Module):
    """A conv, a spatial attention map (kept in ``last_map``), pooled to one logit."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.attn = nn.Conv2d(4, 1, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4, 1)
        self.last_map = None

    @property
    def attention_maps(self):
        return self.last_map

    def forward(self, x):
        h = self.pool(self.relu(self.conv(x)))
        a = torch.sigmoid(self.attn(h))
        self.last_map = a.detach()
        return self.fc((h * a).mean(dim=(2, 3))).reshape(-1)


class RegionModel(nn.Module):
    """Logit = 5 * mean intensity inside a fixed square minus 1: it only looks there."""

    def __init__(self, size: int = SIZE, box=(4, 9, 3, 8)):
        super().__init__()
        r0, r1, c0, c1 = box
        w = torch.zeros(1, 1, size, size)
        w[..., r0:r1, c0:c1] = 1.0 / ((r1 - r0) * (c1 - c0))
        self.register_buffer("w", w)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(5.0 * (x * self.w).sum(dim=(1, 2, 3)) - 1.0 + 2.0) - 2.0


def _box_mask(size=SIZE, box=(4, 9, 3, 8)):
    m = np.zeros((size, size), bool)
    m[box[0]:box[1], box[2]:box[3]] = True
    return m


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.rand(3, 1, SIZE, SIZE)


MODELS = {
    "single_logit_N": lambda: TinyCNN(1, squeeze=True),
    "single_logit_N1": lambda: TinyCNN(1),
    "two_logits": lambda: TinyCNN(2),
    "inplace_relu": lambda: TinyCNN(1, inplace=True, squeeze=True),
}


def _seeded(factory):
    torch.manual_seed(1)
    return factory()


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_each_method_returns_finite_n_h_w(kind, method, images):
    model = _seeded(MODELS[kind])
    kw = {"n_steps": 8} if method == "integrated_gradients" else {}
    attr = E.explain(model, images, method, **kw)
    assert attr.shape == (3, SIZE, SIZE)
    assert attr.dtype == np.float32
    assert np.all(np.isfinite(attr))
    if method in ("saliency", "gradcam"):
        assert attr.min() >= 0


def test_attention_method_upsamples_the_models_own_map(images):
    model = _seeded(TinyAttention)
    attr = E.explain(model, images, "attention")
    assert attr.shape == (3, SIZE, SIZE) and np.all(np.isfinite(attr))
    assert 0 < attr.min() and attr.max() < 1  # sigmoid maps
    with pytest.raises(ValueError, match="no attention maps"):
        E.explain(TinyCNN(1), images, "attention")


def test_explain_methods_picks_the_applicable_methods(images):
    plain = E.explain_methods(_seeded(MODELS["single_logit_N"]), images,
                              options={"integrated_gradients": {"n_steps": 4}})
    assert list(plain) == GRADIENT_METHODS
    attn = E.explain_methods(_seeded(TinyAttention), images, ["attention", "saliency"])
    assert list(attn) == ["attention", "saliency"]
    with pytest.raises(ValueError, match="unknown method"):
        E.explain_methods(TinyCNN(1), images, ["lime"])

    class RaisingMaps(TinyCNN):  # like a zoo smallcnn: the property raises
        @property
        def attention_maps(self):
            raise ValueError("no attention maps here")

    assert "attention" not in E.explain_methods(RaisingMaps(1), images, options={
        "integrated_gradients": {"n_steps": 2}})


def test_inputs_uint8_imageset_and_single_image(images):
    model = _seeded(MODELS["single_logit_N"])
    u8 = (images[:, 0].numpy() * 255).round().astype(np.uint8)
    a_u8 = E.explain(model, u8, "saliency")
    a_set = E.explain(model, ImageSet(u8, [0, 1, 1]), "saliency")
    a_float = E.explain(model, torch.from_numpy(u8).float().div(255)[:, None], "saliency")
    np.testing.assert_allclose(a_u8, a_set)
    np.testing.assert_allclose(a_u8, a_float, rtol=1e-5, atol=1e-7)
    assert E.explain(model, u8[0], "saliency").shape == (1, SIZE, SIZE)


def test_bad_inputs_give_clear_errors(images):
    model = TinyCNN(1)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        E.explain(model, images * 255, "saliency")
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        E.explain(model, images, "lime")
    with pytest.raises(TypeError, match="unknown option.*n_step"):
        E.explain(model, images, "integrated_gradients", n_step=5)
    with pytest.raises(ValueError, match="unknown baseline"):
        E.explain(model, images, "integrated_gradients", baseline="white")
    with pytest.raises(ValueError, match="target"):
        E.explain(model, images, "saliency", target=[1, 1])


# --------------------------------------------------------------------------- traps
def test_inplace_relu_model_works_and_is_not_modified(images):
    import captum.attr as ca

    model = _seeded(lambda: TinyCNN(1, inplace=True, squeeze=True, clamp_input=True))
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images.clone()
    # the trap is real: raw Captum on this model fails
    with pytest.raises(RuntimeError, match="in-place"):
        ca.Saliency(lambda t: model.eval()(t).reshape(-1, 1)).attribute(
            x.clone().requires_grad_(True), target=0)
    model.train()

    reference = _seeded(lambda: TinyCNN(1, inplace=False, squeeze=True, clamp_input=True))
    for method in GRADIENT_METHODS:
        got = E.explain(model, x, method, n_steps=8) if method == "integrated_gradients" \
            else E.explain(model, x, method)
        want = E.explain(reference, x, method, n_steps=8) \
            if method == "integrated_gradients" else E.explain(reference, x, method)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # caller's model, input and mode untouched
    assert all(m.inplace for m in model.modules() if hasattr(m, "inplace"))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(x, images)


def test_prepare_model_copies_and_wraps_single_logits():
    model = TinyCNN(1, inplace=True, squeeze=True)
    w = E.prepare_model(model)
    assert w.model is not model
    assert not any(m.inplace for m in w.model.modules() if hasattr(m, "inplace"))
    assert not w.training and not w.model.training
    x = torch.rand(2, 1, SIZE, SIZE)
    out = w(x)
    assert out.shape == (2, 2)
    with torch.no_grad():
        torch.testing.assert_close(out[:, 1], model.eval()(x))
        torch.testing.assert_close(out[:, 0], -model(x))


def test_target_semantics_single_and_two_logit(images):
    single = _seeded(MODELS["single_logit_N"])
    pos = E.explain(single, images, "integrated_gradients", n_steps=8)
    neg = E.explain(single, images, "integrated_gradients", n_steps=8, target=0)
    np.testing.assert_allclose(neg, -pos, rtol=1e-5, atol=1e-7)
    two = _seeded(MODELS["two_logits"])
    np.testing.assert_allclose(E.explain(two, images, "saliency"),
                               E.explain(two, images, "saliency", target=1))
    per_image = E.explain(two, images, "saliency", target=[0, 1, 0])
    np.testing.assert_allclose(per_image[1], E.explain(two, images[1:2], "saliency", target=1)[0],
                               rtol=1e-4, atol=1e-8)


def test_works_inside_no_grad_and_keeps_the_callers_grad_mode(images):
    model = _seeded(MODELS["single_logit_N1"])
    with torch.no_grad():
        attr = E.explain(model, images, "saliency")
        assert not torch.is_grad_enabled()
    assert np.abs(attr).sum() > 0


def test_normalize_is_folded_into_the_wrapper(images):
    mean, std = 0.4, 0.2
    core = _seeded(MODELS["single_logit_N"])

    class WithNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.core = core

        def forward(self, x):
            return self.core((x - mean) / std)

    folded = E.explain(core, images, "integrated_gradients", n_steps=8, normalize=(mean, std))
    inside = E.explain(WithNorm(), images, "integrated_gradients", n_steps=8)
    np.testing.assert_allclose(folded, inside, rtol=1e-5, atol=1e-6)


def test_gradcam_layer_by_module_by_name_and_default(images):
    model = _seeded(MODELS["single_logit_N"])
    by_module = E.explain(model, images, "gradcam", layer=model.features[2])
    by_name = E.explain(model, images, "gradcam", layer="features.2")
    np.testing.assert_allclose(by_module, by_name)
    from fnlab.models import target_layer

    default = E.explain(model, images, "gradcam")  # fnlab.models.target_layer of the copy
    np.testing.assert_allclose(default, E.explain(model, images, "gradcam",
                                                  layer=target_layer(model)))
    with pytest.raises(ValueError, match="not a submodule"):
        E.explain(model, images, "gradcam", layer=nn.Conv2d(1, 1, 1))


# --------------------------------------------------------------------------- IG completeness
@pytest.mark.parametrize("baseline", ["black", "blur", "mean"])
def test_integrated_gradients_completeness(baseline, images):
    model = _seeded(MODELS["two_logits"])
    attr = E.explain(model, images, "integrated_gradients", baseline=baseline, n_steps=128)
    gap = E.completeness_gap(model, images, attr, baseline=baseline)
    base = E.make_baseline(images, baseline)
    with torch.no_grad():
        delta = (model(images)[:, 1] - model(base)[:, 1]).abs().numpy()
    assert np.all(np.abs(gap) <= 0.02 * delta + 1e-4), (gap, delta)


def test_baselines():
    x = torch.rand(2, 1, SIZE, SIZE)
    assert torch.equal(E.make_baseline(x), torch.zeros_like(x))
    blur = E.make_baseline(x, "blur")
    assert blur.shape == x.shape and blur.std() < x.std()
    mean = E.make_baseline(x, "mean")
    torch.testing.assert_close(mean[:, :, 0, 0], x.mean(dim=(1, 2, 3)).reshape(2, 1))
    assert float(E.make_baseline(x, 0.5).unique()) == 0.5
    assert E.make_baseline(x, torch.ones(SIZE, SIZE)).shape == x.shape


# --------------------------------------------------------------------------- localisation
def test_region_model_attributions_score_high_inside_and_low_outside():
    torch.manual_seed(2)
    x = torch.rand(4, 1, SIZE, SIZE) * 0.5 + 0.25
    model = RegionModel()
    inside = np.repeat(_box_mask()[None], 4, axis=0)
    outside = np.repeat(_box_mask(box=(10, 15, 10, 15))[None], 4, axis=0)
    for method in ("saliency", "integrated_gradients"):
        attr = E.explain(model, x, method, n_steps=16)
        assert np.all(E.mask_share(attr, inside) > 0.99), method
        assert np.all(E.mask_share(attr, outside) < 0.01), method
        assert np.all(E.pointing_game(attr, inside, tolerance=0) == 1.0), method
        assert np.all(E.pointing_game(attr, outside, tolerance=1) == 0.0), method


def test_occlusion_finds_the_region():
    torch.manual_seed(3)
    x = torch.rand(3, 1, SIZE, SIZE) * 0.5 + 0.25
    attr = E.explain(RegionModel(), x, "occlusion", window=3, stride=1)
    inside = np.repeat(_box_mask()[None], 3, axis=0)
    assert np.all(E.mask_share(attr, inside) > 0.6)
    assert np.all(E.pointing_game(attr, inside, tolerance=0) == 1.0)
    # outside the box dilated by the window nothing moves the logit
    grown = np.repeat(_box_mask(box=(2, 11, 1, 10))[None], 3, axis=0)
    assert np.allclose(attr[~grown], 0.0)
    assert E.default_occlusion_window(SIZE) == 2


# --------------------------------------------------------------------------- scoring
def test_mask_share_and_pointing_game_by_hand():
    a = np.zeros((4, 4))
    a[0, 0], a[3, 3], a[1, 1] = 3.0, 1.0, -5.0
    m = np.zeros((4, 4), bool)
    m[0, 0] = True
    assert E.mask_share(a, m) == pytest.approx(0.75)
    assert E.pointing_game(a, m, tolerance=0) == 1.0
    assert np.isnan(E.mask_share(a, np.zeros((4, 4), bool)))
    assert np.isnan(E.pointing_game(a, np.zeros((4, 4), bool)))
    assert E.pointing_game(np.zeros((4, 4)), m) == 0.0  # a flat map points nowhere
    assert np.isnan(E.mask_share(-np.abs(a), m))  # no positive mass
    with pytest.raises(ValueError, match="same shape"):
        E.mask_share(a, np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="tolerance"):
        E.pointing_game(a, m, tolerance=-1)


def test_score_against_masks_and_score_methods():
    masks = np.zeros((3, 8, 8), bool)
    masks[0, :2, :2] = True
    masks[1, 4:, 4:] = True  # image 2 is normal: empty mask
    ideal = masks.astype(float)
    flat = np.ones((3, 8, 8))
    wrong = np.roll(masks, 4, axis=1).astype(float)
    with pytest.warns(UserWarning, match="left out 1 of 3"):
        per_image = E.score_against_masks({"ideal": ideal, "flat": flat, "wrong": wrong}, masks,
                                          tolerance=0)
    assert list(per_image.columns) == ["image", "method", "mask_share", "pointing_game",
                                       "mask_area", "lift", "pointing_chance"]
    assert len(per_image) == 6 and set(per_image["image"]) == {0, 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = E.score_methods({"flat": flat, "ideal": ideal, "wrong": wrong}, masks, tolerance=0)
    assert list(table["method"]) == ["ideal", "flat", "wrong"]
    row = table.set_index("method")
    assert row.loc["ideal", "mask_share"] == 1.0 and row.loc["ideal", "pointing_game"] == 1.0
    assert row.loc["flat", "mask_share"] == pytest.approx(row.loc["flat", "mask_area"])
    assert row.loc["wrong", "mask_share"] == 0.0 and row.loc["wrong", "pointing_game"] == 0.0
    assert (row["n"] == 2).all()


# --------------------------------------------------------------------------- figures
def test_overlay_and_explanation_grid(images):
    import matplotlib.pyplot as plt

    model = _seeded(MODELS["single_logit_N"])
    attrs = E.explain_methods(model, images, ["saliency", "gradcam"])
    masks = np.zeros((3, SIZE, SIZE), bool)
    masks[:, 4:8, 4:8] = True
    fig = E.explanation_grid(images, attrs, titles=["a", "b", "c"], masks=masks)
    assert len(fig.axes) == 3 * 3
    assert fig.axes[0].get_title() == "a" and fig.axes[1].get_title() == "saliency"
    plt.close(fig)
    ax = E.overlay(images[0], attrs["saliency"][0], sign="positive", mask=masks[0], title="t")
    assert ax.get_title() == "t"
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="expected"):
        E.explanation_grid(images, {"bad": np.zeros((2, SIZE, SIZE))})
    with pytest.raises(ValueError, match="sign"):
        E.overlay(images[0], attrs["saliency"][0], sign="up")


def test_explain_methods_per_method_baseline(images):
    model = _seeded(MODELS["single_logit_N"])
    opts = {"occlusion": {"baseline": "blur", "window": 4, "stride": 4}}
    got = E.explain_methods(model, images, ["occlusion", "integrated_gradients"], options=opts,
                            baseline="black")
    want_occ = E.explain(model, images, "occlusion", baseline="blur", window=4, stride=4)
    want_ig = E.explain(model, images, "integrated_gradients", baseline="black")
    assert np.allclose(got["occlusion"], want_occ, atol=1e-6)
    assert np.allclose(got["integrated_gradients"], want_ig, atol=1e-6)
    assert opts["occlusion"]["baseline"] == "blur"  # the caller's options are not modified


def test_peak_region_names_what_a_map_points_at():
    a = np.zeros((4, 6, 6))
    a[0, 1, 1] = 1  # on the lesion
    a[1, 5, 5] = 1  # on the marker
    a[2, 3, 4] = 1  # next to the marker: "marker" only with a tolerance
    lesion = np.zeros((4, 6, 6), bool)
    lesion[:, 0:2, 0:2] = True
    marker = np.zeros((6, 6), bool)
    marker[4:, 4:] = True
    got = E.peak_region(a, {"lesion": lesion, "marker": marker})
    assert got.tolist() == ["lesion", "marker", "elsewhere", "flat"]
    assert E.peak_region(a, {"lesion": lesion, "marker": marker}, tolerance=1)[2] == "marker"
    # the first region listed wins where two overlap
    assert E.peak_region(a[0], {"a": lesion[0], "b": lesion[0]}) == "a"
    with pytest.raises(ValueError, match="reserved"):
        E.peak_region(a, {"flat": lesion})
    with pytest.raises(ValueError, match="shape"):
        E.peak_region(a, {"lesion": lesion[:2]})


def test_colour_bars_say_which_scale(images):
    import matplotlib.pyplot as plt

    attrs = {"saliency": np.random.default_rng(0).random((3, SIZE, SIZE)),
             "attention": np.full((3, SIZE, SIZE), 0.9)}
    fig = E.explanation_grid(images, attrs, colorbar=True, vmax={"attention": 1.0})
    assert len(fig.axes) == 3 * 3 + 2  # the panels and one colour bar per method
    labels = [ax.get_xlabel() for ax in fig.axes[-2:]]
    assert labels == ["relative (per image)", "attention (fixed scale)"]
    # a fixed scale keeps a flat 0.9 map at 0.9, a relative one stretches it to 1
    img = fig.axes[5].get_images()[-1].get_array()
    assert np.allclose(img, 0.9)
    assert np.allclose(fig.axes[4].get_images()[-1].get_array().max(), 1.0)
    plt.close(fig)
    ax = E.overlay(images[0], attrs["attention"][0], vmax=1.0, colorbar=True)
    assert len(ax.figure.axes) == 2 and "fixed" in ax.figure.axes[1].get_ylabel()
    plt.close(ax.figure)
    assert E.colorbar_scale("all")[:2] == (-1.0, 1.0)
    with pytest.raises(ValueError, match="vmax"):
        E.overlay(images[0], attrs["attention"][0], vmax=0)
    with pytest.raises(ValueError, match="unknown method"):
        E.explanation_grid(images, attrs, vmax={"gradcam": 1.0})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_attributions_on_the_models_device(images):
    model = _seeded(MODELS["inplace_relu"]).cuda()
    for method in GRADIENT_METHODS:
        attr = E.explain(model, images, method)
        assert isinstance(attr, np.ndarray) and attr.shape == (3, SIZE, SIZE)
    assert next(model.parameters()).is_cuda
