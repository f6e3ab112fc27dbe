"""The dataset registry: every source the course can use, and one way to load them.

================== ========== ==========================================================
name               kind       what
================== ========== ==========================================================
synthetic          embedded   procedural chest X-rays, normal / pneumonia (the default)
synthetic4         embedded   the same, 4 classes (Normal, Lung_Opacity, Viral Pn., COVID)
pneumoniamnist     download   MedMNIST v2 PneumoniaMNIST, 28/64/128/224 px
kermany            folder     Kermany et al. chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}
covid_radiography  folder     COVID-19 Radiography Database (4 classes)
================== ========== ==========================================================

:func:`load_dataset` returns ``dict[str, ImageSet]`` (``"train"``, ``"val"``,
``"test"``) for every name; :func:`resolve_dataset` turns ``"auto"`` into a name
with the reason, so a notebook can print why it uses what it uses: real PneumoniaMNIST
when the official file is cached, or once it has been downloaded (a few MB, checksum
verified); the synthetic X-rays when offline (``FNLAB_OFFLINE=1``) or when the download
fails, with one line that says why and how to get the real file.

Example
-------
>>> sets = load_dataset("synthetic", profile="smoke", seed=0, image_size=28)
>>> sorted(sets), sets["train"].images.shape[1:]
(['test', 'train', 'val'], (28, 28))
>>> name, reason = resolve_dataset("synthetic")
>>> name
'synthetic'
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fnlab.config import (
    AUTO_REASON_ENV,
    OFFLINE_ENV,
    PNEUMONIAMNIST_ENV,
    named_pneumoniamnist,
    offline_mode,
)
from fnlab.data import medmnist
from fnlab.data.imageset import BINARY_CLASSES, FOUR_CLASSES, ImageSet
from fnlab.profiles import Profile, get_profile

#: Default side for folder datasets (their files have no common size).
DEFAULT_FOLDER_SIZE = 128


class DatasetNotAvailable(FileNotFoundError):
    """A real dataset is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class DatasetInfo:
    """One registry entry."""

    name: str
    description: str
    classes: tuple[str, ...]
    licence: str
    citation: str
    url: str
    kind: str  # "embedded", "download" or "folder"
    loader: Callable = field(repr=False, compare=False, default=None)


def _profile(profile) -> Profile:
    return profile if isinstance(profile, Profile) else get_profile(str(profile))


def _load_synthetic(data_path, image_size, profile, seed, mode="binary", **kw):
    from fnlab.data.synthetic import synthetic_splits

    p = _profile(profile)
    if mode != "binary":
        kw["mode"] = mode
    return synthetic_splits(p.n_train, p.n_val, p.n_test, seed=seed,
                            image_size=int(image_size or p.image_size), **kw)


def _load_synthetic4(data_path, image_size, profile, seed, **kw):
    kw.pop("mode", None)
    return _load_synthetic(data_path, image_size, profile, seed, mode="4class", **kw)


def _pneumoniamnist_path(data_path, image_size) -> tuple[Path, int | None]:
    if data_path is not None:
        path = Path(data_path).expanduser()
        if path.is_dir():
            size = int(image_size or 28)
            candidate = path / medmnist.file_info(size).filename
            if not candidate.is_file():
                raise DatasetNotAvailable(
                    f"{path} is a folder without {candidate.name}; pass the .npz file itself")
            return candidate, None
        if not path.is_file():
            raise DatasetNotAvailable(f"{path}: file not found")
        return path, image_size
    named = named_pneumoniamnist()
    if named is not None:  # named explicitly: loaded with a warning if it is not official
        if not named.is_file():
            raise DatasetNotAvailable(f"{PNEUMONIAMNIST_ENV}={named}: file not found")
        return named, image_size
    size = int(image_size or 28)
    base = size if size in medmnist.PNEUMONIAMNIST else 28  # other sides: resize the 28 px
    cached, problem = medmnist.check_cached(base)
    if problem is not None:  # the default place holds only the official file
        raise DatasetNotAvailable(problem)
    if cached is None:
        info = medmnist.file_info(base)
        raise DatasetNotAvailable(
            f"PneumoniaMNIST ({base} px) is not cached in {medmnist.data_dir()}. Run\n"
            f"  fnlab data download pneumoniamnist --size {base}\n"
            f"or pass data_path=... (any .npz of the MedMNIST layout).\n"
            + medmnist.manual_steps(base, medmnist.data_dir() / info.filename))
    return cached, (None if base == size else size)


def _load_pneumoniamnist(data_path, image_size, profile, seed, **kw):
    path, resize_to = _pneumoniamnist_path(data_path, image_size)
    sets = medmnist.load_npz(path, **kw)
    if resize_to and next(iter(sets.values())).image_size != int(resize_to):
        from fnlab.data.preprocess import preprocess_images

        for s in sets.values():
            s.meta["resized_from"] = s.image_size
            s.images = preprocess_images(s.images, int(resize_to), method="crop")
    return sets


def _load_kermany(data_path, image_size, profile, seed, **kw):
    from fnlab.data.folders import load_kermany

    if data_path is None:
        raise DatasetNotAvailable(
            "the 'kermany' dataset needs data_path=... (the chest_xray folder of Kermany et "
            "al., e.g. from Mendeley Data doi:10.17632/rscbjbr9sj.2 or the Kaggle 'Chest X-Ray "
            "Images (Pneumonia)' archive)")
    return load_kermany(data_path, size=int(image_size or DEFAULT_FOLDER_SIZE), seed=seed, **kw)


def _load_covid(data_path, image_size, profile, seed, **kw):
    from fnlab.data.folders import load_covid_radiography

    if data_path is None:
        raise DatasetNotAvailable(
            "the 'covid_radiography' dataset needs data_path=... (the folder holding COVID/, "
            "Lung_Opacity/, Normal/ and Viral Pneumonia/, from Kaggle's 'COVID-19 Radiography "
            "Database')")
    return load_covid_radiography(data_path, size=int(image_size or DEFAULT_FOLDER_SIZE),
                                  seed=seed, **kw)


_SYNTH_NOTE = "procedurally generated in memory; nothing on disk"
DATASETS: dict[str, DatasetInfo] = {
    "synthetic": DatasetInfo(
        "synthetic", "Synthetic chest X-rays, normal vs pneumonia (embedded default)",
        BINARY_CLASSES, "MIT (part of fnlab)", "fnlab synthetic generator", _SYNTH_NOTE,
        "embedded", _load_synthetic),
    "synthetic4": DatasetInfo(
        "synthetic4", "Synthetic chest X-rays, 4 classes (Normal, Lung opacity, Viral "
        "pneumonia, COVID)", FOUR_CLASSES, "MIT (part of fnlab)", "fnlab synthetic generator",
        _SYNTH_NOTE, "embedded", _load_synthetic4),
    "pneumoniamnist": DatasetInfo(
        "pneumoniamnist", "PneumoniaMNIST (MedMNIST v2): 5,856 paediatric chest X-rays, "
        "28/64/128/224 px", BINARY_CLASSES, medmnist.LICENCE, medmnist.CITATION,
        f"https://zenodo.org/records/{medmnist.ZENODO_RECORD}", "download", _load_pneumoniamnist),
    "kermany": DatasetInfo(
        "kermany", "Kermany et al. chest_xray/{train,val,test}/{NORMAL,PNEUMONIA} JPEG folders",
        BINARY_CLASSES, "CC BY 4.0",
        "Kermany DS, Goldbaum M, et al. Identifying medical diagnoses and treatable diseases "
        "by image-based deep learning. Cell 172(5):1122-1131 (2018). Data: Mendeley Data "
        "doi:10.17632/rscbjbr9sj.2",
        "https://data.mendeley.com/datasets/rscbjbr9sj/2", "folder", _load_kermany),
    "covid_radiography": DatasetInfo(
        "covid_radiography", "COVID-19 Radiography Database: COVID, Lung opacity, Normal, "
        "Viral pneumonia folders", FOUR_CLASSES,
        "see the Kaggle dataset page (cite the two papers below)",
        "Chowdhury MEH, et al. Can AI help in screening viral and COVID-19 pneumonia? IEEE "
        "Access 8:132665-132676 (2020); Rahman T, et al. Exploring the effect of image "
        "enhancement techniques on COVID-19 detection using chest X-ray images. Computers in "
        "Biology and Medicine 132:104319 (2021)",
        "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
        "folder", _load_covid),
}


def _unknown(name) -> ValueError:
    return ValueError(
        f"unknown dataset {name!r}; choose one of: auto, {', '.join(DATASETS)}")


def dataset_status(name: str) -> str:
    """One line: is the dataset usable here, and if not, how to get it.

    >>> dataset_status("synthetic")
    'embedded (always available)'
    """
    info = DATASETS.get(name)
    if info is None:
        raise _unknown(name)
    if info.kind == "embedded":
        return "embedded (always available)"
    if info.kind == "download":
        cached = []
        for s in medmnist.SIZES:
            if medmnist.cached_path(s) is not None:
                official = medmnist.check_cached(s)[0] is not None
                cached.append(f"{s} px" + ("" if official else " (not the official file)"))
        if cached:
            return "cached: " + ", ".join(cached) + f" in {medmnist.data_dir()}"
        return f"not cached (fnlab data download {name} --size 28)"
    return "folder: pass data_path=... to load_dataset"


def available() -> list[dict]:
    """Every registry entry as a dict (name, kind, description, classes, licence, status).

    >>> [row["name"] for row in available()][:2]
    ['synthetic', 'synthetic4']
    """
    return [
        {"name": i.name, "kind": i.kind, "description": i.description,
         "classes": list(i.classes), "licence": i.licence, "citation": i.citation,
         "url": i.url, "status": dataset_status(i.name)}
        for i in DATASETS.values()
    ]


def cached_status() -> dict[str, str]:
    """``{name: status}`` for every dataset (what ``fnlab info`` prints).

    >>> cached_status()["synthetic"]
    'embedded (always available)'
    """
    return {name: dataset_status(name) for name in DATASETS}


#: ``(target file, url) -> fallback line`` of this process's failed auto downloads: a
#: second ``resolve_dataset("auto")`` does not wait for the network again.
_AUTO_FAILURES: dict[tuple[str, str], str] = {}
_SAID: set[str] = set()
_GET_REAL = "fnlab data download pneumoniamnist --size 28"
_SYNTHETIC = "using the embedded synthetic X-rays"


def _say(line: str) -> None:
    """Print ``line`` on stderr, once per process."""
    if line not in _SAID:
        _SAID.add(line)
        print(line, file=sys.stderr, flush=True)


def _short_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    text = " ".join(str(exc).split("Manual steps:", 1)[0].split())
    return text or type(exc).__name__


def _resolve_auto(offline: bool | None, download: bool, progress: bool) -> tuple[str, str]:
    named = named_pneumoniamnist()
    if named is not None:  # a file named explicitly wins over the cache and the network
        if named.is_file():
            return "pneumoniamnist", f"real PneumoniaMNIST named by {PNEUMONIAMNIST_ENV}={named}"
        reason = f"{PNEUMONIAMNIST_ENV}={named}: file not found; {_SYNTHETIC}"
        _say(f"fnlab: {reason}")
        return "synthetic", reason
    folder = medmnist.data_dir()
    path, problem = medmnist.check_cached(28)
    if path is not None:
        return "pneumoniamnist", (
            f"real PneumoniaMNIST is cached at {path} (official file, md5 verified)")
    if problem is not None:  # a variant or a corrupt file: never used silently, never replaced
        reason = f"{problem}; {_SYNTHETIC}"
        _say(f"fnlab: {reason}")
        return "synthetic", reason
    if offline_mode(offline):
        if os.environ.get(AUTO_REASON_ENV):  # a course run's failed download: its words
            return "synthetic", os.environ[AUTO_REASON_ENV]
        return "synthetic", (
            f"offline mode ({OFFLINE_ENV}=1): real PneumoniaMNIST is not cached in {folder} and "
            f"was not downloaded; {_SYNTHETIC} ({_GET_REAL} fetches it)")
    if not download:
        return "synthetic", (
            f"no real dataset cached in {folder} ({_GET_REAL} fetches one); {_SYNTHETIC}")
    info = medmnist.file_info(28)
    url = medmnist.download_url(28)
    key = (str(folder / info.filename), url)
    if key in _AUTO_FAILURES:
        return "synthetic", _AUTO_FAILURES[key]
    _say(f"fnlab: real PneumoniaMNIST is not cached: downloading the official 28 px file "
         f"(about {info.approx_size}) once into {folder} from {url} ({OFFLINE_ENV}=1 skips this)")
    try:
        path = medmnist.download(28, progress=progress,
                                 connect_timeout=medmnist.AUTO_CONNECT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - the network must never stop a lesson
        reason = (f"could not download PneumoniaMNIST ({_short_reason(exc)}); {_SYNTHETIC}. "
                  f"For the real X-rays: {_GET_REAL} (it prints the manual steps)")
        _AUTO_FAILURES[key] = reason
        _say(f"fnlab: {reason}")
        return "synthetic", reason
    return "pneumoniamnist", (
        f"real PneumoniaMNIST was downloaded to {path} (official file, md5 verified)")


def resolve_dataset(name: str = "auto", *, offline: bool | None = None, download: bool = True,
                    progress: bool = True) -> tuple[str, str]:
    """Turn ``name`` into a registry name and say why.

    ``"auto"`` gives ``"pneumoniamnist"`` when the official 28 px file (md5 verified) is
    cached in :func:`fnlab.config.data_dir`. When nothing is cached it downloads that
    file once (about 4 MB, progress bar, md5 verified; a connect timeout of
    :data:`~fnlab.data.medmnist.AUTO_CONNECT_TIMEOUT` s) unless ``offline`` (default:
    ``$FNLAB_OFFLINE``) or ``download=False``. Otherwise, and whenever the download
    fails, it gives ``"synthetic"`` and never raises: the reason says why and names
    the command that fetches the real file; a failure is printed once on stderr and
    not retried in this process. A cached file that is not the official one (a
    variant, a corrupt copy) is not used (nor replaced): load it with ``data_path``.

    >>> resolve_dataset("kermany")
    ('kermany', 'requested explicitly')
    >>> resolve_dataset("auto", offline=True)[0] in ("synthetic", "pneumoniamnist")
    True
    >>> resolve_dataset("mnist")
    Traceback (most recent call last):
    ...
    ValueError: unknown dataset 'mnist'; choose one of: auto, synthetic, synthetic4, pneumoniamnist, kermany, covid_radiography
    """
    if name in (None, "", "auto"):
        return _resolve_auto(offline, download, progress)
    if name not in DATASETS:
        raise _unknown(name)
    return name, "requested explicitly"


def cap_train(sets: dict[str, ImageSet], max_images: int | None, seed: int = 0) -> None:
    """Subsample ``sets["train"]`` (in place) to at most ``max_images``, stratified by label.

    The original size is kept in ``meta["subsampled_from"]``.

    >>> s = {"train": ImageSet(np.zeros((10, 4, 4), np.uint8), [0] * 5 + [1] * 5)}
    >>> cap_train(s, 4, seed=0); len(s["train"]), s["train"].counts(), s["train"].meta["subsampled_from"]
    (4, {'normal': 2, 'pneumonia': 2}, 10)
    """
    train = sets.get("train")
    if train is None or max_images is None or len(train) <= int(max_images):
        return
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(train))
    labels = train.labels
    strat = labels if np.bincount(labels).min(initial=len(labels)) >= 2 else None
    try:
        keep, _ = train_test_split(idx, train_size=int(max_images), stratify=strat,
                                   random_state=seed)
    except ValueError:  # a class too small to stratify
        keep, _ = train_test_split(idx, train_size=int(max_images), random_state=seed)
    sub = train.subset(np.sort(keep))
    sub.meta["subsampled_from"] = len(train)
    sets["train"] = sub


def load_dataset(name: str = "auto", *, data_path=None, image_size: int | None = None,
                 profile="smoke", seed: int = 0, max_train_images="profile",
                 offline: bool | None = None, progress: bool = True,
                 **kw) -> dict[str, ImageSet]:
    """Load a registry dataset as ``{"train": ImageSet, "val": ..., "test": ...}``.

    Parameters
    ----------
    name : a registry name or ``"auto"`` (see :func:`resolve_dataset`).
    data_path : the file or folder of a real dataset (``pneumoniamnist``: a ``.npz``,
        default the cached official file; ``kermany``/``covid_radiography``: the folder).
    image_size : synthetic: the side (default from the profile); pneumoniamnist:
        which official file (28/64/128/224), or a side to resize ``data_path`` to;
        folders: the side (default 128).
    profile : ``"smoke"`` or ``"full"`` (sizes of the synthetic set, cap on real
        training images).
    seed : seed of generation, re-splitting and subsampling.
    max_train_images : ``"profile"`` (the profile's cap, real data only), an int, or None.
    offline : for ``"auto"``: never download (default: ``$FNLAB_OFFLINE``).
    progress : progress bars (reading a folder's images, a download for ``"auto"``).
    **kw : passed to the loader (e.g. ``prevalence=0.1`` for synthetic,
        ``resplit=True`` for kermany, ``verify="off"`` for pneumoniamnist).

    >>> d = load_dataset("synthetic4", image_size=32, prevalence=0.5)
    >>> d["test"].class_names[0], d["train"].meta["dataset"]
    ('Normal', 'synthetic4')
    """
    resolved, reason = resolve_dataset(name, offline=offline, download=data_path is None,
                                       progress=progress)
    info = DATASETS[resolved]
    p = _profile(profile)
    if info.kind == "folder":
        kw.setdefault("progress", progress)
    sets = info.loader(data_path, image_size, p, seed, **kw)
    if info.kind != "embedded":
        cap = p.max_train_images if max_train_images == "profile" else max_train_images
        cap_train(sets, cap, seed)
    elif max_train_images not in ("profile", None):
        cap_train(sets, max_train_images, seed)
    for s in sets.values():
        s.meta.update(dataset=resolved, dataset_reason=reason, profile=p.name)
    return sets
