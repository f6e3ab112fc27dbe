"""Folder datasets: Kermany-style ``chest_xray/`` and the COVID-19 Radiography Database.

**Kermany et al. (2018)**, the source of PneumoniaMNIST, ships as::

    chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg

File names carry the patient and the pneumonia subtype (:func:`parse_kermany_name`):
``person1_bacteria_1.jpeg`` (patient ``person1``, bacterial), ``person1_virus_6.jpeg``
(viral), ``IM-0001-0001.jpeg`` (patient ``IM-0001``, normal) and
``NORMAL2-IM-0035-0001.jpeg`` (patient ``NORMAL2-IM-0035``, normal). The shipped
``val`` split has only 16 images, so :func:`load_kermany` can re-split by patient
(``resplit=True``) so that no patient is in two splits.

The **COVID-19 Radiography Database** (Chowdhury et al., 2020; Rahman et al., 2021)
ships one folder per class - ``COVID/``, ``Lung_Opacity/``, ``Normal/``,
``Viral Pneumonia/`` - each with the images directly inside or in an ``images/``
subfolder beside ``masks/`` (ignored). It has no official split and no patient ids:
:func:`load_covid_radiography` makes a stratified 3:1:1 split, or K folds.

Bad input: unknown class folders, empty splits, non-image files, and unreadable
(corrupt, truncated, zero-byte, oversized) images raise a ``ValueError`` naming
the path, or with ``on_error="skip"`` are skipped with one warning listing the count
and the files; the count is kept in ``ImageSet.meta["skipped"]`` and the files with
their reasons in ``meta["skipped_files"]``. Hidden files, ``Thumbs.db``,
``desktop.ini`` and ``__MACOSX/`` folders are ignored silently.

Example
-------
>>> parse_kermany_name("person1_virus_6.jpeg")
('person1', 'viral')
>>> parse_kermany_name("NORMAL2-IM-0035-0001.jpeg")
('NORMAL2-IM-0035', 'normal')
"""

from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fnlab.data.imageio import ImageReadError, is_ignored_file, is_image_file, read_image
from fnlab.data.imageset import BINARY_CLASSES, FOUR_CLASSES, ImageSet
from fnlab.data.preprocess import SQUARE_METHODS, to_square

KERMANY_SPLITS = ("train", "val", "test")
#: Kermany class folder (upper case) -> label index into BINARY_CLASSES.
KERMANY_FOLDERS = {"NORMAL": 0, "PNEUMONIA": 1}
#: COVID-19 Radiography class folder -> label index into FOUR_CLASSES.
COVID_FOLDERS = {"Normal": 0, "Lung_Opacity": 1, "Viral Pneumonia": 2, "COVID": 3}
_COVID_ALIASES = {"normal": 0, "lung opacity": 1, "viral pneumonia": 2, "covid": 3, "covid 19": 3}
IGNORED_DIRS = frozenset({"__macosx"})
ON_ERROR = ("raise", "skip")

_PERSON = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE)
_NORMAL = re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-\d+", re.IGNORECASE)


class SkippedFilesWarning(UserWarning):
    """Files were skipped while loading (``on_error="skip"``)."""


class DatasetLayoutError(ValueError):
    """A folder tree does not have the expected layout; the message lists every problem."""

    def __init__(self, root, problems: list[tuple[str, str]], hint: str = ""):
        self.root = str(root)
        self.problems = list(problems)
        lines = [f"  {p}: {r}" for p, r in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"  ... and {len(self.problems) - 20} more")
        super().__init__(
            f"{self.root}: {len(self.problems)} problem(s):\n" + "\n".join(lines) + hint
        )


def parse_kermany_name(name) -> tuple[str, str]:
    """Patient id and subtype (``bacterial``, ``viral``, ``normal``, ``unknown``) of a file.

    Names that match no Kermany pattern give the file stem as the patient id and
    ``"unknown"`` as the subtype.

    >>> parse_kermany_name("person1_bacteria_1.jpeg")
    ('person1', 'bacterial')
    >>> parse_kermany_name("IM-0001-0001.jpeg")
    ('IM-0001', 'normal')
    >>> parse_kermany_name("scan_42.png")
    ('scan_42', 'unknown')
    """
    stem = Path(str(name)).name
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix else stem
    m = _PERSON.match(stem)
    if m:
        return m.group(1).lower(), "bacterial" if m.group(2).lower() == "bacteria" else "viral"
    m = _NORMAL.match(stem)
    if m:
        return m.group(1).upper(), "normal"
    return stem, "unknown"


# --------------------------------------------------------------------------- scanning
@dataclass
class Entry:
    """One image file found in a tree."""

    path: Path
    label: int
    split: str | None = None
    class_folder: str = ""


@dataclass
class TreeScan:
    """What a folder tree holds, before any pixel is read.

    ``problems`` are ``(path, reason)`` pairs: unknown class folders, non-image files,
    empty or missing splits. ``skipped_files`` counts the files inside those problems.
    """

    root: Path
    layout: str
    class_names: tuple[str, ...]
    entries: list[Entry] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped_files: dict[str, str] = field(default_factory=dict)
    splits: tuple[str, ...] = ()


def visible_children(folder: Path):
    try:
        children = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise DatasetLayoutError(folder, [(str(folder), f"cannot list folder ({exc})")]) from exc
    for child in children:
        if is_ignored_file(child) or child.name.lower() in IGNORED_DIRS:
            continue
        yield child


def files_under(folder: Path, skip_dirs=()) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(
            d for d in dirnames
            if not d.startswith(".") and d.lower() not in IGNORED_DIRS
            and not (Path(dirpath) == folder and d.lower() in skip_dirs)
        )
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if not is_ignored_file(p):
                out.append(p)
    return out


def _add_class_files(scan: TreeScan, files: list[Path], label: int, split, folder_name):
    for f in files:
        if is_image_file(f):
            scan.entries.append(Entry(f, label, split, folder_name))
        else:
            reason = f"not an image file (extension {f.suffix or 'none'!r})"
            scan.problems.append((str(f), reason))
            scan.skipped_files[str(f)] = reason


def _reject_folder(scan: TreeScan, folder: Path, reason: str):
    scan.problems.append((str(folder), reason))
    for f in files_under(folder):
        scan.skipped_files[str(f)] = reason


def find_kermany_root(root) -> Path | None:
    """The folder holding ``train/``, ``val/`` or ``test/`` at ``root`` or up to 2 levels down.

    Handles the Kaggle archive, which nests ``chest_xray/chest_xray/``.
    """
    root = Path(root)
    frontier = [root]
    for _depth in range(3):
        nxt = []
        for folder in frontier:
            if not folder.is_dir():
                continue
            kids = list(visible_children(folder))
            names = {k.name.lower() for k in kids if k.is_dir()}
            if names & set(KERMANY_SPLITS):
                return folder
            nxt.extend(k for k in kids if k.is_dir())
        frontier = nxt
    return None


def scan_kermany(root, require_splits=KERMANY_SPLITS) -> TreeScan:
    """List the images of a Kermany-style tree and every layout problem (no pixels read)."""
    given = Path(root).expanduser()
    if not given.is_dir():
        raise DatasetLayoutError(given, [(str(given), "folder not found")])
    base = find_kermany_root(given)
    if base is None:
        raise DatasetLayoutError(given, [(
            str(given),
            "no train/, val/ or test/ folder found (expected "
            "chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg)",
        )])
    scan = TreeScan(base, "kermany", BINARY_CLASSES)
    split_dirs = {}
    for child in visible_children(base):
        if child.is_dir() and child.name.lower() in KERMANY_SPLITS:
            split_dirs[child.name.lower()] = child
        elif child.is_dir():
            scan.notes.append(f"ignored folder {child} (not a split: train, val, test)")
        else:
            scan.notes.append(f"ignored file {child} (outside the split folders)")
    scan.splits = tuple(s for s in KERMANY_SPLITS if s in split_dirs)
    for split in require_splits:
        if split not in split_dirs:
            scan.problems.append((str(base / split), f"missing split folder {split!r}"))
    for split, folder in split_dirs.items():
        n_before = len(scan.entries)
        for child in visible_children(folder):
            if child.is_dir():
                label = KERMANY_FOLDERS.get(child.name.upper())
                if label is None:
                    _reject_folder(scan, child, f"unknown class folder {child.name!r} "
                                   f"(expected {', '.join(KERMANY_FOLDERS)})")
                else:
                    _add_class_files(scan, files_under(child), label, split, child.name)
            else:
                reason = "file outside a class folder (expected NORMAL/ or PNEUMONIA/)"
                scan.problems.append((str(child), reason))
                scan.skipped_files[str(child)] = reason
        if len(scan.entries) == n_before and split in require_splits:
            scan.problems.append((str(folder), f"empty split {split!r}: no images"))
    return scan


def find_covid_root(root) -> Path | None:
    """The folder holding the COVID-19 Radiography class folders (``root`` or 1-2 levels down)."""
    frontier = [Path(root)]
    for _depth in range(3):
        nxt = []
        for folder in frontier:
            if not folder.is_dir():
                continue
            kids = [k for k in visible_children(folder) if k.is_dir()]
            if any(_covid_label(k.name) is not None for k in kids):
                return folder
            nxt.extend(kids)
        frontier = nxt
    return None


def _covid_label(name: str) -> int | None:
    key = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    return _COVID_ALIASES.get(key)


def scan_covid(root) -> TreeScan:
    """List the images of a COVID-19 Radiography tree and every layout problem."""
    given = Path(root).expanduser()
    if not given.is_dir():
        raise DatasetLayoutError(given, [(str(given), "folder not found")])
    base = find_covid_root(given)
    if base is None:
        raise DatasetLayoutError(given, [(
            str(given),
            "no class folder found (expected COVID/, Lung_Opacity/, Normal/, "
            "Viral Pneumonia/, optionally with images/ subfolders)",
        )])
    scan = TreeScan(base, "covid", FOUR_CLASSES)
    seen = set()
    for child in visible_children(base):
        if not child.is_dir():
            scan.notes.append(f"ignored file {child.name} (metadata or documentation)")
            continue
        label = _covid_label(child.name)
        if label is None:
            _reject_folder(scan, child, f"unknown class folder {child.name!r} "
                           f"(expected {', '.join(COVID_FOLDERS)})")
            continue
        seen.add(label)
        sub = {k.name.lower(): k for k in visible_children(child) if k.is_dir()}
        if "images" in sub:
            files = files_under(sub["images"])
            loose = [f for f in visible_children(child) if f.is_file()]
            scan.notes.extend(f"ignored file {f} (beside images/)" for f in loose)
        else:
            files = files_under(child, skip_dirs={"masks"})
        n_before = len(scan.entries)
        _add_class_files(scan, files, label, None, child.name)
        if len(scan.entries) == n_before:
            scan.problems.append((str(child), f"empty class folder {child.name!r}: no images"))
    for name, label in COVID_FOLDERS.items():
        if label not in seen:
            scan.problems.append((str(base / name), f"missing class folder {name!r}"))
    scan.splits = ("all",)
    return scan


# --------------------------------------------------------------------------- reading
def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(map(repr, ON_ERROR))}, "
                         f"got {on_error!r}")


def reader_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def read_images(paths, size: int | None, method: str = "crop", on_error: str = "raise",
                progress: bool = True, workers: int | None = None, desc: str = "reading",
                max_pixels: int | None = None):
    """Read image files into ``N x size x size`` uint8 (or their own size when ``size=None``).

    Returns ``(images, ok, bad)``: the stacked images of the readable files, a boolean
    mask over ``paths``, and ``{path: reason}`` of the unreadable ones (only with
    ``on_error="skip"``; ``"raise"`` raises :class:`~fnlab.data.imageio.ImageReadError`
    at the first bad file). With ``size=None`` all images must share one size.
    """
    from fnlab.config import progress_bar as tqdm
    from fnlab.data.imageio import MAX_PIXELS

    check_on_error(on_error)
    if method not in SQUARE_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, SQUARE_METHODS))}, "
                         f"got {method!r}")
    paths = [Path(p) for p in paths]
    limit = MAX_PIXELS if max_pixels is None else max_pixels

    def work(path):
        try:
            img = read_image(path, max_pixels=limit, draft_size=size)
        except ImageReadError as exc:
            return None, exc.reason
        return (img if size is None else to_square(img, size, method)), None

    results = []
    pool = ThreadPoolExecutor(max_workers=workers or reader_workers())
    try:
        for path, (img, reason) in tqdm(zip(paths, pool.map(work, paths)), total=len(paths),
                                        desc=desc, disable=not progress, leave=False):
            if img is None and on_error == "raise":
                raise ImageReadError(
                    path, f"{reason} (pass on_error='skip' to skip unreadable files)")
            results.append((path, img, reason))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    ok = np.array([img is not None for _, img, _ in results], bool)
    bad = {str(p): r for p, img, r in results if img is None}
    good = [(p, img) for p, img, _ in results if img is not None]
    if size is None and good:
        shapes: dict[tuple, Path] = {}
        for p, img in good:
            shapes.setdefault(img.shape, p)
        if len(shapes) > 1:
            examples = ", ".join(f"{p} ({s[0]}x{s[1]})" for s, p in list(shapes.items())[:3])
            raise ValueError(
                f"images of mixed sizes ({len(shapes)} different sizes, e.g. {examples}); "
                "pass size=N (and method='crop' or 'pad') to bring them to N x N"
            )
    if good:
        images = np.stack([img for _, img in good])
    else:
        side = int(size) if size else 0
        images = np.zeros((0, side, side), np.uint8)
    return images, ok, bad


def _handle_scan(scan: TreeScan, on_error: str) -> None:
    if scan.problems and on_error == "raise":
        raise DatasetLayoutError(
            scan.root, scan.problems,
            "\n(pass on_error='skip' to skip these files and folders with a warning)",
        )


def warn_skipped(root, skipped: dict[str, str], problems) -> None:
    extra = [f"{p} ({r})" for p, r in problems if p not in skipped and r.startswith(("empty", "missing"))]
    if not skipped and not extra:
        return
    items = [f"{p} ({r})" for p, r in skipped.items()]
    shown = "; ".join(items[:10]) + (f"; ... and {len(items) - 10} more" if len(items) > 10 else "")
    msg = f"{root}: skipped {len(skipped)} file(s)"
    if shown:
        msg += f": {shown}"
    if extra:
        msg += ". Also: " + "; ".join(extra)
    warnings.warn(msg, SkippedFilesWarning, stacklevel=3)


# --------------------------------------------------------------------------- splitting
def grouped_holdout(labels, groups, fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of a stratified hold-out of about ``fraction`` with whole groups only.

    Uses scikit-learn's ``StratifiedGroupKFold`` (one fold of ``round(1/fraction)``):
    every patient (group) lands entirely on one side.

    >>> labels = np.array([0, 0, 1, 1] * 5); groups = np.repeat(np.arange(10), 2)
    >>> m = grouped_holdout(labels, groups, 0.2, seed=0)
    >>> set(groups[m]) & set(groups[~m])
    set()
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in (0, 1), got {fraction}")
    n_splits = max(2, int(round(1.0 / fraction)))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ValueError(
            f"cannot hold out {fraction:.0%} by patient: only {n_groups} patients "
            f"(need at least {n_splits})"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, hold = next(splitter.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), bool)
    mask[hold] = True
    return mask


def _kfold_assign(labels, k: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    counts = np.bincount(labels)
    small = [(i, int(c)) for i, c in enumerate(counts) if 0 < c < k]
    if small:
        i, c = small[0]
        raise ValueError(f"class {i} has only {c} images; a stratified split into {k} "
                         f"folds needs at least {k} per class")
    fold_of = np.empty(len(labels), np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, idx) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold_of[idx] = f
    return fold_of


# --------------------------------------------------------------------------- loaders
def base_meta(scan: TreeScan, skipped: dict[str, str]) -> dict:
    return {"skipped": len(skipped), "skipped_files": dict(skipped),
            "layout": scan.layout, "root": str(scan.root)}


def load_kermany(root, size: int = 224, method: str = "crop", on_error: str = "raise",
                 resplit: bool | str = False, seed: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, progress: bool = True,
                 workers: int | None = None) -> dict[str, ImageSet]:
    """Load a Kermany-style ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}`` tree.

    Parameters
    ----------
    root : ``chest_xray/`` or a folder above it (the Kaggle archive's nesting is found).
    size : side of the square output images; None keeps the files' size (all must match).
    method : ``"crop"`` (center square) or ``"pad"`` (black borders); see
        :func:`fnlab.data.preprocess.to_square`.
    on_error : ``"raise"`` or ``"skip"`` (warn once, count in ``meta["skipped"]``).
    resplit : ``False`` keeps the shipped splits. ``True`` (or ``"all"``) pools every
        image and splits **by patient**, stratified by label: ``test_fraction`` for
        test and ``val_fraction`` for val. ``"trainval"`` keeps the shipped test set
        (the published benchmark) and re-splits train + val by patient, dropping from
        them any patient who is also in the test set. No patient is in two splits.
    seed : seed of the re-split.

    Per-image ``meta``: ``path`` (relative to the root), ``subtype`` (bacterial, viral,
    normal, unknown), ``original_split``. ``patient_ids`` come from the file names.

    >>> try:
    ...     load_kermany("/nonexistent")
    ... except ValueError as err:
    ...     print(err)
    /nonexistent: 1 problem(s):
      /nonexistent: folder not found
    """
    check_on_error(on_error)
    if resplit not in (False, True, "all", "trainval"):
        raise ValueError(f"resplit must be False, True, 'all' or 'trainval', got {resplit!r}")
    mode = "all" if resplit is True else resplit
    required = KERMANY_SPLITS if not mode else (("test",) if mode == "trainval" else ())
    scan = scan_kermany(root, require_splits=required)
    if mode and not scan.entries:
        scan.problems.append((str(scan.root), "no images in any split"))
    _handle_scan(scan, on_error)

    paths = [e.path for e in scan.entries]
    images, ok, bad = read_images(paths, size, method, on_error, progress, workers,
                                  desc=f"reading {scan.root.name}")
    skipped = {**scan.skipped_files, **bad}
    entries = [e for e, good in zip(scan.entries, ok) if good]
    labels = np.array([e.label for e in entries], np.int64)
    parsed = [parse_kermany_name(e.path.name) for e in entries]
    patients = np.array([p for p, _ in parsed], dtype=object).astype(str)
    subtypes = np.array([s for _, s in parsed], dtype=object).astype(str)
    orig = np.array([e.split for e in entries], dtype=object).astype(str)
    rel = np.array([str(e.path.relative_to(scan.root)) for e in entries], dtype=object).astype(str)

    assign = orig.copy()
    notes: dict = {}
    if mode == "all" and len(entries):
        test = grouped_holdout(labels, patients, test_fraction, seed)
        rest = np.flatnonzero(~test)
        val_rest = grouped_holdout(labels[rest], patients[rest],
                                   val_fraction / (1.0 - test_fraction), seed + 1)
        assign[:] = "train"
        assign[test] = "test"
        assign[rest[val_rest]] = "val"
    elif mode == "trainval" and len(entries):
        test_patients = set(patients[orig == "test"])
        pool = np.flatnonzero(orig != "test")
        overlap = np.array([patients[i] in test_patients for i in pool], bool)
        if overlap.any():
            dropped = pool[overlap]
            notes["dropped_for_test_overlap"] = int(len(dropped))
            warnings.warn(
                f"{scan.root}: {len(dropped)} train/val image(s) of "
                f"{len(set(patients[dropped]))} patient(s) who are also in the test split "
                "were dropped so that no patient is in two splits", SkippedFilesWarning,
                stacklevel=2)
            assign[dropped] = "dropped"
            pool = pool[~overlap]
        val_mask = grouped_holdout(labels[pool], patients[pool], val_fraction, seed)
        assign[pool] = "train"
        assign[pool[val_mask]] = "val"

    if skipped or any(r.startswith(("empty", "missing")) for _, r in scan.problems):
        warn_skipped(scan.root, skipped, scan.problems)
    out = {}
    split_names = KERMANY_SPLITS if mode else scan.splits or KERMANY_SPLITS
    for split in split_names:
        idx = np.flatnonzero(assign == split)
        meta = base_meta(scan, skipped) | notes | {
            "path": rel[idx], "subtype": subtypes[idx], "original_split": orig[idx],
            "resplit": mode or False, "seed": seed,
        }
        out[split] = ImageSet(
            images=images[idx] if len(images) else images, labels=labels[idx],
            class_names=BINARY_CLASSES, patient_ids=patients[idx], split=split,
            source=f"kermany:{scan.root}", meta=meta,
        )
    return out


def load_covid_radiography(root, size: int = 224, method: str = "crop",
                           on_error: str = "raise", folds: int | None = None, fold: int = 0,
                           seed: int = 0, progress: bool = True,
                           workers: int | None = None) -> dict[str, ImageSet]:
    """Load the COVID-19 Radiography Database (4 classes, :data:`FOUR_CLASSES`).

    The database has no official split, so one is made here, stratified by class:

    - ``folds=None``: train / val / test in the ratio **3:1:1** (5 stratified folds;
      fold ``fold`` is test, the next one val, the other three train);
    - ``folds=k``: K-fold cross-validation; fold ``fold`` (0..k-1) is test, fold
      ``(fold + 1) % k`` is val and the rest train. Loop ``fold`` over ``range(k)``.

    It has no patient ids (``patient_ids`` is None), so the split cannot be grouped
    by patient; use Kermany or the synthetic set for the leakage lesson.

    >>> try:
    ...     load_covid_radiography("/nonexistent")
    ... except ValueError as err:
    ...     print(err)
    /nonexistent: 1 problem(s):
      /nonexistent: folder not found
    """
    check_on_error(on_error)
    k = 5 if folds is None else int(folds)
    if k < 3:
        raise ValueError(f"folds must be at least 3 (test, val and train folds), got {folds}")
    if not 0 <= int(fold) < k:
        raise ValueError(f"fold must be in 0..{k - 1}, got {fold}")
    scan = scan_covid(root)
    _handle_scan(scan, on_error)
    paths = [e.path for e in scan.entries]
    images, ok, bad = read_images(paths, size, method, on_error, progress, workers,
                                  desc=f"reading {scan.root.name}")
    skipped = {**scan.skipped_files, **bad}
    if skipped or scan.problems:
        warn_skipped(scan.root, skipped, scan.problems)
    entries = [e for e, good in zip(scan.entries, ok) if good]
    if not entries:
        raise DatasetLayoutError(scan.root, [(str(scan.root), "no readable images")])
    labels = np.array([e.label for e in entries], np.int64)
    rel = np.array([str(e.path.relative_to(scan.root)) for e in entries], dtype=object).astype(str)
    fold_of = _kfold_assign(labels, k, seed)
    test_f, val_f = int(fold), (int(fold) + 1) % k
    out = {}
    for split, mask in (("train", (fold_of != test_f) & (fold_of != val_f)),
                        ("val", fold_of == val_f), ("test", fold_of == test_f)):
        idx = np.flatnonzero(mask)
        meta = base_meta(scan, skipped) | {
            "path": rel[idx], "folds": k, "fold": int(fold), "seed": seed,
        }
        out[split] = ImageSet(images[idx], labels[idx], class_names=FOUR_CLASSES, split=split,
                              source=f"covid_radiography:{scan.root}", meta=meta)
    return out
