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

An address that does not answer within :data:`CONNECT_TIMEOUT_S` seconds raises
:class:`SchedulerUnreachable` (one line; the CLI exits 2).

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
from collections.abc import Iterator
from contextlib import contextmanager

#: ``--scheduler`` value that starts a LocalCluster on this machine.
LOCAL = "local"
#: Seconds a scheduler address gets to answer.
CONNECT_TIMEOUT_S = 3
#: Memory a local worker should have for one course run (GiB); sizes the default cluster.
GIB_PER_WORKER = 2.0

_ADDRESS = re.compile(r"^([a-z][a-z0-9+.-]*://\S+|[\w.-]+:\d+)$")


class SchedulerUnreachable(ConnectionError):
    """The scheduler address did not answer (the CLI prints one line and exits 2)."""


def check_scheduler(scheduler: str) -> str:
    """``scheduler`` when it is ``local`` or looks like a scheduler address, else ValueError.

    >>> check_scheduler("tcp://127.0.0.1:8786"), check_scheduler("local")
    ('tcp://127.0.0.1:8786', 'local')
    >>> check_scheduler("my laptop")
    Traceback (most recent call last):
    ...
    ValueError: --scheduler 'my laptop': use local (a LocalCluster on this machine) or a scheduler address such as tcp://HOST:8786
    """
    text = str(scheduler).strip()
    if text == LOCAL or (text and _ADDRESS.match(text)):
        return text
    raise ValueError(f"--scheduler {scheduler!r}: use {LOCAL} (a LocalCluster on this machine) "
                     "or a scheduler address such as tcp://HOST:8786")


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
    settings = {} if allowed_failures is None else {
        "distributed.scheduler.allowed-failures": int(allowed_failures)}
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
