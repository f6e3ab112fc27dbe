"""``--scheduler`` addresses are checked before use (``course sweep``, ``classroom grade``).

Only ``local`` and ``tcp://HOST:PORT`` pass :func:`fnlab.cluster.check_scheduler`; a port
that does not answer like a Dask scheduler (an HTTP server such as the dashboard, a
stranger sending garbage, silence) is one line and exit 2 within seconds, before any
``--out`` is made. The commands run as real processes (a hang would hit the
subprocess timeout, which is generous: it bounds, it does not time).
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from fnlab.cluster import SchedulerUnreachable, check_scheduler, probe_scheduler

ROOT = Path(__file__).resolve().parent.parent
#: 8 bytes of 0xff claim a Dask message of 16 EiB ("Unable to allocate 3.07 EiB").
GARBAGE = b"\xff" * 64


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request log on the test's stderr
        pass


@pytest.fixture
def http_port():
    """An HTTP server on loopback (what the dashboard's 8787 is)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _stranger(payload: bytes) -> int:
    """A port that answers every connection with ``payload``."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.sendall(payload)
                    time.sleep(0.2)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), FNLAB_OFFLINE="1")
    env.pop("FNLAB_DEBUG", None)
    return env


def _fnlab(args, cwd, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fnlab", *args], capture_output=True,
                          text=True, env=_env(), cwd=cwd, timeout=timeout)


@pytest.fixture
def grading_inputs(tmp_path):
    """One submission and a (never opened) autograder zip: enough to reach the probe."""
    sub = tmp_path / "alice.ipynb"
    sub.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    graders = tmp_path / "grading"
    graders.mkdir()
    with zipfile.ZipFile(graders / "00_welcome-autograder.zip", "w") as z:
        z.writestr("tests/q1.py", "")
    return sub, graders


def _sweep_args(address, out):
    return ["course", "sweep", "00_welcome", "--datasets", "synthetic", "--profiles", "smoke",
            "--scheduler", address, "--out", str(out), "--no-progress"]


def _grade_args(address, out, grading_inputs):
    sub, graders = grading_inputs
    return ["classroom", "grade", str(sub), "--autograder", str(graders), "--out", str(out),
            "--scheduler", address]


def _assert_one_line_exit_2(proc, *expected):
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err, proc.stdout)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err


# --------------------------------------------------------------------------- the commands
def test_http_server_as_scheduler_is_exit_2_for_sweep_and_grade(tmp_path, http_port,
                                                                grading_inputs):
    address = f"tcp://127.0.0.1:{http_port}"
    out = tmp_path / "sweep-out"
    proc = _fnlab(_sweep_args(address, out), tmp_path)
    _assert_one_line_exit_2(proc, f"cannot reach the Dask scheduler at {address}",
                            "answers HTTP", "dashboard on 8787")
    assert not out.exists()
    csv = tmp_path / "grades.csv"
    proc = _fnlab(_grade_args(address, csv, grading_inputs), tmp_path)
    _assert_one_line_exit_2(proc, f"cannot reach the Dask scheduler at {address}",
                            "answers HTTP")
    assert not csv.exists()


def test_stranger_answering_garbage_is_one_line(tmp_path, grading_inputs):
    address = f"tcp://127.0.0.1:{_stranger(GARBAGE)}"
    out = tmp_path / "sweep-out"
    proc = _fnlab(_sweep_args(address, out), tmp_path)
    _assert_one_line_exit_2(proc, "not a Dask handshake")
    assert "allocate" not in proc.stderr and not out.exists()
    csv = tmp_path / "grades.csv"
    proc = _fnlab(_grade_args(address, csv, grading_inputs), tmp_path)
    _assert_one_line_exit_2(proc, "not a Dask handshake")
    assert not csv.exists()


BAD_ADDRESSES = [
    ("inproc://192.168.1.2/1234/1", "inproc:// names a scheduler inside one Python process"),
    ("ucx://127.0.0.1:8786", "ucx:// needs UCX-Py"),
    ("tls://127.0.0.1:8786", "tls:// needs certificates"),
    ("foo://127.0.0.1:8786", "fnlab connects over tcp:// only, not foo://"),
    ("http://127.0.0.1:8787", "fnlab connects over tcp:// only, not http://"),
    ("tcp://", "it needs a host and a port"),
    ("tcp://127.0.0.1", "it needs a host and a port"),
    ("tcp://127.0.0.1:99999", "port 99999 is not in 1..65535"),
    ("tcp://:8786", "it needs a host and a port"),
    ("my laptop", "not an address"),
]


@pytest.mark.parametrize("address,expected", BAD_ADDRESSES)
def test_bad_addresses_are_one_line_exit_2_and_leave_no_out(tmp_path, capsys, grading_inputs,
                                                            address, expected):
    from fnlab.cli import main

    out = tmp_path / "sweep-out"
    assert main(_sweep_args(address, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err
    assert not out.exists()
    csv = tmp_path / "grades.csv"
    assert main(_grade_args(address, csv, grading_inputs)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err
    assert not csv.exists()


# --------------------------------------------------------------------------- the probe
def test_probe_reads_a_real_schedulers_handshake():
    import asyncio

    from distributed import Scheduler

    async def probe():
        async with Scheduler(host="127.0.0.1", port=0, dashboard_address=None) as sched:
            return await asyncio.get_running_loop().run_in_executor(
                None, probe_scheduler, sched.address)

    hello = asyncio.run(probe())
    assert "pickle-protocol" in hello and isinstance(hello.get("python"), list)


@pytest.mark.parametrize("payload,expected", [
    (b"\xff" * 8, "a length of 18,446,744,073,709,551,615 bytes"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "it answered text ('SSH-2.0-'"),
    (b"\x20\x00\x00\x00\x00\x00\x00\x00" + b"\x00" * 32, "not a Dask handshake"),
    (b"abc", "closed without a Dask handshake"),
])
def test_probe_refuses_strangers(payload, expected):
    port = _stranger(payload)
    with pytest.raises(SchedulerUnreachable) as info:
        probe_scheduler(f"tcp://127.0.0.1:{port}")
    assert expected in str(info.value)


def test_probe_of_a_silent_port_times_out():
    with socket.socket() as sock:  # accepts (the kernel's backlog) and never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(SchedulerUnreachable, match="no Dask handshake within 0.5 s"):
            probe_scheduler(f"tcp://127.0.0.1:{sock.getsockname()[1]}", timeout=0.5)


def test_host_port_gets_tcp_and_local_stays():
    assert check_scheduler("127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    assert check_scheduler("TCP://[::1]:8786") == "tcp://[::1]:8786"
    assert check_scheduler(" local ") == "local"


# --------------------------------------------------------------------------- Ctrl-C
@pytest.mark.slow
def test_ctrl_c_to_the_process_group_prints_no_traceback(tmp_path):
    """SIGINT to the whole group (what a terminal's Ctrl-C does) reaches the workers of
    the LocalCluster too; they ignore it, and the command says 'interrupted' once."""
    nb_dir = tmp_path / "course"
    nb_dir.mkdir()
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\ndataset = "auto"\ndevice = "auto"\n'
                                       "seed = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import time\ntime.sleep(120)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3",
                                 "language": "python"}
    nbformat.write(nb, nb_dir / "00_sleep.ipynb")
    script = ("import sys; from fnlab import course; from pathlib import Path; "
              f"course.notebooks_dir = lambda: Path({str(nb_dir)!r}); "
              "from fnlab.cli import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "course", "sweep", "--datasets", "synthetic",
         "--profiles", "smoke", "--workers", "1", "--out", str(out), "--no-progress",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob("*/attempt-1.log")):
            time.sleep(0.5)
        assert list(out.glob("*/attempt-1.log")), "the cell never started"
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "interrupted" in err
