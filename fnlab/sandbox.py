"""Bubblewrap (``bwrap``) command lines: run a command with little it can see or touch.

This module knows about bwrap and processes only; it imports nothing from fnlab.
A :class:`Sandbox` describes what the command may see: the read-only system
folders (``/usr``, the Python installation, a few files of ``/etc``), extra
read-only binds, and the only writable folders. :meth:`Sandbox.command` turns it
into a bwrap command line that also

- unshares every namespace (``--unshare-all``): no network but a private
  loopback, its own process ids, hostname and IPC;
- runs as an unprivileged user with no capabilities, unable to make new user
  namespaces (``--unshare-user --uid 1000 --disable-userns --cap-drop ALL``);
- gets a private ``/tmp`` and ``/dev/shm`` (RAM-backed: capped at ``tmp_mb`` and
  ``shm_mb`` when set), a fresh ``/proc`` and a minimal ``/dev``; its root is
  read-only (bwrap builds it on a tmpfs, which would otherwise be unbounded RAM);
- starts from an empty environment (``--clearenv``) and its own session
  (``--new-session``: no terminal to inject keystrokes into);
- dies with its parent (``--die-with-parent``). With ``--unshare-pid`` bwrap's
  own init is process 1 of the sandbox, so when the command ends, or when
  :func:`run` kills bwrap on a timeout, the kernel kills every process left
  inside, ``setsid``-detached ones included.

Example
-------
>>> box = Sandbox(rw=[("/tmp/work", "/work")], env={"HOME": "/work"}, cwd="/work")
>>> argv = box.command(["python3", "-c", "print(1)"], bwrap="bwrap")
>>> argv[:2], "--unshare-all" in argv, argv[-3:]
(['bwrap', '--unshare-all'], True, ['python3', '-c', 'print(1)'])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

#: System folders bound read-only (or recreated as the symlinks they are).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: Entries of /etc a Python process may read; nothing else of /etc is visible.
ETC_PATHS = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf",
             "hosts", "localtime", "timezone", "alternatives", "fonts", "mime.types", "os-release")
#: The unprivileged user and group a sandboxed command runs as.
SANDBOX_UID = 1000


class SandboxUnavailable(RuntimeError):
    """bwrap is missing or cannot create a sandbox on this machine."""


def find_bwrap() -> str | None:
    """The path of the ``bwrap`` executable, or None when it is not installed."""
    return shutil.which("bwrap")


def python_paths() -> list[str]:
    """Folders the running Python needs: its installation and its environment (read-only)."""
    seen: list[str] = []
    for p in (sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix):
        real = os.path.realpath(p)
        for q in (p, real):
            if q not in seen:
                seen.append(q)
    return seen


@dataclass
class Sandbox:
    """What a sandboxed command sees: ``(host, inside)`` binds, its environment and folder.

    ``ro``: extra read-only binds; ``rw``: the only writable binds; ``env``: the whole
    environment (nothing is inherited); ``cwd``: the working folder inside;
    ``tmp_mb`` and ``shm_mb``: the sizes of ``/tmp`` and ``/dev/shm`` in MiB (None:
    the kernel's default, half the machine's RAM each).
    """

    ro: list[tuple[str, str]] = field(default_factory=list)
    rw: list[tuple[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    hostname: str = "sandbox"
    tmp_mb: float | None = None
    shm_mb: float | None = None

    def command(self, argv: list[str], bwrap: str | None = None) -> list[str]:
        """The bwrap command line that runs ``argv`` inside this sandbox."""
        bwrap = bwrap or find_bwrap()
        if not bwrap:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
        cmd = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
               "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--cap-drop", "ALL",
               "--die-with-parent", "--new-session", "--hostname", self.hostname,
               "--clearenv", "--proc", "/proc", "--dev", "/dev",
               *_sized(self.shm_mb), "--tmpfs", "/dev/shm", *_sized(self.tmp_mb), "--tmpfs", "/tmp"]
        for path in SYSTEM_PATHS:
            cmd += _system_bind(path)
        for name in ETC_PATHS:
            cmd += _system_bind(f"/etc/{name}")
        for path in python_paths():
            cmd += ["--ro-bind", path, path]
        for host, inside in self.rw:
            cmd += ["--bind", str(host), str(inside)]
        for host, inside in self.ro:  # after rw: a read-only file may sit inside a rw folder
            cmd += ["--ro-bind", str(host), str(inside)]
        for key, value in self.env.items():
            cmd += ["--setenv", key, str(value)]
        cmd += ["--remount-ro", "/", "--chdir", self.cwd, "--", *argv]
        return cmd


def _sized(mb: float | None) -> list[str]:
    """bwrap's ``--size`` for the next ``--tmpfs`` (at least 1 MiB), or nothing."""
    return ["--size", str(max(1, int(mb)) * 2**20)] if mb else []


def _system_bind(path: str) -> list[str]:
    if os.path.islink(path):
        return ["--symlink", os.readlink(path), path]
    if os.path.exists(path):
        return ["--ro-bind", path, path]
    return []


def check_bwrap(bwrap: str | None = None) -> str:
    """The bwrap path, after checking that it can build a sandbox here.

    Raises :class:`SandboxUnavailable` with one line saying why not.
    """
    bwrap = bwrap or find_bwrap()
    if not bwrap:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
    probe = Sandbox().command(["/bin/sh", "-c", "exit 0"], bwrap=bwrap)
    try:
        proc = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"{bwrap} cannot run: {exc}") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise SandboxUnavailable(f"{bwrap} cannot create a sandbox here: {why}")
    return bwrap


@dataclass
class Finished:
    """How a command ended: exit code, the tail of its output, whether it ran out of time."""

    returncode: int | None
    output: str
    timed_out: bool = False


#: How much of a command's output :func:`run` reads back (its last bytes).
OUTPUT_TAIL = 64 * 1024


def run(argv: list[str], timeout: float | None, log: str | Path, *,
        env: dict[str, str] | None = None, cwd: str | None = None,
        stdin: str | None = None) -> Finished:
    """Run ``argv`` (a bwrap command line, or any command) and kill all of it on timeout.

    Its stdout and stderr go to the file ``log`` (not a pipe, so a flood of output
    costs disk, not this process's memory); the last :data:`OUTPUT_TAIL` bytes come
    back in :attr:`Finished.output`. ``stdin``: text the command can read once
    (through a pipe; default: nothing). The command gets its own process group; on
    timeout the group is killed with SIGKILL. For a bwrap command that takes the
    whole sandbox down (``--die-with-parent`` and its pid namespace); for an
    unsandboxed command a process that left the group (``setsid``) survives.
    """
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        timed_out = False
        try:
            if stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(stdin.encode())
                    proc.stdin.close()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if proc.poll() is None:  # timed out or interrupted: leave nothing behind
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return Finished(proc.returncode, _tail(log), timed_out)


def _tail(path: str | Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - OUTPUT_TAIL))
        return f.read().decode("utf-8", errors="replace")
