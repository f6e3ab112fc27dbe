"""Validate a dataset on disk before training on it: ``fnlab data check PATH``.

:func:`check_path` accepts a MedMNIST-layout ``.npz``, a Kermany-style folder tree,
a COVID-19 Radiography tree or a folder of DICOM files, reads every image, and
returns a :class:`CheckReport` with

- counts per split and class;
- problems (each names the path): missing keys, length mismatches, labels out of
  range, unknown class folders, empty or missing splits, non-image files, corrupt,
  truncated, zero-byte or oversized images, DICOMs without pixel data, patients
  found in more than one split, and what ``fnlab train`` would refuse: a split holding
  one class only (or a training split lacking a class) and images smaller than
  :data:`~fnlab.data.imageio.MIN_IMAGE_SIDE` pixels on a side;
- notes that need no action: pixel formats converted on load (16-bit, RGBA, palette),
  mixed image sizes (loaders resize them), a checksum that differs from the official
  file, ignored files.

``report.ok`` is True when there are no problems; ``report.format()`` is the text
the CLI prints.

Example
-------
>>> import tempfile, os, numpy as np
>>> p = os.path.join(tempfile.mkdtemp(), "d.npz")
>>> z = np.zeros((2, 28, 28), np.uint8)
>>> np.savez(p, train_images=z, train_labels=[0, 1], val_images=z, val_labels=[0, 1],
...          test_images=z, test_labels=[0, 3])
>>> report = check_path(p)
>>> report.ok, report.problems[0]
(False, "test_labels: 1 labels out of range (values 3); expected 0..1 for classes ['normal', 'pneumonia']")
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fnlab.data.imageio import MIN_IMAGE_SIDE, ImageReadError, read_image

_MODE_NOTES = {
    "I;16": "16-bit, scaled to 8 bits by its range", "I;16B": "16-bit, scaled by its range",
    "I;16L": "16-bit, scaled by its range", "I": "32-bit integer, scaled by its range",
    "F": "floating point, scaled by its range", "RGBA": "RGBA, composited on black",
    "LA": "gray + alpha, composited on black", "P": "palette, expanded to gray",
    "PA": "palette + alpha, composited on black", "RGB": "colour, converted to luma",
    "CMYK": "CMYK, converted to luma", "1": "1-bit, mapped to 0/255",
}


@dataclass
class CheckReport:
    """The result of :func:`check_path`."""

    path: str
    kind: str = "unknown"
    class_names: tuple[str, ...] = ()
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bad_files: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    patient_overlap: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def n_images(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def format(self, max_lines: int = 50) -> str:
        """A readable multi-line report (what ``fnlab data check`` prints)."""
        out = [f"{self.path}  [{self.kind}]"]
        if self.counts:
            classes = list(self.class_names) or sorted(
                {c for counts in self.counts.values() for c in counts})
            width = max([len(c) for c in classes] + [9])
            out.append("  " + "split".ljust(8) + "".join(c.rjust(width + 2) for c in classes)
                       + "total".rjust(9))
            for split, counts in self.counts.items():
                row = "".join(str(counts.get(c, 0)).rjust(width + 2) for c in classes)
                out.append("  " + split.ljust(8) + row + str(sum(counts.values())).rjust(9))
        if self.sizes:
            common = sorted(self.sizes.items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{s} ({n})" for s, n in common[:5])
            more = f", ... {len(common) - 5} more" if len(common) > 5 else ""
            out.append(f"  image sizes: {shown}{more}")
        if self.problems:
            out.append(f"problems ({len(self.problems)}):")
            out.extend(f"  - {p}" for p in self.problems[:max_lines])
            if len(self.problems) > max_lines:
                out.append(f"  ... and {len(self.problems) - max_lines} more")
        if self.notes:
            out.append("notes:")
            out.extend(f"  - {n}" for n in self.notes[:max_lines])
            if len(self.notes) > max_lines:
                out.append(f"  ... and {len(self.notes) - max_lines} more")
        out.append("OK: no problems found" if self.ok
                   else f"FAILED: {len(self.problems)} problem(s)")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()


def check_path(path, progress: bool = False, workers: int | None = None) -> CheckReport:
    """Validate a ``.npz``, a Kermany/COVID folder tree or a DICOM folder.

    >>> check_path("/nonexistent").problems
    ['/nonexistent: not found']
    """
    path = Path(path).expanduser()
    report = CheckReport(str(path))
    if not path.exists():
        report.problems.append(f"{path}: not found")
        return report
    if path.is_file():
        if path.suffix.lower() == ".npz" or _is_zip(path):
            _check_npz(path, report)
        else:
            report.problems.append(
                f"{path}: not a .npz file; pass a .npz, a dataset folder or a DICOM folder")
        return report
    _check_tree(path, report, progress, workers)
    return report


def _is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _check_npz(path: Path, report: CheckReport) -> None:
    from fnlab.data import medmnist

    report.kind = "npz"
    sets, problems, notes = medmnist.inspect_npz(path)
    report.problems.extend(problems)
    report.notes.extend(notes)
    if sets:
        first = next(iter(sets.values()))
        report.class_names = first.class_names
        for split, s in sets.items():
            report.counts[split] = s.counts()
        h, w = first.images.shape[1], first.images.shape[2]
        side = f"{w}x{h}"
        report.sizes[side] = sum(len(s) for s in sets.values())
        if min(h, w) < MIN_IMAGE_SIDE:
            report.problems.append(f"{path}: {_too_small(w, h)}")
        _check_classes(report)
        digest = medmnist.md5sum(path)
        info = medmnist.PNEUMONIAMNIST.get(first.images.shape[-1])
        if info is not None and digest == info.md5:
            report.notes.append(f"md5 {digest}: the official {info.filename}")
        elif info is not None:
            report.notes.append(
                f"md5 {digest} differs from the official {info.filename} ({info.md5}): a "
                "user-supplied variant; it loads with a warning")
        else:
            report.notes.append(f"md5 {digest} (no official file has this image size)")


def detect_layout(root: Path):
    from fnlab.data.dicom import DICOM_EXTENSIONS
    from fnlab.data.folders import find_covid_root, find_kermany_root

    if find_kermany_root(root) is not None:
        return "kermany"
    for dirpath, _dirs, files in itertools.islice(os.walk(root), 200):
        if any(Path(f).suffix.lower() in DICOM_EXTENSIONS for f in files):
            return "dicom"
        del dirpath
    if find_covid_root(root) is not None:
        return "covid"
    return None


def _check_tree(root: Path, report: CheckReport, progress: bool, workers) -> None:
    from fnlab.config import progress_bar as tqdm
    from fnlab.data.folders import (
        DatasetLayoutError,
        parse_kermany_name,
        reader_workers,
        scan_covid,
        scan_kermany,
    )

    layout = detect_layout(root)
    if layout is None:
        report.problems.append(
            f"{root}: unrecognised layout; expected chest_xray/{{train,val,test}}/"
            "{NORMAL,PNEUMONIA}/, COVID/ Lung_Opacity/ Normal/ 'Viral Pneumonia'/, "
            "or class folders of .dcm files")
        return
    report.kind = layout
    try:
        if layout == "kermany":
            scan = scan_kermany(root)
        elif layout == "covid":
            scan = scan_covid(root)
        else:
            from fnlab.data.dicom import scan_dicom

            scan = scan_dicom(root)
    except DatasetLayoutError as exc:
        report.problems.extend(f"{p}: {r}" for p, r in exc.problems)
        return
    report.class_names = tuple(scan.class_names)
    report.problems.extend(f"{p}: {r}" for p, r in scan.problems)
    report.notes.extend(scan.notes)

    if layout == "dicom":
        from fnlab.data.dicom import read_dicom

        def work(p):
            try:
                img = read_dicom(p)
            except ImageReadError as exc:
                return None, "DICOM", exc.reason
            return img.shape, "DICOM", None
    else:
        from PIL import Image

        def work(p):
            try:
                with Image.open(p) as im:
                    mode = im.mode
            except Exception:  # read_image below gives the precise reason
                mode = "?"
            try:
                img = read_image(p)
            except ImageReadError as exc:
                return None, mode, exc.reason
            return img.shape, mode, None

    paths = [e.path for e in scan.entries]
    with ThreadPoolExecutor(max_workers=workers or reader_workers()) as pool:
        results = list(tqdm(pool.map(work, paths), total=len(paths), desc="checking",
                            disable=not progress, leave=False))
    modes: Counter = Counter()
    sizes: Counter = Counter()
    split_names = scan.splits or ("all",)
    counts = {s: {c: 0 for c in scan.class_names} for s in split_names}
    patients: dict[str, set] = {s: set() for s in split_names}
    for entry, (shape, mode, reason) in zip(scan.entries, results):
        if shape is not None and min(shape[:2]) < MIN_IMAGE_SIDE:
            shape, reason = None, _too_small(shape[1], shape[0])
        if shape is None:
            report.bad_files[str(entry.path)] = reason
            report.problems.append(f"{entry.path}: {reason}")
            continue
        split = entry.split or "all"
        counts.setdefault(split, {c: 0 for c in scan.class_names})
        counts[split][scan.class_names[entry.label]] += 1
        sizes[f"{shape[1]}x{shape[0]}"] += 1
        modes[mode] += 1
        if layout == "kermany":
            patients.setdefault(split, set()).add(parse_kermany_name(entry.path.name)[0])
    report.counts = counts
    report.sizes = dict(sizes)
    _check_classes(report)
    if len(sizes) > 1:
        report.notes.append(
            f"images of mixed sizes ({len(sizes)} different sizes); the loaders bring them "
            "to one square size (size=N, method='crop' or 'pad')")
    converted = {m: n for m, n in modes.items() if m not in ("L", "DICOM", "?")}
    for m, n in sorted(converted.items()):
        report.notes.append(f"{n} image(s) in mode {m} ({_MODE_NOTES.get(m, 'converted to 8-bit gray')})")
    for split, n in ((s, sum(c.values())) for s, c in counts.items()):
        if n == 0 and not any(f"empty split {split!r}" in p for p in report.problems) \
                and layout == "kermany" and (root / split).exists():
            report.problems.append(f"{split}: no readable images")
    for a, b in itertools.combinations([s for s in split_names if patients.get(s)], 2):
        shared = sorted(patients[a] & patients[b])
        if shared:
            key = f"{a}/{b}"
            report.patient_overlap[key] = shared
            shown = ", ".join(shared[:5]) + (" ..." if len(shared) > 5 else "")
            report.problems.append(
                f"patient overlap between {a} and {b}: {len(shared)} patient(s) ({shown}); "
                "re-split by patient (load_kermany(..., resplit=True))")


def _too_small(width: int, height: int) -> str:
    return (f"image of {width} x {height} px is smaller than {MIN_IMAGE_SIDE} px on a side, "
            "the smallest the models accept")


def _check_classes(report: CheckReport) -> None:
    """Flag splits that ``fnlab train`` refuses: one class only, or (the split it trains
    on) a class without images, which the class-weighted loss cannot weight."""
    for split, counts in report.counts.items():
        total = sum(counts.values())
        present = [c for c, n in counts.items() if n]
        if total == 0 or not counts:
            continue
        if len(present) < 2:
            report.problems.append(
                f"{split}: one class only ({total} {present[0]!r} image(s)); fnlab train needs "
                "images of at least two classes in every split (sensitivity, specificity, AUC "
                "and the threshold are undefined otherwise)")
        elif split in ("train", "all") and len(present) < len(counts):
            missing = ", ".join(repr(c) for c, n in counts.items() if not n)
            report.problems.append(
                f"{split}: no images of class {missing}; fnlab train needs images of every "
                "class to train on")
