"""Procedural synthetic chest X-rays: the embedded default dataset of the course.

Nothing is read from disk and nothing is downloaded: every image is drawn from a
seeded random generator with pure NumPy (and SciPy for the blur), in batches,
fast enough to make thousands of 64 x 64 images per second on one core.

Each image shows a posterior-anterior chest radiograph: body outline and soft
tissue, two dark lung fields, the mediastinum and heart shadow, diaphragm domes,
ribs, clavicles and spine, with exposure and noise that vary per image. Positive
images carry one of three findings, each with a graded ``difficulty`` (0 = obvious,
1 = very subtle: smaller, fainter and more often hidden behind the heart, under
the clavicles or near the diaphragm), and a pixel mask of the lesion:

=============  ==================================  ====================
subtype        finding                             4-class label
=============  ==================================  ====================
``normal``     none                                ``Normal``
``bacterial``  focal lobar consolidation           ``Lung_Opacity``
``viral``      diffuse interstitial (reticular)    ``Viral Pneumonia``
``covid``      bilateral peripheral ground glass   ``COVID``
=============  ==================================  ====================

Acquisition *sites* (:data:`SITE_NAMES`, :func:`describe_sites`) differ in
contrast, gamma, noise, blur and burned-in markers, for distribution-shift
lessons; an optional *shortcut* tag, correlated with the label at one site,
serves the shortcut-learning lesson. Several images per patient (sharing the
patient's anatomy and lesion) serve the leakage lesson.

Example
-------
>>> ds = generate(8, seed=1)
>>> ds.images.shape, ds.images.dtype.name, ds.class_names
((8, 64, 64), 'uint8', ('normal', 'pneumonia'))
>>> sorted(ds.meta["subtype"][ds.labels == 0]) == ["normal"] * int((ds.labels == 0).sum())
True
>>> splits = synthetic_splits(20, 10, 10, seed=0, image_size=32)
>>> {k: len(v) for k, v in splits.items()}
{'train': 20, 'val': 10, 'test': 10}
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fnlab.data.imageset import BINARY_CLASSES, FOUR_CLASSES, ImageSet

__all__ = [
    "SyntheticConfig",
    "SitePreset",
    "SITE_PRESETS",
    "SITE_NAMES",
    "SUBTYPES",
    "SUBTYPE_TO_4CLASS",
    "MIN_SIZE",
    "MAX_SIZE",
    "generate",
    "synthetic_splits",
    "describe_sites",
]

MIN_SIZE = 28
MAX_SIZE = 256
MODES = ("binary", "4class")
#: Finding subtypes, in the order of the 4-class labels.
SUBTYPES = ("normal", "bacterial", "viral", "covid")
#: subtype -> index into :data:`fnlab.data.imageset.FOUR_CLASSES`.
SUBTYPE_TO_4CLASS = {"normal": 0, "bacterial": 1, "viral": 2, "covid": 3}

_BATCH = 128  # images rendered per vectorised batch
_TEX_BANK = 8  # textures per bank (crops of them at random offsets give the variety)


@dataclass(frozen=True)
class SitePreset:
    """How one acquisition site renders its images (values at ``site_shift=1``).

    ``contrast`` multiplies the display gain, ``brightness`` shifts the window,
    ``gamma`` is the display gamma, ``noise`` the noise standard deviation (on a
    0..1 scale), ``blur`` the Gaussian blur sigma in pixels at 64 px, and
    ``marker`` the burned-in marker the site stamps on every image.
    """

    name: str
    description: str
    contrast: float
    brightness: float
    gamma: float
    noise: float
    blur: float
    marker: str  # "L-top-right", "L-top-left+block", "block-top-right", "L-bottom-right"


#: The acquisition sites; site 0 is the reference the others shift away from.
SITE_PRESETS: tuple[SitePreset, ...] = (
    SitePreset("A-reference", "fixed digital radiography room, PA view; 'L' marker top right",
               contrast=1.00, brightness=0.00, gamma=1.00, noise=0.025, blur=0.5,
               marker="L-top-right"),
    SitePreset("B-portable", "bedside portable unit: flat, hazy, noisy and blurred; 'L' top "
               "left and a bright label block bottom left",
               contrast=0.72, brightness=0.10, gamma=0.80, noise=0.060, blur=1.1,
               marker="L-top-left+block"),
    SitePreset("C-legacy-CR", "older computed radiography: high contrast, dark, strong gamma; "
               "bright corner block top right",
               contrast=1.30, brightness=-0.08, gamma=1.45, noise=0.035, blur=0.8,
               marker="block-top-right"),
    SitePreset("D-modern-DR", "modern detector: sharp, low noise, slightly bright; 'L' marker "
               "bottom right",
               contrast=1.12, brightness=0.05, gamma=0.90, noise=0.012, blur=0.2,
               marker="L-bottom-right"),
)
#: Names of the acquisition sites, indexed by the ``site`` meta value.
SITE_NAMES: tuple[str, ...] = tuple(p.name for p in SITE_PRESETS)


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic chest X-ray generator.

    Attributes
    ----------
    image_size : side of the square images, ``MIN_SIZE`` (28) to ``MAX_SIZE`` (256).
    prevalence : share of positive (pneumonia) patients, in [0, 1].
    mode : ``"binary"`` (normal / pneumonia) or ``"4class"``
        (Normal, Lung_Opacity, Viral Pneumonia, COVID).
    images_per_patient : images drawn per patient (same anatomy and lesion,
        small changes in position, exposure and lesion size between them).
    sites : the acquisition sites in use: a number ``k`` (sites ``0..k-1``) or a
        tuple of site indices into :data:`SITE_PRESETS`.
    site_weights : relative share of patients per site (None = equal).
    site_shift : how far the sites differ from the reference site 0
        (0 = identical apart from markers, 1 = the presets, 2 = twice as far).
    markers : stamp each site's burned-in marker.
    shortcut_site : the site whose images carry a label-correlated bright tag
        (None = no shortcut anywhere).
    shortcut_strength : P(tag | positive) at the shortcut site.
    shortcut_negative_rate : P(tag | negative) at the shortcut site.
    subtype_weights : relative share of (bacterial, viral, covid) among positives.
    difficulty : (low, high) range from which each positive patient's
        difficulty is drawn uniformly; higher is subtler.
    lesion_contrast : global multiplier of lesion density (1 = calibrated default).
    noise : global multiplier of the sites' noise.

    >>> SyntheticConfig(image_size=32, sites=2).site_ids
    (0, 1)
    >>> SyntheticConfig(mode="3class").validate()
    Traceback (most recent call last):
    ...
    ValueError: SyntheticConfig: unknown mode '3class'; choose one of: binary, 4class
    """

    image_size: int = 64
    prevalence: float = 0.5
    mode: str = "binary"
    images_per_patient: int = 1
    sites: int | tuple[int, ...] = (0,)
    site_weights: tuple[float, ...] | None = None
    site_shift: float = 1.0
    markers: bool = True
    shortcut_site: int | None = None
    shortcut_strength: float = 0.9
    shortcut_negative_rate: float = 0.05
    subtype_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    difficulty: tuple[float, float] = (0.0, 1.0)
    lesion_contrast: float = 1.0
    noise: float = 1.0

    @property
    def site_ids(self) -> tuple[int, ...]:
        """The site indices in use, as a tuple."""
        if isinstance(self.sites, (int, np.integer)) and not isinstance(self.sites, bool):
            return tuple(range(int(self.sites)))
        return tuple(int(s) for s in self.sites)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names of the chosen mode."""
        return FOUR_CLASSES if self.mode == "4class" else BINARY_CLASSES

    def validate(self) -> SyntheticConfig:
        """Raise a ValueError naming the bad setting; return self when all is well."""
        def bad(msg: str) -> ValueError:
            return ValueError(f"SyntheticConfig: {msg}")

        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise bad(f"image_size must be an integer from {MIN_SIZE} to {MAX_SIZE}, "
                      f"got {size!r}")
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise bad(f"image_size {size} is outside the supported range "
                      f"{MIN_SIZE}..{MAX_SIZE} px")
        if not _is_real(self.prevalence) or not 0.0 <= self.prevalence <= 1.0:
            raise bad(f"prevalence must be in [0, 1], got {self.prevalence!r}")
        if self.mode not in MODES:
            raise bad(f"unknown mode {self.mode!r}; choose one of: {', '.join(MODES)}")
        ipp = self.images_per_patient
        if isinstance(ipp, bool) or not isinstance(ipp, (int, np.integer)) or ipp < 1:
            raise bad(f"images_per_patient must be an integer >= 1, got {ipp!r}")
        try:
            ids = self.site_ids
        except (TypeError, ValueError):
            raise bad(f"sites must be a count or a tuple of site indices, got "
                      f"{self.sites!r}") from None
        if not ids:
            raise bad("sites is empty; use a count >= 1 or a tuple of site indices")
        valid = f"0..{len(SITE_PRESETS) - 1} ({', '.join(SITE_NAMES)})"
        for s in ids:
            if not 0 <= s < len(SITE_PRESETS):
                raise bad(f"unknown site {s}; valid sites are {valid}")
        if len(set(ids)) != len(ids):
            raise bad(f"sites {ids} lists a site twice")
        if self.site_weights is not None:
            w = np.asarray(self.site_weights, float)
            if w.shape != (len(ids),) or (w < 0).any() or w.sum() <= 0:
                raise bad(f"site_weights {self.site_weights!r} must be {len(ids)} "
                          f"non-negative numbers with a positive sum (one per site {ids})")
        if not _is_real(self.site_shift) or self.site_shift < 0:
            raise bad(f"site_shift must be >= 0, got {self.site_shift!r}")
        if self.shortcut_site is not None and self.shortcut_site not in ids:
            raise bad(f"shortcut_site {self.shortcut_site!r} is not one of the sites "
                      f"in use {ids}")
        for name in ("shortcut_strength", "shortcut_negative_rate"):
            v = getattr(self, name)
            if not _is_real(v) or not 0.0 <= v <= 1.0:
                raise bad(f"{name} must be a probability in [0, 1], got {v!r}")
        w = np.asarray(self.subtype_weights, float)
        if w.shape != (3,) or (w < 0).any() or w.sum() <= 0:
            raise bad(f"subtype_weights {self.subtype_weights!r} must be 3 non-negative "
                      "numbers (bacterial, viral, covid) with a positive sum")
        lo_hi = tuple(self.difficulty)
        if len(lo_hi) != 2 or not all(_is_real(v) for v in lo_hi) or not (
            0.0 <= lo_hi[0] <= lo_hi[1] <= 1.0
        ):
            raise bad(f"difficulty must be (low, high) with 0 <= low <= high <= 1, "
                      f"got {self.difficulty!r}")
        for name in ("lesion_contrast", "noise"):
            v = getattr(self, name)
            if not _is_real(v) or v < 0:
                raise bad(f"{name} must be >= 0, got {v!r}")
        return self


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and math.isfinite(float(v))


def describe_sites(config: SyntheticConfig | None = None) -> list[dict]:
    """One dict per acquisition site with its rendering parameters.

    With a ``config`` only the sites it uses are listed, with the parameters
    scaled by its ``site_shift`` and a ``shortcut`` flag. ``pd.DataFrame(...)``
    of the result makes a tidy table for a notebook.

    >>> [d["name"] for d in describe_sites()][:2]
    ['A-reference', 'B-portable']
    >>> describe_sites(SyntheticConfig(sites=(1,), site_shift=0))[0]["contrast"]
    1.0
    """
    cfg = (config or SyntheticConfig(sites=len(SITE_PRESETS))).validate()
    rows = []
    for s in cfg.site_ids:
        p = _site_params(s, cfg.site_shift)
        rows.append({
            "site": s,
            "name": SITE_PRESETS[s].name,
            "description": SITE_PRESETS[s].description,
            "contrast": round(p["contrast"], 3),
            "brightness": round(p["brightness"], 3),
            "gamma": round(p["gamma"], 3),
            "noise": round(p["noise"] * cfg.noise, 4),
            "blur": round(p["blur"], 3),
            "marker": SITE_PRESETS[s].marker if cfg.markers else "none",
            "shortcut": cfg.shortcut_site == s,
        })
    return rows


def _site_params(site: int, shift: float) -> dict[str, float]:
    ref, p = SITE_PRESETS[0], SITE_PRESETS[site]
    out = {}
    for k in ("contrast", "brightness", "gamma", "noise", "blur"):
        a, b = getattr(ref, k), getattr(p, k)
        out[k] = a + shift * (b - a)
    out["contrast"] = max(out["contrast"], 0.2)
    out["gamma"] = max(out["gamma"], 0.2)
    out["noise"] = max(out["noise"], 0.0)
    out["blur"] = max(out["blur"], 0.0)
    return out


def _make_config(config: SyntheticConfig | None, overrides: dict) -> SyntheticConfig:
    cfg = config if config is not None else SyntheticConfig()
    if not isinstance(cfg, SyntheticConfig):
        raise TypeError(f"config must be a SyntheticConfig, got {type(cfg).__name__}")
    if overrides:
        fields = {f.name for f in dataclasses.fields(SyntheticConfig)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown synthetic setting(s) {', '.join(unknown)}; valid "
                             f"settings: {', '.join(sorted(fields))}")
        cfg = dataclasses.replace(cfg, **overrides)
    return cfg.validate()


# --------------------------------------------------------------------------- sampling


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total`` in proportion to ``weights``."""
    w = np.asarray(weights, float) / np.sum(weights)
    raw = w * total
    counts = np.floor(raw).astype(int)
    rest = total - counts.sum()
    if rest:
        counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
    return counts


def _sample(n: int, cfg: SyntheticConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw every per-image parameter (patient-level values shared by its images)."""
    k = int(cfg.images_per_patient)
    n_pat = -(-n // k)
    pat_of_img = np.repeat(np.arange(n_pat), k)[:n]

    # --- patient-level: label, subtype, site, difficulty
    n_pos = int(round(cfg.prevalence * n_pat))
    pos = np.zeros(n_pat, bool)
    pos[rng.permutation(n_pat)[:n_pos]] = True
    counts = _largest_remainder(n_pos, np.asarray(cfg.subtype_weights, float))
    sub_pos = rng.permutation(np.repeat(np.arange(1, 4), counts))
    subtype = np.zeros(n_pat, np.int64)
    subtype[pos] = sub_pos
    site_ids = np.asarray(cfg.site_ids)
    sw = None if cfg.site_weights is None else np.asarray(cfg.site_weights, float)
    site = site_ids[rng.choice(len(site_ids), size=n_pat, p=None if sw is None else sw / sw.sum())]
    lo, hi = cfg.difficulty
    diff = np.where(pos, rng.uniform(lo, hi, n_pat), 0.0)

    u = rng.uniform
    P: dict[str, np.ndarray] = {}

    def pat(name: str, low: float, high: float) -> None:
        P[name] = u(low, high, n_pat)

    # --- patient anatomy
    pat("sx", 0.93, 1.06)
    pat("sy", 0.94, 1.06)
    pat("ox", -0.04, 0.04)
    pat("oy", -0.05, 0.04)
    pat("body_w", 0.86, 0.97)
    pat("soft", 0.52, 0.66)
    pat("lung_cx", 0.33, 0.38)
    pat("lung_w", 0.24, 0.29)
    pat("lung_top", -0.74, -0.64)
    pat("dia", 0.34, 0.46)
    pat("dia_dl", 0.02, 0.08)  # left dome lower than right
    pat("dome", 0.10, 0.18)
    pat("heart_x", 0.11, 0.17)
    pat("heart_y", 0.18, 0.26)
    pat("heart_ax", 0.27, 0.34)
    pat("heart_ay", 0.24, 0.30)
    pat("med_w", 0.10, 0.13)
    pat("rib_sp", 0.13, 0.155)
    pat("rib_ph", 0.0, 1.0)
    pat("rib_curv", 1.3, 1.8)
    pat("clav_y", -0.66, -0.56)
    pat("clav_slope", -0.30, -0.15)
    pat("mark", 0.6, 1.2)  # strength of vascular markings

    # --- patient lesion (only used by positives)
    side = np.where(u(0, 1, n_pat) < 0.55, -1.0, 1.0)  # -1 = image left = patient's right
    hard = u(0, 1, n_pat) < 0.1 + 0.7 * diff
    zone = rng.integers(0, 4, n_pat)
    lx = side * u(0.30, 0.46, n_pat)
    ly = u(-0.30, 0.22, n_pat)
    # hard zones: 0 retrocardiac (patient's left lower, behind the heart), 1 apex under
    # the clavicle, 2 costophrenic angle near the dome, 3 perihilar (medial)
    z_x = np.select([zone == 0, zone == 1, zone == 2],
                    [np.full(n_pat, 0.22), side * u(0.28, 0.40, n_pat), side * u(0.45, 0.55, n_pat)],
                    side * u(0.16, 0.22, n_pat))
    z_y = np.select([zone == 0, zone == 1, zone == 2],
                    [u(0.22, 0.34, n_pat), u(-0.64, -0.52, n_pat), u(0.34, 0.44, n_pat)],
                    u(-0.12, 0.05, n_pat))
    P["les_x"] = np.where(hard, z_x, lx)
    P["les_y"] = np.where(hard, z_y, ly)
    r = (0.27 - 0.13 * diff**2) * u(0.85, 1.15, n_pat)
    P["les_rx"] = r * u(0.8, 1.15, n_pat)
    P["les_ry"] = r * u(0.9, 1.35, n_pat)
    # density at difficulty 0 (consolidation ~ airless lung), falling with difficulty:
    # most positives stay clear (density above 80% up to difficulty 0.6), the top of the
    # range fades to a sixth: a subtle tail that holds most of the misses
    base_c = np.select([subtype == 1, subtype == 2], [0.34, 0.32], 0.42)
    strength = 1.0 - 0.85 * diff**3
    P["les_c"] = base_c * strength * u(0.9, 1.1, n_pat) * cfg.lesion_contrast
    P["fissure"] = np.where(u(0, 1, n_pat) < 0.5, 0.0, np.where(u(0, 1, n_pat) < 0.5, -1.0, 1.0))
    P["fis_y"] = P["les_y"] + u(-0.05, 0.05, n_pat)
    P["spread_y"] = u(0.0, 0.25, n_pat)  # viral/covid vertical centre
    P["spread_r"] = (0.42 - 0.16 * diff) * u(0.85, 1.15, n_pat)
    P["w_r"] = u(0.55, 1.0, n_pat)
    P["w_l"] = u(0.55, 1.0, n_pat)
    one_side = hard & (u(0, 1, n_pat) < 0.5)
    P["w_r"] = np.where(one_side & (side > 0), 0.2 * P["w_r"], P["w_r"])
    P["w_l"] = np.where(one_side & (side < 0), 0.2 * P["w_l"], P["w_l"])

    # --- expand to images, then per-image jitter
    out = {name: v[pat_of_img].astype(np.float32) for name, v in P.items()}

    def jit(name: str, amount: float, mult: bool = False) -> None:
        j = u(-amount, amount, n).astype(np.float32)
        out[name] = out[name] * (1 + j) if mult else out[name] + j

    if k > 1:
        for name, a in (("ox", 0.02), ("oy", 0.02), ("les_x", 0.025), ("les_y", 0.025),
                        ("rib_ph", 0.05)):
            jit(name, a)
        for name, a in (("sx", 0.015), ("sy", 0.015), ("les_rx", 0.1), ("les_ry", 0.1),
                        ("les_c", 0.15), ("spread_r", 0.1)):
            jit(name, a, mult=True)
    out["exp_c"] = u(-0.035, 0.035, n).astype(np.float32)  # exposure: window centre
    out["exp_g"] = u(0.90, 1.10, n).astype(np.float32)  # exposure: window gain
    out["noise_j"] = u(0.75, 1.25, n).astype(np.float32)
    out["tex_k"] = rng.integers(0, _TEX_BANK, n)
    out["tex_oy"] = u(0, 1, n).astype(np.float32)
    out["tex_ox"] = u(0, 1, n).astype(np.float32)
    out["ctex_k"] = rng.integers(0, _TEX_BANK, n)
    out["ctex_oy"] = u(0, 1, n).astype(np.float32)
    out["ctex_ox"] = u(0, 1, n).astype(np.float32)
    out["mk_dx"] = u(0, 1, n).astype(np.float32)
    out["mk_dy"] = u(0, 1, n).astype(np.float32)
    out["tag_dx"] = u(0, 1, n).astype(np.float32)
    out["tag_dy"] = u(0, 1, n).astype(np.float32)

    img_pos = pos[pat_of_img]
    img_site = site[pat_of_img]
    tag = np.zeros(n, bool)
    if cfg.shortcut_site is not None:
        at = img_site == cfg.shortcut_site
        p_tag = np.where(img_pos, cfg.shortcut_strength, cfg.shortcut_negative_rate)
        tag = at & (u(0, 1, n) < p_tag)
    else:
        u(0, 1, n)  # keep the stream aligned whether or not a shortcut is used

    out["patient"] = pat_of_img
    out["positive"] = img_pos
    out["subtype"] = subtype[pat_of_img]
    out["site"] = img_site.astype(np.int64)
    out["difficulty"] = diff[pat_of_img]
    out["tag"] = tag
    return out


# --------------------------------------------------------------------------- rendering


@lru_cache(maxsize=8)
def _grid(r: int) -> np.ndarray:
    return ((np.arange(r, dtype=np.float32) + 0.5) / r * 2.0 - 1.0).astype(np.float32)


@lru_cache(maxsize=8)
def _texture_bank(r: int, kind: str) -> np.ndarray:
    """Fixed band-pass noise textures of side ``2r`` (unit std), for crops of side ``r``.

    ``fine``: reticular texture (~1/14 of the image); ``coarse``: patchy blobs.
    """
    rng = np.random.default_rng(20240917 if kind == "fine" else 20240918)
    side = 2 * r
    f = np.fft.fftfreq(side)[:, None] * side / 2  # cycles per image of side r
    g = np.fft.rfftfreq(side)[None, :] * side / 2
    rad = np.sqrt(f**2 + g**2)
    if kind == "fine":
        filt = np.exp(-0.5 * ((rad - 13.0) / 4.0) ** 2)
    else:
        filt = np.exp(-0.5 * (rad / 3.5) ** 2) * (rad > 0.5)
    noise = rng.standard_normal((_TEX_BANK, side, side))
    tex = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=(side, side))
    tex /= tex.std(axis=(1, 2), keepdims=True)
    return tex.astype(np.float32)


def _crops(bank: np.ndarray, k: np.ndarray, fy: np.ndarray, fx: np.ndarray, r: int) -> np.ndarray:
    oy = (fy * r).astype(np.intp)
    ox = (fx * r).astype(np.intp)
    return np.stack([bank[kk, y:y + r, x:x + r] for kk, y, x in zip(k, oy, ox)])


def _c(a: np.ndarray) -> np.ndarray:
    """Per-image parameter as a broadcastable (B, 1, 1) float32 column."""
    return a.astype(np.float32, copy=False).reshape(-1, 1, 1)


def _ramp(a: np.ndarray, k: float) -> np.ndarray:
    """Soft step 0 -> 1 around ``a = 0`` with slope ``k`` (in place on ``a``)."""
    a *= k
    a += 0.5
    np.clip(a, 0.0, 1.0, out=a)
    return a


def _lung_side(xs: np.ndarray, ys: np.ndarray, p: dict[str, np.ndarray],
               sgn: float) -> tuple[np.ndarray, np.ndarray]:
    """Lateral coordinate ``u`` (0 at the lung's centre line, +-1 at its edges;
    positive towards the chest wall) and the diaphragm cut of one lung."""
    cx = sgn * _c(p["lung_cx"])
    w = _c(p["lung_w"]) * (0.96 if sgn > 0 else 1.0)
    wf = np.sqrt(np.clip((ys - _c(p["lung_top"])) / 0.5, 0.0, 1.0)) * (1.0 + 0.08 * ys)
    inv_w = (sgn / np.maximum(w * wf, 1e-3)).astype(np.float32)  # (B,H,1): rounded apex
    dx = xs - cx
    u = dx * inv_w
    dia = _c(p["dia"]) + (_c(p["dia_dl"]) if sgn > 0 else 0.0)
    yd = dia + _c(p["dome"]) * (dx / w) ** 2  # (B,1,W): dome, lowest at the sides
    return u, _ramp(yd - ys, 18.0)


def _span(flags: np.ndarray) -> tuple[int, int]:
    """First and one-past-last index where ``flags`` is True (a row/column window)."""
    return int(np.argmax(flags)), len(flags) - int(np.argmax(flags[::-1]))


def _render_batch(p: dict[str, np.ndarray], r: int) -> tuple[np.ndarray, np.ndarray]:
    """Attenuation map ``A`` (B, r, r) and lesion extent (B, r, r, 0..1) for one batch.

    ``p`` holds the batch's per-image parameters, sorted by ``subtype``.
    """
    g = _grid(r)
    xs = (g[None, None, :] - _c(p["ox"])) / _c(p["sx"])  # (B, 1, W)
    ys = (g[None, :, None] - _c(p["oy"])) / _c(p["sy"])  # (B, H, 1)
    xa = np.abs(xs)

    # body: a boxy superellipse with sloping shoulders and a thick centre
    bw = _c(p["body_w"])
    bx = (xs / bw) ** 4
    by = ((ys - 0.12) / 1.15) ** 4
    body = _ramp(1.0 - bx - by, 5.0)
    shoulder = 0.55 * np.clip(xa - 0.16, 0.0, None) - 1.02  # (B,1,W)
    body *= _ramp(ys - shoulder, 14.0)
    body *= _c(p["soft"]) * (0.45 + 0.55 * np.clip(1.0 - (xs / bw) ** 2, 0.0, 1.0))
    A = body

    # lungs: rounded apex, dome-shaped base; patient's right (image left) dome higher
    # each lung is drawn on its own half of the columns (with a margin for the offsets)
    lung = np.zeros_like(A)
    for sgn, cols in ((-1.0, g < 0.12), (1.0, g > -0.12)):
        c0, c1 = _span(cols)
        u, field = _lung_side(xs[..., c0:c1], ys, p, sgn)
        field *= _ramp(1.0 - u * u, 3.0)
        lung[..., c0:c1] += field
    lung_raw = lung.copy() if (p["subtype"] > 0).any() else None

    # heart (drawn on the rows it can reach) and mediastinum, occluding the medial lungs
    mw = _c(p["med_w"]) * (0.8 + 0.45 * np.clip((ys + 0.35) * 1.6, 0.0, 1.0))  # (B,H,1)
    occl = _ramp(mw - xa, 18.0)
    h0, h1 = _span(g > -0.30)
    hx = ((xs - _c(p["heart_x"])) / _c(p["heart_ax"])) ** 2
    hy = ((ys[:, h0:h1] - _c(p["heart_y"])) / _c(p["heart_ay"])) ** 2
    heart = _ramp(1.0 - hx - hy, 3.0)
    np.maximum(occl[:, h0:h1], heart, out=occl[:, h0:h1])
    t = occl * np.float32(-0.8)
    t += 1.0
    lung *= t
    np.multiply(lung, np.float32(0.32), out=t)
    A -= t
    np.multiply(occl, np.float32(0.10), out=t)
    A += t

    # vascular markings: fine texture strongest at the hila
    tex = _crops(_texture_bank(r, "fine"), p["tex_k"], p["tex_oy"], p["tex_ox"], r)
    hil = np.exp(-(((xa - 0.2) / 0.22) ** 2)) * np.exp(-(((ys + 0.02) / 0.35) ** 2))
    A += (0.035 * _c(p["mark"]) * tex + 0.07) * hil * lung

    # trachea (air column) and spine, on the central columns
    c0, c1 = _span(np.abs(g) < 0.16)
    xc = xa[..., c0:c1]
    A[..., c0:c1] -= 0.10 * np.clip((0.035 - xc) * 40.0, 0.0, 1.0) \
        * np.clip((-0.3 - ys) * 8.0, 0.0, 1.0)
    A[..., c0:c1] += 0.06 * np.clip((0.06 - xc) * 30.0, 0.0, 1.0) \
        * (0.75 + 0.25 * np.cos(ys * 28.0))

    # posterior ribs: arcs rising from the spine and falling laterally
    sp = _c(p["rib_sp"])
    phase = (ys + 0.08 * ys * ys) / sp + _c(p["rib_ph"]) - _c(p["rib_curv"]) * (xa - 0.16) ** 2 / sp
    ribs = np.floor(phase)
    phase -= ribs  # triangle wave |frac - 1/2|: ribs where it is high
    phase -= 0.5
    np.abs(phase, out=phase)
    phase *= 7.0  # ramp((|frac - 1/2| - 0.36), slope 7)
    phase -= 7.0 * 0.36 - 0.5
    np.clip(phase, 0.0, 1.0, out=phase)
    phase *= 0.08 * np.clip((0.80 - xa) * 10.0, 0.0, 1.0) * np.clip((xa - 0.04) * 20.0, 0.0, 1.0)
    phase *= np.clip((ys + 0.85) * 8.0, 0.0, 1.0) * np.clip((0.62 - ys) * 6.0, 0.0, 1.0)
    np.multiply(lung, np.float32(0.65), out=ribs)  # ribs show best over the dark lungs
    ribs += 0.35
    ribs *= phase
    A += ribs

    # clavicles, on the top rows
    r1 = _span(g < -0.30)[1]
    yc = _c(p["clav_y"]) + _c(p["clav_slope"]) * (xa - 0.1) + 0.6 * (xa - 0.32) ** 2
    clav = _ramp(0.04 - np.abs(ys[:, :r1] - yc), 30.0)
    clav *= 0.12 * np.clip((xa - 0.05) * 25.0, 0.0, 1.0) * np.clip((0.62 - xa) * 12.0, 0.0, 1.0)
    A[:, :r1] += clav

    # findings (only the rows that have one)
    ext = np.zeros_like(A)  # lesion extent, 0..1; the mask is ext > 0.3
    sub = p["subtype"]
    if (sub > 0).any():
        # the batch comes sorted by subtype, so each finding's rows form one slice
        bounds = np.searchsorted(sub, [1, 2, 3, 4])
        n0 = int(bounds[0])
        ctex_all = _crops(_texture_bank(r, "coarse"), p["ctex_k"][n0:], p["ctex_oy"][n0:],
                          p["ctex_ox"][n0:], r)
        for kind in (1, 2, 3):
            a, b = int(bounds[kind - 1]), int(bounds[kind])
            if a == b:
                continue
            idx = slice(a, b)
            q = {k2: v[idx] for k2, v in p.items()}
            xsi, ysi, xai = xs[idx], ys[idx], xa[idx]
            lf = lung_raw[idx]
            lf *= 1.0 - 0.5 * occl[idx]
            ct = ctex_all[a - n0:b - n0]
            if kind == 1:  # lobar consolidation: dense, irregular, maybe cut by a fissure
                ex = np.exp(-(((xsi - _c(q["les_x"])) / _c(q["les_rx"])) ** 2))
                ey = np.exp(-(((ysi - _c(q["les_y"])) / _c(q["les_ry"])) ** 2))
                d = ex * ey + 0.22 * ct
                d = _ramp(d - 0.45, 3.5)
                fis = _c(q["fissure"])
                cut = np.clip(0.5 + (ysi - _c(q["fis_y"])) * fis * 30.0, 0.0, 1.0)
                d *= np.where(fis == 0, 1.0, cut)
                d *= lf
                e = d
            elif kind == 2:  # interstitial: bilateral perihilar/lower reticular pattern
                env = np.exp(-(((xai - 0.34) / 0.22) ** 2)) * np.exp(
                    -(((ysi - _c(q["spread_y"])) / _c(q["spread_r"])) ** 2))
                side_w = np.where(xsi < 0, _c(q["w_r"]), _c(q["w_l"]))
                env = env * side_w * lf
                fine = tex[idx]
                d = env * (0.45 + 0.55 * np.clip(fine * 0.7 + 0.3 + 0.3 * ct, 0.0, 1.6))
                e = env
            else:  # COVID-like: bilateral peripheral lower-zone ground glass, patchy
                periph = None
                for sgn in (-1.0, 1.0):
                    ul, _ = _lung_side(xsi, ysi, q, sgn)
                    ul = np.clip(ul * 2.0, 0.0, 1.0) * (xsi * sgn > 0)
                    periph = ul if periph is None else periph + ul
                ey = np.exp(-(((ysi - _c(q["spread_y"]) - 0.05) / _c(q["spread_r"])) ** 2))
                side_w = np.where(xsi < 0, _c(q["w_r"]), _c(q["w_l"]))
                patch = np.clip(ct * 0.8 + 0.75, 0.0, 1.0)
                d = periph * ey * side_w * patch * lf
                e = d
            ext[idx] = e
            A[idx] += d * _c(q["les_c"])
    return A, ext


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.15:
        return a
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(a, sigma=(0.0, sigma, sigma), truncate=2.5, mode="nearest")


def _stamp(img: np.ndarray, y: int, x: int, h: int, w: int, value: float) -> None:
    s = img.shape[-1]
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + h, s), min(x + w, s)
    if y1 > y0 and x1 > x0:
        img[y0:y1, x0:x1] = value


def _draw_marker(img: np.ndarray, kind: str, s: int, jx: float, jy: float) -> None:
    """Burn a site marker into one image (values on the 0..1 display scale)."""
    g = max(4, round(s * 0.11))  # glyph height
    t = max(1, round(g / 4))  # stroke
    m = max(1, round(s * 0.03)) + int(jx * max(1, round(s * 0.03)))
    my = max(1, round(s * 0.03)) + int(jy * max(1, round(s * 0.03)))

    def letter_l(y: int, x: int) -> None:
        _stamp(img, y, x, g, t, 0.97)
        _stamp(img, y + g - t, x, t, max(t + 1, round(g * 0.7)), 0.97)

    if kind.startswith("L-top-right"):
        letter_l(my, s - m - round(g * 0.7))
    elif kind.startswith("L-top-left"):
        letter_l(my, m)
        bh, bw = max(2, round(s * 0.06)), max(4, round(s * 0.22))
        _stamp(img, s - my - bh, m, bh, bw, 0.92)
    elif kind.startswith("block-top-right"):
        b = max(3, round(s * 0.09))
        _stamp(img, my, s - m - b, b, b, 0.99)
    elif kind.startswith("L-bottom-right"):
        letter_l(s - my - g, s - m - round(g * 0.7))


def _draw_tag(img: np.ndarray, s: int, jx: float, jy: float) -> None:
    """The shortcut artefact: a small bright square high on the patient's right side."""
    b = max(2, round(s * 0.06))
    y = round(s * 0.20) + int(jy * max(1, round(s * 0.04)))
    x = round(s * 0.05) + int(jx * max(1, round(s * 0.04)))
    _stamp(img, y, x, b, b, 1.0)


@lru_cache(maxsize=32)
def _lut(gamma: float) -> np.ndarray:
    v = np.linspace(0.0, 1.0, 1024) ** gamma
    return np.round(v * 255.0).astype(np.uint8)


def _finish(A: np.ndarray, ext: np.ndarray, p: dict[str, np.ndarray], s: int, r: int,
            cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Site blur, exposure window, down-sampling, noise, markers and display gamma."""
    site = p["site"]
    sites = np.unique(site)
    sp = {int(k): _site_params(int(k), cfg.site_shift) for k in sites}
    scale = r / 64.0
    if len(sites) == 1:
        A = _blur(A, sp[int(sites[0])]["blur"] * scale)
    else:
        for k in sites:
            sel = site == k
            A[sel] = _blur(A[sel], sp[int(k)]["blur"] * scale)
    contrast = np.array([sp[int(k)]["contrast"] for k in site], np.float32)
    bright = np.array([sp[int(k)]["brightness"] for k in site], np.float32)
    noise = np.array([sp[int(k)]["noise"] for k in site], np.float32) * np.float32(cfg.noise)
    gain = _c(1.3 * contrast * p["exp_g"])
    A -= _c(0.37 - bright + p["exp_c"])
    A *= gain
    A += 0.5
    mask = ext > 0.3
    if r != s:  # 2 x 2 block average (anti-aliasing for the small sizes)
        B = len(A)
        A = A.reshape(B, s, 2, s, 2).mean(axis=(2, 4))
        ext = ext.reshape(B, s, 2, s, 2).mean(axis=(2, 4))
        mask = mask.reshape(B, s, 2, s, 2).mean(axis=(2, 4)) >= 0.5
    # near-Gaussian noise (sum of two uniform bytes, triangular) at a fraction of the cost
    raw = rng.integers(0, 256, (2, *A.shape), dtype=np.uint8)
    nz = raw[0].astype(np.float32)
    nz += raw[1]
    nz -= 255.0
    nz *= _c(noise * p["noise_j"] / 104.4)
    nz *= 0.6 + 0.4 * np.clip(A, 0.0, 1.0)  # quantum-like: noisier where brighter
    A += nz
    for i in range(len(A)):
        if cfg.markers:
            _draw_marker(A[i], SITE_PRESETS[int(site[i])].marker, s,
                         float(p["mk_dx"][i]), float(p["mk_dy"][i]))
        if p["tag"][i]:
            _draw_tag(A[i], s, float(p["tag_dx"][i]), float(p["tag_dy"][i]))
    # positives whose mask vanished at this size keep at least their densest pixel
    pos = p["subtype"] > 0
    empty = pos & ~mask.reshape(len(A), -1).any(axis=1)
    for i in np.flatnonzero(empty):
        mask[i].flat[int(np.argmax(ext[i]))] = True
    q = np.clip(A, 0.0, 1.0)
    q *= 1023.0
    q += 0.5
    qi = q.astype(np.int16)
    out = np.empty(A.shape, np.uint8)
    for k in sites:
        lut = _lut(round(sp[int(k)]["gamma"], 4))
        if len(sites) == 1:
            np.take(lut, qi, out=out)
        else:
            sel = site == k
            out[sel] = lut[qi[sel]]
    return out, mask


# --------------------------------------------------------------------------- public API


def generate(n: int, config: SyntheticConfig | None = None, seed: int = 0,
             split: str = "train", **overrides: Any) -> ImageSet:
    """Draw ``n`` synthetic chest X-rays as an :class:`~fnlab.data.imageset.ImageSet`.

    Settings come from ``config`` (a :class:`SyntheticConfig`) with keyword
    ``overrides`` on top (``generate(100, image_size=32, prevalence=0.2)``). The
    same ``seed`` gives identical arrays. Patient ids look like
    ``syn-<split>-000123``; ``meta`` holds per-image ``site`` (int), ``subtype``
    (str), ``difficulty`` (float, 0 for normals, higher = subtler), ``shortcut``
    (bool), ``lesion_area`` (share of pixels in the mask), plus the settings
    (``meta["config"]``) and ``meta["seed"]``.

    >>> ds = generate(6, seed=3, image_size=28, mode="4class", prevalence=1.0)
    >>> ds.class_names[1:], bool(ds.masks.reshape(6, -1).any(axis=1).all())
    (('Lung_Opacity', 'Viral Pneumonia', 'COVID'), True)
    >>> generate(2, image_size=300)
    Traceback (most recent call last):
    ...
    ValueError: SyntheticConfig: image_size 300 is outside the supported range 28..256 px
    """
    cfg = _make_config(config, overrides)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"generate: n must be a non-negative integer, got {n!r}")
    n = int(n)
    s = int(cfg.image_size)
    r = s if s >= 48 else 2 * s
    ss = np.random.SeedSequence(_seed_entropy(seed))
    param_ss, render_ss, order_ss = ss.spawn(3)
    p = _sample(n, cfg, np.random.default_rng(param_ss))
    order = np.random.default_rng(order_ss).permutation(n)
    p = {k: v[order] for k, v in p.items()}

    images = np.empty((n, s, s), np.uint8)
    masks = np.zeros((n, s, s), bool)
    batch_rngs = render_ss.spawn(-(-n // _BATCH)) if n else []
    for b, start in enumerate(range(0, n, _BATCH)):
        rows = start + np.argsort(p["subtype"][start:start + _BATCH], kind="stable")
        pb = {k: v[rows] for k, v in p.items()}
        A, ext = _render_batch(pb, r)
        images[rows], masks[rows] = _finish(A, ext, pb, s, r, cfg,
                                            np.random.default_rng(batch_rngs[b]))

    subtype = p["subtype"]
    if cfg.mode == "4class":
        labels = subtype.astype(np.int64)
    else:
        labels = (subtype > 0).astype(np.int64)
    names = np.array(SUBTYPES)
    patient_ids = np.array([f"syn-{split}-{i:06d}" for i in p["patient"]])
    meta = {
        "site": p["site"].astype(np.int64),
        "subtype": names[subtype],
        "difficulty": p["difficulty"].astype(np.float64),
        "shortcut": p["tag"].astype(bool),
        "lesion_area": masks.reshape(n, -1).mean(axis=1) if n else np.zeros(0),
        "config": dataclasses.asdict(cfg),
        "seed": seed,
    }
    return ImageSet(images=images, labels=labels, class_names=cfg.class_names,
                    patient_ids=patient_ids, masks=masks, split=split, source="synthetic",
                    meta=meta)


def _seed_entropy(seed: Any) -> int | list[int]:
    if isinstance(seed, np.random.SeedSequence):
        return seed.entropy
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def synthetic_splits(n_train: int, n_val: int, n_test: int, seed: int = 0,
                     config: SyntheticConfig | None = None,
                     **config_overrides: Any) -> dict[str, ImageSet]:
    """Train, validation and test sets with disjoint patients and their own seeds.

    Each split is drawn with a seed derived from ``seed`` and the split name, and
    its patient ids carry the split name, so no patient is in two splits.

    >>> d = synthetic_splits(10, 4, 4, seed=1, image_size=32)
    >>> set(d["train"].patient_ids) & set(d["test"].patient_ids)
    set()
    """
    cfg = _make_config(config, config_overrides)
    base = _seed_entropy(seed)
    out = {}
    for i, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        split_seed = int(np.random.SeedSequence([base, 7919, i]).generate_state(1)[0])
        out[name] = generate(n, cfg, seed=split_seed, split=name)
        out[name].meta["split_seed"] = split_seed
    return out
