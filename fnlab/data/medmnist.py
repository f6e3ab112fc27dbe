"""PneumoniaMNIST (MedMNIST v2): file registry, download with checksums, ``.npz`` loading.

The official files live in Zenodo record 10519652 (MedMNIST+ added the 64, 128 and
224 px versions to the original 28 px one). The same 5,856 paediatric chest X-rays
(Kermany et al., 2018) are split 4,708 / 524 / 624 (train / val / test); the test set
is the 624-image set on which published results are reported.

- :func:`download` fetches one file with a progress bar into a temporary file of its
  own, verifies its md5 and only then renames it into place, so that two processes
  downloading at once leave one verified file; a truncated or corrupt download is
  deleted and reported, and a network failure raises :class:`DownloadError` whose
  message lists the manual steps. Connecting (and waiting for the server's first
  answer) has a short timeout of its own, so an offline machine loses seconds.
- :func:`check_cached` says whether the cached file is the official one; only then
  does ``dataset="auto"`` use it (see :func:`fnlab.data.registry.resolve_dataset`).
- :func:`load_npz` loads *any* ``.npz`` of the MedMNIST layout (``train_images``,
  ``train_labels``, ``val_images``, ... ) from an explicit path, validating keys,
  lengths, label range and dtype. A file whose md5 differs from the official one
  (a variant, a subset, a re-export) is **loaded with a warning naming both
  checksums** - never treated as a corrupt download.

``$FNLAB_MEDMNIST_URL`` replaces the Zenodo folder with another one (a mirror, a
classroom server, the tests' local server): files are fetched from
``$FNLAB_MEDMNIST_URL/<file name>``, and verified against the same official md5.

MedMNIST has no patient identifiers, so ``patient_ids`` is None.

Licence: CC BY 4.0. Cite MedMNIST v2 and the source images (see :data:`CITATION`).

Example
-------
>>> file_info(64).filename, file_info(64).md5
('pneumoniamnist_64.npz', '8f4eceb4ccffa70c672198ea285246c6')
>>> file_info(28).url
'https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1'
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fnlab.config import data_dir
from fnlab.data.imageset import BINARY_CLASSES, ImageSet

ZENODO_RECORD = "10519652"
SPLITS = ("train", "val", "test")
LICENCE = "CC BY 4.0"
CITATION = (
    "Yang J, Shi R, Wei D, Liu Z, Zhao L, Ke B, Pfister H, Ni B. MedMNIST v2 - A large-scale "
    "lightweight benchmark for 2D and 3D biomedical image classification. Scientific Data "
    "10, 41 (2023). Source images: Kermany DS, Goldbaum M, et al. Identifying medical "
    "diagnoses and treatable diseases by image-based deep learning. Cell 172(5):1122-1131 "
    "(2018)."
)
#: Official split sizes (identical for every image size).
N_SAMPLES = {"train": 4708, "val": 524, "test": 624}
#: Environment variable: a base URL to fetch the files from instead of Zenodo.
URL_ENV = "FNLAB_MEDMNIST_URL"
#: Seconds :func:`download` waits, by default, to connect and get the server's first answer.
CONNECT_TIMEOUT = 10.0
#: The same for ``dataset="auto"``: short, so that an offline machine loses only seconds.
AUTO_CONNECT_TIMEOUT = 3.0
#: Temporary files of downloads older than this (seconds) are from dead processes: removed.
STALE_PART_SECONDS = 24 * 3600


@dataclass(frozen=True)
class MedMNISTFile:
    """One official PneumoniaMNIST file."""

    size: int
    filename: str
    md5: str
    n_samples: dict = field(default_factory=lambda: dict(N_SAMPLES))
    #: approximate download size, for messages ("about 4 MB")
    approx_size: str = ""

    @property
    def url(self) -> str:
        return f"https://zenodo.org/records/{ZENODO_RECORD}/files/{self.filename}?download=1"


#: size -> official file (names and md5 from the medmnist package's INFO dict; sizes
#: rounded from the Zenodo record).
PNEUMONIAMNIST: dict[int, MedMNISTFile] = {
    28: MedMNISTFile(28, "pneumoniamnist.npz", "28209eda62fecd6e6a2d98b1501bb15f",
                     approx_size="4 MB"),
    64: MedMNISTFile(64, "pneumoniamnist_64.npz", "8f4eceb4ccffa70c672198ea285246c6",
                     approx_size="21 MB"),
    128: MedMNISTFile(128, "pneumoniamnist_128.npz", "05b46931834c231683c68f40c47b2971",
                      approx_size="76 MB"),
    224: MedMNISTFile(224, "pneumoniamnist_224.npz", "d6a3c71de1b945ea11211b03746c1fe1",
                      approx_size="214 MB"),
}
SIZES = tuple(PNEUMONIAMNIST)

#: ChestMNIST (MedMNIST v2, NIH ChestX-ray14, 112,120 adult frontal X-rays, 14 text-mined
#: labels): the external site a student can download. Names and md5 from the medmnist
#: package's INFO dict (``medmnist/info.py``, Zenodo record 10519652); only its test
#: split is used, as an external set (:func:`chestmnist_binary`).
CHESTMNIST_SAMPLES = {"train": 78468, "val": 11219, "test": 22433}
CHESTMNIST: dict[int, MedMNISTFile] = {
    28: MedMNISTFile(28, "chestmnist.npz", "02c8a6516a18b556561a56cbdd36c4a8",
                     dict(CHESTMNIST_SAMPLES)),
    64: MedMNISTFile(64, "chestmnist_64.npz", "9de6cd0b934ebb5b7426cfba5efbae16",
                     dict(CHESTMNIST_SAMPLES), approx_size="400 MB"),
    128: MedMNISTFile(128, "chestmnist_128.npz", "db107e5590b27930b62dbaf558aebee3",
                      dict(CHESTMNIST_SAMPLES)),
    224: MedMNISTFile(224, "chestmnist_224.npz", "45bd33e6f06c3e8cdb481c74a89152aa",
                      dict(CHESTMNIST_SAMPLES)),
}
#: ChestMNIST's label index of pneumonia (of 14: atelectasis, cardiomegaly, effusion,
#: infiltration, mass, nodule, pneumonia, ...).
CHESTMNIST_PNEUMONIA = 6
CHESTMNIST_LICENCE = "CC BY 4.0"
CHESTMNIST_CITATION = (
    "Yang J, et al. MedMNIST v2 (Scientific Data 10, 41, 2023). Source images: Wang X, Peng Y, "
    "Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: hospital-scale chest X-ray database and "
    "benchmarks on weakly-supervised classification and localization of common thorax "
    "diseases. CVPR 2017; NIH Clinical Center."
)
#: dataset name -> its registry of official files
DATASETS = {"pneumoniamnist": PNEUMONIAMNIST, "chestmnist": CHESTMNIST}


class DownloadError(RuntimeError):
    """A download failed; the message says why and lists the manual steps.

    ``reason`` holds the short why (one line, no manual steps) when fnlab raised it.
    """

    def __init__(self, message: str = "", reason: str | None = None):
        super().__init__(message)
        self.reason = reason


class ChecksumError(DownloadError):
    """A downloaded file's md5 did not match; the file has been deleted."""


class ChecksumWarning(UserWarning):
    """A local ``.npz`` differs from the official file (loaded anyway)."""


class NpzFormatError(ValueError):
    """A ``.npz`` file does not have the MedMNIST layout; the message names the file."""

    def __init__(self, path, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        text = "; ".join(self.problems)
        super().__init__(f"{self.path}: {text}")


def file_info(size: int = 28, dataset: str = "pneumoniamnist") -> MedMNISTFile:
    """Registry entry for the official file of side ``size`` (28, 64, 128 or 224) of
    ``dataset`` (``"pneumoniamnist"`` or ``"chestmnist"``).

    >>> file_info(30)
    Traceback (most recent call last):
    ...
    ValueError: PneumoniaMNIST has no 30 px file; sizes: 28, 64, 128, 224
    >>> file_info(28, "chestmnist").md5
    '02c8a6516a18b556561a56cbdd36c4a8'
    """
    registry = DATASETS.get(dataset)
    if registry is None:
        raise ValueError(f"unknown MedMNIST dataset {dataset!r}; choose one of "
                         f"{', '.join(DATASETS)}")
    try:
        return registry[int(size)]
    except (KeyError, TypeError, ValueError):
        name = {"pneumoniamnist": "PneumoniaMNIST", "chestmnist": "ChestMNIST"}[dataset]
        raise ValueError(
            f"{name} has no {size} px file; sizes: {', '.join(map(str, registry))}"
        ) from None


def download_url(size: int = 28, dataset: str = "pneumoniamnist") -> str:
    """Where :func:`download` fetches the file of side ``size`` from.

    The official Zenodo URL, or ``$FNLAB_MEDMNIST_URL/<file name>`` when that
    variable is set (a mirror, a classroom server, a test server).

    >>> import os
    >>> os.environ["FNLAB_MEDMNIST_URL"] = "http://127.0.0.1:8000/medmnist/"
    >>> download_url(64)
    'http://127.0.0.1:8000/medmnist/pneumoniamnist_64.npz'
    >>> del os.environ["FNLAB_MEDMNIST_URL"]
    >>> download_url(28) == file_info(28).url
    True
    """
    info = file_info(size, dataset)
    base = os.environ.get(URL_ENV, "").strip()
    return f"{base.rstrip('/')}/{info.filename}" if base else info.url


def md5sum(path, chunk_size: int = 1 << 20) -> str:
    """md5 hex digest of a file, read in chunks.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x"); _ = open(p, "wb").write(b"abc")
    >>> md5sum(p)
    '900150983cd24fb0d6963f7d28e17f72'
    """
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


_MD5_MEMO: dict[tuple[str, int, int], str] = {}


def _md5_memo(path: Path) -> str:
    """md5sum, remembered per (path, size, mtime) so repeated checks cost one read."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MD5_MEMO:
        _MD5_MEMO[key] = md5sum(path)
    return _MD5_MEMO[key]


def cached_path(size: int = 28, dataset: str = "pneumoniamnist") -> Path | None:
    """``data_dir()/<official name>`` when that file exists, else None (see
    :func:`check_cached` for whether it is the official file).

    >>> cached_path(28) is None or cached_path(28).name == "pneumoniamnist.npz"
    True
    """
    path = data_dir() / file_info(size, dataset).filename
    return path if path.is_file() else None


def check_cached(size: int = 28) -> tuple[Path | None, str | None]:
    """Is the official file of side ``size`` in :func:`~fnlab.config.data_dir`?

    Returns ``(path, None)`` when the cached file has the official md5; ``(None, None)``
    when nothing is cached; ``(None, problem)`` when a file is there but is not the
    official one: the problem says whether it is a valid MedMNIST ``.npz`` (a variant,
    used only when named explicitly with ``data_path``) or a corrupt copy (to delete).
    The md5 is remembered per file size and modification time.

    >>> import os, tempfile
    >>> os.environ["FNLAB_DATA_DIR"] = tempfile.mkdtemp()
    >>> check_cached(28)
    (None, None)
    >>> _ = open(os.path.join(os.environ["FNLAB_DATA_DIR"], "pneumoniamnist.npz"), "wb").write(b"x")
    >>> path, problem = check_cached(28)
    >>> path is None and "a corrupt or truncated copy" in problem
    True
    >>> del os.environ["FNLAB_DATA_DIR"]
    """
    info = file_info(size)
    path = cached_path(size)
    if path is None:
        return None, None
    found = _md5_memo(path)
    if found == info.md5:
        return path, None
    _sets, problems, _notes = inspect_npz(path)
    if problems:
        return None, (
            f"{path} is not the official {info.filename} (md5 {found}, official {info.md5}) nor "
            f"a valid MedMNIST .npz ({problems[0]}), a corrupt or truncated copy: delete it and "
            f"run fnlab data download pneumoniamnist --size {size}")
    return None, (
        f"{path} is a valid MedMNIST .npz but not the official {info.filename} (md5 {found}, "
        f"official {info.md5}): a variant or a modified copy, used only when named explicitly "
        f"(data_path=... / --data-path {path})")


def manual_steps(size: int = 28, target=None, url: str | None = None,
                 md5: str | None = None, dataset: str = "pneumoniamnist") -> str:
    """Instructions for fetching the file by hand (part of every DownloadError).

    >>> "md5" in manual_steps(28, "/tmp/x/pneumoniamnist.npz")
    True
    """
    info = file_info(size, dataset)
    url = url or info.url
    md5 = md5 or info.md5
    target = Path(target) if target is not None else data_dir() / info.filename
    return (
        "Manual steps:\n"
        f"  1. On a machine with internet access, download\n       {url}\n"
        f"     (browser, or: curl -L -o {info.filename} '{url}')\n"
        f"  2. Check its md5 is {md5}\n"
        f"     (md5sum {info.filename}, or: python -c \"import hashlib,sys; "
        f"print(hashlib.md5(open(sys.argv[1],'rb').read()).hexdigest())\" {info.filename})\n"
        f"  3. Put it at {target}\n"
        + ("     (or anywhere, then load it with load_dataset('pneumoniamnist', "
           "data_path=PATH) and validate it with: fnlab data check PATH)"
           if dataset == "pneumoniamnist" else
           "     (or anywhere, then name it: fnlab evaluate RUN --data PATH)")
    )


def _target_path(size: int, dest, dataset: str = "pneumoniamnist") -> Path:
    info = file_info(size, dataset)
    if dest is None:
        return data_dir(create=True) / info.filename
    dest = Path(dest).expanduser()
    if dest.suffix == ".npz":
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    return dest / info.filename


# --------------------------------------------------------------------------- network
class _ReadTimeout:
    """An HTTP(S) connection whose socket timeout changes once the headers arrived:
    the short connect timeout covers connecting and the server's first answer, the
    longer read timeout every read of the body."""

    read_timeout: float | None = None

    def getresponse(self):
        sock = self.sock  # getresponse() hands the socket to the response (self.sock = None)
        response = super().getresponse()
        if sock is not None and self.read_timeout is not None:
            sock.settimeout(self.read_timeout)
        return response


class _HTTPConnection(_ReadTimeout, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_ReadTimeout, http.client.HTTPSConnection):
    pass


def _factory(cls, read_timeout):
    def connect(host, **kwargs):
        conn = cls(host, **kwargs)
        conn.read_timeout = read_timeout
        return conn

    return connect


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout):
        super().__init__()
        self.read_timeout = read_timeout

    def http_open(self, req):
        return self.do_open(_factory(_HTTPConnection, self.read_timeout), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout):
        super().__init__()
        self.read_timeout = read_timeout

    def https_open(self, req):
        return self.do_open(_factory(_HTTPSConnection, self.read_timeout), req,
                            context=self._context)


def _open(url: str, connect_timeout: float, read_timeout: float):
    """Open ``url``: connecting, the name lookup and the first answer must all happen
    within about ``connect_timeout`` seconds (a hard limit of twice that, which also
    bounds a slow DNS lookup), reads of the body then wait ``read_timeout`` each."""
    opener = urllib.request.build_opener(_HTTPHandler(read_timeout), _HTTPSHandler(read_timeout))
    request = urllib.request.Request(url, headers={"User-Agent": "fnlab (course kit)"})
    box: dict = {}
    lock = threading.Lock()

    def work():
        try:
            response = opener.open(request, timeout=connect_timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            with lock:
                box["error"] = exc
            return
        with lock:
            if box.get("abandoned"):
                response.close()
            else:
                box["response"] = response

    worker = threading.Thread(target=work, name="fnlab-download-connect", daemon=True)
    worker.start()
    worker.join(2 * connect_timeout)
    with lock:
        if "response" in box:
            return box["response"]
        if "error" in box:
            raise box["error"]
        box["abandoned"] = True
    raise TimeoutError(f"no answer within {2 * connect_timeout:g} s")


def _why(exc: BaseException, connect_timeout: float) -> str:
    """A short reason for a network failure."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        text = str(reason)
        return text if text.startswith("no answer") else f"no answer within {connect_timeout:g} s"
    return str(reason) or type(reason).__name__


def _remove_stale_parts(target: Path) -> None:
    """Delete temporary files of downloads that died long ago (never a live one)."""
    now = time.time()
    for part in target.parent.glob(f"{target.name}.*.part"):
        try:
            if now - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
        except OSError:
            pass


class _WriteError(Exception):
    def __init__(self, exc: OSError):
        self.exc = exc


def download(size: int = 28, dest=None, *, progress: bool = True, timeout: float = 60.0,
             force: bool = False, url: str | None = None, md5: str | None = None,
             connect_timeout: float | None = None, dataset: str = "pneumoniamnist") -> Path:
    """Download the official PneumoniaMNIST (or ``dataset="chestmnist"``) file of side
    ``size``; return its path.

    Parameters
    ----------
    size : 28, 64, 128 or 224.
    dest : a folder, or a ``.npz`` file path; default ``data_dir()``.
    progress : show a tqdm progress bar.
    timeout : seconds to wait for each read of the body before giving up.
    force : download again even when a file is already there.
    url, md5 : override the registry (mirrors, tests); the default URL is
        :func:`download_url` (``$FNLAB_MEDMNIST_URL`` when set).
    connect_timeout : seconds to connect and get the server's first answer
        (default ``min(timeout, CONNECT_TIMEOUT)``); a name lookup or a server that
        never answers is abandoned after twice that.

    A file already present with the right md5 is kept (no network). The download goes
    to a temporary ``<name>.<pid>.<token>.part`` file of this process in the target's
    folder and is renamed into place only after its length and md5 matched, so that
    concurrent downloads of one file leave one verified file. A truncated body or an
    md5 mismatch deletes the temporary file and raises :class:`DownloadError` /
    :class:`ChecksumError`; a network failure raises :class:`DownloadError`; every
    message lists the manual steps.

    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()  # a file already in place is verified, not fetched
    >>> _ = open(os.path.join(folder, "pneumoniamnist.npz"), "wb").write(b"abc")
    >>> download(28, folder, md5="900150983cd24fb0d6963f7d28e17f72").name
    'pneumoniamnist.npz'
    """
    info = file_info(size, dataset)
    url = url or download_url(size, dataset)
    expected = (md5 or info.md5).lower()
    target = _target_path(size, dest, dataset)
    steps = manual_steps(size, target, url, expected, dataset)
    if connect_timeout is None:
        connect_timeout = min(float(timeout), CONNECT_TIMEOUT)

    if target.exists() and not force:
        found = _md5_memo(target)
        if found == expected:
            return target
        raise DownloadError(
            f"{target} already exists but its md5 is {found}, not the official {expected} "
            "(a variant or a modified copy?). Load it directly with load_npz(path), or pass "
            "force=True (CLI: --force) to replace it with the official file.",
            reason=f"{target} exists but is not the official file (md5 {found})")

    _remove_stale_parts(target)
    part = target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:  # O_EXCL: this process's own file; mode 0o666 & ~umask like any new file
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
    except OSError as exc:
        raise DownloadError(f"cannot write into {target.parent}: {exc}\n{steps}",
                            reason=f"cannot write into {target.parent}: {exc}") from exc
    digest = hashlib.md5()
    received, total, answered = 0, None, False
    try:
        with os.fdopen(fd, "wb") as out:
            with _open(url, connect_timeout, timeout) as response:
                answered = True
                total = int(response.headers.get("Content-Length") or 0) or None
                from fnlab.config import progress_bar as tqdm

                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=info.filename, disable=not progress, leave=False,
                          file=sys.stderr) as bar:
                    while True:
                        block = response.read(1 << 16)
                        if not block:
                            break
                        try:
                            out.write(block)
                        except OSError as exc:
                            raise _WriteError(exc) from exc
                        digest.update(block)
                        received += len(block)
                        bar.update(len(block))
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        why = f"HTTP {exc.code} {exc.reason}"
        raise DownloadError(
            f"could not download {info.filename} from {url}: {why}\n{steps}", reason=why
        ) from exc
    except _WriteError as err:
        part.unlink(missing_ok=True)
        why = f"cannot write {part}: {err.exc} (disk full?)"
        raise DownloadError(f"{why}\n{steps}", reason=why) from err.exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        if answered and isinstance(exc, TimeoutError):
            why = f"the server stopped sending for {timeout:g} s"
        else:
            why = _why(exc, connect_timeout)
        got = f" after {received:,} of {total:,} bytes" if total else ""
        raise DownloadError(
            f"could not download {info.filename} from {url}{got}: {why} "
            f"(offline, behind a proxy, or the server is down?)\n{steps}", reason=why
        ) from exc
    except BaseException:
        part.unlink(missing_ok=True)
        raise

    if total is not None and received != total:
        part.unlink(missing_ok=True)
        why = (f"the connection closed after {received:,} of {total:,} bytes (a truncated "
               "download); the partial file was deleted")
        raise DownloadError(f"could not download {info.filename} from {url}: {why}. "
                            f"Try again, or:\n{steps}", reason=why)
    found = digest.hexdigest()
    if found != expected:
        part.unlink(missing_ok=True)
        why = (f"downloaded {received:,} bytes whose md5 is {found}, not the expected "
               f"{expected}; the bad file was deleted")
        raise ChecksumError(
            f"downloaded {info.filename} from {url} ({received:,} bytes) but its md5 is {found}, "
            f"not the expected {expected}; the bad file was deleted. Try again, or:\n{steps}",
            reason=why)
    try:
        os.replace(part, target)  # atomic: readers see no file or the whole verified one
    except OSError:
        part.unlink(missing_ok=True)
        # another process put the same verified file there meanwhile (Windows refuses to
        # replace a file that is open): use it
        if target.is_file() and md5sum(target) == expected:
            return target
        raise
    return target


# --------------------------------------------------------------------------- loading
def _read_npz(path: Path, keys: list[str]) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Read the wanted arrays; return (arrays, problems, all keys in the file)."""
    problems: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    if not path.is_file():
        raise NpzFormatError(path, ["file not found" if not path.exists() else "not a file"])
    if path.stat().st_size == 0:
        raise NpzFormatError(path, ["empty file (0 bytes)"])
    from fnlab.data.npzcheck import NpzLimitError, open_npz

    try:  # every member's size checked from its headers before anything is inflated
        npz = open_npz(path)
    except NpzLimitError as exc:
        raise NpzFormatError(path, exc.problems) from None
    except zipfile.BadZipFile as exc:
        with open(path, "rb") as fh:
            if fh.read(6) == b"\x93NUMPY":
                raise NpzFormatError(
                    path, ["holds a single array (.npy), not a .npz archive of arrays"]) from None
        raise NpzFormatError(path, [f"not a readable .npz archive ({exc})"]) from exc
    except (OSError, ValueError, EOFError) as exc:
        raise NpzFormatError(path, [f"not a readable .npz archive ({exc})"]) from exc
    with npz:
        present = list(npz.files)
        missing = [k for k in keys if k not in present]
        if missing:
            problems.append(
                f"missing keys {', '.join(missing)} (found: {', '.join(present) or 'none'}; "
                "the MedMNIST layout has train_images, train_labels, val_images, val_labels, "
                "test_images, test_labels)"
            )
        for key in keys:
            if key not in present:
                continue
            try:
                arrays[key] = npz[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    problems.append(
                        f"{key} is a Python object array (images of mixed sizes, or pickled "
                        "objects), which fnlab does not unpickle; save one uint8 array "
                        "N x H x W (fnlab.data.preprocess.preprocess_images resizes mixed sizes)"
                    )
                else:
                    problems.append(f"{key}: cannot read array ({exc})")
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                problems.append(f"{key}: corrupt or truncated data ({exc})")
    return arrays, problems, present


def _clean_images(key: str, a: np.ndarray, problems: list[str], notes: list[str]):
    if a.ndim == 4 and a.shape[-1] in (1, 3, 4):
        if a.shape[-1] == 1:
            a = a[..., 0]
        else:
            from fnlab.data.imageio import to_grayscale

            notes.append(f"{key}: colour images ({a.shape[-1]} channels) converted to grayscale")
            a = np.stack([to_grayscale(x) for x in a]) if len(a) else a[..., 0]
    elif a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3:
        problems.append(f"{key}: expected images N x H x W, got shape {a.shape}")
        return None
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        problems.append(f"{key}: dtype {a.dtype} is not a numeric image type (expected uint8)")
        return None
    if np.issubdtype(a.dtype, np.complexfloating):
        problems.append(f"{key}: dtype {a.dtype} holds complex numbers, not image values "
                        "(expected uint8 0..255, or floats in [0, 1])")
        return None
    if np.issubdtype(a.dtype, np.floating) and a.size and not np.isfinite(a).all():
        problems.append(f"{key}: {int((~np.isfinite(a)).sum()):,} values are not finite "
                        "(nan or inf); images need finite values")
        return None
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if np.issubdtype(a.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        notes.append(f"{key}: float images in [0, 1] scaled to uint8")
        return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    if lo >= 0 and hi <= 255 and np.all(np.mod(a, 1) == 0):
        notes.append(f"{key}: dtype {a.dtype} converted to uint8 (values within 0..255)")
        return a.astype(np.uint8)
    problems.append(
        f"{key}: dtype {a.dtype} with values {lo:g}..{hi:g} cannot be read as 8-bit images "
        "(expected uint8 0..255, or floats in [0, 1])"
    )
    return None


def _clean_labels(key: str, a: np.ndarray, n_classes: int, class_names, problems: list[str]):
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        problems.append(
            f"{key}: expected labels shaped (N,) or (N, 1), got {a.shape} "
            "(multi-label files are not supported)"
        )
        return None
    if not np.issubdtype(a.dtype, np.number):
        problems.append(f"{key}: dtype {a.dtype} is not numeric")
        return None
    if np.issubdtype(a.dtype, np.complexfloating):
        problems.append(f"{key}: dtype {a.dtype} holds complex numbers; labels are whole "
                        "numbers 0, 1, ...")
        return None
    if a.size and np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        bad = a[~np.isfinite(a)]
        problems.append(f"{key}: {bad.size} label(s) are not finite (e.g. {bad[0]}); labels "
                        "are whole numbers 0, 1, ...")
        return None
    if a.size and np.issubdtype(a.dtype, np.floating) and not np.all(np.mod(a, 1) == 0):
        problems.append(f"{key}: labels must be whole numbers, found e.g. {a[np.mod(a, 1) != 0][0]}")
        return None
    labels = a.astype(np.int64)
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        values = ", ".join(str(v) for v in np.unique(labels[bad])[:5])
        problems.append(
            f"{key}: {int(bad.sum())} labels out of range (values {values}); expected 0..{n_classes - 1} "
            f"for classes {list(class_names)}"
        )
        return None
    return labels


def inspect_npz(path, class_names=BINARY_CLASSES, splits=SPLITS):
    """Validate a MedMNIST-layout ``.npz`` without raising.

    Returns ``(sets, problems, notes)``: the cleaned ``dict[str, ImageSet]`` (only
    when there are no problems), a list of problems (each names the array and what
    is wrong) and notes (conversions, checksum).
    """
    path = Path(path)
    keys = [f"{s}_{kind}" for s in splits for kind in ("images", "labels")]
    try:
        arrays, problems, _present = _read_npz(path, keys)
    except NpzFormatError as exc:
        return {}, exc.problems, []
    notes: list[str] = []
    class_names = tuple(class_names)
    cleaned: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    shapes = {}
    for split in splits:
        ik, lk = f"{split}_images", f"{split}_labels"
        if ik not in arrays or lk not in arrays:
            continue
        images = _clean_images(ik, arrays[ik], problems, notes)
        labels = _clean_labels(lk, arrays[lk], len(class_names), class_names, problems)
        if images is None or labels is None:
            continue
        if len(images) != len(labels):
            problems.append(
                f"{split}: {len(images)} images ({ik}) but {len(labels)} labels ({lk})"
            )
            continue
        if len(images) == 0:
            problems.append(f"{split}: empty split (0 images)")
            continue
        shapes[split] = images.shape[1:]
        cleaned[split] = (images, labels)
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{s} {h}x{w}" for s, (h, w) in shapes.items())
        problems.append(f"splits have images of mixed sizes ({desc})")
    if problems:
        return {}, problems, notes
    sets = {
        split: ImageSet(images, labels, class_names=class_names, split=split,
                        source=str(path), meta={"index": np.arange(len(labels))})
        for split, (images, labels) in cleaned.items()
    }
    return sets, [], notes


def load_npz(path, size: int | None = None, verify: str = "warn",
             class_names=BINARY_CLASSES, splits=SPLITS) -> dict[str, ImageSet]:
    """Load a MedMNIST-layout ``.npz`` (official, variant or your own) from ``path``.

    Parameters
    ----------
    path : the ``.npz`` file.
    size : expected image side; None infers it from the arrays.
    verify : ``"warn"`` (default) warns with both checksums when the file is not the
        official one of its size; ``"strict"`` raises :class:`ChecksumError` instead;
        ``"off"`` skips the md5.
    class_names : names of the label values (index 0 = normal).
    splits : which splits to load.

    Returns ``{"train": ImageSet, "val": ..., "test": ...}`` with ``meta`` holding
    ``md5``, ``official`` (bool) and the per-image ``index`` within the file.
    Raises :class:`NpzFormatError` (a ValueError naming the file and every problem)
    for missing keys, length mismatches, labels out of range, bad dtypes or mixed sizes.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "mine.npz")
    >>> z = np.zeros((2, 28, 28), np.uint8)
    >>> np.savez(p, train_images=z, train_labels=[[0], [1]], val_images=z,
    ...          val_labels=[0, 1], test_images=z, test_labels=[1, 0])
    >>> sets = load_npz(p, verify="off")
    >>> sets["train"].summary()
    'train: 2 images (28, 28) (normal=1, pneumonia=1)'
    """
    if verify not in ("warn", "strict", "off"):
        raise ValueError(f"verify must be 'warn', 'strict' or 'off', got {verify!r}")
    path = Path(path).expanduser()
    sets, problems, _notes = inspect_npz(path, class_names=class_names, splits=splits)
    if problems:
        raise NpzFormatError(path, problems)
    side = next(iter(sets.values())).images.shape[-1]
    if size is not None and int(size) != side:
        raise NpzFormatError(path, [f"images are {side} px but size={size} was requested"])

    digest = official = None
    if verify != "off":
        digest = md5sum(path)
        info = PNEUMONIAMNIST.get(side)
        official = info is not None and digest == info.md5
        if not official:
            if info is None:
                msg = (f"{path}: no official PneumoniaMNIST file has {side} px images "
                       f"(md5 {digest}); loading it as a user-supplied file")
            else:
                msg = (f"{path}: md5 {digest} differs from the official {info.filename} "
                       f"(md5 {info.md5}); loading it as a user-supplied file (a variant, "
                       "subset or re-export), not the official MedMNIST release")
            if verify == "strict":
                raise ChecksumError(msg)
            warnings.warn(msg, ChecksumWarning, stacklevel=2)
    for s in sets.values():
        s.meta.update(md5=digest, official=official, file=str(path))
    return sets


# --------------------------------------------------------------------------- ChestMNIST
def chestmnist_binary(path, split: str = "test") -> ImageSet:
    """An external binary set from a ChestMNIST ``.npz``: the ``split`` images labelled
    pneumonia (label index :data:`CHESTMNIST_PNEUMONIA`, whatever else they show) against
    the images with no finding (all 14 labels 0); images with other findings only are
    left out. ChestMNIST has no patient ids (``patient_ids`` is None). Caveats: NIH
    labels were text-mined from reports (noisy); the patients are adults.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "chest.npz")
    >>> lab = np.zeros((4, 14), np.uint8); lab[1, 6] = 1; lab[2, 0] = 1; lab[3, [6, 2]] = 1
    >>> np.savez(p, test_images=np.zeros((4, 28, 28), np.uint8), test_labels=lab)
    >>> s = chestmnist_binary(p)
    >>> s.labels.tolist(), s.meta["index"].tolist()
    ([0, 1, 1], [0, 1, 3])
    """
    path = Path(path).expanduser()
    ik, lk = f"{split}_images", f"{split}_labels"
    arrays, problems, present = _read_npz(path, [ik, lk])
    if problems:
        raise NpzFormatError(path, problems)
    notes: list[str] = []
    images = _clean_images(ik, arrays[ik], problems, notes)
    labels = np.asarray(arrays[lk])
    if labels.ndim != 2 or labels.shape[1] != 14:
        problems.append(f"{lk}: expected ChestMNIST's 14 labels per image (N x 14), got shape "
                        f"{labels.shape}")
    elif images is not None and len(images) != len(labels):
        problems.append(f"{split}: {len(images)} images but {len(labels)} label rows")
    if problems or images is None:
        raise NpzFormatError(path, problems)
    pneumonia = labels[:, CHESTMNIST_PNEUMONIA] == 1
    no_finding = labels.sum(axis=1) == 0
    keep = np.flatnonzero(pneumonia | no_finding)
    return ImageSet(images[keep], pneumonia[keep].astype(np.int64), BINARY_CLASSES,
                    split="external", source=f"chestmnist:{path}",
                    meta={"index": keep, "file": str(path), "notes": notes})
