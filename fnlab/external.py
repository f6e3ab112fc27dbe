"""External validation: judge a Run on a second site, and what local data can fix.

A model that scores well on its own test split (the same clinic as its training data)
says little about the next hospital. This module holds the steps of an external
validation, for ``fnlab evaluate RUN --data PATH`` and the notebooks:

1. :func:`load_external` reads an external set - a folder with ``NORMAL/`` and
   ``PNEUMONIA/`` (any readable images, DICOM included), a Kermany-layout tree, an
   ``.npz`` of the PneumoniaMNIST layout (its test split, or all splits;
   ``test_patient_ids`` used when present) or a ChestMNIST ``.npz`` (turned into
   pneumonia against no finding, :func:`fnlab.data.medmnist.chestmnist_binary`) - and
   :func:`to_run_input` brings it to the Run's input exactly as training did (square
   centre crop and resize to the Run's side, grayscale; the model normalises inside).
2. :func:`evaluate_external` reports AUC with a bootstrap CI, sensitivity, specificity
   and missed pneumonias at the Run's home threshold, calibration (ECE), the same at the
   home test set, and the AUC drop with its CI (:func:`auc_drop`).
3. :func:`local_recalibration` is the step a hospital must take before deployment: N
   local images (:func:`calibration_split`: stratified, patient-grouped when ids exist)
   choose the threshold for the Run's target recall, a Platt recalibration and the
   conformal FNR threshold; the *other* local images judge them. No local image is used
   both to choose and to judge. :func:`recalibration_curve` repeats it for N = 25, 50,
   100, 200.
4. For the lessons: :func:`home_vs_away` (does the AUC drop, with the CI of the
   difference), :func:`local_threshold` (a threshold chosen on local images and its
   held-back specificity), and :func:`adaptation_gain` (held-back AUC before and after an
   adaptation: :func:`histogram_match`, :func:`standardise_to_home` from unlabelled
   images, or :func:`fine_tune` on labelled local images).

Caveats said wherever the NIH sets are used (:data:`NIH_CAVEATS`): labels mined from
radiology reports by text processing (noisy); adults, where PneumoniaMNIST holds
children aged 1-5; ChestMNIST has no patient ids, so its split cannot be grouped.

Example
-------
>>> import numpy as np
>>> from fnlab.predictions import Predictions
>>> home = Predictions([0, 0, 1, 1] * 25, np.tile([0.1, 0.2, 0.8, 0.9], 25))
>>> away = Predictions([0, 0, 1, 1] * 25, np.tile([0.5, 0.2, 0.4, 0.9], 25))
>>> d = auc_drop(home, away, n_resamples=200)
>>> round(d["home"], 2), round(d["away"], 2), round(d["drop"], 2)
(1.0, 0.75, 0.25)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fnlab.data.imageset import BINARY_CLASSES, ImageSet
from fnlab.predictions import Predictions

__all__ = [
    "CURVE_SIZES",
    "ExternalDataError",
    "ExternalSet",
    "MIN_CALIBRATE",
    "NIH_CAVEATS",
    "adaptation_gain",
    "auc_drop",
    "calibration_split",
    "evaluate_external",
    "external_site",
    "fine_tune",
    "histogram_match",
    "home_vs_away",
    "load_external",
    "local_recalibration",
    "local_threshold",
    "parse_calibrate",
    "recalibration_curve",
    "resolve_external_site",
    "run_target_recall",
    "standardise_to_home",
    "to_run_input",
]

#: Fewest local images that may choose a threshold (``--calibrate``): below this the
#: chosen threshold rests on a handful of pneumonias.
MIN_CALIBRATE = 20
#: Fewest local images left to judge it.
MIN_JUDGE = 20
#: Local calibration sizes of :func:`recalibration_curve`.
CURVE_SIZES = (25, 50, 100, 200)
NIH_CAVEATS = (
    "NIH labels were mined from radiology reports by text processing (noisy, a few percent "
    "wrong)",
    "NIH patients are adults; PneumoniaMNIST's are children aged 1-5, with different "
    "acquisition and framing",
)
CHESTMNIST_CAVEAT = ("ChestMNIST has no patient ids: images of one patient may fall on both "
                     "sides of a local split")


class ExternalDataError(ValueError):
    """An external set that cannot be used; the message names the path and the problem."""


@dataclass
class ExternalSet:
    """An external set as read from disk, before it is brought to a Run's input.

    ``images`` holds the set (split ``"external"``); ``skipped`` maps unreadable files to
    the reason; ``notes`` are one-line remarks (conversions, caveats) to print.
    """

    images: ImageSet
    kind: str
    path: Path
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def has_patients(self) -> bool:
        return self.images.patient_ids is not None


# --------------------------------------------------------------------------- loading
def _check_classes(images: ImageSet, path: Path) -> None:
    counts = np.bincount(images.labels, minlength=2)
    if len(images) == 0:
        raise ExternalDataError(f"{path}: no readable images (an empty folder or file)")
    for label, name in ((0, "normal"), (1, "pneumonia")):
        if counts[label] == 0:
            other = "pneumonia" if label == 0 else "normal"
            raise ExternalDataError(
                f"{path}: no {name} images (found {int(counts[1 - label])} {other}); "
                "an external validation needs both classes")


def _read_one(path: Path, size: int | None) -> np.ndarray:
    from fnlab.data.dicom import is_dicom_file, read_dicom
    from fnlab.data.imageio import read_image
    from fnlab.data.preprocess import to_square

    img = read_dicom(path) if is_dicom_file(path) else read_image(path, draft_size=size)
    return img if size is None else to_square(img, size, "crop")


def _class_folders(root: Path) -> dict[int, Path] | None:
    from fnlab.data.folders import KERMANY_FOLDERS

    found = {}
    for child in sorted(root.iterdir()):
        label = KERMANY_FOLDERS.get(child.name.upper()) if child.is_dir() else None
        if label is not None:
            found[label] = child
    return found or None


def _load_folder(root: Path, size: int | None, strict: bool, progress: bool) -> ExternalSet:
    from tqdm.auto import tqdm

    from fnlab.data.dicom import is_dicom_file
    from fnlab.data.folders import (
        KERMANY_FOLDERS,
        files_under,
        find_kermany_root,
        parse_kermany_name,
        scan_kermany,
    )
    from fnlab.data.imageio import ImageReadError, is_image_file

    classes = _class_folders(root)
    skipped: dict[str, str] = {}
    entries: list[tuple[Path, int]] = []
    if classes is not None:
        kind = "folder"
        for name, label in KERMANY_FOLDERS.items():
            if label not in classes:
                raise ExternalDataError(
                    f"{root}: no {name}/ folder (found {classes[1 - label].name}/ only); an "
                    "external validation needs both NORMAL/ and PNEUMONIA/")
            for f in files_under(classes[label]):
                if is_image_file(f) or is_dicom_file(f):
                    entries.append((f, label))
                else:
                    skipped[str(f)] = f"not an image file (extension {f.suffix or 'none'!r})"
    elif find_kermany_root(root) is not None:
        kind = "kermany"
        scan = scan_kermany(root, require_splits=())
        entries = [(e.path, e.label) for e in scan.entries]
        skipped.update(scan.skipped_files)
        root = scan.root
    else:
        raise ExternalDataError(
            f"{root}: expected NORMAL/ and PNEUMONIA/ folders, a Kermany chest_xray tree "
            "({train,val,test}/{NORMAL,PNEUMONIA}) or an .npz file")
    images, labels, rel = [], [], []
    for path, label in tqdm(entries, desc=f"reading {root.name}", disable=not progress,
                            leave=False):
        try:
            img = _read_one(path, size)
        except ImageReadError as exc:
            skipped[str(path)] = exc.reason
            continue
        except ImportError as exc:  # a DICOM without pydicom
            skipped[str(path)] = str(exc)
            continue
        images.append(img)
        labels.append(label)
        rel.append(str(path.relative_to(root)))
    if strict and skipped:
        first, why = next(iter(skipped.items()))
        raise ExternalDataError(
            f"{root}: {len(skipped)} unreadable file(s), e.g. {first} ({why}); refused with "
            "--strict (drop --strict to skip them and count them)")
    if size is None and len({im.shape for im in images}) > 1:
        raise ExternalDataError(f"{root}: images of mixed sizes; give the size to read them at")
    side = int(size) if size else (images[0].shape[0] if images else 0)
    stack = np.stack(images) if images else np.zeros((0, side, side), np.uint8)
    patients = None
    if kind == "kermany" and rel:
        patients = np.array([parse_kermany_name(Path(r).name)[0] for r in rel])
    out = ImageSet(stack, np.array(labels, np.int64), BINARY_CLASSES, patient_ids=patients,
                   split="external", source=f"{kind}:{root}",
                   meta={"path": np.array(rel, dtype=str), "skipped": len(skipped)})
    notes = []
    if skipped:
        notes.append(f"skipped {len(skipped)} unreadable file(s), e.g. "
                     f"{next(iter(skipped))} ({next(iter(skipped.values()))})")
    return ExternalSet(out, kind, root, skipped, notes)


def _npz_keys(path: Path) -> list[str]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as npz:
            return list(npz.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        raise ExternalDataError(f"{path}: not a readable .npz archive ({exc})") from None


def _load_npz(path: Path, splits: str) -> ExternalSet:
    from fnlab.data import medmnist

    keys = _npz_keys(path)
    with np.load(path, allow_pickle=False) as npz:
        label_shape = npz["test_labels"].shape if "test_labels" in keys else None
    if label_shape is not None and len(label_shape) == 2 and label_shape[1] == 14:
        if splits != "test":
            raise ExternalDataError(f"{path}: a ChestMNIST file is used by its test split only")
        images = medmnist.chestmnist_binary(path)
        return ExternalSet(images, "chestmnist", path, notes=[
            "ChestMNIST test split: pneumonia (label 6) against no finding (all 14 labels 0)",
            *NIH_CAVEATS, CHESTMNIST_CAVEAT])
    present = [s for s in medmnist.SPLITS if f"{s}_images" in keys and f"{s}_labels" in keys]
    if splits == "test":
        if "test" not in present:
            raise ExternalDataError(
                f"{path}: no test_images/test_labels (found keys {', '.join(keys) or 'none'}); "
                "pass all splits to use every image")
        wanted = ["test"]
    else:
        wanted = present
    if not wanted:
        raise ExternalDataError(f"{path}: no <split>_images/<split>_labels arrays (found keys "
                                f"{', '.join(keys) or 'none'}); expected the MedMNIST layout")
    try:
        sets = medmnist.load_npz(path, verify="off", splits=tuple(wanted))
    except medmnist.NpzFormatError as exc:
        raise ExternalDataError(str(exc)) from None
    with np.load(path, allow_pickle=False) as npz:
        ids = [np.asarray(npz[f"{s}_patient_ids"]).astype(str) if f"{s}_patient_ids" in keys
               else None for s in wanted]
    parts = [sets[s] for s in wanted]
    patients = None
    if all(i is not None for i in ids):
        if any(len(i) != len(p) for i, p in zip(ids, parts)):
            raise ExternalDataError(f"{path}: patient ids and images differ in length")
        patients = np.concatenate(ids)
    images = ImageSet(np.concatenate([p.images for p in parts]),
                      np.concatenate([p.labels for p in parts]), BINARY_CLASSES,
                      patient_ids=patients, split="external", source=f"npz:{path}",
                      meta={"index": np.arange(sum(len(p) for p in parts))})
    notes = [f"{'+'.join(wanted)} split(s) of {path.name}"
             + ("" if patients is not None else " (no patient ids: local splits by image)")]
    if path.name.startswith("nih_") or "chestx" in path.name.lower():
        notes.extend(NIH_CAVEATS)
    return ExternalSet(images, "npz", path, notes=notes)


def load_external(path, size: int | None = None, *, strict: bool = False,
                  splits: str = "test", progress: bool = False) -> ExternalSet:
    """Read an external set (folder, Kermany tree, MedMNIST ``.npz`` or ChestMNIST).

    ``size`` reads folder images straight at that side (square centre crop, as the
    folder loaders do for training); ``.npz`` images keep their size until
    :func:`to_run_input`. Unreadable files are skipped and counted (``skipped``), or
    refused with ``strict=True``. ``splits`` is ``"test"`` (default) or ``"all"`` for an
    ``.npz``. Raises :class:`ExternalDataError` (one line naming the path) for a path that
    does not exist, an empty folder, a missing class or an unknown layout.

    >>> try:
    ...     load_external("/nonexistent/site")
    ... except ExternalDataError as err:
    ...     print(err)
    /nonexistent/site: no such file or folder
    """
    if splits not in ("test", "all"):
        raise ValueError(f"splits must be 'test' or 'all', got {splits!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise ExternalDataError(f"{path}: no such file or folder")
    if path.is_dir():
        ext = _load_folder(path, size, strict, progress)
    elif path.suffix.lower() == ".npz":
        ext = _load_npz(path, splits)
    else:
        raise ExternalDataError(f"{path}: not a folder or an .npz file (expected NORMAL/ and "
                                "PNEUMONIA/ folders, a Kermany tree or a MedMNIST .npz)")
    _check_classes(ext.images, ext.path)
    return ext


def to_run_input(images: ImageSet, run, notes: list[str] | None = None) -> ImageSet:
    """``images`` brought to the Run's input as training did: grayscale, square centre
    crop and resize to the Run's side (the model normalises inside with the training
    split's mean and std). A note says what was changed.

    >>> s = ImageSet(np.zeros((2, 64, 64), np.uint8), [0, 1])
    >>> class R: checkpoint = {"image_size": 28, "in_channels": 1}
    >>> to_run_input(s, R()).images.shape
    (2, 28, 28)
    """
    from fnlab.data.preprocess import preprocess_images

    side = int(run.checkpoint["image_size"])
    channels = int(run.checkpoint.get("in_channels", 1))
    if channels != 1:
        raise ExternalDataError(
            f"the Run takes {channels}-channel images; external validation reads grayscale "
            "X-rays only")
    if images.in_channels != 1:
        raise ExternalDataError(
            f"{images.source}: {images.in_channels}-channel images, not grayscale X-rays "
            "(another modality?)")
    if images.image_size == side and images.images.shape[-2] == side:
        return images
    if notes is not None:
        notes.append(f"images are {images.images.shape[-2]}x{images.images.shape[-1]} px; "
                     f"the Run's input is {side} px: centre-cropped and resized as in training")
    out = images.subset(np.arange(len(images)))
    out.images = preprocess_images(images.images, side, method="crop")
    out.meta = dict(out.meta, resized_from=images.image_size)
    return out


def resolve_external_site(size: int = 28, *, offline: bool | None = None,
                          download: bool = True, progress: bool = True) -> tuple[Path | None, str]:
    """Where a real external site can be had, and why: ``(path, reason)``.

    1. ChestMNIST of side ``size`` cached in :func:`fnlab.config.data_dir` (md5 verified);
    2. else, unless offline (``$FNLAB_OFFLINE``) or ``download=False``, downloaded once
       (progress bar, md5 verified, short connect timeout; a failure is not fatal);
    3. else the developers' dev file ``../shared/data/nih_pneumonia_{size}_dev.npz``;
    4. else ``(None, reason)``: use the synthetic sites, saying so.

    >>> path, why = resolve_external_site(28, offline=True)
    >>> path is None or path.suffix == ".npz"
    True
    """
    from fnlab.config import data_dir, offline_mode, shared_data_dir
    from fnlab.data import medmnist

    try:
        info = medmnist.file_info(size, "chestmnist")
    except ValueError:
        info = None
    if info is not None:
        cached = data_dir() / info.filename
        if cached.is_file() and medmnist.md5sum(cached) == info.md5:
            return cached, f"ChestMNIST ({size} px) cached at {cached} (md5 verified)"
        if not offline_mode(offline) and download and not cached.exists():
            try:
                path = medmnist.download(size, dataset="chestmnist", progress=progress,
                                         connect_timeout=medmnist.AUTO_CONNECT_TIMEOUT)
                return path, f"ChestMNIST ({size} px) downloaded to {path} (md5 verified)"
            except medmnist.DownloadError as exc:
                why = f"could not download ChestMNIST ({exc.reason or 'network error'})"
            except OSError as exc:
                why = f"could not download ChestMNIST ({exc})"
        elif cached.exists():
            why = f"{cached} is not the official {info.filename} (md5 differs)"
        else:
            why = "offline: ChestMNIST not cached" if offline_mode(offline) else \
                "ChestMNIST not cached"
    else:
        why = f"ChestMNIST has no {size} px file"
    shared = shared_data_dir()
    dev = shared / f"nih_pneumonia_{size}_dev.npz" if shared is not None else None
    if dev is not None and dev.is_file():
        return dev, f"{why}; using the NIH dev file {dev}"
    return None, f"{why}, and no NIH dev file: using the synthetic sites"



def external_site(run, *, per_class: int = 500, offline: bool | None = None,
                  progress: bool = True, seed: int = 0) -> tuple[ImageSet | None, str]:
    """The real second site for the lessons, brought to the Run's input: ``(images, why)``.

    Where :func:`resolve_external_site` finds one (ChestMNIST, else the NIH dev file), at
    most ``per_class`` images of each class are kept (drawn once with ``seed``: ChestMNIST's
    test split holds about 40 normal films per pneumonia, and a local sample of 100 would
    hold two pneumonias); ``why`` says which site was used, with the NIH caveats. Where
    none can be had, ``(None, why)``: the lesson uses the synthetic sites and says so.

    >>> class R: checkpoint = {"image_size": 28, "in_channels": 1}
    >>> images, why = external_site(R(), offline=True)
    >>> images is None or len(np.unique(images.labels)) == 2
    True
    """
    size = int(run.checkpoint["image_size"])
    path, why = resolve_external_site(size, offline=offline, progress=progress)
    if path is None:
        return None, why
    ext = load_external(path)
    rng = np.random.default_rng(seed)
    keep = []
    for c in (0, 1):
        idx = np.flatnonzero(ext.images.labels == c)
        keep.append(rng.choice(idx, per_class, replace=False) if len(idx) > per_class else idx)
    notes: list[str] = []
    images = to_run_input(ext.images.subset(np.sort(np.concatenate(keep))), run, notes)
    counts = np.bincount(images.labels, minlength=2)
    if images.patient_ids is not None:
        who = f" from {len(np.unique(images.patient_ids))} patients"
    else:
        who, notes = "", [*notes, CHESTMNIST_CAVEAT]
    why = f"{why}: {counts[1]} pneumonia and {counts[0]} normal films{who}"
    return images, "; ".join([why, *notes, *NIH_CAVEATS])


# --------------------------------------------------------------------------- judging
def _auc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    from fnlab.metrics import rank_auc

    return rank_auc(y, s)


def auc_drop(home: Predictions, away: Predictions, n_resamples: int = 1000,
             confidence: float = 0.95, seed: int = 0) -> dict:
    """AUC at home, away, their difference ``home - away`` and its bootstrap CI.

    The two sets are independent samples, so each is resampled on its own (stratified
    by class, so that every resample has both classes) and the percentile interval of
    the difference is returned.

    >>> h = Predictions([0, 1] * 50, [0.2, 0.8] * 50)
    >>> a = Predictions([0, 1] * 50, [0.5, 0.5] * 50)
    >>> d = auc_drop(h, a, n_resamples=100)
    >>> d["drop"], d["drop_ci"]
    (0.5, [0.5, 0.5])
    """
    rng = np.random.default_rng(seed)

    def draws(p: Predictions) -> np.ndarray:
        y, s = p.binary_truth(), p.positive_scores()
        out = np.empty(int(n_resamples))
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        for b in range(int(n_resamples)):
            idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
            out[b] = _auc(y[idx], s[idx])
        return out

    h = float(_auc(home.binary_truth(), home.positive_scores()))
    a = float(_auc(away.binary_truth(), away.positive_scores()))
    diff = draws(home) - draws(away)
    tail = (1 - confidence) / 2 * 100
    low, high = (float(v) for v in np.percentile(diff, [tail, 100 - tail]))
    return {"home": h, "away": a, "drop": h - a, "drop_ci": [low, high]}


def _side_report(preds: Predictions, threshold: float, rule: str, n_resamples: int,
                 seed: int) -> dict:
    from fnlab.calibration import expected_calibration_error
    from fnlab.metrics import binary_report

    r = binary_report(preds, threshold, rule, ci=True, n_resamples=n_resamples, seed=seed)
    r["missed"] = r["fn"]
    r["pneumonias"] = r["tp"] + r["fn"]
    r["ece"] = float(expected_calibration_error(preds))
    return r


def run_target_recall(run) -> float:
    """The recall the Run's home threshold was chosen for (0.98 when its rule was another).

    >>> class R: checkpoint = {"threshold_rule": "recall>=0.95", "threshold_value": 0.95}
    >>> run_target_recall(R())
    0.95
    """
    rule = str(run.checkpoint.get("threshold_rule", ""))
    value = run.checkpoint.get("threshold_value")
    return float(value) if rule.startswith("recall") and value is not None else 0.98


def evaluate_external(run, external: ImageSet, *, n_resamples: int = 1000, seed: int = 0,
                      predictions: Predictions | None = None) -> dict:
    """The external report of ``run`` on ``external`` (already at the Run's input).

    Returns a JSON-safe dict: ``away`` and ``home`` (AUC with CI, sensitivity,
    specificity with CIs, missed pneumonias, ECE at the Run's home threshold),
    ``drop`` (:func:`auc_drop`), ``threshold`` and ``target_recall``.
    ``predictions`` skips running the model again.
    """
    from fnlab.metrics import to_jsonable

    preds = predictions if predictions is not None else run.predict(external)
    preds.split = "external"
    t, rule = run.threshold, run.threshold_rule
    report = {
        "run": str(run.path), "threshold": t, "threshold_rule": rule,
        "target_recall": run_target_recall(run),
        "n": len(preds), "n_patients": (None if external.patient_ids is None
                                        else int(len(np.unique(external.patient_ids)))),
        "home": _side_report(run.test, t, rule, n_resamples, seed),
        "away": _side_report(preds, t, rule, n_resamples, seed),
        "drop": auc_drop(run.test, preds, n_resamples=n_resamples, seed=seed),
    }
    return to_jsonable(report)


# --------------------------------------------------------------------------- local split
def parse_calibrate(value, n_images: int) -> int:
    """The number of local calibration images from ``--calibrate`` (a count, or a
    fraction in (0, 1) of the set); refused when below :data:`MIN_CALIBRATE` or when
    fewer than :data:`MIN_JUDGE` images would be left to judge.

    >>> parse_calibrate("0.5", 200), parse_calibrate(50, 200)
    (100, 50)
    >>> parse_calibrate(190, 200)
    Traceback (most recent call last):
    ...
    fnlab.external.ExternalDataError: --calibrate 190 leaves 10 of the 200 local images to judge the threshold; at most 180 may calibrate
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ExternalDataError(f"--calibrate must be a count or a fraction in (0, 1), got "
                                f"{value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ExternalDataError(f"--calibrate must be > 0, got {value!r}")
    if v < 1:
        n = int(round(v * n_images))
    elif v == int(v):
        n = int(v)
    else:
        raise ExternalDataError(f"--calibrate must be a whole count or a fraction in (0, 1), "
                                f"got {value!r}")
    if n < MIN_CALIBRATE:
        raise ExternalDataError(
            f"--calibrate {value} gives {n} local images; at least {MIN_CALIBRATE} are needed "
            "to choose a threshold")
    if n > n_images - MIN_JUDGE:
        raise ExternalDataError(
            f"--calibrate {value} leaves {n_images - n} of the {n_images} local images to "
            f"judge the threshold; at most {n_images - MIN_JUDGE} may calibrate")
    return n


def calibration_split(labels, n: int, groups=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(choose, judge)``: about ``n`` local images to choose a threshold, the rest
    to judge it. Disjoint and covering every image.

    Stratified by class; with ``groups`` (patient ids) whole patients go to one side
    (a patient's class for the stratification is their most frequent label), so the
    calibration part holds about ``n`` images, never exactly split patients.

    >>> y = np.array([0, 1] * 50); g = np.repeat(np.arange(50), 2)
    >>> c, j = calibration_split(y, 20, groups=g)
    >>> set(g[c]) & set(g[j]), len(c) + len(j)
    (set(), 100)
    """
    y = np.asarray(labels).astype(int)
    rng = np.random.default_rng(seed)
    if not 0 < n < len(y):
        raise ValueError(f"calibration size must be in 1..{len(y) - 1}, got {n}")
    share = np.bincount(y, minlength=2) / len(y)
    targets = np.round(share * n).astype(int)
    chosen = np.zeros(len(y), bool)
    if groups is None:
        for c in (0, 1):
            idx = np.flatnonzero(y == c)
            chosen[rng.choice(idx, min(targets[c], len(idx)), replace=False)] = True
    else:
        g = np.asarray(groups).astype(str)
        names, inverse = np.unique(g, return_inverse=True)
        size = np.bincount(inverse)
        pos = np.bincount(inverse, weights=y)
        stratum = (pos * 2 >= size).astype(int)  # a patient's majority class
        for c in (0, 1):
            members = rng.permutation(np.flatnonzero(stratum == c))
            have = 0
            for m in members:
                if have >= targets[c]:
                    break
                if have + size[m] > targets[c] + max(1, size[m] // 2) and have > 0:
                    continue  # a big patient that would overshoot: try a smaller one
                chosen[inverse == m] = True
                have += size[m]
    return np.flatnonzero(chosen), np.flatnonzero(~chosen)


def _ci_rate(k: int, n: int, confidence: float = 0.95) -> list[float | None]:
    """Wilson interval of a proportion k/n (for held-back sensitivity/specificity)."""
    from scipy.stats import norm

    if n == 0:
        return [None, None]
    z = norm.ppf(0.5 + confidence / 2)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _held_back(preds: Predictions, threshold: float) -> dict:
    from fnlab.metrics import binary_metrics

    m = binary_metrics(preds, threshold)
    return {"threshold": float(threshold), "sensitivity": m["sensitivity"],
            "sensitivity_ci": _ci_rate(m["tp"], m["tp"] + m["fn"]),
            "specificity": m["specificity"],
            "specificity_ci": _ci_rate(m["tn"], m["tn"] + m["fp"]),
            "missed": m["fn"], "pneumonias": m["tp"] + m["fn"],
            "false_alarms": m["fp"], "normals": m["tn"] + m["fp"]}


def local_threshold(preds: Predictions, n: int, target_recall: float = 0.98, groups=None,
                    seed: int = 0) -> dict:
    """A threshold for ``target_recall`` chosen on ``n`` local images, judged on the rest.

    Returns ``threshold``, the held-back ``sensitivity``/``specificity`` (Wilson CIs),
    ``missed`` and ``false_alarms`` on the judging part, ``n_choose``/``n_judge``, and the
    indices ``choose``/``judge``. The lesson it serves: a threshold only moves along the
    ROC curve the model already has - where ranking is lost, restoring sensitivity
    costs most of the specificity.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> p = Predictions(y, np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1))
    >>> r = local_threshold(p, 100, target_recall=0.9)
    >>> r["n_choose"] + r["n_judge"], r["sensitivity"] > 0.7
    (300, True)
    """
    from fnlab.thresholds import threshold_for_recall

    choose, judge = calibration_split(preds.binary_truth(), n, groups, seed)
    cal = preds.subset(choose)
    if len(np.unique(cal.binary_truth())) < 2:
        raise ExternalDataError(f"the {len(choose)} local calibration images hold one class "
                                "only; calibrate on more images")
    t = threshold_for_recall(cal, target_recall)
    out = _held_back(preds.subset(judge), t)
    out.update(n_choose=int(len(choose)), n_judge=int(len(judge)),
               target_recall=float(target_recall), choose=choose, judge=judge)
    return out


def local_recalibration(preds: Predictions, n: int, target_recall: float = 0.98,
                        home_threshold: float | None = None, groups=None, seed: int = 0) -> dict:
    """The local recalibration step: ``n`` images choose, the rest judge.

    On the choosing part: the threshold for ``target_recall``, a Platt recalibration
    (:func:`fnlab.calibration.fit_platt`) and the conformal FNR threshold at
    ``alpha = 1 - target_recall`` (:func:`fnlab.thresholds.conformal_fnr_threshold`, the
    guarantee the course teaches, with local calibration data; when the choosing part
    has too few pneumonias for that alpha it is reported as infeasible). On the judging
    part: held-back sensitivity and specificity with CIs for each threshold, and at the
    home threshold for comparison; ECE before and after Platt.

    >>> rng = np.random.default_rng(1)
    >>> y = rng.integers(0, 2, 400)
    >>> p = Predictions(y, np.clip(0.4 * y + rng.random(400) * 0.6, 0.01, 0.99))
    >>> r = local_recalibration(p, 200, target_recall=0.9, home_threshold=0.5)
    >>> sorted(r)[:4]
    ['conformal', 'home_threshold', 'local_threshold', 'n_choose']
    """
    from fnlab.calibration import apply_platt, expected_calibration_error, fit_platt
    from fnlab.thresholds import conformal_fnr_threshold

    local = local_threshold(preds, n, target_recall, groups, seed)
    choose, judge = local.pop("choose"), local.pop("judge")
    cal, held = preds.subset(choose), preds.subset(judge)
    n_pos = int(cal.binary_truth().sum())
    alpha = 1.0 - float(target_recall)
    conformal: dict
    needed = math.ceil(1 / alpha - 1) if alpha > 0 else None
    if needed is None or n_pos < needed:
        conformal = {"feasible": False, "alpha": alpha, "calibration_pneumonias": n_pos,
                     "needed": needed,
                     "why": (f"{n_pos} local pneumonias are too few for a conformal FNR <= "
                             f"{alpha:g} (needs at least {needed})" if needed else
                             "target recall 1 has no conformal threshold")}
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tc = conformal_fnr_threshold(cal, alpha)
        conformal = {"feasible": True, "alpha": alpha, "calibration_pneumonias": n_pos,
                     **_held_back(held, tc)}
    platt: dict
    try:
        slope, intercept = fit_platt(cal)
        recal = apply_platt(held, slope, intercept)
        platt = {"slope": slope, "intercept": intercept,
                 "ece_before": float(expected_calibration_error(held)),
                 "ece_after": float(expected_calibration_error(recal))}
    except ValueError as exc:
        platt = {"error": str(exc)}
    out = {
        "n_choose": local.pop("n_choose"), "n_judge": local.pop("n_judge"),
        "target_recall": float(target_recall), "seed": int(seed),
        "patient_grouped": groups is not None,
        "local_threshold": local, "conformal": conformal, "platt": platt,
        "home_threshold": (None if home_threshold is None
                           else _held_back(held, float(home_threshold))),
    }
    return out


def recalibration_curve(preds: Predictions, sizes=CURVE_SIZES, target_recall: float = 0.98,
                        groups=None, repeats: int = 20, seed: int = 0) -> list[dict]:
    """Held-back sensitivity and specificity (mean and spread over ``repeats`` random
    local splits) against the number of local calibration images.

    Sizes that leave fewer than :data:`MIN_JUDGE` images to judge are left out.

    >>> rng = np.random.default_rng(2)
    >>> y = rng.integers(0, 2, 300)
    >>> p = Predictions(y, np.clip(0.5 * y + rng.random(300) * 0.5, 0, 1))
    >>> [row["n"] for row in recalibration_curve(p, sizes=(25, 50, 290), repeats=3)]
    [25, 50]
    """
    rows = []
    y = preds.binary_truth()
    for n in sizes:
        if n < 2 or n > len(y) - MIN_JUDGE:
            continue
        sens, spec, sizes_real = [], [], []
        for r in range(int(repeats)):
            try:
                res = local_threshold(preds, int(n), target_recall, groups, seed + r)
            except ExternalDataError:
                continue
            sens.append(res["sensitivity"])
            spec.append(res["specificity"])
            sizes_real.append(res["n_choose"])
        if not sens:
            continue
        rows.append({"n": int(n), "repeats": len(sens),
                     "n_choose_mean": float(np.mean(sizes_real)),
                     "sensitivity_mean": float(np.mean(sens)),
                     "sensitivity_sd": float(np.std(sens, ddof=1)) if len(sens) > 1 else 0.0,
                     "sensitivity_p05": float(np.percentile(sens, 5)),
                     "specificity_mean": float(np.mean(spec)),
                     "specificity_sd": float(np.std(spec, ddof=1)) if len(spec) > 1 else 0.0})
    return rows


# --------------------------------------------------------------------------- the lessons
def home_vs_away(run, external: ImageSet, n_resamples: int = 1000, seed: int = 0) -> dict:
    """The home model's AUC at home (its test split) and away, the drop and its CI.

    The claim ``external_site_drops`` holds when ``drop >= 0.10`` and the CI's lower end
    is above 0.

    >>> from fnlab.runs import Run                                  # doctest: +SKIP
    >>> run = Run.load("runs/my_run")                               # doctest: +SKIP
    >>> ext = load_external("../shared/data/nih_pneumonia_28_dev.npz").images  # doctest: +SKIP
    >>> d = home_vs_away(run, to_run_input(ext, run))                # doctest: +SKIP
    >>> d["drop"] >= 0.10 and d["drop_ci"][0] > 0                    # doctest: +SKIP
    True
    """
    preds = run.predict(external)
    out = auc_drop(run.test, preds, n_resamples=n_resamples, seed=seed)
    out["holds"] = bool(out["drop"] >= 0.10 and out["drop_ci"][0] > 0)
    return out


def _home_pixels(reference) -> np.ndarray:
    ref = np.asarray(reference.images if isinstance(reference, ImageSet) else reference)
    return np.sort(ref.reshape(-1).astype(np.float64))


def histogram_match(images: ImageSet, reference) -> ImageSet:
    """Each image's grey levels mapped so that its histogram matches the pooled pixels
    of ``reference`` (the home training images, an ImageSet or an array): unsupervised,
    it needs no local label. Quantile mapping: a pixel at rank q in its image gets the
    reference's q-quantile.

    >>> s = ImageSet(np.array([[[0, 10], [20, 30]]], np.uint8), [0])
    >>> ref = np.array([[100, 150], [200, 250]], np.uint8)
    >>> histogram_match(s, ref).images[0].tolist()
    [[100, 150], [200, 250]]
    """
    ref = _home_pixels(reference)
    ref_q = np.linspace(0, 1, len(ref))
    out = np.empty_like(images.images)
    for i, img in enumerate(images.images):
        flat = img.reshape(-1)
        values, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
        q = (np.cumsum(counts) - 0.5 * counts) / flat.size
        q = (q - q.min()) / max(q.max() - q.min(), 1e-12) if len(values) > 1 else q
        mapped = np.interp(q, ref_q, ref)
        out[i] = np.clip(np.rint(mapped[inverse]), 0, 255).astype(np.uint8).reshape(img.shape)
    res = images.subset(np.arange(len(images)))
    res.images = out
    res.meta = dict(res.meta, adaptation="histogram_match")
    return res


def standardise_to_home(images: ImageSet, mean: float, std: float) -> ImageSet:
    """Each image's pixels shifted and scaled to the home training mean and std (in
    [0, 1] units, e.g. ``run.checkpoint["normalization"]``): per-image normalisation.

    >>> s = ImageSet(np.array([[[0, 255]]], np.uint8), [0])
    >>> standardise_to_home(s, 0.5, 0.1).images.tolist()
    [[[102, 153]]]
    """
    x = images.images.astype(np.float64) / 255.0
    axes = tuple(range(1, x.ndim))
    m = x.mean(axis=axes, keepdims=True)
    s = x.std(axis=axes, keepdims=True).clip(1e-3)
    y = (x - m) / s * float(std) + float(mean)
    res = images.subset(np.arange(len(images)))
    res.images = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)
    res.meta = dict(res.meta, adaptation="standardise_to_home")
    return res


def fine_tune(run, local: ImageSet, epochs: int = 10, lr: float = 3e-4, seed: int = 0,
              augment: str | None = "xray"):
    """A copy of the Run's model fine-tuned on labelled local images (the Run's folder is
    never written). AdamW on every weight, class-weighted loss, input normalisation from
    the local part, the last epoch kept (no local image is spent on early stopping).

    >>> model = fine_tune(run, local_part, epochs=5)   # doctest: +SKIP
    """
    from fnlab.train import TrainConfig, fit

    model = run.model()
    config = TrainConfig(epochs=int(epochs), lr=float(lr), batch_size=32, monitor=None,
                         schedule="cosine", augment=augment, seed=int(seed), progress=False,
                         device="cpu")
    result = fit(model, local, local, config)  # normalisation: the local part's statistics
    return result.model.eval()


ADAPTATIONS = ("none", "histogram_match", "standardise", "fine_tune")


def adaptation_gain(run, external: ImageSet, method: str, n: int = 100,
                    reference=None, seed: int = 0, epochs: int = 10) -> dict:
    """Held-back local AUC before and after an adaptation (the claim
    ``local_adaptation_helps``: ``gain >= 0.05``).

    The local set is split with :func:`calibration_split` (patient-grouped when ids
    exist): ``n`` images are the local part, the rest judge. ``histogram_match`` (needs
    ``reference``, the home training images) and ``standardise`` use no local label at
    all; ``fine_tune`` trains on the labelled local part only. Both AUCs are measured on
    the same judging images.

    >>> g = adaptation_gain(run, ext, "histogram_match", reference=home_train)  # doctest: +SKIP
    >>> g["gain"] >= 0.05                                                       # doctest: +SKIP
    """
    from fnlab.metrics import binary_metrics
    from fnlab.train import predict

    if method not in ADAPTATIONS:
        raise ValueError(f"unknown adaptation {method!r}; choose one of {', '.join(ADAPTATIONS)}")
    choose, judge = calibration_split(external.labels, n, external.patient_ids, seed)
    held = external.subset(judge)
    before = run.predict(held)
    if method == "none":
        after = before
    elif method == "histogram_match":
        if reference is None:
            raise ValueError("histogram_match needs reference= the home training images")
        after = run.predict(histogram_match(held, reference))
    elif method == "standardise":
        norm = run.checkpoint["normalization"]
        after = run.predict(standardise_to_home(held, norm["mean"][0], norm["std"][0]))
    else:
        model = fine_tune(run, external.subset(choose), epochs=epochs, seed=seed)
        after = predict(model, held, model_name="fine_tuned")
    a0 = binary_metrics(before)["auc"]
    a1 = binary_metrics(after)["auc"]
    return {"method": method, "n_local": int(len(choose)), "n_judge": int(len(judge)),
            "auc_before": float(a0), "auc_after": float(a1), "gain": float(a1 - a0),
            "holds": bool(a1 - a0 >= 0.05)}
