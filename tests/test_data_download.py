"""Downloads of PneumoniaMNIST and ``dataset="auto"``, against local servers only.

Every test here talks to 127.0.0.1: a small HTTP server whose answers can be cut short,
delayed or held back until two requests arrived, and a socket that accepts connections
but never answers. The session runs offline (``FNLAB_OFFLINE=1``, tests/conftest.py);
tests of the online path unset it with monkeypatch.
"""

from __future__ import annotations

import dataclasses
import http.server
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from fnlab.cli import main
from fnlab.data import medmnist, registry
from fnlab.data.medmnist import ChecksumError, ChecksumWarning, DownloadError, download, md5sum
from fnlab.data.registry import DatasetNotAvailable, load_dataset, resolve_dataset

GET_REAL = "fnlab data download pneumoniamnist --size 28"


# --------------------------------------------------------------------------- servers
class _App:
    """What the server serves: ``files[name] = bytes``; ``modes[name]`` a list of
    behaviours, one per request (the last one repeats): ``ok``, ``truncate`` (announce
    the whole length, send half, close), ``slow`` (small chunks with pauses),
    ``late_body`` (headers at once, the body after a pause)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, list[str]] = {}
        self.requests: list[str] = []
        self.barrier: threading.Barrier | None = None
        self.lock = threading.Lock()

    def mode(self, name: str) -> str:
        with self.lock:
            queue = self.modes.get(name) or ["ok"]
            return queue.pop(0) if len(queue) > 1 else queue[0]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        app: _App = self.server.app
        name = self.path.lstrip("/").split("?")[0]
        with app.lock:
            app.requests.append(name)
        body = app.files.get(name)
        if body is None:
            self.send_error(404)
            return
        mode = app.mode(name)
        if app.barrier is not None:  # hold every answer until all downloads have started
            app.barrier.wait()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        if mode == "truncate":
            time.sleep(0.5)  # finish after a healthy download running at the same time
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if mode == "late_body":
            time.sleep(1.5)
        if mode == "slow":
            step = max(1, len(body) // 8)
            for i in range(0, len(body), step):
                self.wfile.write(body[i:i + step])
                self.wfile.flush()
                time.sleep(0.05)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    """(app, base_url) of a threaded HTTP server on 127.0.0.1."""
    app = _App()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.app = app
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def silent_server():
    """A base URL whose server accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Online mode for one test: FNLAB_OFFLINE unset, an empty data dir, no memory of
    earlier failures or printed lines. Returns the data dir."""
    monkeypatch.delenv("FNLAB_OFFLINE", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("FNLAB_DATA_DIR", str(cache))
    monkeypatch.setattr(registry, "_AUTO_FAILURES", {})
    monkeypatch.setattr(registry, "_SAID", set())
    return cache


def _official(monkeypatch, path: Path, size: int = 28) -> str:
    """Make the file at ``path`` the 'official' file of ``size`` for this test."""
    digest = md5sum(path)
    info = dataclasses.replace(medmnist.PNEUMONIAMNIST[size], md5=digest)
    monkeypatch.setitem(medmnist.PNEUMONIAMNIST, size, info)
    return digest


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.part")) if folder.exists() else []


# --------------------------------------------------------------------------- download()
def test_truncated_body_is_deleted_and_reported_with_manual_steps(server, tmp_path, tiny_npz):
    app, base = server
    body = tiny_npz().read_bytes()
    app.files["pn.npz"], app.modes["pn.npz"] = body, ["truncate"]
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError) as info:
        download(28, dest, url=f"{base}/pn.npz", md5=medmnist.hashlib.md5(body).hexdigest(),
                 progress=False, timeout=10)
    msg = str(info.value)
    assert "truncated" in msg and f"of {len(body):,} bytes" in msg and "Manual steps" in msg
    assert not isinstance(info.value, ChecksumError)
    assert not (dest / "pneumoniamnist.npz").exists() and not list(dest.iterdir())


def test_wrong_checksum_deletes_the_temporary_file(server, tmp_path):
    app, base = server
    app.files["pn.npz"] = b"an HTML error page, say"
    with pytest.raises(ChecksumError, match="the bad file was deleted") as info:
        download(28, tmp_path, url=f"{base}/pn.npz", progress=False, timeout=10)
    assert "Manual steps" in str(info.value) and medmnist.file_info(28).md5 in str(info.value)
    assert not list(tmp_path.iterdir())


def test_server_that_never_answers_times_out_after_the_connect_timeout(silent_server, tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="no answer within 1 s") as info:
        download(28, tmp_path, url=f"{silent_server}/pneumoniamnist.npz", progress=False,
                 timeout=60, connect_timeout=1)
    seconds = time.perf_counter() - t0
    assert seconds < 2.5, f"waited {seconds:.1f} s for a silent server"
    assert "Manual steps" in str(info.value) and not list(tmp_path.iterdir())


def test_a_name_lookup_that_hangs_is_abandoned(tmp_path, monkeypatch):
    real = socket.getaddrinfo

    def slow_dns(host, *args, **kwargs):
        if host == "mirror.invalid":
            time.sleep(5)  # a resolver that does not answer
        return real("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_dns)
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="no answer within 1 s"):
        download(28, tmp_path, url="http://mirror.invalid/pneumoniamnist.npz", progress=False,
                 connect_timeout=0.5)
    assert time.perf_counter() - t0 < 2.5 and not list(tmp_path.iterdir())


def test_slow_body_waits_for_the_read_timeout_not_the_connect_timeout(server, tmp_path,
                                                                       tiny_npz):
    app, base = server
    body = tiny_npz().read_bytes()
    app.files["pn.npz"], app.modes["pn.npz"] = body, ["late_body"]  # body 1.5 s after headers
    path = download(28, tmp_path, url=f"{base}/pn.npz", md5=medmnist.hashlib.md5(body).hexdigest(),
                    progress=False, timeout=10, connect_timeout=0.5)
    assert path.read_bytes() == body
    app.modes["pn.npz"] = ["late_body"]
    with pytest.raises(DownloadError, match="stopped sending for 0.5 s"):  # the read timeout
        download(28, tmp_path / "again", url=f"{base}/pn.npz", progress=False, timeout=0.5,
                 connect_timeout=0.5)
    assert not list((tmp_path / "again").iterdir())


def test_two_processes_downloading_at_once_leave_one_verified_file(server, tmp_path, tiny_npz):
    app, base = server
    body = tiny_npz(n=(60, 20, 20)).read_bytes()
    digest = medmnist.hashlib.md5(body).hexdigest()
    app.files["pn.npz"], app.modes["pn.npz"] = body, ["slow"]
    app.barrier = threading.Barrier(2, timeout=60)  # both requests in flight before any answer
    dest = tmp_path / "shared"
    code = ("import sys\nfrom fnlab.data import medmnist\n"
            "print(medmnist.download(28, sys.argv[1], url=sys.argv[2], md5=sys.argv[3], "
            "progress=False, timeout=30))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(dest), f"{base}/pn.npz", digest],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
        assert out.strip() == str(dest / "pneumoniamnist.npz")
    assert app.requests == ["pn.npz", "pn.npz"]
    assert md5sum(dest / "pneumoniamnist.npz") == digest
    assert sorted(p.name for p in dest.iterdir()) == ["pneumoniamnist.npz"]


def test_an_interrupted_concurrent_download_leaves_the_verified_file(server, tmp_path, tiny_npz):
    app, base = server
    body = tiny_npz(n=(60, 20, 20)).read_bytes()
    digest = medmnist.hashlib.md5(body).hexdigest()
    app.files["pn.npz"], app.modes["pn.npz"] = body, ["ok", "truncate"]
    app.barrier = threading.Barrier(2, timeout=60)
    outcomes: list = []

    def fetch():
        try:
            outcomes.append(download(28, tmp_path, url=f"{base}/pn.npz", md5=digest,
                                     progress=False, timeout=30))
        except DownloadError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(outcomes) == 2 and len(errors) == 1, outcomes
    assert "truncated" in str(errors[0]) and "Manual steps" in str(errors[0])
    assert md5sum(tmp_path / "pneumoniamnist.npz") == digest  # the good one, untouched
    assert _leftovers(tmp_path) == []


def test_stale_temporary_files_of_dead_downloads_are_removed(server, tmp_path, tiny_npz):
    import os

    app, base = server
    body = tiny_npz().read_bytes()
    app.files["pn.npz"] = body
    stale = tmp_path / "pneumoniamnist.npz.999.dead.part"
    fresh = tmp_path / "pneumoniamnist.npz.998.live.part"  # maybe another live download
    for p in (stale, fresh):
        p.write_bytes(b"partial")
    old = time.time() - medmnist.STALE_PART_SECONDS - 60
    os.utime(stale, (old, old))
    download(28, tmp_path, url=f"{base}/pn.npz", md5=medmnist.hashlib.md5(body).hexdigest(),
             progress=False)
    assert not stale.exists() and fresh.exists()


def test_download_url_can_point_at_a_mirror(monkeypatch):
    monkeypatch.setenv("FNLAB_MEDMNIST_URL", "http://mirror.example/files/")
    assert medmnist.download_url(128) == "http://mirror.example/files/pneumoniamnist_128.npz"
    assert medmnist.file_info(128).url.startswith("https://zenodo.org/records/10519652/")


# --------------------------------------------------------------------------- larger sizes
@pytest.mark.parametrize("size", [64, 128, 224])
def test_cli_downloads_the_larger_sizes(size, server, tmp_path, tiny_npz, monkeypatch, capsys):
    app, base = server
    name = f"pneumoniamnist_{size}.npz"
    src = tiny_npz(name, side=size, n=(2, 2, 2))
    app.files[name] = src.read_bytes()
    monkeypatch.setenv("FNLAB_MEDMNIST_URL", base)
    # the registry's official checksum: a file that is not the official one is refused
    assert main(["data", "download", "pneumoniamnist", "--size", str(size), "--dest",
                 str(tmp_path / "a"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and medmnist.file_info(size).md5 in err
    assert "Manual steps" in err and not list((tmp_path / "a").iterdir())
    digest = _official(monkeypatch, src, size)
    assert main(["data", "download", "pneumoniamnist", "--size", str(size), "--dest",
                 str(tmp_path / "b"), "--no-progress"]) == 0
    assert f"md5 {digest} verified" in capsys.readouterr().out
    assert md5sum(tmp_path / "b" / name) == digest
    assert app.requests == [name, name]


def test_registry_checksums_are_the_medmnist_ones():
    """MD5, MD5_64, MD5_128 and MD5_224 of medmnist's INFO["pneumoniamnist"]."""
    assert {s: medmnist.file_info(s).md5 for s in medmnist.SIZES} == {
        28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
        128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1"}


@pytest.mark.parametrize("size", [64, 128, 224])
def test_train_accepts_the_larger_sizes(size, online, tiny_npz, monkeypatch, capsys):
    from fnlab.cli import build_parser
    from fnlab.cli.train import config_from_args

    argv = ["train", "--dataset", "pneumoniamnist", "--image-size", str(size), "--out", "x",
            "--device", "cpu"]
    args = build_parser().parse_args(argv)
    with pytest.raises(FileNotFoundError, match=f"--size {size}"):
        config_from_args(args)
    online.mkdir()
    src = tiny_npz(f"pneumoniamnist_{size}.npz", side=size, n=(2, 2, 2))
    (online / src.name).write_bytes(src.read_bytes())
    _official(monkeypatch, src, size)
    config = config_from_args(build_parser().parse_args(argv))
    assert (config.dataset, config.image_size) == ("pneumoniamnist", size)
    sets = load_dataset("pneumoniamnist", image_size=size)
    assert sets["train"].image_size == size and sets["train"].meta["official"] is True


# --------------------------------------------------------------------------- dataset="auto"
def test_auto_downloads_once_then_uses_the_cache(server, online, tiny_npz, monkeypatch, capsys):
    app, base = server
    src = tiny_npz()
    app.files["pneumoniamnist.npz"] = src.read_bytes()
    _official(monkeypatch, src)
    monkeypatch.setenv("FNLAB_MEDMNIST_URL", base)
    name, reason = resolve_dataset("auto")
    assert name == "pneumoniamnist" and "downloaded" in reason and str(online) in reason
    assert "downloading the official 28 px file (about 4 MB)" in capsys.readouterr().err
    assert md5sum(online / "pneumoniamnist.npz") == md5sum(src)
    sets = load_dataset("auto", profile="smoke")
    assert sets["train"].meta["dataset"] == "pneumoniamnist" and sets["train"].meta["official"]
    assert "md5 verified" in sets["train"].meta["dataset_reason"]
    assert app.requests == ["pneumoniamnist.npz"]  # once
    assert _leftovers(online) == []


def test_offline_mode_never_tries_the_network(server, online, monkeypatch):
    app, base = server
    monkeypatch.setenv("FNLAB_MEDMNIST_URL", base)
    monkeypatch.setenv("FNLAB_OFFLINE", "1")
    name, reason = resolve_dataset("auto")
    assert name == "synthetic" and "offline mode (FNLAB_OFFLINE=1)" in reason and GET_REAL in reason
    monkeypatch.delenv("FNLAB_OFFLINE")
    assert resolve_dataset("auto", offline=True)[0] == "synthetic"
    assert resolve_dataset("auto", download=False)[0] == "synthetic"
    assert app.requests == [] and not online.exists()


def test_auto_falls_back_within_seconds_when_the_server_never_answers(silent_server, online,
                                                                        monkeypatch, capsys):
    monkeypatch.setenv("FNLAB_MEDMNIST_URL", silent_server)
    t0 = time.perf_counter()
    name, reason = resolve_dataset("auto")
    seconds = time.perf_counter() - t0
    assert name == "synthetic"
    limit = medmnist.AUTO_CONNECT_TIMEOUT
    assert seconds < limit + 1.5, f"auto waited {seconds:.1f} s (connect timeout {limit} s)"
    assert f"no answer within {limit:g} s" in reason and GET_REAL in reason
    assert "Manual steps" not in reason and "\n" not in reason  # one line
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("fnlab: real PneumoniaMNIST is not cached: downloading")
    assert err[1:] == [f"fnlab: {reason}"]
    t0 = time.perf_counter()  # the failure is remembered: no second wait, no second line
    assert resolve_dataset("auto") == (name, reason)
    assert load_dataset("auto", profile="smoke")["train"].meta["dataset"] == "synthetic"
    assert time.perf_counter() - t0 < limit and capsys.readouterr().err == ""
    assert not list(online.iterdir())


@pytest.mark.parametrize("mode, expected", [
    ("checksum", "not the expected"),
    ("truncate", "truncated"),
    ("missing", "HTTP 404"),
    ("refused", "refused"),
])
def test_auto_falls_back_with_one_line_on_every_failure(mode, expected, server, online,
                                                        tiny_npz, monkeypatch, capsys):
    app, base = server
    monkeypatch.setattr(medmnist, "AUTO_CONNECT_TIMEOUT", 1.0)
    if mode == "checksum":
        app.files["pneumoniamnist.npz"] = tiny_npz().read_bytes()  # not the official md5
    elif mode == "truncate":
        src = tiny_npz()
        app.files["pneumoniamnist.npz"], app.modes["pneumoniamnist.npz"] = src.read_bytes(), \
            ["truncate"]
        _official(monkeypatch, src)
    elif mode == "refused":
        base = "http://127.0.0.1:9"  # nothing listens on the discard port
    monkeypatch.setenv("FNLAB_MEDMNIST_URL", base)
    name, reason = resolve_dataset("auto")
    assert name == "synthetic" and expected in reason and GET_REAL in reason
    assert reason.startswith("could not download PneumoniaMNIST (") and "\n" not in reason
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"fnlab: {reason}"
    assert not online.exists() or not list(online.iterdir())  # nothing bad left behind


def test_a_cached_variant_is_used_only_when_named(online, tiny_npz, server, monkeypatch, capsys):
    app, base = server
    monkeypatch.setenv("FNLAB_MEDMNIST_URL", base)
    online.mkdir()
    variant = online / "pneumoniamnist.npz"
    variant.write_bytes(tiny_npz().read_bytes())  # valid layout, not the official md5
    name, reason = resolve_dataset("auto")
    assert name == "synthetic" and "valid MedMNIST .npz but not the official" in reason
    assert f"--data-path {variant}" in reason and md5sum(variant) in reason
    assert f"fnlab: {reason}" in capsys.readouterr().err
    with pytest.raises(DatasetNotAvailable, match="used only when named explicitly"):
        load_dataset("pneumoniamnist")
    with pytest.warns(ChecksumWarning, match=md5sum(variant)):
        sets = load_dataset("pneumoniamnist", data_path=variant)
    assert sets["train"].meta["official"] is False
    assert app.requests == []  # never downloaded over it
    assert "not the official file" in registry.dataset_status("pneumoniamnist")


def test_a_corrupt_cached_file_is_reported_not_used(online, monkeypatch):
    online.mkdir()
    (online / "pneumoniamnist.npz").write_bytes(b"PK\x03\x04 cut short")
    name, reason = resolve_dataset("auto")
    assert name == "synthetic" and "corrupt or truncated copy: delete it" in reason
    with pytest.raises(DatasetNotAvailable, match="corrupt"):
        load_dataset("pneumoniamnist")


def test_the_official_cached_file_is_used_silently(online, tiny_npz, monkeypatch):
    online.mkdir()
    src = tiny_npz()
    (online / "pneumoniamnist.npz").write_bytes(src.read_bytes())
    _official(monkeypatch, src)
    monkeypatch.setenv("FNLAB_OFFLINE", "1")  # no network needed
    assert resolve_dataset("auto")[0] == "pneumoniamnist"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sets = load_dataset("auto", profile="smoke")
    assert sets["test"].meta["official"] is True


# --------------------------------------------------------------------------- commands
def test_train_offline_flag_and_fallback(silent_server, online, monkeypatch, capsys):
    from fnlab.cli import build_parser
    from fnlab.cli.train import config_from_args

    monkeypatch.setenv("FNLAB_MEDMNIST_URL", silent_server)
    monkeypatch.setattr(medmnist, "AUTO_CONNECT_TIMEOUT", 1.0)
    argv = ["train", "--out", "x", "--device", "cpu"]
    t0 = time.perf_counter()
    config = config_from_args(build_parser().parse_args([*argv, "--offline"]))
    assert config.dataset == "synthetic" and time.perf_counter() - t0 < 1.0
    assert capsys.readouterr().err == ""  # offline by request: nothing to report
    config = config_from_args(build_parser().parse_args(argv))
    err = capsys.readouterr().err
    assert config.dataset == "synthetic" and "no answer within 1 s" in err and GET_REAL in err
    assert time.perf_counter() - t0 < 4


def test_course_run_offline_reaches_the_kernels(online, tmp_path, monkeypatch, capsys, server):
    import papermill

    from fnlab import course

    app, base = server
    monkeypatch.setenv("FNLAB_MEDMNIST_URL", base)  # serves nothing: a 404
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name in ("00_a.ipynb", "01_b.ipynb"):
        (nbdir / name).write_text("{}")
    monkeypatch.setattr(course, "notebooks_dir", lambda: nbdir)
    seen = []
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda *a, **k: seen.append(__import__("os").environ.get("FNLAB_OFFLINE")))
    assert main(["course", "run", "--offline", "--no-progress", "--out", str(tmp_path / "o1")]) == 0
    assert seen == ["1", "1"] and app.requests == []
    out = capsys.readouterr().out
    assert "dataset used: synthetic (offline mode (FNLAB_OFFLINE=1)" in out
    assert "FNLAB_OFFLINE" not in __import__("os").environ  # restored after the run

    seen.clear()  # online, the download fails once: the kernels do not try again
    assert main(["course", "run", "--no-progress", "--out", str(tmp_path / "o2")]) == 0
    assert seen == ["1", "1"] and app.requests == ["pneumoniamnist.npz"]
    summary = (tmp_path / "o2" / "summary.md").read_text()
    assert "dataset used: synthetic (could not download PneumoniaMNIST (HTTP 404" in summary
    assert "FNLAB_OFFLINE" not in __import__("os").environ
