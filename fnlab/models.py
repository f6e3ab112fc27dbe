"""The model zoo: compact CNNs, an attention CNN, torchvision backbones and a tiny ViT.

Every model made by :func:`create` is an :class:`FnlabModel`: it takes images as
float tensors in [0, 1] (``N x C x H x W``, what ``ImageSet.torch_dataset()``
yields), normalises them with the training-set statistics it keeps as buffers,
optionally resizes them (``resize_to``), and runs the network body.

Output convention
-----------------
* **Binary tasks** (``num_classes == 2``): ONE logit per image, shape ``(N,)``.
  The pneumonia score is ``sigmoid(logit)`` (BCE-style losses).
* **Multi-class tasks** (``num_classes = K > 2``): ``(N, K)`` logits; class
  probabilities are ``softmax(logits)``.

:func:`predict_scores` turns either into what :class:`~fnlab.predictions.Predictions`
expects: ``(N,)`` positive-class probabilities or ``(N, K)`` probabilities.

Small inputs
------------
torchvision's ImageNet backbones shrink a 224 px image 4x in their stem. For inputs
under 96 px the stem is adapted so that a 28 px X-ray is not reduced to a few
pixels: ResNets get a 3x3 stride-1 first convolution and no max-pool; DenseNet-121
likewise (``conv0`` 3x3 stride 1, no ``pool0``); MobileNetV2 and EfficientNet-B0 get
stride 1 in their first convolution. With ``pretrained=True`` the first
convolution's RGB filters are averaged into one channel (and, for a 3x3 small
stem, the centre 3x3 of the 7x7 ImageNet kernel is kept). ``stem="imagenet"`` keeps
torchvision's own stem at any size (about 16x fewer operations on a 28 px image: the
``smoke`` profile's choice for these backbones, so that CI stays fast);
``stem="small"`` forces the small one.

ReLUs are made non-in-place in every model (in-place activations break several
Captum attribution methods). torchvision's ResNets still reuse one ReLU module
several times per block, which Captum's DeepLift warns about; GradCAM and
Integrated Gradients are unaffected.

Example
-------
>>> import torch
>>> m = create("smallcnn", num_classes=2, image_size=28)
>>> m(torch.rand(4, 1, 28, 28)).shape
torch.Size([4])
>>> count_parameters(m) > 10_000
True
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "FnlabModel",
    "available_models",
    "count_parameters",
    "create",
    "meta_model",
    "pixels_to_float",
    "predict_scores",
    "pretrained_weights_path",
    "target_layer",
]

#: Inputs smaller than this get the small-image stem in torchvision backbones.
SMALL_INPUT = 96


# --------------------------------------------------------------------------- wrapper
class FnlabModel(nn.Module):
    """A zoo model: input normalisation, optional resize, then the network body.

    Attributes
    ----------
    arch : zoo name (``"smallcnn"``, ``"resnet18"``, ...).
    num_classes, in_channels, image_size : what the model was built for.
    resize_to : side the input is resized to inside the model (None = no resize).
    body : the network proper (outputs ``num_outputs`` logits).
    mean, std : per-channel normalisation buffers (set by the trainer from the
        training split; identity until then).

    >>> m = create("smallcnn", image_size=28)
    >>> m.set_normalization([0.5], [0.25]); m.mean.flatten().tolist()
    [0.5]
    """

    def __init__(self, body: nn.Module, arch: str, num_classes: int, in_channels: int,
                 image_size: int, resize_to: int | None = None):
        super().__init__()
        self.arch = arch
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.resize_to = None if resize_to in (None, 0, image_size) else int(resize_to)
        self.body = body
        self.register_buffer("mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("std", torch.ones(1, in_channels, 1, 1))

    @property
    def is_binary(self) -> bool:
        return self.num_classes == 2

    def set_normalization(self, mean, std) -> None:
        """Set the per-channel input mean and std (scalars or sequences of length C)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.numel() == 1:
            mean = mean.expand(self.in_channels)
        if std.numel() == 1:
            std = std.expand(self.in_channels)
        if mean.numel() != self.in_channels or std.numel() != self.in_channels:
            raise ValueError(
                f"normalisation stats must have {self.in_channels} values, got "
                f"mean {mean.tolist()} std {std.tolist()}"
            )
        if torch.any(std <= 0):
            raise ValueError(f"normalisation std must be > 0, got {std.tolist()}")
        self.mean.copy_(mean.reshape(1, -1, 1, 1))
        self.std.copy_(std.reshape(1, -1, 1, 1))

    def normalization(self) -> dict:
        """The input statistics as plain lists: ``{"mean": [...], "std": [...]}``."""
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (and resize) a batch of [0, 1] images the way ``forward`` does."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.arch}: expected a batch N x {self.in_channels} x H x W, "
                f"got shape {tuple(x.shape)}"
            )
        x = (x - self.mean) / self.std
        if self.resize_to is not None and x.shape[-1] != self.resize_to:
            x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear",
                              align_corners=False)
        return x

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        out = self.body(self.preprocess(x))
        if self.is_binary:
            out = out.reshape(-1)
        if return_attention:
            return out, self.attention_maps
        return out

    @property
    def attention_maps(self) -> torch.Tensor:
        """Spatial attention maps ``N x 1 x h x w`` of the last forward (attention models)."""
        if not getattr(self.body, "attention", False):
            # not AttributeError: nn.Module.__getattr__ would swallow the message
            raise ValueError(f"model {self.arch!r} has no attention maps; use 'attention_cnn'")
        maps = self.body.attention_maps
        if maps is None:
            raise RuntimeError("no attention maps yet: run the model on a batch first")
        return maps

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, num_classes={self.num_classes}, "
                f"in_channels={self.in_channels}, image_size={self.image_size}, "
                f"resize_to={self.resize_to}")


# --------------------------------------------------------------------------- compact CNNs
def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=False)]


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a 7x7 conv over the channel-mean and channel-max maps.

    ``softmax=False`` (CBAM): a sigmoid gate per position, values in (0, 1).
    ``softmax=True`` (attention pooling, as in Jetley et al., "Learn to pay attention",
    2018): a softmax over the positions, so the map sums to 1 per image and the
    average pooling that follows becomes a weighted sum of the features where the
    network looks; a map that is flat everywhere cannot help, so it concentrates.
    Keeps the last map (``N x 1 x H x W``) in ``self.last_map``.

    >>> att = SpatialAttention(softmax=True)
    >>> _ = att(torch.rand(2, 8, 4, 4))
    >>> bool(torch.allclose(att.last_map.sum(dim=(1, 2, 3)), torch.ones(2)))
    True
    """

    def __init__(self, kernel_size: int = 7, softmax: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.softmax = softmax
        self.last_map: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        logits = self.conv(pooled)
        if self.softmax:
            n, _, h, w = logits.shape
            attn = torch.softmax(logits.flatten(1), dim=1).view(n, 1, h, w)
            self.last_map = attn.detach()
            return x * (attn * (h * w))  # mean-preserving: a flat map changes nothing
        attn = torch.sigmoid(logits)
        self.last_map = attn.detach()
        return x * attn


class CBAM(nn.Module):
    """Channel attention (torchvision ``SqueezeExcitation``) then spatial attention."""

    def __init__(self, channels: int, reduction: int = 8, spatial_softmax: bool = False):
        from torchvision.ops import SqueezeExcitation

        super().__init__()
        self.channel = SqueezeExcitation(channels, max(channels // reduction, 4))
        self.spatial = SpatialAttention(softmax=spatial_softmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class SmallCNN(nn.Module):
    """Three stages of two 3x3 conv-BN-ReLU, average pooling between, dropout + dense head.

    ``width`` channels in stage 1, doubling per stage (32 -> ~0.29 M parameters).
    With ``attention=True`` a CBAM block follows each stage (``attention_cnn``); the
    last one's spatial attention is a softmax over positions (attention pooling), so
    its map, :attr:`attention_maps`, sums to 1 and shows where the network looks.
    """

    def __init__(self, in_channels: int = 1, num_outputs: int = 1, width: int = 32,
                 dropout: float = 0.2, attention: bool = False):
        super().__init__()
        chans = [width, 2 * width, 4 * width]
        stages: list[nn.Module] = []
        cin = in_channels
        for i, c in enumerate(chans):
            stages.append(_stage(cin, c))
            if attention:
                stages.append(CBAM(c, spatial_softmax=i == len(chans) - 1))
            if i < len(chans) - 1:
                stages.append(nn.AvgPool2d(2))
            cin = c
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_outputs))
        self.attention = attention

    @property
    def attention_maps(self) -> torch.Tensor | None:
        if not self.attention:
            return None
        cbams = [m for m in self.features if isinstance(m, CBAM)]
        return cbams[-1].spatial.last_map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


# --------------------------------------------------------------------------- torchvision
#: Bumped when a model's architecture changes in a way that old checkpoints would still
#: load into (same parameter shapes): the Run cache key includes it, so a changed model
#: is trained again instead of silently reusing weights trained for the old one.
#: attention_cnn 2: the last spatial attention became a softmax over positions.
ARCHITECTURE_REVISIONS: dict[str, int] = {"attention_cnn": 2}

_TORCHVISION = ("resnet18", "resnet50", "densenet121", "mobilenet_v2", "efficientnet_b0")


def pretrained_weights_path(name: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``name`` in the local hub cache.

    >>> pretrained_weights_path("resnet18").name
    'resnet18-f37072fd.pth'
    """
    from torchvision.models import get_model_weights

    if name not in _TORCHVISION:
        raise ValueError(f"no ImageNet weights for {name!r}; pretrained models: "
                         f"{', '.join(_TORCHVISION)}")
    weights = get_model_weights(name).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _load_imagenet_state(name: str) -> dict:
    from torchvision.models import get_model_weights

    path = pretrained_weights_path(name)
    weights = get_model_weights(name).DEFAULT
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet weights for {name!r} are not in the local torch hub cache ({path}); "
            "fnlab never downloads weights itself. On a machine with internet run:\n"
            f"  python -c \"import torchvision; torchvision.models.{name}"
            f"(weights='{weights.name}')\"\n"
            f"then copy ~/.cache/torch/hub/checkpoints/{path.name} to {path} "
            "(or point $TORCH_HOME at a folder holding hub/checkpoints/)."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt download
        raise ValueError(f"{path}: cannot read the ImageNet weights ({exc}); delete it and "
                         "fetch it again") from exc
    if name == "densenet121":  # old-style keys 'norm.1' -> 'norm1'
        import re

        pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
        state = {(pattern.sub(lambda m: m.group(1) + m.group(2), k)): v for k, v in state.items()}
    return state


def _gray_first_conv(weight: torch.Tensor, in_channels: int, kernel: int) -> torch.Tensor:
    """Average RGB filters into ``in_channels`` (repeat when >1) and centre-crop the kernel."""
    if in_channels == weight.shape[1]:
        w = weight.clone()
    else:
        w = weight.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
    k = w.shape[-1]
    if kernel < k:
        start = (k - kernel) // 2
        w = w[..., start:start + kernel, start:start + kernel].contiguous()
    return w


def _replace_conv(old: nn.Conv2d, in_channels: int, small: bool) -> nn.Conv2d:
    kernel = 3 if small else old.kernel_size[0]
    stride = 1 if small else old.stride[0]
    return nn.Conv2d(in_channels, old.out_channels, kernel, stride=stride, padding=kernel // 2,
                     bias=old.bias is not None)


STEMS = ("auto", "small", "imagenet")


def _torchvision_body(name: str, num_outputs: int, in_channels: int, size: int,
                      pretrained: bool, stem: str = "auto") -> nn.Module:
    import torchvision.models as tvm

    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; choose one of: {', '.join(STEMS)}")
    small = size < SMALL_INPUT if stem == "auto" else stem == "small"
    net = getattr(tvm, name)(weights=None)
    if pretrained:
        net.load_state_dict(_load_imagenet_state(name))
    # the first convolution and its parent
    if name.startswith("resnet"):
        parent, attr = net, "conv1"
    elif name == "densenet121":
        parent, attr = net.features, "conv0"
    else:  # mobilenet_v2, efficientnet_b0: features[0] is Conv2dNormActivation
        parent, attr = net.features[0], "0"
    old = getattr(parent, attr) if attr != "0" else parent[0]
    new = _replace_conv(old, in_channels, small)
    if pretrained:
        with torch.no_grad():
            new.weight.copy_(_gray_first_conv(old.weight, in_channels, new.kernel_size[0]))
    if attr == "0":
        parent[0] = new
    else:
        setattr(parent, attr, new)
    if small and name.startswith("resnet"):
        net.maxpool = nn.Identity()
    if small and name == "densenet121":
        net.features.pool0 = nn.Identity()
    # the head
    if name.startswith("resnet"):
        net.fc = nn.Linear(net.fc.in_features, num_outputs)
    elif name == "densenet121":
        net.classifier = nn.Linear(net.classifier.in_features, num_outputs)
    else:
        net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, num_outputs)
    return net


# --------------------------------------------------------------------------- ViT
def _vit_patch(size: int, coarse: bool = False) -> int:
    if coarse:  # the largest patch that still leaves a 4 x 4 grid of tokens
        for patch in (32, 16, 14, 8, 7, 4):
            if size % patch == 0 and size // patch >= 4:
                return patch
    for patch in (4, 7, 8, 16, 14, 32):
        if size % patch == 0 and (size // patch) ** 2 <= 256:
            return patch
    raise ValueError(f"vit_tiny: no patch size in (4, 7, 8, 14, 16, 32) divides {size} px "
                     "into at most 256 patches; use an image size such as 28, 32, 64 or 128")


def _vit_body(num_outputs: int, in_channels: int, size: int,
              patch_size: int | str | None = None,
              num_layers: int = 6, num_heads: int = 4, hidden_dim: int = 128,
              mlp_dim: int = 512, dropout: float = 0.1) -> nn.Module:
    from torchvision.models import VisionTransformer

    if patch_size == "coarse":
        patch = _vit_patch(size, coarse=True)
    elif isinstance(patch_size, str):
        raise ValueError(f"vit_tiny: patch_size must be an int, None or 'coarse', got {patch_size!r}")
    else:
        patch = patch_size or _vit_patch(size)
    if size % patch:
        raise ValueError(f"vit_tiny: patch size {patch} does not divide image size {size}")
    vit = VisionTransformer(image_size=size, patch_size=patch, num_layers=num_layers,
                            num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim,
                            dropout=dropout, num_classes=num_outputs)
    vit.conv_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=patch, stride=patch)
    return vit


# --------------------------------------------------------------------------- registry
def _smallcnn(num_outputs, in_channels, size, pretrained, width=32, dropout=0.2):
    return SmallCNN(in_channels, num_outputs, width=width, dropout=dropout)


def _attention_cnn(num_outputs, in_channels, size, pretrained, width=32, dropout=0.2):
    return SmallCNN(in_channels, num_outputs, width=width, dropout=dropout, attention=True)


def _tv(name: str) -> Callable:
    def build(num_outputs, in_channels, size, pretrained, stem="auto"):
        return _torchvision_body(name, num_outputs, in_channels, size, pretrained, stem)

    build.__name__ = name
    return build


def _vit_tiny(num_outputs, in_channels, size, pretrained, **kw):
    return _vit_body(num_outputs, in_channels, size, **kw)


_BUILDERS: dict[str, Callable] = {
    "smallcnn": _smallcnn,
    "attention_cnn": _attention_cnn,
    **{name: _tv(name) for name in _TORCHVISION},
    "vit_tiny": _vit_tiny,
}

_DESCRIPTIONS = {
    "smallcnn": "compact plain CNN: 3 stages of 3x3 conv-BN-ReLU, avg pool, dropout, dense head",
    "attention_cnn": "smallcnn + CBAM channel (SqueezeExcitation) and spatial attention "
                     "(the last block's a softmax over positions: attention pooling)",
    "resnet18": "torchvision ResNet-18 (small-image stem under 96 px)",
    "resnet50": "torchvision ResNet-50 (small-image stem under 96 px)",
    "densenet121": "torchvision DenseNet-121 (small-image stem under 96 px)",
    "mobilenet_v2": "torchvision MobileNetV2 (stride-1 stem under 96 px)",
    "efficientnet_b0": "torchvision EfficientNet-B0 (stride-1 stem under 96 px)",
    "vit_tiny": "torchvision VisionTransformer: 6 layers, dim 128, 4 heads, patch 4-8",
}


def available_models() -> list[str]:
    """Names :func:`create` accepts.

    >>> "smallcnn" in available_models() and "vit_tiny" in available_models()
    True
    """
    return list(_BUILDERS)


def describe_models() -> dict[str, str]:
    """One line per zoo model: ``{name: description}``."""
    return dict(_DESCRIPTIONS)


def create(name: str, num_classes: int = 2, in_channels: int = 1, image_size: int = 28,
           pretrained: bool = False, resize_to: int | None = None, **kw) -> FnlabModel:
    """Build a zoo model for ``num_classes`` classes and ``in_channels`` x ``image_size`` px.

    Parameters
    ----------
    name : one of :func:`available_models`.
    num_classes : 2 gives one logit per image (sigmoid = pneumonia score); K > 2 gives
        K logits (softmax).
    in_channels : image channels (1 for X-rays).
    image_size : side of the input images.
    pretrained : load torchvision ImageNet weights from the local hub cache (never
        downloads; a clear FileNotFoundError says how to get them).
    resize_to : resize inputs to this side inside the model (e.g. 28 px images seen at
        56 px); the body is built for that size.
    **kw : builder options: ``width``, ``dropout`` (smallcnn, attention_cnn);
        ``stem`` (``"auto"``, ``"small"``, ``"imagenet"``; torchvision backbones);
        ``patch_size`` (int; ``"coarse"``: the largest patch leaving a 4 x 4 token grid,
        the ``smoke`` profile's choice), ``num_layers``, ``num_heads``, ``hidden_dim``,
        ``mlp_dim``, ``dropout`` (vit_tiny).

    >>> create("resnet18", num_classes=4, image_size=64)(torch.rand(2, 1, 64, 64)).shape
    torch.Size([2, 4])
    >>> create("nope")
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'nope'; choose one of: smallcnn, attention_cnn, resnet18, resnet50, densenet121, mobilenet_v2, efficientnet_b0, vit_tiny
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(_BUILDERS)}")
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if int(in_channels) < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if int(image_size) < 8:
        raise ValueError(f"image_size must be >= 8 px, got {image_size}")
    if pretrained and name not in _TORCHVISION:
        raise ValueError(f"no ImageNet weights for {name!r}; pretrained models: "
                         f"{', '.join(_TORCHVISION)}")
    size = int(resize_to or image_size)
    num_outputs = 1 if num_classes == 2 else num_classes
    try:
        body = _BUILDERS[name](num_outputs, int(in_channels), size, pretrained, **kw)
    except TypeError as exc:
        raise ValueError(f"bad options for model {name!r}: {exc}") from exc
    _no_inplace(body)
    model = FnlabModel(body, name, num_classes, int(in_channels), int(image_size), resize_to)
    model.model_kwargs = dict(kw)  # the builder options, so a checkpoint can rebuild it
    return model


#: The most parameters a model rebuilt from a file may have: about 400 MB of float32
#: weights (the largest zoo model, resnet50, has 23.5 M).
MAX_PARAMETERS = 100_000_000
#: Bounds checked before building at all: options that cost Python time per unit
#: (one module per layer), and any other integer (sizes, widths, class counts).
_OPTION_LIMITS = {"num_layers": 256}
_INT_LIMIT = 1_000_000


def meta_model(name: str, num_classes: int = 2, in_channels: int = 1, image_size: int = 28,
               resize_to: int | None = None, options: dict | None = None,
               max_parameters: int | None = MAX_PARAMETERS) -> FnlabModel:
    """The zoo model built on PyTorch's ``meta`` device: shapes only, no memory for weights.

    Use it to check a model read from a file (a checkpoint's ``model_kwargs`` as
    ``options``) before building the real one: raises ValueError (one line) when an
    option is out of range or the model would have more than ``max_parameters``
    parameters (:data:`MAX_PARAMETERS`; None = no limit).

    >>> meta_model("smallcnn", options={"width": 8}).mean.device.type
    'meta'
    >>> meta_model("smallcnn", options={"width": 100_000})
    Traceback (most recent call last):
    ...
    ValueError: model 'smallcnn' with options {'width': 100000} would have 2,790,004,100,001 parameters (11160.0 GB of float32); the limit is 100,000,000
    """
    options = dict(options or {})
    sizes = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size,
             "resize_to": resize_to}
    for key, value in {**sizes, **options}.items():
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            limit = _OPTION_LIMITS.get(key, _INT_LIMIT)
            if abs(int(value)) > limit:
                raise ValueError(f"model {name!r}: {key}={value} is out of range "
                                 f"(at most {limit:,})")
    if "pretrained" in options:
        raise ValueError(f"model {name!r}: options may not set 'pretrained'")
    try:
        with torch.device("meta"):
            model = create(name, num_classes=num_classes, in_channels=in_channels,
                           image_size=image_size, resize_to=resize_to, **options)
    except (TypeError, RuntimeError, ValueError) as exc:
        msg = " ".join(str(exc).split())[:300]
        raise ValueError(f"cannot build model {name!r} with options {options}: {msg}") from None
    n = count_parameters(model)
    if max_parameters is not None and n > max_parameters:
        raise ValueError(f"model {name!r} with options {options} would have {n:,} parameters "
                         f"({n * 4 / 1e9:.1f} GB of float32); the limit is {max_parameters:,}")
    return model


def _no_inplace(module: nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``).

    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    """
    return int(sum(p.numel() for p in model.parameters()
                   if p.requires_grad or not trainable_only))


def target_layer(model: nn.Module) -> nn.Module:
    """The last convolutional block of a zoo model, the usual GradCAM target layer.

    >>> m = create("smallcnn")
    >>> type(target_layer(m)).__name__
    'Sequential'
    """
    body = model.body if isinstance(model, FnlabModel) else model
    arch = getattr(model, "arch", type(body).__name__)
    if isinstance(body, SmallCNN):
        stages = [m for m in body.features if isinstance(m, nn.Sequential)]
        return stages[-1]
    if hasattr(body, "layer4"):  # resnets
        return body.layer4[-1]
    if hasattr(body, "features") and hasattr(body.features, "denseblock4"):
        return body.features.denseblock4
    if hasattr(body, "features"):  # mobilenet_v2, efficientnet_b0
        return body.features[-1]
    convs = [m for m in body.modules() if isinstance(m, nn.Conv2d)]
    if type(body).__name__ == "VisionTransformer" or not convs:
        raise ValueError(f"model {arch!r} has no convolutional feature map for GradCAM; use "
                         "attention or gradient attributions on the input instead")
    return convs[-1]


# --------------------------------------------------------------------------- inference
def pixels_to_float(images) -> torch.Tensor:
    """Images as a float32 tensor in the model's input units: uint8 grey levels are divided
    by 255 (0-255 -> 0-1); other numbers are taken as already in those units. Accepts a
    NumPy array or a tensor of any shape; the one conversion every inference path uses.

    >>> pixels_to_float(np.array([[0, 255]], np.uint8)).tolist()
    [[0.0, 1.0]]
    >>> pixels_to_float(torch.tensor([0.5])).dtype
    torch.float32
    """
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 and not (np.issubdtype(images.dtype, np.number)
                                             or images.dtype == bool):
            raise ValueError(f"images: cannot use a NumPy array of dtype {images.dtype}")
        images = torch.from_numpy(np.ascontiguousarray(images))
    x = images.detach()
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def scores_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Probabilities from logits: sigmoid of ``(N,)`` logits, softmax of ``(N, K)`` logits."""
    if logits.ndim == 1:
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=1)


@torch.no_grad()
def predict_scores(model: nn.Module, batches, device=None) -> np.ndarray:
    """Run ``model`` in eval mode over ``batches`` and return Predictions-ready scores.

    ``batches`` yields image tensors or ``(images, labels)`` pairs (a DataLoader, a
    list of tensors, ...). Returns ``(N,)`` pneumonia probabilities for binary
    models and ``(N, K)`` class probabilities for multi-class models.

    >>> m = create("smallcnn")
    >>> predict_scores(m, [torch.rand(3, 1, 28, 28)]).shape
    (3,)
    """
    was_training = model.training
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    out = []
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            out.append(scores_from_logits(model(x.to(device))).cpu())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0,), dtype=np.float64)
    return torch.cat(out).double().numpy()
