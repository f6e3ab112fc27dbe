"""Explanations with Captum: saliency, Integrated Gradients, GradCAM, occlusion, attention.

:func:`explain` turns a model and a batch of chest X-rays into one attribution map
per image (``N x H x W`` float array) with any method of :func:`available_methods`;
:func:`overlay` and :func:`explanation_grid` draw them on the X-rays; on synthetic
data with lesion masks, :func:`mask_share`, :func:`pointing_game`,
:func:`score_against_masks` and :func:`score_methods` score each method against the
truth, and :func:`peak_region` names what a map's peak falls on (the lesion, a
burned-in marker, a tag).

The traps are handled here, not in the notebook:

* **single-channel inputs** -- images may be an ImageSet, a uint8 array
  (``N x H x W`` or ``N x C x H x W``, scaled to [0, 1]) or a float tensor in [0, 1];
  attributions are summed over the channel axis and returned at the input size.
* **in-place activations** -- Captum's hooks break on in-place ops (``ReLU(inplace=True)``
  overwrites the tensor a hook saved). Attributions are computed on a *deep copy* of
  the model whose modules have ``inplace = False``; the caller's model is never modified.
  (In-place ops written in a ``forward`` as ``F.relu(x, inplace=True)`` cannot be fixed
  from outside.)
* **binary single-logit models** -- the model is wrapped so that its output has one
  column per class: a single logit ``l`` becomes ``[-l, l]`` (the log-odds of normal and
  of pneumonia), so ``target=1`` (the default for binary models) is always the pneumonia
  logit, for one-logit ``(N,)``/``(N, 1)`` and two-logit ``(N, 2)`` models alike.
  Multi-class models default to the predicted class of each image.
* **Integrated Gradients baselines** -- black (all zeros, the default: "no X-ray
  signal"), ``"blur"`` (the image under a strong Gaussian blur, sigma = size / 8: keeps
  the overall brightness, removes the detail) or ``"mean"`` (each image's mean grey);
  or any float or tensor. The choice changes the map; :func:`completeness_gap` checks
  that the attributions add up to ``f(x) - f(baseline)``.
* **eval mode, gradients, devices** -- the copy is put in eval mode (dropout and
  batch-norm statistics fixed), gradients are enabled even inside ``torch.no_grad()``,
  inputs go to the model's device and attributions come back as NumPy on the CPU.
* **normalisation** -- zoo models (:func:`fnlab.models.create`) normalise inside; for a
  model that expects normalised inputs pass raw [0, 1] images and
  ``normalize=(mean, std)``: the normalisation is folded into the wrapper, so the
  attributions are in raw pixel space.

Example
-------
>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True),
...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
>>> x = torch.rand(2, 1, 16, 16)
>>> explain(net, x, "integrated_gradients", n_steps=16).shape
(2, 16, 16)
>>> sorted(explain_methods(net, x, ["saliency", "gradcam"], layer=net[0]))
['gradcam', 'saliency']
>>> net[1].inplace  # the caller's model is untouched
True
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from fnlab.models import pixels_to_float

__all__ = [
    "BASELINES",
    "METHODS",
    "as_batch",
    "available_methods",
    "colorbar_scale",
    "completeness_gap",
    "default_occlusion_window",
    "explain",
    "explain_methods",
    "explanation_grid",
    "make_baseline",
    "mask_share",
    "missed_pneumonias",
    "overlay",
    "peak_region",
    "peak_summary",
    "pointing_game",
    "prepare_model",
    "score_against_masks",
    "score_methods",
]

#: Method name -> one line description (what :func:`explain` accepts).
METHODS = {
    "saliency": "absolute input gradient of the target logit (Captum Saliency)",
    "integrated_gradients": "path integral of gradients from a baseline image (Captum "
                            "IntegratedGradients); signed, adds up to f(x) - f(baseline)",
    "gradcam": "GradCAM on the last conv block (Captum LayerGradCam, relu_attributions=True), "
               "upsampled bilinearly to the input size",
    "occlusion": "drop in the target logit when a square patch is replaced by the baseline "
                 "(Captum Occlusion; window about size / 7)",
    "attention": "the attention CNN's own spatial attention map, upsampled (no gradients)",
}

#: Named Integrated Gradients / occlusion baselines.
BASELINES = ("black", "blur", "mean")

# method -> options explain() accepts for it (besides the common ones)
_OPTIONS = {
    "saliency": {"abs"},
    "integrated_gradients": {"n_steps", "internal_batch_size", "ig_method", "blur_sigma"},
    "gradcam": {"relu_attributions"},
    "occlusion": {"window", "stride", "perturbations_per_eval", "blur_sigma"},
    "attention": set(),
}


def available_methods() -> list[str]:
    """Names :func:`explain` accepts.

    >>> available_methods()
    ['saliency', 'integrated_gradients', 'gradcam', 'occlusion', 'attention']
    """
    return list(METHODS)


# --------------------------------------------------------------------------- inputs
def as_batch(images, device=None) -> torch.Tensor:
    """Images as a float tensor ``N x C x H x W`` in [0, 1] on ``device``.

    Accepts an ImageSet, a NumPy array or a tensor: uint8 pixels are divided by 255,
    floats must already be in [0, 1]. ``H x W`` is one image, ``N x H x W`` is N
    single-channel images, ``N x C x H x W`` is passed through.

    >>> as_batch(np.full((3, 8, 8), 255, np.uint8)).shape
    torch.Size([3, 1, 8, 8])
    """
    if hasattr(images, "images") and hasattr(images, "labels"):  # an ImageSet
        images = images.images
    if isinstance(images, (np.ndarray, torch.Tensor)):
        x = pixels_to_float(images)
    else:
        raise TypeError(f"images must be an ImageSet, a NumPy array or a torch tensor, "
                        f"got {type(images).__name__}")
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4:
        raise ValueError(f"images must be H x W, N x H x W or N x C x H x W, "
                         f"got shape {tuple(x.shape)}")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("images contain NaN or inf")
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"float images must be in [0, 1] (got min {lo:.3g}, max {hi:.3g}); "
                             "pass uint8 pixels or divide by 255, and give a model that "
                             "expects normalised inputs normalize=(mean, std)")
    return x.to(device) if device is not None else x


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _disable_inplace(module: nn.Module) -> int:
    """Set ``inplace = False`` on every submodule that has the flag; return how many changed."""
    changed = 0
    for m in module.modules():
        if isinstance(getattr(m, "inplace", None), bool) and m.inplace:
            m.inplace = False
            changed += 1
    return changed


class _ClassLogits(nn.Module):
    """Wrap a model: optional input normalisation, output as ``(N, K)`` class logits.

    A single logit ``l`` (output ``(N,)`` or ``(N, 1)``) becomes ``[-l, l]``: column 1 is
    the pneumonia logit and column 0 its negative (the log-odds of normal).
    """

    def __init__(self, model: nn.Module, normalize=None):
        super().__init__()
        self.model = model
        if normalize is not None:
            mean, std = normalize
            mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
            std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
            if torch.any(std <= 0):
                raise ValueError(f"normalize: std must be > 0, got {std.flatten().tolist()}")
            dev = model_device(model)
            self.register_buffer("mean", mean.to(dev))
            self.register_buffer("std", std.to(dev))
        else:
            self.mean = self.std = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            x = (x - self.mean) / self.std
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
            logit = out.reshape(-1, 1)
            return torch.cat([-logit, logit], dim=1)
        if out.ndim != 2:
            raise ValueError(f"model output must be (N,), (N, 1) or (N, K) logits, "
                             f"got shape {tuple(out.shape)}")
        return out


def prepare_model(model: nn.Module, normalize=None) -> nn.Module:
    """A Captum-safe wrapper around a deep copy of ``model``.

    The copy has every in-place flag turned off and is in eval mode; the wrapper
    applies ``normalize=(mean, std)`` when given and returns ``(N, K)`` class logits
    (``[-l, l]`` for a single-logit model). ``wrapper.model`` is the copy. The
    original model is not modified.

    >>> net = nn.Sequential(nn.Flatten(), nn.ReLU(inplace=True), nn.Linear(16, 1))
    >>> w = prepare_model(net)
    >>> w(torch.rand(3, 1, 4, 4)).shape, w.model[1].inplace, net[1].inplace
    (torch.Size([3, 2]), False, True)
    """
    if isinstance(model, _ClassLogits):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        clone = copy.deepcopy(model)
    except Exception as exc:  # e.g. a non-leaf tensor kept as an attribute
        raise ValueError(f"cannot deep-copy the model to explain it ({exc}); run it once in "
                         "eval mode under torch.no_grad() first, or drop tensors that keep "
                         "a graph") from exc
    _disable_inplace(clone)
    clone.eval()
    wrapper = _ClassLogits(clone, normalize)
    wrapper.eval()
    return wrapper


def _resolve_target(target, logits: torch.Tensor) -> torch.Tensor:
    n, k = logits.shape
    if target is None:
        if k == 2:
            return torch.ones(n, dtype=torch.long, device=logits.device)
        return logits.argmax(dim=1)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"target: {t.numel()} values for {n} images")
    if torch.any(t < 0) or torch.any(t >= k):
        raise ValueError(f"target must be a class index in 0..{k - 1}, got {t.tolist()[:5]}")
    return t


def _resolve_layer(original: nn.Module, wrapper: _ClassLogits, layer) -> nn.Module:
    clone = wrapper.model
    if isinstance(original, _ClassLogits):
        original = original.model
    if layer is None:
        from fnlab.models import target_layer

        return target_layer(clone)
    if isinstance(layer, str):
        try:
            return clone.get_submodule(layer)
        except AttributeError as exc:
            names = [n for n, _ in clone.named_modules() if n][:12]
            raise ValueError(f"layer {layer!r} not found in the model; names look like: "
                             f"{', '.join(names)}") from exc
    if isinstance(layer, nn.Module):
        for name, mod in original.named_modules():
            if mod is layer:
                return clone.get_submodule(name) if name else clone
        for mod in clone.modules():
            if mod is layer:
                return layer
        raise ValueError("layer is not a submodule of the model being explained")
    raise TypeError(f"layer must be None, a module name or a module, got {type(layer).__name__}")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    size = min(x.shape[-2:])
    k = 2 * math.ceil(3 * sigma) + 1
    k_max = 2 * (size - 1) - 1 if size > 1 else 1  # reflect padding needs pad < size
    k = max(1, min(k, k_max))
    k = k if k % 2 else k - 1
    return TF.gaussian_blur(x, kernel_size=[k, k], sigma=[float(sigma), float(sigma)])


def make_baseline(images, kind="black", blur_sigma: float | None = None) -> torch.Tensor:
    """The reference image(s) for Integrated Gradients or occlusion, shaped like ``images``.

    ``kind``: ``"black"`` (zeros, the default), ``"blur"`` (Gaussian blur with
    ``blur_sigma`` pixels, default size / 8), ``"mean"`` (each image's mean grey), a
    float (a constant grey) or a tensor/array broadcastable to the images.

    >>> x = torch.rand(2, 1, 16, 16)
    >>> float(make_baseline(x).abs().max()), make_baseline(x, "blur").shape
    (0.0, torch.Size([2, 1, 16, 16]))
    """
    x = images if isinstance(images, torch.Tensor) and images.dtype.is_floating_point \
        else as_batch(images)
    if isinstance(kind, str):
        if kind == "black":
            return torch.zeros_like(x)
        if kind == "blur":
            sigma = blur_sigma if blur_sigma is not None else x.shape[-1] / 8.0
            if sigma <= 0:
                raise ValueError(f"blur_sigma must be > 0, got {sigma}")
            return gaussian_blur(x, sigma)
        if kind == "mean":
            return x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x).clone()
        raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}, "
                         "a float or a tensor")
    if isinstance(kind, (int, float)):
        return torch.full_like(x, float(kind))
    b = torch.as_tensor(np.asarray(kind) if not isinstance(kind, torch.Tensor) else kind,
                        dtype=x.dtype, device=x.device)
    try:
        return b.expand_as(x).clone() if b.ndim == x.ndim else b.reshape(
            (1,) * (x.ndim - b.ndim) + tuple(b.shape)).expand_as(x).clone()
    except RuntimeError as exc:
        raise ValueError(f"baseline of shape {tuple(b.shape)} does not broadcast to images "
                         f"{tuple(x.shape)}") from exc


def default_occlusion_window(image_size: int) -> int:
    """Occlusion window side for an image side: about size / 7, at least 2 px.

    >>> default_occlusion_window(28), default_occlusion_window(64), default_occlusion_window(224)
    (4, 9, 32)
    """
    return max(2, int(round(image_size / 7)))


def _attention_maps(module: nn.Module) -> torch.Tensor:
    maps = None
    try:
        maps = module.attention_maps
    except (AttributeError, RuntimeError, ValueError):
        maps = None
    if not isinstance(maps, torch.Tensor):
        found = [m.last_map for m in module.modules()
                 if isinstance(getattr(m, "last_map", None), torch.Tensor)]
        maps = found[-1] if found else None
    if maps is None:
        raise ValueError(f"model {getattr(module, 'arch', type(module).__name__)!r} has no "
                         "attention maps; the 'attention' method needs an attention model "
                         "such as fnlab.models.create('attention_cnn')")
    maps = maps.detach().float()
    if maps.ndim == 3:
        maps = maps[:, None]
    if maps.ndim != 4:
        raise ValueError(f"attention maps must be N x h x w or N x C x h x w, "
                         f"got {tuple(maps.shape)}")
    return maps.mean(dim=1, keepdim=True)


def _has_attention(module: nn.Module) -> bool:
    if any(hasattr(m, "last_map") for m in module.modules()):
        return True
    try:
        return isinstance(module.attention_maps, torch.Tensor)
    except (AttributeError, RuntimeError, ValueError):
        return False


def _check_options(method: str, kw: Mapping[str, Any]) -> None:
    # options of other methods are ignored, so one call can loop over methods
    known = set().union(*_OPTIONS.values())
    unknown = set(kw) - known
    if unknown:
        valid = ", ".join(sorted(_OPTIONS[method])) or "none"
        raise TypeError(f"explain(method={method!r}): unknown option(s) "
                        f"{', '.join(sorted(unknown))}; valid options for {method}: {valid}")


def _attribute_batch(wrapper: _ClassLogits, x: torch.Tensor, method: str, target, baseline,
                     layer_mod, kw: Mapping[str, Any]) -> torch.Tensor:
    """Attributions ``N x H x W`` (float tensor) of one batch already on the model's device."""
    import captum.attr as ca

    h, w = x.shape[-2:]
    with torch.no_grad():
        logits = wrapper(x)
    t = _resolve_target(target, logits)
    if method == "attention":
        maps = _attention_maps(wrapper.model)
        if maps.shape[0] != x.shape[0]:
            raise ValueError(f"attention maps hold {maps.shape[0]} images for a batch of "
                             f"{x.shape[0]}")
        return F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        if method == "saliency":
            attr = ca.Saliency(wrapper).attribute(x, target=t, abs=kw.get("abs", True))
            return attr.sum(dim=1)
        if method == "integrated_gradients":
            base = make_baseline(x, baseline, kw.get("blur_sigma"))
            attr = ca.IntegratedGradients(wrapper).attribute(
                x, baselines=base, target=t, n_steps=int(kw.get("n_steps", 50)),
                method=kw.get("ig_method", "gausslegendre"),
                internal_batch_size=kw.get("internal_batch_size", 64 * max(1, len(x))))
            return attr.sum(dim=1)
        if method == "gradcam":
            cam = ca.LayerGradCam(wrapper, layer_mod).attribute(
                x, target=t, relu_attributions=kw.get("relu_attributions", True))
            if isinstance(cam, tuple):
                cam = cam[0]
            if cam.ndim != 4:
                raise ValueError(f"GradCAM layer output must be a N x C x h x w feature map, "
                                 f"got {tuple(cam.shape)}; pass layer= a convolutional block")
            up = ca.LayerAttribution.interpolate(cam, (h, w), interpolate_mode="bilinear")
            return up[:, 0]
        if method == "occlusion":
            c = x.shape[1]
            win = int(kw.get("window") or default_occlusion_window(min(h, w)))
            stride = int(kw.get("stride") or max(1, win // 2))
            if not (1 <= win <= min(h, w)):
                raise ValueError(f"occlusion window must be in 1..{min(h, w)} px, got {win}")
            base = make_baseline(x, baseline, kw.get("blur_sigma"))
            attr = ca.Occlusion(wrapper).attribute(
                x, sliding_window_shapes=(c, win, win), strides=(c, stride, stride),
                baselines=base, target=t,
                perturbations_per_eval=int(kw.get("perturbations_per_eval", 16)))
            return attr.sum(dim=1)
    raise AssertionError(method)  # pragma: no cover


def _run(model: nn.Module, wrapper: _ClassLogits, x: torch.Tensor, method: str, target,
         baseline, layer, batch_size: int, progress: bool, kw: Mapping[str, Any]) -> np.ndarray:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    _check_options(method, kw)
    layer_mod = _resolve_layer(model, wrapper, layer) if method == "gradcam" else None
    n = len(x)
    if n == 0:
        return np.zeros((0, *x.shape[-2:]), dtype=np.float32)
    if target is not None and not np.isscalar(target):
        target = torch.as_tensor(np.asarray(target)).reshape(-1)
        if len(target) != n:
            raise ValueError(f"target: {len(target)} values for {n} images")
    device = model_device(wrapper)
    batch_size = max(1, int(batch_size))
    starts = range(0, n, batch_size)
    if progress and n > batch_size:
        from fnlab.config import progress_bar as tqdm

        starts = tqdm(starts, desc=method, unit="batch")
    out = []
    for s in starts:
        xb = x[s:s + batch_size].to(device)
        tb = target[s:s + batch_size] if isinstance(target, torch.Tensor) else target
        out.append(_attribute_batch(wrapper, xb, method, tb, baseline, layer_mod, kw)
                   .detach().float().cpu())
    return torch.cat(out).numpy()


# --------------------------------------------------------------------------- public API
def explain(model: nn.Module, images, method: str, target=None, baseline="black", layer=None,
            normalize=None, batch_size: int = 32, progress: bool = False, **kw) -> np.ndarray:
    """Attribution maps (``N x H x W`` float32) of ``model`` on ``images`` with ``method``.

    Parameters
    ----------
    model : any ``nn.Module`` taking ``N x C x H x W`` images in [0, 1] (zoo models
        normalise inside) and returning ``(N,)``/``(N, 1)`` single logits or ``(N, K)``
        logits. It is deep-copied (in-place flags off, eval mode); never modified.
    images : ImageSet, uint8 array, or float array/tensor in [0, 1] (see :func:`as_batch`).
    method : one of :func:`available_methods`.
    target : class index (or one per image) to explain. Default: 1 (pneumonia) for
        binary models with one or two logits, the predicted class for K > 2.
    baseline : Integrated Gradients / occlusion reference: ``"black"`` (default),
        ``"blur"``, ``"mean"``, a float or a tensor (see :func:`make_baseline`).
    layer : GradCAM layer: a module of ``model``, its name, or None for
        :func:`fnlab.models.target_layer` (the last conv block).
    normalize : ``(mean, std)`` when the model expects normalised inputs; folded in.
    batch_size, progress : images per Captum call; tqdm bar over batches.
    **kw : method options -- saliency: ``abs`` (True); integrated_gradients:
        ``n_steps`` (50), ``internal_batch_size``, ``ig_method`` ("gausslegendre"),
        ``blur_sigma``; gradcam: ``relu_attributions`` (True); occlusion: ``window``
        (size / 7), ``stride`` (window / 2), ``perturbations_per_eval`` (16). Options of
        the other methods are ignored (so one loop can pass ``n_steps`` to every method);
        unknown names raise TypeError.

    Saliency, GradCAM and attention maps are >= 0; Integrated Gradients and occlusion
    are signed (positive = evidence for the target class).

    Saliency is written out by hand in notebook 06 ("Saliency is one backward pass"):
    the absolute gradient of the pneumonia logit with respect to each pixel, one
    ``backward()`` for the whole batch; ``method="saliency"`` computes the same map
    through Captum.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
    ...                     nn.Linear(2 * 8 * 8, 1))
    >>> a = explain(net, np.zeros((2, 8, 8), np.uint8), "occlusion", window=2)
    >>> a.shape, a.dtype.name
    ((2, 8, 8), 'float32')
    """
    x = as_batch(images)
    wrapper = prepare_model(model, normalize)
    return _run(model, wrapper, x, method, target, baseline, layer, batch_size, progress, kw)


def explain_methods(model: nn.Module, images, methods: Sequence[str] | None = None,
                    target=None, baseline="black", layer=None, normalize=None,
                    batch_size: int = 32, options: Mapping[str, Mapping] | None = None,
                    progress: bool = False) -> dict[str, np.ndarray]:
    """Run several methods on the same images: ``{method: N x H x W array}``.

    ``methods=None`` runs every method that applies to the model: "attention" only
    for models with attention maps (e.g. ``attention_cnn``), "gradcam" only when a
    conv layer is found (a warning says when it is skipped). ``options`` gives per-method keyword options,
    e.g. ``{"integrated_gradients": {"n_steps": 32}}``; a ``"baseline"`` among them
    overrides ``baseline`` for that method only (``{"occlusion": {"baseline": "blur"}}``).
    The model is copied once.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1))
    >>> sorted(explain_methods(net, torch.rand(1, 1, 8, 8)))
    ['gradcam', 'integrated_gradients', 'occlusion', 'saliency']
    """
    x = as_batch(images)
    wrapper = prepare_model(model, normalize)
    options = dict(options or {})
    explicit = methods is not None
    if explicit:
        methods = list(methods)
    else:
        methods = [m for m in available_methods()
                   if m != "attention" or _has_attention(wrapper.model)]
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; choose one of: {', '.join(METHODS)}")
    out: dict[str, np.ndarray] = {}
    skipped = []
    for m in methods:
        opts = dict(options.get(m, {}))
        base = opts.pop("baseline", baseline)
        try:
            out[m] = _run(model, wrapper, x, m, target, base, layer, batch_size, progress, opts)
        except ValueError as exc:
            if explicit or m not in ("attention", "gradcam"):
                raise
            skipped.append(f"{m} ({exc})")
    if skipped:
        warnings.warn(f"explain_methods skipped {len(skipped)} method(s): {'; '.join(skipped)}",
                      stacklevel=2)
    return out


def completeness_gap(model: nn.Module, images, attributions, baseline="black", target=None,
                     normalize=None, blur_sigma: float | None = None) -> np.ndarray:
    """Per image: ``sum(attributions) - (f(x) - f(baseline))`` for the target logit.

    Integrated Gradients satisfies completeness: with enough ``n_steps`` this gap is
    close to 0 (relative to ``|f(x) - f(baseline)|``). Use the same ``baseline`` and
    ``target`` as for the attributions.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    >>> x = torch.rand(2, 1, 4, 4)
    >>> a = explain(net, x, "integrated_gradients", n_steps=8)
    >>> bool(np.abs(completeness_gap(net, x, a)).max() < 1e-4)
    True
    """
    x = as_batch(images)
    wrapper = prepare_model(model, normalize)
    device = model_device(wrapper)
    x = x.to(device)
    base = make_baseline(x, baseline, blur_sigma)
    with torch.no_grad():
        fx, fb = wrapper(x), wrapper(base)
    t = _resolve_target(target, fx)
    idx = torch.arange(len(x), device=device)
    diff = (fx[idx, t] - fb[idx, t]).double().cpu().numpy()
    sums = np.asarray(attributions, dtype=np.float64).reshape(len(x), -1).sum(axis=1)
    return sums - diff


# --------------------------------------------------------------------------- scoring
def _pair(attribution, mask) -> tuple[np.ndarray, np.ndarray, bool]:
    a = np.asarray(attribution, dtype=np.float64)
    m = np.asarray(mask).astype(bool)
    single = a.ndim == 2
    if single:
        a, m = a[None], m[None] if m.ndim == 2 else m
    if a.ndim != 3 or m.shape != a.shape:
        raise ValueError(f"attribution {np.shape(attribution)} and mask {np.shape(mask)} must "
                         "both be H x W or N x H x W of the same shape")
    return a, m, single


def mask_share(attribution, mask) -> float | np.ndarray:
    """Share of the positive attribution mass that falls inside the lesion mask.

    1 = all evidence on the lesion; a method that spreads evidence uniformly scores
    the mask's area share. NaN for an empty mask or a map with no positive mass.
    Works on one ``H x W`` map (returns a float) or ``N x H x W`` (returns an array).

    >>> a = np.zeros((4, 4)); a[0, 0] = 3; a[3, 3] = 1
    >>> m = np.zeros((4, 4), bool); m[0, 0] = True
    >>> mask_share(a, m)
    0.75
    """
    a, m, single = _pair(attribution, mask)
    pos = np.clip(a, 0, None)
    total = pos.reshape(len(a), -1).sum(axis=1)
    inside = (pos * m).reshape(len(a), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where((total > 0) & m.reshape(len(a), -1).any(axis=1), inside / total, np.nan)
    return float(share[0]) if single else share


def _dilate(m: np.ndarray, tolerance: int) -> np.ndarray:
    if tolerance <= 0:
        return m
    from scipy.ndimage import binary_dilation, generate_binary_structure

    struct = generate_binary_structure(2, 2)  # 8-connected: a square grows by `tolerance`
    return np.stack([binary_dilation(mi, struct, iterations=int(tolerance)) for mi in m])


def pointing_game(attribution, mask, tolerance: int = 1) -> float | np.ndarray:
    """1.0 if the map's maximum lies inside the lesion mask dilated by ``tolerance`` px.

    0.0 when it lies outside (a map with no variation -- e.g. an all-zero GradCAM --
    points nowhere and scores 0.0); NaN when the mask is empty (a normal image). One
    ``H x W`` map gives a float, ``N x H x W`` an array.

    >>> a = np.zeros((5, 5)); a[2, 3] = 1
    >>> m = np.zeros((5, 5), bool); m[2, 2] = True
    >>> pointing_game(a, m, tolerance=0), pointing_game(a, m, tolerance=1)
    (0.0, 1.0)
    """
    if int(tolerance) < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    a, m, single = _pair(attribution, mask)
    md = _dilate(m, int(tolerance))
    flat = a.reshape(len(a), -1)
    peak = flat.argmax(axis=1)
    flat_ok = flat.max(axis=1) > flat.min(axis=1)
    hit = md.reshape(len(a), -1)[np.arange(len(a)), peak] & flat_ok
    out = np.where(m.reshape(len(a), -1).any(axis=1), hit.astype(np.float64), np.nan)
    return float(out[0]) if single else out


def peak_region(attribution, regions: Mapping[str, Any], tolerance: int = 0) -> np.ndarray:
    """Where each map's maximum lies: the name of the first region whose mask holds it.

    ``regions`` maps names to masks (``H x W`` or ``N x H x W``, like the maps),
    checked in order, each dilated by ``tolerance`` px. A peak in none of them is
    ``"elsewhere"``; a map with no variation (e.g. an all-zero GradCAM) points nowhere
    and is ``"flat"``. Returns one name per map (a NumPy array of str). Use it to ask
    *what* an explanation points at: the lesion, a burned-in marker, a tag...

    >>> a = np.zeros((3, 4, 4)); a[0, 0, 0] = 1; a[1, 3, 3] = 1
    >>> lesion = np.zeros((3, 4, 4), bool); lesion[:, 0, 0] = True
    >>> peak_region(a, {"lesion": lesion}).tolist()
    ['lesion', 'elsewhere', 'flat']
    """
    if int(tolerance) < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    reserved = {"elsewhere", "flat"} & set(regions)
    if reserved:
        raise ValueError(f"region names {sorted(reserved)} are reserved; choose other names")
    a = np.asarray(attribution, dtype=np.float64)
    single = a.ndim == 2
    if single:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"attribution must be H x W or N x H x W, got shape {np.shape(attribution)}")
    n = len(a)
    flat = a.reshape(n, -1)
    peak = flat.argmax(axis=1) if n else np.zeros(0, int)
    varies = flat.max(axis=1) > flat.min(axis=1) if n else np.zeros(0, bool)
    out = np.full(n, "elsewhere", dtype=object)
    taken = ~varies
    for name, mask in regions.items():
        m = np.asarray(mask).astype(bool)
        if m.ndim == 2:
            m = np.broadcast_to(m, a.shape)
        if m.shape != a.shape:
            raise ValueError(f"regions[{name!r}] has shape {m.shape}, maps {a.shape}")
        inside = _dilate(np.ascontiguousarray(m), int(tolerance)).reshape(n, -1)[np.arange(n), peak]
        hit = inside & ~taken
        out[hit] = name
        taken |= hit
    out[~varies] = "flat"
    out = out.astype(str)
    return out[0] if single else out


def score_against_masks(attributions, masks, tolerance: int = 1,
                        ids: Sequence | None = None) -> pd.DataFrame:
    """One row per (image, method): mask share, pointing game, mask area and lift.

    ``attributions`` is ``{method: N x H x W}`` (as from :func:`explain_methods`) or a
    single ``N x H x W`` array (method "attribution"). Images whose mask is empty
    (normal images) are left out with a warning giving their count. Columns:
    ``image`` (index or ``ids``), ``method``, ``mask_share``, ``pointing_game``,
    ``mask_area`` (share of the image the lesion covers: the mask share of a method
    that spreads evidence uniformly), ``lift`` (= mask_share / mask_area) and
    ``pointing_chance`` (area of the dilated mask: the hit rate of a random point).

    >>> m = np.zeros((2, 4, 4), bool); m[:, :2, :2] = True
    >>> a = m.astype(float)
    >>> score_against_masks({"ideal": a}, m)[["method", "mask_share", "pointing_game"]]
      method  mask_share  pointing_game
    0  ideal         1.0            1.0
    1  ideal         1.0            1.0
    """
    if not isinstance(attributions, Mapping):
        attributions = {"attribution": attributions}
    masks = np.asarray(masks).astype(bool)
    if masks.ndim == 2:
        masks = masks[None]
    n = len(masks)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    if len(ids) != n:
        raise ValueError(f"ids: {len(ids)} values for {n} masks")
    keep = masks.reshape(n, -1).any(axis=1)
    if not keep.all():
        warnings.warn(f"score_against_masks: left out {int((~keep).sum())} of {n} images with "
                      "an empty lesion mask", stacklevel=2)
    area = masks.reshape(n, -1).mean(axis=1)
    chance = _dilate(masks, int(tolerance)).reshape(n, -1).mean(axis=1)
    frames = []
    for method, attr in attributions.items():
        attr = np.asarray(attr)
        if attr.shape != masks.shape:
            raise ValueError(f"attributions[{method!r}] has shape {attr.shape}, masks "
                             f"{masks.shape}")
        share = mask_share(attr, masks)
        point = pointing_game(attr, masks, tolerance)
        frames.append(pd.DataFrame({
            "image": ids[keep], "method": method, "mask_share": share[keep],
            "pointing_game": point[keep], "mask_area": area[keep],
            "lift": share[keep] / area[keep], "pointing_chance": chance[keep],
        }))
    cols = ["image", "method", "mask_share", "pointing_game", "mask_area", "lift",
            "pointing_chance"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


def score_methods(attributions, masks, tolerance: int = 1) -> pd.DataFrame:
    """Per method: mean mask share, pointing-game hit rate and the chance levels.

    Columns: ``method``, ``n`` (images with a lesion), ``mask_share``,
    ``pointing_game``, ``mask_area`` (chance mask share), ``pointing_chance``,
    ``lift``; sorted by mask share, best first.

    >>> m = np.zeros((2, 4, 4), bool); m[:, :2, :2] = True
    >>> scores = score_methods({"ideal": m * 1.0, "flat": np.ones((2, 4, 4))}, m)
    >>> scores[["method", "mask_share", "pointing_game"]].to_string(index=False)
    'method  mask_share  pointing_game\\n ideal        1.00            1.0\\n  flat        0.25            0.0'
    """
    per_image = score_against_masks(attributions, masks, tolerance)
    if per_image.empty:
        return pd.DataFrame(columns=["method", "n", "mask_share", "pointing_game", "mask_area",
                                     "pointing_chance", "lift"])
    order = list(dict.fromkeys(per_image["method"]))
    g = per_image.groupby("method", sort=False)
    table = pd.DataFrame({
        "n": g.size(),
        "mask_share": g["mask_share"].mean(),
        "pointing_game": g["pointing_game"].mean(),
        "mask_area": g["mask_area"].mean(),
        "pointing_chance": g["pointing_chance"].mean(),
        "lift": g["lift"].mean(),
    }).reindex(order).reset_index().rename(columns={"index": "method"})
    return table.sort_values("mask_share", ascending=False, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- figures
def _display_map(attribution: np.ndarray, sign: str, clip_percentile: float,
                 vmax: float | None = None) -> np.ndarray:
    a = np.asarray(attribution, dtype=np.float64)
    if sign == "absolute":
        a = np.abs(a)
    elif sign == "positive":
        a = np.clip(a, 0, None)
    elif sign == "negative":
        a = np.clip(-a, 0, None)
    elif sign != "all":
        raise ValueError(f"sign must be 'absolute', 'positive', 'negative' or 'all', got {sign!r}")
    if vmax is not None:
        if not (np.isfinite(vmax) and vmax > 0):
            raise ValueError(f"vmax must be a positive number, got {vmax!r}")
        return np.clip(a / float(vmax), -1.0, 1.0)
    scale = np.percentile(np.abs(a), clip_percentile) if a.size else 0.0
    if not np.isfinite(scale) or scale <= 0:
        scale = np.abs(a).max() if a.size and np.abs(a).max() > 0 else 1.0
    return np.clip(a / scale, -1.0, 1.0)


def _gray(image) -> np.ndarray:
    img = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
    return img


def colorbar_scale(sign: str = "absolute", vmax: float | None = None,
                   clip_percentile: float = 99.5) -> tuple[float, float, str]:
    """``(low, high, label)`` of the colour scale :func:`overlay` draws with.

    Without ``vmax`` each map is divided by its own ``clip_percentile``: colours compare
    places *within* one image, not images with each other. With ``vmax`` the scale is
    fixed (``0..vmax``, or ``-vmax..vmax`` for ``sign="all"``) and in the map's units.

    >>> colorbar_scale()
    (0.0, 1.0, 'map / its 99.5th pct (per image)')
    >>> colorbar_scale("all", vmax=2.0)
    (-2.0, 2.0, 'value (fixed scale)')
    """
    hi = 1.0 if vmax is None else float(vmax)
    lo = -hi if sign == "all" else 0.0
    if vmax is None:
        pct = f"{clip_percentile:g}"
        return lo, hi, f"map / its {pct}th pct (per image)"
    return lo, hi, "value (fixed scale)"


def _draw_colorbar(fig, cax_or_ax, cmap: str, sign: str, vmax, clip_percentile: float,
                   label: str | None, orientation: str, use_cax: bool):
    import matplotlib as mpl

    lo, hi, default = colorbar_scale(sign, vmax, clip_percentile)
    sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(lo, hi), cmap=cmap)
    kw = {"cax": cax_or_ax} if use_cax else {"ax": cax_or_ax, "fraction": 0.046, "pad": 0.04}
    cb = fig.colorbar(sm, orientation=orientation, **kw)
    cb.set_label(label if label is not None else default, fontsize=7)
    cb.ax.tick_params(labelsize=6)
    return cb


def overlay(image, attribution, ax=None, alpha: float = 0.5, cmap: str = "jet",
            sign: str = "absolute", mask=None, title: str | None = None,
            clip_percentile: float = 99.5, vmax: float | None = None,
            colorbar: bool = False, colorbar_label: str | None = None):
    """Draw an attribution map over a grey X-ray; returns the axes.

    The map is scaled to [0, 1] by its ``clip_percentile`` (so one hot pixel does not
    wash out the rest), or by a fixed ``vmax`` (e.g. ``vmax=1`` for attention weights
    in [0, 1], so that images can be compared); ``sign`` picks ``"absolute"``
    (default), ``"positive"`` (evidence for the target), ``"negative"`` or ``"all"``
    (a diverging map in [-1, 1]; use ``cmap="bwr"``). ``mask`` draws the lesion
    contour in white. ``colorbar=True`` adds a colour bar that says which scale is
    used (see :func:`colorbar_scale`; ``colorbar_label`` overrides its label).

    >>> import matplotlib; matplotlib.use("Agg")
    >>> ax = overlay(np.zeros((8, 8)), np.eye(8), title="demo", colorbar=True)
    >>> ax.get_title(), len(ax.figure.axes)
    ('demo', 2)
    """
    import matplotlib.pyplot as plt

    if ax is None:
        ax = plt.subplots(figsize=(2.4, 2.4))[1]
    img = _gray(image)
    amap = _display_map(np.asarray(attribution), sign, clip_percentile, vmax)
    if amap.shape != img.shape[:2]:
        raise ValueError(f"attribution {amap.shape} and image {img.shape[:2]} differ in size")
    gray_max = 255 if np.asarray(img).dtype == np.uint8 else None
    ax.imshow(img, cmap="gray", vmin=0, vmax=gray_max)
    lo = -1.0 if sign == "all" else 0.0
    ax.imshow(amap, cmap=cmap, alpha=alpha, vmin=lo, vmax=1.0)
    if mask is not None and np.asarray(mask).any():
        ax.contour(np.asarray(mask).astype(float), levels=[0.5], colors="white", linewidths=1.0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    if colorbar:
        _draw_colorbar(ax.figure, ax, cmap, sign, vmax, clip_percentile, colorbar_label,
                       "vertical", use_cax=False)
    return ax


def explanation_grid(images, attributions_by_method: Mapping[str, Any], titles=None, masks=None,
                     alpha: float = 0.5, cmap: str = "jet", sign: str = "absolute",
                     size: float = 1.8, colorbar: bool = False,
                     vmax: float | Mapping[str, float] | None = None):
    """A grid figure: one row per image; the X-ray, then one overlay per method.

    ``images`` as for :func:`explain` (ImageSet, uint8 or float in [0, 1]);
    ``attributions_by_method`` is ``{method: N x H x W}``; ``titles`` one string per
    image (shown on the X-ray); ``masks`` ``N x H x W`` lesion masks drawn as contours.
    ``vmax`` (one float, or ``{method: float}``) puts a method on a fixed scale (see
    :func:`overlay`); the others are scaled per image. ``colorbar=True`` adds a colour
    bar under each method's column saying which scale it uses.

    >>> import matplotlib; matplotlib.use("Agg")
    >>> fig = explanation_grid(np.zeros((2, 8, 8), np.uint8), {"a": np.ones((2, 8, 8))})
    >>> len(fig.axes)
    4
    >>> fig = explanation_grid(np.zeros((2, 8, 8), np.uint8), {"a": np.ones((2, 8, 8))},
    ...                        colorbar=True, vmax={"a": 1.0})
    >>> len(fig.axes)  # 4 panels and one colour bar
    5
    """
    import matplotlib.pyplot as plt

    if masks is None and hasattr(images, "masks"):
        masks = images.masks
    x = as_batch(images)
    n = len(x)
    methods = list(attributions_by_method)
    for m, a in attributions_by_method.items():
        if np.shape(a)[0] != n or np.shape(a)[-2:] != tuple(x.shape[-2:]):
            raise ValueError(f"attributions[{m!r}] has shape {np.shape(a)}, expected "
                             f"({n}, {x.shape[-2]}, {x.shape[-1]})")
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles: {len(titles)} for {n} images")
    if masks is not None:
        masks = np.asarray(masks).astype(bool)
        if masks.shape != (n, *x.shape[-2:]):
            raise ValueError(f"masks shape {masks.shape} does not match images {tuple(x.shape)}")
    if isinstance(vmax, Mapping):
        unknown = set(vmax) - set(methods)
        if unknown:
            raise ValueError(f"vmax given for unknown method(s) {sorted(unknown)}; methods: "
                             f"{methods}")
        vmax_of = {m: vmax.get(m) for m in methods}
    else:
        vmax_of = dict.fromkeys(methods, vmax)
    ncols = 1 + len(methods)
    nrows = max(n, 1)
    bar = bool(colorbar) and n > 0 and len(methods) > 0
    if bar:  # one extra thin row of axes for the colour bars
        fig = plt.figure(figsize=(size * ncols, size * nrows + 0.3 + 0.55))
        grid = fig.add_gridspec(nrows + 1, ncols, height_ratios=[1.0] * nrows + [0.07])
        axes = np.array([[fig.add_subplot(grid[i, j]) for j in range(ncols)]
                         for i in range(nrows)])
    else:
        fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3),
                                 squeeze=False)
    for i in range(n):
        img = _gray(x[i])
        mask = None if masks is None else masks[i]
        ax = axes[i, 0]
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        if mask is not None and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.0)
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
        elif i == 0:
            ax.set_title("X-ray", fontsize=8)
        for j, m in enumerate(methods, start=1):
            overlay(img, np.asarray(attributions_by_method[m])[i], ax=axes[i, j], alpha=alpha,
                    cmap=cmap, sign=sign, mask=mask, title=m if i == 0 else None,
                    vmax=vmax_of[m])
    if bar:
        for j, m in enumerate(methods, start=1):
            label = "relative (per image)" if vmax_of[m] is None else f"{m} (fixed scale)"
            _draw_colorbar(fig, fig.add_subplot(grid[nrows, j]), cmap, sign, vmax_of[m], 99.5,
                           label, "horizontal", use_cax=True)
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "no images", ha="center", va="center")
        for ax in axes.ravel():
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def peak_summary(attribution, regions: Mapping[str, Any], tolerance: int = 0) -> dict:
    """Where a batch of maps peaks (share per region of :func:`peak_region`) and how much they hold.

    Returns ``{"n", "peak on <region>" for each region and "elsewhere", "empty map",
    "positive mass"}``: the share of maps whose peak falls in each region, the share of
    maps with no variation at all, and the mean positive attribution mass per map (how
    much evidence for the class a map holds before an overlay stretches it to full
    colour). Shares are NaN for an empty batch.

    >>> a = np.zeros((2, 4, 4)); a[0, 0, 0] = 2.0
    >>> lesion = np.zeros((2, 4, 4), bool); lesion[:, 0, 0] = True
    >>> peak_summary(a, {"lesion": lesion})
    {'n': 2, 'peak on lesion': 0.5, 'peak on elsewhere': 0.0, 'empty map': 0.5, 'positive mass': 1.0}
    """
    a = np.asarray(attribution, dtype=np.float64)
    where = peak_region(a, regions, tolerance=tolerance) if len(a) else np.zeros(0, str)

    def share(name):
        return float(np.mean(where == name)) if len(a) else float("nan")

    out = {"n": int(len(a))}
    out.update({f"peak on {name}": share(name) for name in [*regions, "elsewhere"]})
    out["empty map"] = share("flat")
    out["positive mass"] = (float(np.clip(a, 0, None).reshape(len(a), -1).sum(axis=1).mean())
                            if len(a) else float("nan"))
    return out


def missed_pneumonias(predictor, test, threshold: float, minimum: int = 8,
                      max_draws: int = 3) -> dict:
    """The pneumonias of a synthetic test set scored below ``threshold``, with lesion masks.

    A good model misses few pneumonias, often too few to compare with the caught ones.
    When ``test`` (a synthetic :class:`~fnlab.data.imageset.ImageSet` with
    ``meta["split_seed"]``) holds fewer than ``minimum`` misses, up to ``max_draws`` more
    test sets of the same size are drawn from the same generator (new patients, seeds
    ``split_seed + 1, + 2, ...``) and their misses at the *same* threshold are added.
    ``predictor`` is anything with ``predict(images) -> Predictions`` (a
    :class:`~fnlab.runs.Run`). Returns ``images``, ``masks``, ``difficulty`` of the
    misses and ``draws`` (how many extra test sets were needed).

    >>> from fnlab.data.synthetic import generate
    >>> from fnlab.predictions import Predictions
    >>> class Dim:  # calls every image normal: every pneumonia is missed
    ...     def predict(self, images):
    ...         return Predictions(images.labels, np.zeros(len(images)))
    >>> test = generate(20, seed=1, split="test", image_size=32)
    >>> test.meta["split_seed"] = 1
    >>> out = missed_pneumonias(Dim(), test, 0.5, minimum=1)
    >>> out["draws"], len(out["images"]) == int(test.labels.sum())
    (0, True)
    """
    from fnlab.data.synthetic import generate

    def misses(images):
        idx = np.flatnonzero((images.labels == 1) & (predictor.predict(images).scores < threshold))
        return images.images[idx], images.masks[idx], np.asarray(images.meta["difficulty"])[idx]

    parts = [misses(test)]
    draws = 0
    while sum(len(p[0]) for p in parts) < minimum and draws < max_draws:
        draws += 1
        more = generate(len(test), seed=int(test.meta["split_seed"]) + draws, split=f"test{draws}",
                        image_size=test.images.shape[-1])
        parts.append(misses(more))
    images, masks, difficulty = (np.concatenate(col) for col in zip(*parts))
    return {"images": images, "masks": masks, "difficulty": difficulty, "draws": draws}
