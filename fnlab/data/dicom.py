"""DICOM chest radiographs through pydicom (optional extra: ``pip install fnlab[dicom]``).

:func:`read_dicom` turns one file into the same uint8 grayscale array as every other
source:

1. the modality transform (``RescaleSlope`` / ``RescaleIntercept`` or a Modality LUT,
   via ``pydicom.pixels.apply_modality_lut``);
2. a linear VOI window - an explicit ``(center, width)``, else the file's
   ``WindowCenter`` / ``WindowWidth`` (first value when several), else the image's
   min..max - using the DICOM "LINEAR" function (PS3.3 C.11.2.1.2);
3. ``MONOCHROME1`` images (where high values are dark) are inverted so that, as in
   every other source, bone and opacities are bright.

Multi-frame files give their first frame; colour files are converted to luma.

Like :func:`fnlab.data.imageio.read_image`, :func:`read_dicom` refuses images over
:data:`~fnlab.data.imageio.MAX_PIXELS` (``Rows x Columns x NumberOfFrames`` from the
header, read before any pixel data is decoded or a deflated file is inflated) with the
same reason, :func:`~fnlab.data.imageio.too_many_pixels`.

:func:`load_dicom_folder` loads a folder of ``.dcm`` files into one
:class:`~fnlab.data.imageset.ImageSet`, with labels from class sub-folders
(``root/NORMAL/*.dcm``, ``root/PNEUMONIA/*.dcm``) or from a CSV file.

Example
-------
>>> import numpy as np
>>> window_linear(np.array([0.0, 50.0, 100.0]), center=50, width=101).tolist()
[1, 129, 255]
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np

from fnlab.data.folders import (
    DatasetLayoutError,
    Entry,
    SkippedFilesWarning,
    TreeScan,
    base_meta,
    check_on_error,
    files_under,
    visible_children,
    warn_skipped,
)
from fnlab.data.imageio import MAX_PIXELS, ImageReadError, to_grayscale, too_many_pixels
from fnlab.data.imageset import ImageSet
from fnlab.data.preprocess import SQUARE_METHODS, to_square

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic"})
#: Folder names taken as the normal class (index 0) when classes come from folders.
NORMAL_NAMES = frozenset({"normal", "negative", "healthy", "no finding", "no_finding"})


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading DICOM needs pydicom, an optional extra: pip install 'fnlab[dicom]' "
            "(or: pip install pydicom)"
        ) from exc
    return pydicom


def is_dicom_file(path) -> bool:
    """True for ``.dcm``/``.dicom``/``.dic`` files and extension-less files with the
    ``DICM`` marker at byte 128.

    >>> is_dicom_file("a/b/image.DCM"), is_dicom_file("notes.txt")
    (True, False)
    """
    p = Path(path)
    if p.suffix.lower() in DICOM_EXTENSIONS:
        return True
    if p.suffix == "" and p.is_file():
        try:
            with open(p, "rb") as fh:
                fh.seek(128)
                return fh.read(4) == b"DICM"
        except OSError:
            return False
    return False


def window_linear(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map values through the DICOM linear VOI window to uint8 0..255.

    >>> window_linear(np.array([-1000.0, 40.0, 1000.0]), center=40, width=400).tolist()
    [0, 128, 255]
    """
    c, w = float(center), float(width)
    if w < 1:
        raise ValueError(f"window width must be >= 1, got {width}")
    x = np.asarray(values, dtype=np.float64)
    y = ((x - (c - 0.5)) / (w - 1.0) + 0.5) if w > 1 else (x > c - 0.5).astype(float)
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


def _first(value):
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) \
            else float(value)
    except (TypeError, ValueError, IndexError):
        return None


#: Pixel data elements: reading a header stops before them.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
#: Inflated bytes a deflated file may hold beyond its pixel data (header, overlays, ...).
_DEFLATE_SLACK = 64 << 20
#: Most inflated header bytes read to find Rows and Columns in a deflated file.
_DEFLATE_HEADER_MAX = 16 << 20


def _header_int(header, keyword: str) -> int | None:
    """An integer header value, or None when absent or malformed."""
    try:
        value = getattr(header, keyword, None)
        return int(float(value)) if value not in (None, "") else None
    except Exception:  # noqa: BLE001 - pydicom converts lazily, any error means "unknown"
        return None


def _image_shape(header) -> tuple[int | None, int | None, int, int]:
    """``(rows, columns, frames, bytes per pixel)`` from a header (None when absent)."""
    rows, cols = _header_int(header, "Rows"), _header_int(header, "Columns")
    frames = max(_header_int(header, "NumberOfFrames") or 1, 1)
    spp = max(_header_int(header, "SamplesPerPixel") or 1, 1)
    bits = max(_header_int(header, "BitsAllocated") or 16, 8)
    return rows, cols, frames, spp * ((bits + 7) // 8)


def _check_pixel_limit(path: Path, header, max_pixels: int | None) -> None:
    rows, cols, frames, _ = _image_shape(header)
    if max_pixels is None or rows is None or cols is None:
        return
    total = rows * cols * frames
    if total > max_pixels:
        size = f"{cols} x {rows}" + (f" x {frames} frames" if frames > 1 else "")
        raise ImageReadError(path, too_many_pixels(total, max_pixels, size))


def _dataset_offset(path: Path) -> int:
    """Byte offset of the data set after the preamble and file meta information."""
    from pydicom import filereader

    with open(path, "rb") as fh:
        filereader.read_preamble(fh, False)
        read_meta = getattr(filereader, "_read_file_meta_info", None)
        if read_meta is not None:
            read_meta(fh)
            return fh.tell()
    meta = filereader.read_file_meta_info(path)
    return 132 + 12 + int(meta.FileMetaInformationGroupLength)


def _inflate(fh, inflater, limit: int, out: bytearray | None) -> int:
    """Inflate from ``fh`` until ``limit`` bytes came out or the stream ends; keep them
    in ``out`` (None: only count). Returns the number of bytes inflated."""
    n = 0
    while n < limit and not inflater.eof:
        chunk = inflater.unconsumed_tail or fh.read(1 << 16)
        if not chunk:
            break
        piece = inflater.decompress(chunk, min(limit - n, 1 << 20))
        n += len(piece)
        if out is not None:
            out += piece
    return n


def _deflated_header(path: Path, max_pixels: int | None) -> None:
    """Check a deflated file's image size, and that it inflates to no more than that
    image needs, without inflating it into memory."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    start = _dataset_offset(path)
    reached = []

    def stop(tag, vr, length):
        if int(tag) in _PIXEL_TAGS:
            reached.append(True)
            return True
        return False

    buf = bytearray()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    header = None
    with open(path, "rb") as fh:
        fh.seek(start)
        for limit in (1 << 16, 1 << 20, _DEFLATE_HEADER_MAX):
            _inflate(fh, inflater, limit - len(buf), buf)
            reached.clear()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header = read_dataset(DicomBytesIO(bytes(buf)), False, True, stop_when=stop)
            rows, cols, _, _ = _image_shape(header)
            if reached or inflater.eof or (rows is not None and cols is not None):
                break
        else:
            raise ImageReadError(path, f"deflated DICOM header runs past "
                                 f"{_DEFLATE_HEADER_MAX:,} bytes without an image size")
        _check_pixel_limit(path, header, max_pixels)
        rows, cols, frames, nbytes = _image_shape(header)
        cap = (rows or 0) * (cols or 0) * frames * nbytes + _DEFLATE_SLACK
        total = len(buf) + _inflate(fh, inflater, cap + 1 - len(buf), None)
    if total > cap:
        size = f"its {cols} x {rows} image" if rows and cols else "its header"
        raise ImageReadError(path, f"deflated DICOM inflates to over {cap:,} bytes, far more "
                             f"than {size} needs (possible decompression bomb)")


def _read_dataset(pydicom, path: Path, max_pixels: int | None):
    """The whole data set, once the header has passed the pixel limit."""
    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    meta = read_file_meta_info(path)
    if meta.get("TransferSyntaxUID", None) == DeflatedExplicitVRLittleEndian:
        _deflated_header(path, max_pixels)
    else:
        _check_pixel_limit(path, pydicom.dcmread(path, stop_before_pixels=True), max_pixels)
    return pydicom.dcmread(path)


def read_dicom(path, window=None, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read one DICOM file as uint8 grayscale ``H x W`` (see the module docstring).

    Parameters
    ----------
    path : the DICOM file.
    window : ``None`` (the file's WindowCenter/WindowWidth, else min..max),
        ``"minmax"`` (ignore the file's window) or ``(center, width)`` in modality
        units (e.g. Hounsfield units for CT).
    max_pixels : refuse images whose header gives more than this many pixels
        (``Rows x Columns x NumberOfFrames``), before decoding; None disables the check.

    Raises :class:`~fnlab.data.imageio.ImageReadError` naming the file when it is
    missing, empty, not DICOM, over ``max_pixels``, has no ``PixelData``, or cannot
    be decoded.

    >>> try:
    ...     read_dicom("/nonexistent.dcm")
    ... except ImageReadError as err:
    ...     print(err.reason)
    file not found
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")
    try:
        ds = _read_dataset(pydicom, path, max_pixels)
    except ImageReadError:
        raise
    except InvalidDicomError as exc:
        raise ImageReadError(path, f"not a DICOM file ({exc})") from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError,
            zlib.error) as exc:
        raise ImageReadError(path, f"truncated or corrupt DICOM ({exc})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        kind = getattr(ds, "Modality", None) or getattr(ds, "SOPClassUID", None)
        what = f" (Modality/SOP class: {kind})" if kind else ""
        raise ImageReadError(
            path, f"DICOM has no PixelData element, so it holds no image{what}")
    try:
        raw = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable data
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_name = getattr(ts, "name", ts) or "unknown transfer syntax"
        raise ImageReadError(
            path, f"cannot decode pixel data ({ts_name}): {exc} (compressed DICOM may need "
            "pylibjpeg or python-gdcm)") from exc

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    arr = np.asarray(raw)
    if frames > 1:
        arr = arr[0]
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if arr.ndim == 3 and photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, photometric, "RGB")
        return to_grayscale(arr)

    from pydicom.pixels import apply_modality_lut

    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if isinstance(window, str):
        if window != "minmax":
            raise ValueError(f"window must be None, 'minmax' or (center, width), got {window!r}")
        center = width = None
    elif window is not None:
        try:
            center, width = float(window[0]), float(window[1])
        except (TypeError, ValueError, IndexError):
            raise ValueError(
                f"window must be None, 'minmax' or (center, width), got {window!r}") from None
    else:
        center = _first(getattr(ds, "WindowCenter", None))
        width = _first(getattr(ds, "WindowWidth", None))
    if center is not None and width is not None and width >= 1:
        out = window_linear(values, center, width)
    else:
        lo, hi = float(values.min()), float(values.max())
        out = (np.zeros(values.shape, np.uint8) if hi <= lo
               else np.clip(np.rint((values - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8))
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def _class_index(names: list[str]) -> dict[str, int]:
    normal = [n for n in names if n.lower() in NORMAL_NAMES]
    others = sorted(n for n in names if n not in normal)
    return {n: i for i, n in enumerate(normal[:1] + normal[1:] + others)}


def scan_dicom(root, class_names=None, labels_csv=None) -> TreeScan:
    """List the DICOM files of a folder with their labels and every layout problem."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(root, [(str(root), "folder not found")])
    if labels_csv is not None:
        return _scan_csv(root, Path(labels_csv), class_names)
    kids = list(visible_children(root))
    dirs = [k for k in kids if k.is_dir()]
    scan = TreeScan(root, "dicom", ())
    if class_names is None:
        mapping = _class_index([d.name for d in dirs])
        names = tuple(mapping)
    else:
        names = tuple(class_names)
        mapping = {n: i for i, n in enumerate(names)}
    lower = {n.lower(): i for n, i in mapping.items()}
    scan.class_names = names
    for k in kids:
        if k.is_file():
            reason = ("file outside a class folder (put DICOMs in one folder per class, "
                      "or pass labels_csv=...)")
            scan.problems.append((str(k), reason))
            scan.skipped_files[str(k)] = reason
            continue
        label = lower.get(k.name.lower())
        if label is None:
            reason = f"unknown class folder {k.name!r} (expected {', '.join(names)})"
            scan.problems.append((str(k), reason))
            for f in files_under(k):
                scan.skipped_files[str(f)] = reason
            continue
        n_before = len(scan.entries)
        for f in files_under(k):
            if is_dicom_file(f):
                scan.entries.append(Entry(f, label, None, k.name))
            else:
                reason = f"not a DICOM file (extension {f.suffix or 'none'!r})"
                scan.problems.append((str(f), reason))
                scan.skipped_files[str(f)] = reason
        if len(scan.entries) == n_before:
            scan.problems.append((str(k), f"empty class folder {k.name!r}: no DICOM files"))
    if not dirs:
        scan.problems.append((str(root), "no class folders (and no labels_csv)"))
    scan.splits = ("all",)
    return scan


def _scan_csv(root: Path, csv: Path, class_names) -> TreeScan:
    import pandas as pd

    try:
        table = pd.read_csv(csv)
    except (OSError, ValueError) as exc:
        raise DatasetLayoutError(csv, [(str(csv), f"cannot read labels CSV ({exc})")]) from exc
    cols = {c.lower(): c for c in table.columns}
    path_col = next((cols[c] for c in ("path", "file", "filename") if c in cols), None)
    if path_col is None or "label" not in cols:
        raise DatasetLayoutError(csv, [(str(csv), "labels CSV needs columns 'path' (or "
                                        f"'file') and 'label'; found {list(table.columns)}")])
    raw = table[cols["label"]]
    if class_names is None:
        if pd.api.types.is_numeric_dtype(raw):
            n = int(raw.max()) + 1 if len(raw) else 2
            class_names = ("normal", "pneumonia") if n <= 2 else tuple(str(i) for i in range(n))
        else:
            class_names = tuple(_class_index(sorted(set(map(str, raw)))))
    names = tuple(class_names)
    lookup = {n.lower(): i for i, n in enumerate(names)}
    scan = TreeScan(root, "dicom", names)
    for row, (rel, lab) in enumerate(zip(table[path_col], raw)):
        f = root / str(rel)
        label = (int(lab) if isinstance(lab, (int, np.integer)) or str(lab).isdigit()
                 else lookup.get(str(lab).lower(), -1))
        if not 0 <= label < len(names):
            scan.problems.append((f"{csv}:{row + 2}", f"label {lab!r} not in {list(names)}"))
        elif not f.is_file():
            scan.problems.append((str(f), f"listed in {csv.name} (row {row + 2}) but missing"))
        else:
            scan.entries.append(Entry(f, label, None, ""))
    if not scan.entries:
        scan.problems.append((str(csv), "no usable rows"))
    scan.splits = ("all",)
    return scan


def load_dicom_folder(root, labels_csv=None, size: int = 224, method: str = "crop",
                      on_error: str = "raise", window=None, class_names=None,
                      split: str = "all", progress: bool = True) -> ImageSet:
    """Load a folder of DICOM files as one :class:`~fnlab.data.imageset.ImageSet`.

    Labels come from class folders (``root/<class>/**/*.dcm``; a folder named
    normal/negative/healthy becomes class 0, the rest in alphabetical order, or pass
    ``class_names``) or from ``labels_csv`` with columns ``path`` (relative to
    ``root``) and ``label`` (index or class name). Patient ids come from the
    ``PatientID`` tag when every file has one. Split the result yourself (e.g.
    :func:`fnlab.data.folders.grouped_holdout`).

    >>> try:
    ...     load_dicom_folder("/nonexistent")
    ... except ValueError as err:
    ...     print(str(err).splitlines()[1].strip())
    /nonexistent: folder not found
    """
    check_on_error(on_error)
    if method not in SQUARE_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, SQUARE_METHODS))}, "
                         f"got {method!r}")
    pydicom = _pydicom()
    from fnlab.config import progress_bar as tqdm

    scan = scan_dicom(root, class_names=class_names, labels_csv=labels_csv)
    if scan.problems and on_error == "raise":
        raise DatasetLayoutError(scan.root, scan.problems,
                                 "\n(pass on_error='skip' to skip these with a warning)")
    skipped = dict(scan.skipped_files)
    images, labels, patients, rel = [], [], [], []
    for e in tqdm(scan.entries, desc=f"reading {scan.root.name}", disable=not progress,
                  leave=False):
        try:
            img = read_dicom(e.path, window=window)
        except ImageReadError as exc:
            if on_error == "raise":
                raise ImageReadError(e.path, f"{exc.reason} (pass on_error='skip' to skip "
                                     "unreadable files)") from exc
            skipped[str(e.path)] = exc.reason
            continue
        images.append(to_square(img, size, method) if size else img)
        labels.append(e.label)
        try:
            pid = pydicom.dcmread(e.path, stop_before_pixels=True,
                                  specific_tags=["PatientID"]).get("PatientID", "")
        except Exception:  # header already read once; be lenient here
            pid = ""
        patients.append(str(pid))
        rel.append(str(e.path.relative_to(scan.root)))
    if skipped or scan.problems:
        warn_skipped(scan.root, skipped, scan.problems)
    if size is None and len({im.shape for im in images}) > 1:
        raise ValueError(f"{scan.root}: DICOM images of mixed sizes; pass size=N")
    side = int(size) if size else (images[0].shape[0] if images else 0)
    stack = np.stack(images) if images else np.zeros((0, side, side), np.uint8)
    pids = np.array(patients) if patients and all(patients) else None
    meta = base_meta(scan, skipped) | {"path": np.array(rel, dtype=str)}
    if not images:
        warnings.warn(f"{scan.root}: no readable DICOM images", SkippedFilesWarning,
                      stacklevel=2)
    return ImageSet(stack, np.array(labels, np.int64), class_names=scan.class_names or ("normal",),
                    patient_ids=pids, split=split, source=f"dicom:{scan.root}", meta=meta)
