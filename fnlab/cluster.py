"""Dask for many independent notebook executions: course sweeps and a class's grading.

fnlab does not run a process pool of its own: :func:`connect` gives a
``dask.distributed`` :class:`~distributed.Client`, either

- on a :class:`~distributed.LocalCluster` that it starts on this machine
  (``scheduler="local"``, the default): one worker *process* per task at a
  time (``threads_per_worker=1``), as many workers as the machine has cores
  and memory for (:func:`default_workers`), listening on loopback only; or
- on a running scheduler named by its address (``tcp://HOST:PORT``): a cluster
  started with ``dask scheduler`` / ``dask worker``, or one of dask-jobqueue's
  ``SLURMCluster``/``PBSCluster`` (its ``scheduler_address``). The code path is
  the same; fnlab does not depend on dask-jobqueue.

Addresses are checked before use: only ``local`` and ``tcp://HOST:PORT`` (or
``HOST:PORT``) are accepted (:func:`check_scheduler`; ``inproc://``, ``tls://``,
``ucx://`` and malformed addresses are a ValueError), and :func:`probe_scheduler`
reads the Dask handshake that a scheduler sends as soon as it accepts a connection,
with a timeout and a cap on its size, before any Client is made. An address that
does not answer like a Dask scheduler within :data:`CONNECT_TIMEOUT_S` seconds (an
HTTP server such as the dashboard on 8787, a stranger that answers garbage, nothing
listening) raises :class:`SchedulerUnreachable` (one line; the CLI exits 2).

The workers of a LocalCluster ignore SIGINT (:func:`dask_setup`, run in each worker
process): Ctrl-C reaches the command, which cancels the tasks and closes the cluster,
instead of printing a traceback from every worker.

Example
-------
>>> with connect("local", workers=2) as client:  # doctest: +SKIP
...     client.submit(sum, [1, 2]).result()
3
>>> connect("tcp://10.0.0.5:8786")  # doctest: +SKIP
Traceback (most recent call last):
...
fnlab.cluster.SchedulerUnreachable: cannot reach the Dask scheduler at tcp://10.0.0.5:8786 ...
"""

from __future__ import annotations

import os
import re
import socket
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: ``--scheduler`` value that starts a LocalCluster on this machine.
LOCAL = "local"
#: Seconds a scheduler address gets to answer.
CONNECT_TIMEOUT_S = 3
#: Memory a local worker should have for one course run (GiB); sizes the default cluster.
GIB_PER_WORKER = 2.0

#: The only scheme fnlab connects over (``HOST:PORT`` means the same).
SCHEME = "tcp"
#: Largest handshake (bytes) a scheduler may send; a real one is well under 1 KiB.
MAX_HANDSHAKE_BYTES = 64 * 1024
#: Seconds :func:`probe_scheduler` waits for a first answer before it ends a line.
_NUDGE_S = 1.0

_WHY_NOT = {
    "inproc": "inproc:// names a scheduler inside one Python process, which a command "
              "cannot reach",
    "tls": "tls:// needs certificates that fnlab does not configure (reach the scheduler "
           "over an SSH tunnel as tcp://127.0.0.1:PORT instead)",
    "ucx": "ucx:// needs UCX-Py, which fnlab does not support",
    "ws": "ws:// is not supported", "wss": "wss:// is not supported",
}


class SchedulerUnreachable(ConnectionError):
    """The scheduler address did not answer like a Dask scheduler (the CLI prints one
    line and exits 2)."""


def _usage(scheduler, why: str) -> ValueError:
    return ValueError(f"--scheduler {scheduler!r}: {why}; use {LOCAL} (a LocalCluster on "
                      "this machine) or a scheduler address such as tcp://HOST:8786")


def check_scheduler(scheduler: str) -> str:
    """``"local"``, or the address as ``tcp://HOST:PORT``; ValueError for anything else.

    Only ``tcp://`` is allowed (a bare ``HOST:PORT`` gets it); the host must be a
    name or an IP address (IPv6 in brackets) and the port 1 to 65535.

    >>> check_scheduler("tcp://127.0.0.1:8786"), check_scheduler("local")
    ('tcp://127.0.0.1:8786', 'local')
    >>> check_scheduler("10.0.0.5:8786")
    'tcp://10.0.0.5:8786'
    >>> check_scheduler("my laptop")
    Traceback (most recent call last):
    ...
    ValueError: --scheduler 'my laptop': not an address; use local (a LocalCluster on this machine) or a scheduler address such as tcp://HOST:8786
    >>> check_scheduler("ucx://10.0.0.5:8786")
    Traceback (most recent call last):
    ...
    ValueError: --scheduler 'ucx://10.0.0.5:8786': ucx:// needs UCX-Py, which fnlab does not support; use local (a LocalCluster on this machine) or a scheduler address such as tcp://HOST:8786
    """
    text = str(scheduler).strip()
    if text == LOCAL:
        return text
    if not text or any(c.isspace() for c in text):
        raise _usage(scheduler, "not an address")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = SCHEME, text
    scheme = scheme.lower()
    if scheme != SCHEME:
        why = _WHY_NOT.get(scheme, f"fnlab connects over tcp:// only, not {scheme}://")
        raise _usage(scheduler, why)
    found = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})", rest)
    if not found:
        raise _usage(scheduler, "not an address; it needs a host and a port, as in "
                     "tcp://10.0.0.5:8786")
    host, port = found.group(1), int(found.group(2))
    if not 1 <= port <= 65535:
        raise _usage(scheduler, f"port {port} is not in 1..65535")
    return f"{SCHEME}://{host}:{port}"


def _recv_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)  # socket.timeout is TimeoutError
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _frames(body: bytes) -> list[bytes]:
    """Dask's framing (``distributed.protocol.utils.pack_frames``): a count, the lengths,
    the frames; ValueError when ``body`` is not that."""
    if len(body) < 8:
        raise ValueError("short")
    (count,) = struct.unpack_from("<Q", body)
    if not 1 <= count <= 16 or len(body) < 8 + 8 * count:
        raise ValueError("frame count")
    lengths = struct.unpack_from(f"<{count}Q", body, 8)
    if 8 + 8 * count + sum(lengths) != len(body):
        raise ValueError("frame lengths")
    out, at = [], 8 + 8 * count
    for n in lengths:
        out.append(body[at:at + n])
        at += n
    return out


def _pack(msg: dict) -> bytes:
    import msgpack

    frame = msgpack.dumps(msg, use_bin_type=True)
    body = struct.pack("<QQ", 1, len(frame)) + frame
    return struct.pack("<Q", len(body)) + body


def probe_scheduler(address: str, timeout: float = CONNECT_TIMEOUT_S) -> dict:
    """Check that a Dask scheduler answers at ``address`` (``tcp://HOST:PORT``) before a
    Client connects; return its handshake (``{"python": [3, 11, 7], ...}``).

    A Dask server sends a small handshake (a msgpack dict framed as
    ``distributed.comm.tcp`` frames it) as soon as it accepts a connection. This reads
    at most :data:`MAX_HANDSHAKE_BYTES` of it within ``timeout`` seconds and decodes
    it with msgpack only (nothing is unpickled); anything else raises
    :class:`SchedulerUnreachable`: nothing listening, an HTTP server (it gets our
    handshake first, as from a Dask client, then an empty line when it has not answered
    within a second, and answers ``HTTP/1.x 400``), a stranger that sends garbage or a
    length of exabytes, or silence.
    """
    import msgpack

    address = check_scheduler(address)
    host, port = address[len(SCHEME) + 3:].rsplit(":", 1)
    host = host.strip("[]")
    deadline = time.monotonic() + timeout

    def fail(why: str) -> SchedulerUnreachable:
        return SchedulerUnreachable(
            f"cannot reach the Dask scheduler at {address}: {why}; is it running, and is the "
            "address right (the scheduler listens on 8786 by default, its dashboard on 8787)?")

    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except TimeoutError:
        raise fail(f"no connection within {timeout:g} s") from None
    except OSError as exc:
        raise fail(exc.strerror or type(exc).__name__) from None
    hello = {"compression": None, "python": list(sys.version_info[:3]),
             "pickle-protocol": 5}
    with sock:
        try:
            sock.sendall(_pack(hello))  # as a Dask client does
            try:  # a scheduler answers at once; a line-based server (HTTP) waits for a line
                head = _recv_exactly(sock, 8, min(deadline, time.monotonic() + _NUDGE_S))
            except TimeoutError:
                sock.sendall(b"\r\n\r\n")  # ends the "request": an HTTP server answers 400
                head = _recv_exactly(sock, 8, deadline)
            if head.startswith(b"HTTP/") or head.lstrip().startswith(b"<"):
                raise fail("it answers HTTP (a web server, or the dashboard), not the Dask "
                           "protocol")
            if all(32 <= b < 127 or b in b"\r\n\t" for b in head):
                raise fail(f"it answered text ({head.decode('ascii').strip()!r}...), not the "
                           "Dask protocol")
            (size,) = struct.unpack("<Q", head)
            if not 16 <= size <= MAX_HANDSHAKE_BYTES:
                raise fail(f"it answered something that is not a Dask handshake (a length of "
                           f"{size:,} bytes)")
            body = _recv_exactly(sock, size, deadline)
        except SchedulerUnreachable:
            raise
        except TimeoutError:
            raise fail(f"no Dask handshake within {timeout:g} s") from None
        except (EOFError, OSError):
            raise fail("the connection was closed without a Dask handshake") from None
        try:
            msg = msgpack.loads(_frames(body)[0], raw=False, strict_map_key=False)
        except Exception:  # noqa: BLE001 - garbage from a stranger is a plain refusal
            msg = None
        if not isinstance(msg, dict) or "pickle-protocol" not in msg:
            raise fail("it answered something that is not a Dask handshake")
    return msg


def dask_setup(worker=None) -> None:
    """Worker preload (run in each LocalCluster worker process): ignore SIGINT, so that
    Ctrl-C in the terminal stops the command, not every worker with a traceback."""
    import signal

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread of the worker process
        pass


def default_workers(tasks: int | None = None) -> int:
    """Workers for a local cluster: one per core, no more than memory allows
    (:data:`GIB_PER_WORKER` each) or than there are ``tasks``; at least 1."""
    n = os.cpu_count() or 1
    try:
        import psutil

        n = min(n, int(psutil.virtual_memory().total / 2**30 // GIB_PER_WORKER) or 1)
    except Exception:  # noqa: BLE001 - psutil comes with distributed; sizing is best effort
        pass
    if tasks is not None:
        n = min(n, tasks)
    return max(1, n)


def describe(client) -> str:
    """``"local cluster, 2 workers"`` or ``"tcp://HOST:PORT, 8 workers"`` for a report."""
    try:
        n = len(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001
        n = "?"
    kind = "local cluster" if getattr(client, "_fnlab_local", False) else client.scheduler.address
    return f"{kind}, {n} worker{'s' if n != 1 else ''}"


@contextmanager
def connect(scheduler: str = LOCAL, workers: int | None = None, *,
            allowed_failures: int | None = None) -> Iterator:
    """A :class:`distributed.Client` on a new LocalCluster or on a running scheduler.

    ``workers``: the LocalCluster's size (default :func:`default_workers`); it is
    an error with a scheduler address (that cluster has the workers it has).
    ``allowed_failures``: for a LocalCluster, how many times a task may be on a
    worker that dies before it is given up (Dask's
    ``distributed.scheduler.allowed-failures``; a running scheduler keeps its own).
    The cluster is closed (its workers and whatever they run) when the block ends.
    """
    import logging

    import dask
    from distributed import Client, LocalCluster

    scheduler = check_scheduler(scheduler)
    if scheduler != LOCAL:
        if workers is not None:
            raise ValueError("--workers sizes a local cluster; a running scheduler has the "
                             "workers that joined it")
        probe_scheduler(scheduler)  # a Client would hang on a port that is not Dask's
        quiet = logging.getLogger("distributed")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise SchedulerUnreachable(
                f"cannot reach the Dask scheduler at {scheduler} within {CONNECT_TIMEOUT_S} s "
                f"({exc}); is it running, and is the address right?") from None
        finally:
            quiet.setLevel(level)
        try:
            yield client
        finally:
            client.close()
        return
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be >= 1, not {workers}")
    n = workers or default_workers()
    settings = {"distributed.worker.preload": [__name__]}  # dask_setup: SIGINT ignored
    if allowed_failures is not None:
        settings["distributed.scheduler.allowed-failures"] = int(allowed_failures)
    with dask.config.set(settings):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
    try:
        client = Client(cluster, set_as_default=False)
        client._fnlab_local = True
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()
