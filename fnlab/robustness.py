"""Robustness: distribution shift and adversarial perturbations, seen through false negatives.

Distribution shift
------------------
:func:`apply_shift` degrades images the way another scanner, another protocol or a
worse acquisition would (contrast, gamma, brightness, noise, blur, JPEG) at five
severities; :func:`shift_sweep` measures AUC, sensitivity, specificity and the
number of missed pneumonias at each (kind, severity). :func:`describe_shifts`
lists the parameter behind every severity:

==============  ==========================  ==============================================
kind            parameter                   severities 1..5
==============  ==========================  ==============================================
``contrast``    factor (x -> m + f (x - m)) 0.8, 0.65, 0.5, 0.35, 0.2 (m = image mean)
``gamma``       gamma (x -> x ** g)         1.2, 1.45, 1.75, 2.1, 2.5 (darker mid-tones)
``brightness``  offset (x -> x + o)         0.05, 0.1, 0.15, 0.22, 0.3 (clipped to [0, 1])
``noise``       Gaussian sigma              0.02, 0.04, 0.07, 0.1, 0.15 (clipped)
``blur``        Gaussian sigma at 28 px     0.4, 0.6, 0.8, 1.1, 1.5 px (times size / 28)
``jpeg``        JPEG quality                75, 50, 30, 18, 10
==============  ==========================  ==============================================

Severity 0 is the unchanged image. Labels, masks, patient ids and meta are kept.

Adversarial perturbations
-------------------------
:func:`fgsm` and :func:`pgd` are L-infinity attacks on images in [0, 1] (results
clamped to [0, 1]). They are *untargeted on the true label*: they increase the loss
of the label given, which for a pneumonia image of a binary model is exactly the
push from pneumonia towards normal (a manufactured false negative). Both work with
single-logit binary models (``(N,)`` or ``(N, 1)`` output, BCE) and multi-logit
models (cross-entropy); pass ``loss_fn`` to attack another loss and
``normalize=(mean, std)`` for a model that expects normalised inputs.
:func:`adversarial_sweep` reports sensitivity and the share of detected pneumonias
flipped to normal per epsilon; :func:`minimal_flip_eps` finds by bisection the
smallest epsilon that flips each decision; :func:`adversarial_training_step` and
:func:`adversarial_train` give the short adversarial-training comparison.

Example
-------
>>> import numpy as np, torch, torch.nn as nn
>>> from fnlab.data.imageset import ImageSet
>>> s = ImageSet(np.full((4, 16, 16), 128, np.uint8), [0, 1, 0, 1])
>>> low = apply_shift(s, "contrast", severity=3)
>>> low.labels.tolist(), low.meta["shift"]["value"]
([0, 1, 0, 1], 0.5)
>>> net = nn.Sequential(nn.Flatten(), nn.Linear(256, 1))
>>> x = torch.rand(4, 1, 16, 16)
>>> adv = fgsm(net, x, torch.tensor([1, 1, 0, 0]), eps=0.03)
>>> bool((adv - x).abs().max() <= 0.03 + 1e-6)
True
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from fnlab.data.imageset import ImageSet
from fnlab.data.synthetic import SITE_NAMES, generate
from fnlab.explain import as_batch, gaussian_blur, model_device
from fnlab.metrics import binary_metrics
from fnlab.predictions import Predictions, check_threshold

__all__ = [
    "ATTACKS",
    "SHIFTS",
    "adversarial_sweep",
    "adversarial_train",
    "adversarial_training_step",
    "apply_shift",
    "describe_shifts",
    "fgsm",
    "minimal_flip_eps",
    "pgd",
    "positive_scores",
    "shift_parameter",
    "shift_sweep",
    "site_metrics",
    "site_test_sets",
    "usable_worst_site",
    "value_at_eps",
]

#: kind -> (parameter name, values at severities 1..5).
SHIFTS: dict[str, tuple[str, tuple[float, ...]]] = {
    "contrast": ("factor", (0.8, 0.65, 0.5, 0.35, 0.2)),
    "gamma": ("gamma", (1.2, 1.45, 1.75, 2.1, 2.5)),
    "brightness": ("offset", (0.05, 0.1, 0.15, 0.22, 0.3)),
    "noise": ("sigma", (0.02, 0.04, 0.07, 0.1, 0.15)),
    "blur": ("sigma_px_at_28", (0.4, 0.6, 0.8, 1.1, 1.5)),
    "jpeg": ("quality", (75, 50, 30, 18, 10)),
}
_SHIFT_TEXT = {
    "contrast": "contrast around each image's mean multiplied by the factor",
    "gamma": "pixel values raised to the power gamma (darker mid-tones)",
    "brightness": "offset added to every pixel, clipped to [0, 1]",
    "noise": "Gaussian noise of this standard deviation added, clipped to [0, 1]",
    "blur": "Gaussian blur; sigma in pixels for 28 px images, scaled with the image size",
    "jpeg": "JPEG compression at this quality (100 = best)",
}
#: Attack names :func:`adversarial_sweep` and :func:`minimal_flip_eps` accept.
ATTACKS = ("fgsm", "pgd")
MAX_SEVERITY = 5


# --------------------------------------------------------------------------- shifts
def shift_parameter(kind: str, severity: int) -> float:
    """The parameter value of ``kind`` at ``severity`` (0 = no shift, 1..5).

    >>> shift_parameter("noise", 3), shift_parameter("jpeg", 5)
    (0.07, 10)
    """
    if kind not in SHIFTS:
        raise ValueError(f"unknown shift {kind!r}; choose one of: {', '.join(SHIFTS)}")
    if isinstance(severity, bool) or int(severity) != severity or not 0 <= severity <= MAX_SEVERITY:
        raise ValueError(f"severity must be an integer in 0..{MAX_SEVERITY}, got {severity!r}")
    severity = int(severity)
    if severity == 0:
        return {"contrast": 1.0, "gamma": 1.0, "brightness": 0.0, "noise": 0.0, "blur": 0.0,
                "jpeg": 100}[kind]
    return SHIFTS[kind][1][severity - 1]


def describe_shifts() -> pd.DataFrame:
    """One row per (kind, severity): the parameter, its value and what it does.

    >>> describe_shifts().query("kind == 'blur' and severity == 5")["value"].item()
    1.5
    """
    rows = []
    for kind, (param, _) in SHIFTS.items():
        for sev in range(MAX_SEVERITY + 1):
            rows.append({"kind": kind, "severity": sev, "parameter": param,
                         "value": shift_parameter(kind, sev), "description": _SHIFT_TEXT[kind]})
    return pd.DataFrame(rows)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip with Pillow (torchvision's JPEG codec is deprecated)."""
    import io

    from PIL import Image

    if x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg shift needs 1 or 3 channels, got {x.shape[1]}")
    u8 = (x.detach().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    out = np.empty_like(u8)
    for i, img in enumerate(u8):
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1))
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert(pil.mode))
        out[i] = dec[None] if dec.ndim == 2 else np.moveaxis(dec, -1, 0)
    return torch.from_numpy(out).to(x.device, torch.float32) / 255.0


def _shift_tensor(x: torch.Tensor, kind: str, value: float, seed: int) -> torch.Tensor:
    """Apply one shift to float images ``N x C x H x W`` in [0, 1]."""
    if kind == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        out = mean + value * (x - mean)
    elif kind == "gamma":
        out = x.clamp(0, 1) ** value
    elif kind == "brightness":
        out = x + value
    elif kind == "noise":
        gen = torch.Generator().manual_seed(int(seed))
        out = x + value * torch.randn(x.shape, generator=gen).to(x.device, x.dtype)
    elif kind == "blur":
        out = x if value <= 0 else gaussian_blur(x, value * x.shape[-1] / 28.0)
    elif kind == "jpeg":
        out = x if value >= 100 else _jpeg(x, int(value))
    else:  # pragma: no cover - checked by shift_parameter
        raise AssertionError(kind)
    return out.clamp(0.0, 1.0)


def apply_shift(data, kind: str = "contrast", severity: int = 1, seed: int = 0):
    """Degrade images with one shift ``kind`` at ``severity`` (0..5; see :data:`SHIFTS`).

    ``data`` may be an ImageSet (returns a new ImageSet: same labels, masks, patient
    ids and meta, plus ``meta["shift"] = {"kind", "severity", "parameter", "value"}``),
    a uint8 or float NumPy array, or a float tensor in [0, 1] (returned in the same
    type, shape, dtype and device). ``seed`` fixes the noise.

    >>> x = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    >>> [round(float(apply_shift(x, "contrast", s).std()), 3) for s in (0, 1, 5)]
    [0.293, 0.235, 0.059]
    """
    value = shift_parameter(kind, severity)
    param = SHIFTS[kind][0]
    if isinstance(data, ImageSet):
        x = as_batch(data.images)
        y = _shift_tensor(x, kind, value, seed)
        images = (y * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        if data.images.ndim == 3:
            images = images[:, 0]
        meta = dict(data.meta)
        meta["shift"] = {"kind": kind, "severity": int(severity), "parameter": param,
                         "value": value}
        return ImageSet(images=images, labels=data.labels.copy(), class_names=data.class_names,
                        patient_ids=None if data.patient_ids is None else data.patient_ids.copy(),
                        masks=None if data.masks is None else data.masks.copy(),
                        split=data.split, source=data.source, meta=meta)
    if isinstance(data, np.ndarray):
        if data.ndim not in (2, 3, 4):
            raise ValueError(f"images must be H x W, N x H x W or N x C x H x W, "
                             f"got shape {data.shape}")
        y = _shift_tensor(as_batch(data), kind, value, seed)
        if data.dtype == np.uint8:
            out = (y * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        else:
            out = y.numpy().astype(data.dtype, copy=False)
        return out.reshape(data.shape)
    if isinstance(data, torch.Tensor):
        if data.dtype == torch.uint8:
            y = _shift_tensor(as_batch(data), kind, value, seed)
            return (y * 255.0).round().clamp(0, 255).to(torch.uint8).reshape(data.shape)
        x = as_batch(data)
        return _shift_tensor(x.to(data.device), kind, value, seed).to(data.dtype) \
            .reshape(data.shape)
    raise TypeError(f"apply_shift: expected an ImageSet, a NumPy array or a tensor, "
                    f"got {type(data).__name__}")


def _as_predict_fn(predict_fn) -> Callable[[ImageSet], Predictions]:
    if isinstance(predict_fn, nn.Module):
        from fnlab.train import predict

        model = predict_fn
        return lambda s: predict(model, s)
    if not callable(predict_fn):
        raise TypeError("predict_fn must be a callable ImageSet -> Predictions or a model")
    return predict_fn


def shift_sweep(predict_fn, imageset: ImageSet, kinds: Sequence[str] | None = None,
                severities: Sequence[int] = (0, 1, 2, 3, 4, 5), threshold: float = 0.5,
                seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Metrics under every (kind, severity) of shift at a fixed ``threshold``.

    ``predict_fn(ImageSet) -> Predictions`` (e.g. ``lambda s: fnlab.train.predict(model,
    s)``; a model is accepted and wrapped that way). Severity 0 (the clean set) is
    predicted once and repeated for each kind. Columns: ``kind``, ``severity``,
    ``parameter``, ``value``, ``n``, ``threshold``, ``auc``, ``sensitivity``,
    ``specificity``, ``fn``, ``fp``, ``tp``, ``tn``, ``sensitivity_drop`` (clean minus
    shifted sensitivity; needs severity 0 in ``severities``, else NaN).

    Every kind distorts the images more at each higher severity (tested on the
    synthetic X-rays at 28, 32 and 64 px), and a model's AUC usually falls with it.
    Sensitivity at a fixed threshold need not: a shift that pushes every score up
    (blur and noise often do) *raises* sensitivity while specificity collapses, so a
    negative ``sensitivity_drop`` is not robustness. Judge harm by ``auc`` and read
    ``sensitivity`` with ``specificity``.

    >>> from fnlab.predictions import Predictions
    >>> s = ImageSet(np.tile(np.arange(4, dtype=np.uint8)[:, None, None] * 60, (1, 8, 8)),
    ...              [0, 0, 1, 1])
    >>> fn = lambda t: Predictions(t.labels, t.images.mean(axis=(1, 2)) / 255)
    >>> table = shift_sweep(fn, s, ["gamma"], [0, 5], threshold=0.45, progress=False)
    >>> table[["kind", "severity", "sensitivity", "fn"]].values.tolist()
    [['gamma', 0, 1.0, 0], ['gamma', 5, 0.0, 2]]
    """
    check_threshold(threshold)
    kinds = list(SHIFTS) if kinds is None else [kinds] if isinstance(kinds, str) else list(kinds)
    for k in kinds:
        shift_parameter(k, 0)
    for s in severities:
        shift_parameter(kinds[0] if kinds else "contrast", s)
    if not isinstance(imageset, ImageSet):
        raise TypeError(f"shift_sweep needs an ImageSet, got {type(imageset).__name__}")
    predict_fn = _as_predict_fn(predict_fn)
    jobs = [(k, int(s)) for k in kinds for s in severities]
    from fnlab.config import progress_bar as tqdm

    clean: dict | None = None
    rows = []
    for kind, sev in tqdm(jobs, desc="shift sweep", unit="shift", disable=not progress):
        if sev == 0 and clean is not None:
            m = clean
        else:
            shifted = imageset if sev == 0 else apply_shift(imageset, kind, sev, seed)
            m = binary_metrics(predict_fn(shifted), threshold)
            if sev == 0:
                clean = m
        rows.append({"kind": kind, "severity": sev, "parameter": SHIFTS[kind][0],
                     "value": shift_parameter(kind, sev), "n": m["n"], "threshold": threshold,
                     "auc": m["auc"], "sensitivity": m["sensitivity"],
                     "specificity": m["specificity"], "fn": m["fn"], "fp": m["fp"],
                     "tp": m["tp"], "tn": m["tn"]})
    table = pd.DataFrame(rows, columns=["kind", "severity", "parameter", "value", "n",
                                        "threshold", "auc", "sensitivity", "specificity", "fn",
                                        "fp", "tp", "tn"])
    base = clean["sensitivity"] if clean is not None else float("nan")
    table["sensitivity_drop"] = base - table["sensitivity"]
    return table


# --------------------------------------------------------------------------- adversarial
@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _forward(model: nn.Module, x: torch.Tensor, normalize=None) -> torch.Tensor:
    if normalize is not None:
        mean, std = normalize
        mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        std = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        x = (x - mean) / std
    out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim not in (1, 2):
        raise ValueError(f"model output must be (N,), (N, 1) or (N, K) logits, "
                         f"got shape {tuple(out.shape)}")
    return out


def _default_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE on the pneumonia logit for single-logit models, cross-entropy otherwise."""
    if out.ndim == 1:
        return F.binary_cross_entropy_with_logits(out.float(), (y != 0).float())
    return F.cross_entropy(out.float(), y.long())


def positive_scores(logits: torch.Tensor) -> torch.Tensor:
    """Pneumonia ("any disease") probability from logits of any supported shape.

    ``(N,)``/``(N, 1)``: sigmoid; ``(N, 2)``: softmax column 1; ``(N, K)``: 1 - P(normal).

    >>> positive_scores(torch.zeros(2)).tolist(), positive_scores(torch.zeros(1, 4)).tolist()
    ([0.5, 0.5], [0.75])
    """
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim == 1:
        return torch.sigmoid(logits.float())
    return 1.0 - torch.softmax(logits.float(), dim=1)[:, 0]


def _labels(y, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    t = t.reshape(-1).long().to(device)
    if t.numel() == 1 and n > 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"y: {t.numel()} labels for {n} images")
    return t


def _eps_tensor(eps, n: int, device) -> torch.Tensor:
    e = torch.as_tensor(eps, dtype=torch.float32, device=device).reshape(-1)
    if e.numel() == 1:
        e = e.expand(n)
    if e.numel() != n:
        raise ValueError(f"eps: {e.numel()} values for {n} images")
    if torch.any(e < 0) or not torch.all(torch.isfinite(e)):
        raise ValueError(f"eps must be finite and >= 0 (in [0, 1] pixel units), "
                         f"got {e.tolist()[:5]}")
    return e.reshape(-1, 1, 1, 1)


def _input_grad(model, x, y, loss_fn, normalize) -> torch.Tensor:
    with torch.enable_grad():
        xr = x.detach().clone().requires_grad_(True)
        loss = (loss_fn or _default_loss)(_forward(model, xr, normalize), y)
        (grad,) = torch.autograd.grad(loss, xr)
    return grad


def _prepare(model, x, y):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device = model_device(model)
    xb = as_batch(x).to(device)
    return xb, _labels(y, len(xb), device), device


def fgsm(model: nn.Module, x, y, eps, loss_fn=None, normalize=None) -> torch.Tensor:
    """Fast Gradient Sign Method: ``clamp(x + eps * sign(grad_x loss(model(x), y)), 0, 1)``.

    ``x``: images in [0, 1] (tensor, array or ImageSet, see
    :func:`fnlab.explain.as_batch`); ``y``: true labels (0 normal, 1 pneumonia, ...);
    ``eps``: a float or one per image, in [0, 1] pixel units (1/255 = one grey level).
    Untargeted on ``y``: for a pneumonia it pushes the score towards normal. The
    model runs in eval mode (its mode is restored); its weights and gradients are
    untouched. Returns a detached tensor ``N x C x H x W`` on the model's device.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    >>> x = torch.full((1, 1, 2, 2), 0.5)
    >>> bool(torch.equal(fgsm(net, x, [1], eps=0.0), x))
    True
    """
    xb, yb, device = _prepare(model, x, y)
    e = _eps_tensor(eps, len(xb), device)
    with _eval_mode(model):
        grad = _input_grad(model, xb, yb, loss_fn, normalize)
    return (xb + e * grad.sign()).clamp(0.0, 1.0).detach()


def pgd(model: nn.Module, x, y, eps, alpha=None, steps: int = 10, random_start: bool = True,
        seed: int = 0, loss_fn=None, normalize=None) -> torch.Tensor:
    """Projected Gradient Descent (L-infinity; Madry et al. 2018) within ``eps`` of ``x``.

    ``steps`` signed-gradient steps of size ``alpha`` (default ``2.5 * eps / steps``),
    each followed by projection onto the eps ball around ``x`` and onto [0, 1];
    ``random_start`` begins at a uniform random point of the ball (seeded by
    ``seed``). Same conventions as :func:`fgsm`.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    >>> x = torch.rand(3, 1, 4, 4)
    >>> adv = pgd(net, x, [1, 1, 1], eps=0.05, steps=5)
    >>> bool((adv - x).abs().max() <= 0.05 + 1e-6 and adv.min() >= 0 and adv.max() <= 1)
    True
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    xb, yb, device = _prepare(model, x, y)
    e = _eps_tensor(eps, len(xb), device)
    a = e * 2.5 / int(steps) if alpha is None else _eps_tensor(alpha, len(xb), device)
    if random_start:
        gen = torch.Generator().manual_seed(int(seed))
        noise = torch.rand(xb.shape, generator=gen).to(device) * 2 - 1
        x_adv = (xb + e * noise).clamp(0.0, 1.0)
    else:
        x_adv = xb.clone()
    with _eval_mode(model):
        for _ in range(int(steps)):
            grad = _input_grad(model, x_adv, yb, loss_fn, normalize)
            x_adv = x_adv + a * grad.sign()
            x_adv = torch.max(torch.min(x_adv, xb + e), xb - e).clamp(0.0, 1.0)
    return x_adv.detach()


def _attack(model, x, y, eps, attack, steps, alpha, seed, loss_fn, normalize):
    if attack == "fgsm":
        return fgsm(model, x, y, eps, loss_fn=loss_fn, normalize=normalize)
    if attack == "pgd":
        return pgd(model, x, y, eps, alpha=alpha, steps=steps, seed=seed, loss_fn=loss_fn,
                   normalize=normalize)
    raise ValueError(f"unknown attack {attack!r}; choose one of: {', '.join(ATTACKS)}")


@torch.no_grad()
def _scores(model, x, normalize) -> torch.Tensor:
    with _eval_mode(model):
        return positive_scores(_forward(model, x, normalize))


def adversarial_sweep(model: nn.Module, imageset: ImageSet, epsilons: Sequence[float],
                      threshold: float = 0.5, attack: str = "fgsm", steps: int = 10,
                      alpha=None, batch_size: int = 128, seed: int = 0, loss_fn=None,
                      normalize=None, progress: bool = True) -> pd.DataFrame:
    """Attack every image at each epsilon and measure what it does to false negatives.

    Every image is attacked on its true label (pneumonias pushed towards normal,
    normals towards pneumonia). One row per epsilon: ``attack``, ``eps``,
    ``eps_grey_levels`` (eps * 255), ``n``, ``n_pneumonia``, ``auc``, ``sensitivity``,
    ``specificity``, ``fn``, ``fp``, ``flipped_to_normal`` (share of the pneumonias
    detected on the clean images that the attack makes the model miss) and
    ``mean_pneumonia_score``.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    >>> s = ImageSet(np.random.default_rng(0).integers(0, 255, (6, 8, 8), np.uint8),
    ...              [0, 1, 0, 1, 1, 0])
    >>> list(adversarial_sweep(net, s, [0, 0.1], progress=False)["eps"])
    [0.0, 0.1]
    """
    threshold = check_threshold(threshold)
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose one of: {', '.join(ATTACKS)}")
    if not isinstance(imageset, ImageSet):
        raise TypeError(f"adversarial_sweep needs an ImageSet, got {type(imageset).__name__}")
    if len(imageset) == 0:
        raise ValueError(f"adversarial_sweep: the {imageset.split!r} set is empty")
    x_all = as_batch(imageset.images)
    y_all = torch.from_numpy(imageset.labels)
    positive = imageset.labels != 0
    device = model_device(model)
    clean = np.concatenate([
        _scores(model, x_all[s:s + batch_size].to(device), normalize).cpu().numpy()
        for s in range(0, len(x_all), batch_size)])
    detected = positive & (clean >= threshold)
    from fnlab.config import progress_bar as tqdm

    rows = []
    for eps in tqdm(list(epsilons), desc=f"{attack} sweep", unit="eps", disable=not progress):
        parts = []
        for s in range(0, len(x_all), batch_size):
            xb = x_all[s:s + batch_size]
            adv = _attack(model, xb, y_all[s:s + batch_size], float(eps), attack, steps, alpha,
                          seed, loss_fn, normalize) if eps > 0 else xb.to(device)
            parts.append(_scores(model, adv, normalize).cpu().numpy())
        scores = np.concatenate(parts)
        m = binary_metrics(Predictions(imageset.labels, scores, split=imageset.split,
                                       class_names=imageset.class_names), threshold)
        flipped = (detected & (scores < threshold)).sum() / detected.sum() \
            if detected.any() else float("nan")
        rows.append({"attack": attack, "eps": float(eps), "eps_grey_levels": float(eps) * 255,
                     "n": m["n"], "n_pneumonia": int(positive.sum()), "auc": m["auc"],
                     "sensitivity": m["sensitivity"], "specificity": m["specificity"],
                     "fn": m["fn"], "fp": m["fp"], "flipped_to_normal": float(flipped),
                     "mean_pneumonia_score": float(scores[positive].mean())
                     if positive.any() else float("nan")})
    return pd.DataFrame(rows)


def minimal_flip_eps(model: nn.Module, x, threshold: float = 0.5, attack: str = "fgsm",
                     eps_max: float = 0.25, iters: int = 12, steps: int = 10, seed: int = 0,
                     loss_fn=None, normalize=None, return_adversarial: bool = False):
    """Smallest epsilon (per image, by bisection) at which the attack flips the decision.

    The attack is aimed at the model's *current* decision (a detected pneumonia is
    pushed towards normal, a "normal" towards pneumonia). Images that do not flip at
    ``eps_max`` get ``inf``. FGSM's effect need not grow monotonically with eps, so
    the answer is the flip point bisection finds (within ``eps_max / 2**iters``), an
    upper bound on the true minimum. With ``return_adversarial=True`` returns
    ``(eps, adversarial images at that eps)`` (the clean image where nothing flips).

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.fill_(1.0), net[1].bias.fill_(-1.0)
    >>> x = torch.full((1, 1, 2, 2), 0.3)  # logit 0.2: pneumonia; 4 * (0.3 - eps) < 1 flips
    >>> round(float(minimal_flip_eps(net, x)[0]), 3)
    0.05
    """
    threshold = check_threshold(threshold)
    if not 0 < eps_max <= 1:
        raise ValueError(f"eps_max must be in (0, 1], got {eps_max}")
    device = model_device(model)
    xb = as_batch(x).to(device)
    n = len(xb)
    s0 = _scores(model, xb, normalize)
    d0 = s0 >= threshold
    with torch.no_grad(), _eval_mode(model):
        out = _forward(model, xb, normalize)
    y = d0.long() if out.ndim == 1 or out.shape[1] == 2 else torch.where(
        d0, out.argmax(dim=1).clamp_min(1), torch.zeros_like(d0, dtype=torch.long))

    def flips(eps: torch.Tensor):
        adv = _attack(model, xb, y, eps, attack, steps, None, seed, loss_fn, normalize)
        return (_scores(model, adv, normalize) >= threshold) != d0, adv

    hi = torch.full((n,), float(eps_max), device=device)
    ok, _ = flips(hi)
    lo = torch.zeros(n, device=device)
    for _ in range(int(iters)):
        mid = (lo + hi) / 2
        f, _ = flips(mid)
        hi = torch.where(f, mid, hi)
        lo = torch.where(f, lo, mid)
    result = torch.where(ok, hi, torch.full_like(hi, float("inf")))
    eps = result.cpu().numpy().astype(np.float64)
    if not return_adversarial:
        return eps
    final = torch.where(ok, hi, torch.zeros_like(hi))
    f, adv = flips(final)
    adv = torch.where(ok.reshape(-1, 1, 1, 1), adv, xb)
    return eps, adv.detach()


def adversarial_training_step(model: nn.Module, x, y, optimizer: torch.optim.Optimizer,
                              eps: float, loss_fn=None, attack: str = "fgsm",
                              adv_weight: float = 0.5, steps: int = 3,
                              normalize=None) -> dict[str, float]:
    """One step on ``(1 - adv_weight) * loss(clean) + adv_weight * loss(adversarial)``.

    The adversarial batch is made with the current weights (model in eval mode for
    the attack), then the model is trained on both in train mode (Goodfellow et al.
    2015 with FGSM; PGD with ``steps`` for a stronger, slower variant). Returns the
    losses as floats: ``loss``, ``clean_loss``, ``adv_loss``. With ``adv_weight=0``
    the step is a plain clean step: no attack is computed and ``adv_loss`` is NaN
    (the control arm of a fair comparison, see :func:`adversarial_train`).

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> sorted(adversarial_training_step(net, torch.rand(2, 1, 2, 2), [0, 1], opt, 0.05))
    ['adv_loss', 'clean_loss', 'loss']
    """
    if not 0 <= adv_weight <= 1:
        raise ValueError(f"adv_weight must be in [0, 1], got {adv_weight}")
    xb, yb, _ = _prepare(model, x, y)
    loss_fn = loss_fn or _default_loss
    if adv_weight == 0:  # the clean control: no attack, the same update rule
        model.train()
        clean_loss = loss_fn(_forward(model, xb, normalize), yb)
        loss, adv_value = clean_loss, float("nan")
    else:
        adv = _attack(model, xb, yb, eps, attack, steps, None, 0, loss_fn, normalize)
        model.train()
        clean_loss = loss_fn(_forward(model, xb, normalize), yb)
        adv_loss = loss_fn(_forward(model, adv, normalize), yb)
        loss = (1 - adv_weight) * clean_loss + adv_weight * adv_loss
        adv_value = float(adv_loss.detach())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "clean_loss": float(clean_loss.detach()),
            "adv_loss": adv_value}


def adversarial_train(model: nn.Module, train_set: ImageSet, epochs: int = 2, eps: float = 0.03,
                      attack: str = "fgsm", adv_weight: float = 0.5, lr: float = 1e-3,
                      batch_size: int = 64, steps: int = 3, loss_fn=None, seed: int = 0,
                      copy_model: bool = True, progress: bool = True):
    """Adversarially train (or fine-tune) ``model`` on ``train_set``; returns ``(model, history)``.

    A short, honest comparison loop: AdamW at ``lr``, shuffled batches, one
    :func:`adversarial_training_step` per batch. With ``copy_model=True`` (default)
    the input model is left as it was and a trained deep copy is returned. A zoo
    model whose input normalisation is still the identity gets the training split's
    statistics (as :func:`fnlab.train.fit` does). ``history`` is a DataFrame with
    ``epoch``, ``loss``, ``clean_loss``, ``adv_loss`` (epoch means).

    ``loss_fn`` defaults to plain BCE (cross-entropy for K logits); for a fair
    comparison pass the loss the clean model was trained with, e.g.
    ``fnlab.losses.create_loss("weighted", 2, labels=train_set.labels)`` -- an
    unweighted loss alone lowers sensitivity at a fixed threshold.

    **The fair control.** Fine-tuning a trained model for a few more epochs changes
    it even on clean data (an undertrained model gets better; any model moves its
    scores), so compare the adversarially fine-tuned model with the *same* starting
    model fine-tuned for the same epochs, with the same optimiser, learning rate,
    loss and batch order on clean data: ``adv_weight=0`` (no attack is computed).
    Then a difference in robustness is the adversarial examples' doing.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    >>> s = ImageSet(np.random.default_rng(0).integers(0, 255, (8, 4, 4), np.uint8),
    ...              [0, 1] * 4)
    >>> trained, hist = adversarial_train(net, s, epochs=2, batch_size=4, progress=False)
    >>> list(hist["epoch"]), trained is net
    ([1, 2], False)
    >>> control, hist0 = adversarial_train(net, s, epochs=1, batch_size=4, adv_weight=0.0,
    ...                                    progress=False)
    >>> bool(hist0["adv_loss"].isna().all())
    True
    """
    if not isinstance(train_set, ImageSet):
        raise TypeError(f"adversarial_train needs an ImageSet, got {type(train_set).__name__}")
    if len(train_set) == 0:
        raise ValueError("adversarial_train: the training set is empty")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose one of: {', '.join(ATTACKS)}")
    if not 0 <= adv_weight <= 1:
        raise ValueError(f"adv_weight must be in [0, 1], got {adv_weight}")
    if copy_model:
        model = copy.deepcopy(model)
    if hasattr(model, "set_normalization") and hasattr(model, "normalization"):
        stats = model.normalization()
        if all(v == 0 for v in stats["mean"]) and all(v == 1 for v in stats["std"]):
            # the same statistics fnlab.train.normalization_stats computes
            x = as_batch(train_set.images)
            model.set_normalization(x.mean(dim=(0, 2, 3)).tolist(),
                                    x.std(dim=(0, 2, 3), unbiased=False).clamp_min(1e-3).tolist())
    device = model_device(model)
    x_all = as_batch(train_set.images)
    y_all = torch.from_numpy(train_set.labels)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    from fnlab.config import progress_bar as tqdm

    rows = []
    for epoch in tqdm(range(1, int(epochs) + 1), desc=f"adversarial ({attack})", unit="epoch",
                      disable=not progress):
        order = torch.randperm(len(x_all), generator=gen)
        sums = {"loss": 0.0, "clean_loss": 0.0, "adv_loss": 0.0}
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            out = adversarial_training_step(model, x_all[idx].to(device), y_all[idx].to(device),
                                            opt, eps, loss_fn=loss_fn, attack=attack,
                                            adv_weight=adv_weight, steps=steps)
            for k in sums:
                sums[k] += out[k] * len(idx)
        rows.append({"epoch": epoch, **{k: v / len(order) for k, v in sums.items()}})
    model.eval()
    return model, pd.DataFrame(rows)


# --------------------------------------------------------------------------- sites
def site_test_sets(home_test: ImageSet, site_shift: float, seed: int = 0,
                   sites: Sequence[int] | None = None) -> dict[int, ImageSet]:
    """The home site's test split plus as many synthetic test images from each other site.

    Site 0 (A, the reference) is ``home_test`` itself; every other site of ``sites``
    (default: all of :data:`fnlab.data.synthetic.SITE_NAMES`) gets ``len(home_test)``
    images of the same size, rendered ``site_shift`` times as far from site A as the
    generator's presets (notebook 07, section 1). The draw depends only on ``seed`` and
    the site, so every model of a notebook reads the same films.

    >>> home = generate(8, image_size=28, sites=(0,), seed=1, split="test")
    >>> sets = site_test_sets(home, site_shift=1.0, seed=0, sites=(0, 2))
    >>> sorted(sets), len(sets[2]), int(sets[2].meta["site"][0])
    ([0, 2], 8, 2)
    """
    sites = range(len(SITE_NAMES)) if sites is None else sites
    size, n = home_test.image_size, len(home_test)
    return {int(s): home_test if s == 0 else
            generate(n, image_size=size, sites=(int(s),), site_shift=site_shift,
                     seed=10_000 + 17 * int(seed) + int(s), split=f"site {SITE_NAMES[s]}")
            for s in sites}


def site_metrics(predictions: dict[int, Predictions], threshold: float,
                 model: str = "model") -> pd.DataFrame:
    """AUC, sensitivity, specificity and misses of one model on every site, at one threshold.

    ``predictions`` maps a site index to the model's :class:`Predictions` on that site's
    images (computed once, then read at any threshold). One row per site: ``model``,
    ``site`` (its name), ``auc``, ``sensitivity``, ``specificity``, ``fn`` and
    ``pneumonias``.

    >>> p = {0: Predictions([0, 1, 1], [0.1, 0.9, 0.4]), 1: Predictions([0, 1], [0.8, 0.9])}
    >>> site_metrics(p, 0.5, "m")[["site", "sensitivity", "specificity", "fn"]].values.tolist()
    [['A-reference', 0.5, 1.0, 1], ['B-portable', 1.0, 0.0, 0]]
    """
    rows = []
    for s, preds in predictions.items():
        m = binary_metrics(preds, threshold)
        rows.append({"model": model, "site": SITE_NAMES[s], "auc": m["auc"],
                     "sensitivity": m["sensitivity"], "specificity": m["specificity"],
                     "fn": m["fn"], "pneumonias": m["tp"] + m["fn"]})
    return pd.DataFrame(rows)


def usable_worst_site(table: pd.DataFrame, min_specificity: float = 0.30) -> pd.DataFrame:
    """Each model's worst site by sensitivity, where a site it floods counts as failed.

    ``table`` has one row per (model, site) with ``sensitivity`` and ``specificity``
    (:func:`site_metrics`). A model whose specificity at a site is below
    ``min_specificity`` calls nearly every film there pneumonia: its sensitivity there
    proves nothing, so the site counts as sensitivity 0 (it can never "win" there).
    One row per model (in the table's order): ``worst_site``, ``usable_sensitivity``
    (the minimum over its sites), the ``sensitivity`` and ``specificity`` measured
    there, and ``flooded`` (the sites under ``min_specificity``, comma-separated).
    This is the rule notebook 07 (section 2) writes out by hand.

    >>> t = pd.DataFrame({"model": ["a", "a", "b", "b"], "site": ["B", "C", "B", "C"],
    ...                   "sensitivity": [1.0, 0.9, 0.8, 0.85], "specificity": [0.1, 0.7, 0.6, 0.5]})
    >>> usable_worst_site(t)[["worst_site", "usable_sensitivity", "flooded"]].values.tolist()
    [['B', 0.0, 'B'], ['B', 0.8, '']]
    """
    t = table.assign(usable_sensitivity=table["sensitivity"].where(
        table["specificity"] >= min_specificity, 0.0))
    rows = {}
    for model, part in t.groupby("model", sort=False):
        w = part.loc[part["usable_sensitivity"].idxmin()]
        rows[model] = {"worst_site": w["site"], "usable_sensitivity": float(w["usable_sensitivity"]),
                       "sensitivity": float(w["sensitivity"]),
                       "specificity": float(w["specificity"]),
                       "flooded": ", ".join(part.loc[part["specificity"] < min_specificity, "site"])}
    return pd.DataFrame.from_dict(rows, orient="index")


def value_at_eps(table: pd.DataFrame, eps_grey_levels: float,
                 column: str = "flipped_to_normal") -> float:
    """One column of an :func:`adversarial_sweep` table at a budget given in grey levels.

    >>> t = pd.DataFrame({"eps_grey_levels": [0.0, 2.0], "flipped_to_normal": [0.0, 0.4]})
    >>> value_at_eps(t, 2)
    0.4
    """
    hit = table.loc[np.isclose(table["eps_grey_levels"], eps_grey_levels), column]
    if hit.empty:
        raise ValueError(f"no row at {eps_grey_levels:g} grey levels; the sweep has "
                         f"{', '.join(f'{e:g}' for e in table['eps_grey_levels'])}")
    return float(hit.iloc[0])
