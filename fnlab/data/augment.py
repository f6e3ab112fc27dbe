"""Augmentation presets on ``torchvision.transforms.v2`` for chest radiographs.

Every preset maps a float tensor ``C x H x W`` in [0, 1] (what
:meth:`fnlab.data.imageset.ImageSet.torch_dataset` yields) to a tensor of the same
shape, still in [0, 1]. Use them on the **training** split only.

======== =================================================================
preset   what it does
======== =================================================================
none     nothing (validation, test, and the baseline)
light    rotation <= 5 deg, shift <= 4 %, scale 0.95-1.05, mild brightness/contrast
standard rotation <= 10 deg, shift <= 8 %, scale 0.9-1.1, brightness/contrast/gamma,
         Gaussian noise, mild elastic warp (about 1 % of the image side)
strong   the same plausible geometric ranges applied more often, plus stronger
         intensity changes, noise, slight blur and a 2 % elastic warp
over     deliberately too much: rotations up to 180 deg, flips both ways, crops
         down to 20 % of the image, heavy elastic warp, intensity inversion
site     acquisition style only, no geometry: contrast, brightness and gamma of
         another scanner, blur or edge enhancement, detector noise (imitates the
         differences between acquisition sites, see :data:`SITE_STYLE`)
======== =================================================================

**Horizontal flips are off by default.** A chest radiograph is not left-right
symmetric: the heart lies on the left, the right hemidiaphragm sits higher, the
aortic knob and gastric bubble are left-sided, and the two lungs have different
lobes. A flipped film shows anatomy that only a patient with situs inversus or
dextrocardia has, and markers/side labels read backwards. A model trained on flips
learns that laterality does not matter, which blurs exactly the cues a radiologist
uses (e.g. a left-lower-lobe opacity behind the heart). Pass ``hflip=True`` to add
them anyway (e.g. to measure the effect in a lesson).

The ``over`` preset exists for the lesson that shows the harm of over-augmentation:
upside-down, mirrored, inverted and heavily warped images are not radiographs any
more, so the model spends capacity on impossible inputs and its sensitivity on real
ones drops.

Example
-------
>>> import torch
>>> aug = get_augment("standard", image_size=32)
>>> torch.manual_seed(0) is not None
True
>>> y = aug(torch.rand(1, 32, 32))
>>> tuple(y.shape), float(y.min()) >= 0.0, float(y.max()) <= 1.0
((1, 32, 32), True, True)
>>> sorted(list_presets())
['light', 'none', 'over', 'site', 'standard', 'strong']
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

#: One-line description of every preset.
PRESETS: dict[str, str] = {
    "none": "no augmentation (val/test and the baseline)",
    "light": "rotation <=5 deg, shift <=4%, scale 0.95-1.05, mild brightness/contrast",
    "standard": "rotation <=10 deg, shift <=8%, scale 0.9-1.1, brightness/contrast/gamma, "
    "noise, mild elastic",
    "strong": "plausible geometry more often, stronger intensity/gamma/noise, slight blur, "
    "2% elastic",
    "over": "HARMFUL on purpose: rotations to 180 deg, flips both ways, crops to 20%, "
    "heavy elastic, inversion",
    "site": "acquisition style only: contrast 0.6-1.6, brightness +-0.15, gamma 0.65-1.6, "
    "blur or sharpening, noise",
}

#: The ranges of the ``site`` preset: what differs between scanners and protocols
#: (see :data:`fnlab.data.synthetic.SITE_PRESETS`), drawn afresh for every image.
SITE_STYLE: dict[str, tuple[float, float] | float] = {
    "contrast": (0.6, 1.6),      # factor around the image mean, log-uniform
    "brightness": (-0.15, 0.15),  # offset on the 0..1 scale
    "gamma": (0.65, 1.6),        # log-uniform
    "blur_sigma": (0.3, 1.2),    # Gaussian blur sigma in pixels at 28 px (scaled with size)
    "p_blur": 0.4,
    "p_sharpen": 0.3,            # edge enhancement of a modern detector
    "noise_sigma": (0.0, 0.06),  # Gaussian detector noise
    "p_noise": 0.6,
}


def list_presets() -> dict[str, str]:
    """Preset names with one-line descriptions.

    >>> list_presets()["none"]
    'no augmentation (val/test and the baseline)'
    """
    return dict(PRESETS)


class RandomGamma(torch.nn.Module):
    """Gamma correction ``x ** g`` with ``g`` log-uniform in ``gamma`` (exposure/detector curve).

    >>> import torch
    >>> t = RandomGamma((2.0, 2.0), p=1.0)
    >>> float(t(torch.full((1, 2, 2), 0.5))[0, 0, 0])
    0.25
    """

    def __init__(self, gamma: tuple[float, float] = (0.8, 1.25), p: float = 0.5):
        super().__init__()
        lo, hi = float(gamma[0]), float(gamma[1])
        if not 0 < lo <= hi:
            raise ValueError(f"gamma range must satisfy 0 < low <= high, got {gamma!r}")
        self.gamma = (lo, hi)
        self.p = float(p)

    def forward(self, x):
        if self.p < 1.0 and float(torch.rand(())) >= self.p:
            return x
        lo, hi = math.log(self.gamma[0]), math.log(self.gamma[1])
        g = math.exp(lo + (hi - lo) * float(torch.rand(())))
        return F.adjust_gamma(x, g)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, p={self.p}"


class Clamp01(torch.nn.Module):
    """Clamp to [0, 1] (keeps every preset's output a valid image)."""

    def forward(self, x):
        return x.clamp(0.0, 1.0)


class ElasticWarp(torch.nn.Module):
    """A smooth random elastic warp with an RMS displacement of ``percent`` % of the side.

    Random displacements on a coarse ``control_points x control_points`` grid are
    upsampled bicubically to the image (the control-point approach of TorchIO's
    ``RandomElasticDeformation``) and applied with ``torchvision``'s ``elastic``
    kernel. Unlike ``v2.ElasticTransform``, whose Gaussian smoothing costs grow with
    the fourth power of the image side and whose ``alpha`` means a different warp at
    28 and at 224 px, the cost is one resampling and the strength is scale-free.

    >>> import torch
    >>> torch.manual_seed(0) is not None
    True
    >>> ElasticWarp(2.0)(torch.rand(1, 28, 28)).shape
    torch.Size([1, 28, 28])
    """

    def __init__(self, percent: float = 1.0, control_points: int = 5):
        super().__init__()
        if percent < 0:
            raise ValueError(f"percent must be >= 0, got {percent}")
        if control_points < 2:
            raise ValueError(f"control_points must be >= 2, got {control_points}")
        self.percent = float(percent)
        self.control_points = int(control_points)

    def forward(self, x):
        h, w = x.shape[-2:]
        coarse = torch.randn(1, 2, self.control_points, self.control_points)
        field = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic",
                                                align_corners=True)
        rms = field.pow(2).mean().sqrt().clamp_min(1e-8)
        # torchvision displacements are in normalised grid units: [-1, 1] spans the side
        field = field / rms * (2.0 * self.percent / 100.0)
        return F.elastic(x, field.permute(0, 2, 3, 1), interpolation=v2.InterpolationMode.BILINEAR,
                         fill=0.0)

    def extra_repr(self) -> str:
        return f"percent={self.percent}, control_points={self.control_points}"


class SiteStyle(torch.nn.Module):
    """Render an image as another acquisition site might: the ``site`` preset.

    Per image, with the ranges of ``style`` (default :data:`SITE_STYLE`): contrast
    around the image mean (log-uniform factor), a brightness offset, gamma
    (log-uniform), then either a Gaussian blur (``p_blur``), an edge enhancement
    (``p_sharpen``) or neither, then Gaussian noise of a uniform sigma (``p_noise``);
    clamped to [0, 1]. No geometry changes: the anatomy stays where it is.

    >>> import torch
    >>> torch.manual_seed(0) is not None
    True
    >>> y = SiteStyle(image_size=32)(torch.rand(1, 32, 32))
    >>> tuple(y.shape), float(y.min()) >= 0.0, float(y.max()) <= 1.0
    ((1, 32, 32), True, True)
    """

    def __init__(self, image_size: int = 28, style: dict | None = None):
        super().__init__()
        self.style = {**SITE_STYLE, **(style or {})}
        self.image_size = int(image_size)

    @staticmethod
    def _log_uniform(lo: float, hi: float) -> float:
        return math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * float(torch.rand(())))

    @staticmethod
    def _uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand(()))

    def forward(self, x):
        st = self.style
        mean = x.mean(dim=(-2, -1), keepdim=True)
        x = mean + self._log_uniform(*st["contrast"]) * (x - mean)
        x = (x + self._uniform(*st["brightness"])).clamp(0.0, 1.0)
        x = x ** self._log_uniform(*st["gamma"])
        u = float(torch.rand(()))
        if u < st["p_blur"]:
            sigma = self._uniform(*st["blur_sigma"]) * self.image_size / 28.0
            k = max(3, 2 * math.ceil(2 * sigma) + 1)
            x = F.gaussian_blur(x, [k, k], [sigma, sigma])
        elif u < st["p_blur"] + st["p_sharpen"]:
            x = F.adjust_sharpness(x.clamp(0.0, 1.0), 1.0 + float(torch.rand(())) * 2.0)
        if float(torch.rand(())) < st["p_noise"]:
            x = x + self._uniform(*st["noise_sigma"]) * torch.randn_like(x)
        return x.clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}"


def elastic(image_size: int, percent: float) -> ElasticWarp:
    """An elastic warp whose RMS displacement is about ``percent`` % of the image side.

    ``image_size`` is accepted for symmetry with the other presets' arguments; the
    warp is defined relative to the side, so it means the same at every size.

    >>> elastic(64, 1.0)
    ElasticWarp(percent=1.0, control_points=5)
    """
    del image_size
    return ElasticWarp(percent)


def get_augment(preset: str = "standard", image_size: int = 64, *, hflip: bool = False):
    """Return the augmentation pipeline for ``preset`` (see :data:`PRESETS`).

    Parameters
    ----------
    preset : ``"none"``, ``"light"``, ``"standard"``, ``"strong"``, ``"over"`` or ``"site"``.
    image_size : side of the (square) images the pipeline will see.
    hflip : add random horizontal flips (off by default: chest anatomy is not
        left-right symmetric; see the module docstring). ``"over"`` always flips.

    >>> get_augment("none", 28)(torch.ones(1, 28, 28)).mean().item()
    1.0
    >>> get_augment("sideways", 28)
    Traceback (most recent call last):
    ...
    ValueError: unknown augmentation preset 'sideways'; choose one of: none, light, standard, strong, over, site
    """
    if preset not in PRESETS:
        raise ValueError(
            f"unknown augmentation preset {preset!r}; choose one of: {', '.join(PRESETS)}"
        )
    image_size = int(image_size)
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    ops: list = []
    if preset == "none":
        ops = [v2.Identity()]
    elif preset == "light":
        ops = [
            v2.RandomAffine(degrees=5, translate=(0.04, 0.04), scale=(0.95, 1.05),
                            interpolation=v2.InterpolationMode.BILINEAR, fill=0),
            v2.ColorJitter(brightness=0.1, contrast=0.1),
        ]
    elif preset == "standard":
        ops = [
            v2.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1),
                            interpolation=v2.InterpolationMode.BILINEAR, fill=0),
            v2.RandomApply([elastic(image_size, 1.0)], p=0.25),
            v2.ColorJitter(brightness=0.2, contrast=0.2),
            RandomGamma((0.8, 1.25), p=0.5),
            v2.RandomApply([v2.GaussianNoise(sigma=0.02)], p=0.3),
        ]
    elif preset == "strong":
        ops = [
            v2.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1), shear=3,
                            interpolation=v2.InterpolationMode.BILINEAR, fill=0),
            v2.RandomApply([elastic(image_size, 2.0)], p=0.5),
            v2.ColorJitter(brightness=0.3, contrast=0.3),
            RandomGamma((0.7, 1.4), p=0.7),
            v2.RandomApply([v2.GaussianBlur(kernel_size=3, sigma=(0.1, 0.8))], p=0.2),
            v2.RandomApply([v2.GaussianNoise(sigma=0.04)], p=0.5),
        ]
    elif preset == "site":
        ops = [SiteStyle(image_size)]
    else:  # "over": the harmful preset, on purpose
        ops = [
            v2.RandomResizedCrop(image_size, scale=(0.2, 1.0), ratio=(0.5, 2.0), antialias=True),
            v2.RandomRotation(180, interpolation=v2.InterpolationMode.BILINEAR, fill=0),
            v2.RandomHorizontalFlip(0.5),
            v2.RandomVerticalFlip(0.5),
            v2.RandomApply([elastic(image_size, 8.0)], p=0.8),
            v2.ColorJitter(brightness=0.6, contrast=0.6),
            RandomGamma((0.4, 2.5), p=0.8),
            v2.RandomInvert(p=0.5),
            v2.RandomApply([v2.GaussianNoise(sigma=0.1)], p=0.7),
        ]
    if hflip and preset not in ("none", "over"):
        ops.insert(0, v2.RandomHorizontalFlip(0.5))
    elif hflip and preset == "none":
        ops = [v2.RandomHorizontalFlip(0.5)]
    ops.append(Clamp01())
    return v2.Compose(ops)
