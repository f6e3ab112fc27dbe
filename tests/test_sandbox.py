"""The bubblewrap sandbox and the snapshot loader, each attack tried for real.

Every sandbox test runs a real command in bwrap and also shows the attack works
without it (so a broken attack cannot pass for a blocked one). Skipped, with the
reason, where bwrap cannot build a sandbox (`.ci/run` installs it).
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dill
import numpy as np
import pandas as pd
import pytest
import torch
from support import kill_processes_with as _kill
from support import processes_with as _alive

from fnlab import autograde, sandbox, snapshot


def _marker() -> str:
    """A unique ``sleep`` argument: ``sleep 90.<digits>`` finds only our own process."""
    return f"90.{secrets.randbelow(10**8):08d}"


def _box(tmp_path: Path) -> sandbox.Sandbox:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return sandbox.Sandbox(rw=[(str(work), "/work")], env={"PATH": "/usr/bin:/bin"}, cwd="/work")


def _sh(box, script: str, tmp_path: Path, bwrap: str | None, timeout: float = 60):
    argv = ["/bin/sh", "-c", script]
    if bwrap:
        return sandbox.run(box.command(argv, bwrap=bwrap), timeout, tmp_path / "log")
    return sandbox.run(argv, timeout, tmp_path / "log", cwd=str(tmp_path / "work"))


def test_command_line_isolates_everything():
    argv = sandbox.Sandbox(rw=[("/a", "/b")], ro=[("/c", "/d")]).command(["true"], bwrap="bwrap")
    for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                 "--new-session", "--clearenv", "--cap-drop"):
        assert flag in argv
    assert argv[argv.index("--uid") + 1] != "0"
    pairs = list(zip(argv, argv[1:]))
    assert ("--tmpfs", "/tmp") in pairs and ("--proc", "/proc") in pairs
    triples = list(zip(argv, argv[1:], argv[2:]))
    assert ("--bind", "/a", "/b") in triples and ("--ro-bind", "/c", "/d") in triples
    assert [t for t in triples if t[0] == "--bind"] == [("--bind", "/a", "/b")]  # the only rw bind
    assert not [t for t in triples if t[0] in ("--bind", "--ro-bind") and t[1] in ("/", "/etc")]


def test_missing_bwrap_is_refused(monkeypatch):
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="bwrap.*not installed"):
        sandbox.check_bwrap()


def test_only_the_scratch_folder_is_writable(bwrap, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    private = f"/tmp/fnlab-test-{secrets.token_hex(4)}"
    box = _box(tmp_path)
    _sh(box, f"echo x > {outside}/pwned", tmp_path, None)  # without the sandbox it works
    assert (outside / "pwned").exists()
    (outside / "pwned").unlink()
    script = (f"echo x > {outside}/pwned; echo x > /usr/pwned; echo x > {sys.prefix}/pwned; "
              f"echo x > {private}; echo ok > /work/inside")
    ran = _sh(box, script, tmp_path, bwrap)
    assert ran.returncode == 0, ran.output
    assert not (outside / "pwned").exists() and not Path(sys.prefix, "pwned").exists()
    assert not Path("/usr/pwned").exists() and not Path(private).exists()  # its /tmp was its own
    assert "Read-only file system" in ran.output
    assert (tmp_path / "work" / "inside").read_text() == "ok\n"


def test_files_outside_its_binds_are_invisible(bwrap, tmp_path):
    secret = tmp_path / "grading" / "solutions" / "answer.txt"
    secret.parent.mkdir(parents=True)
    secret.write_text("0.92")
    script = f"cat {secret}; cat /proc/1/root{secret}; cat ../../{secret}"
    assert "0.92" in _sh(_box(tmp_path), script, tmp_path, None).output
    assert "0.92" not in _sh(_box(tmp_path), script, tmp_path, bwrap).output
    etc = _sh(_box(tmp_path), "ls /etc", tmp_path, bwrap).output.split()
    assert "passwd" in etc and "shadow" not in etc and "ssh" not in etc


def test_no_process_outlives_the_sandbox(bwrap, tmp_path):
    marker = _marker()
    script = f"setsid sleep {marker} & (sleep {marker} &) ; nohup sleep {marker} >/dev/null 2>&1 & exit 0"
    try:
        _sh(_box(tmp_path), script, tmp_path, None)
        time.sleep(0.3)
        assert _alive(marker), "without the sandbox the detached sleeps survive"
        _kill(marker)
        ran = _sh(_box(tmp_path), script, tmp_path, bwrap)
        assert ran.returncode == 0
        time.sleep(0.3)
        assert _alive(marker) == []
    finally:
        _kill(marker)


def test_timeout_kills_the_whole_sandbox(bwrap, tmp_path):
    marker = _marker()
    try:
        start = time.monotonic()
        ran = _sh(_box(tmp_path), f"setsid sleep {marker} & sleep 60", tmp_path, bwrap, timeout=2)
        assert ran.timed_out and time.monotonic() - start < 20
        time.sleep(0.3)
        assert _alive(marker) == []
    finally:
        _kill(marker)


def test_no_network_not_even_the_hosts_loopback(bwrap, tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        server.settimeout(20)
        try:
            while True:
                conn, _ = server.accept()
                accepted.append(conn.recv(100))
                conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
            "s.sendall(b'stolen')\nprint('connected')")
    try:
        plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=30)
        assert "connected" in plain.stdout  # the attack works without the sandbox
        box = sandbox.Sandbox(env={"PATH": "/usr/bin:/bin"}, cwd="/tmp")
        ran = sandbox.run(box.command([sys.executable, "-I", "-c", code], bwrap=bwrap), 60,
                          tmp_path / "log")
        assert "connected" not in ran.output and ran.returncode != 0
        assert "ConnectionRefused" in ran.output or "unreachable" in ran.output, ran.output
        time.sleep(0.5)
        assert accepted == [b"stolen"]  # only the unsandboxed connection got through
    finally:
        server.close()


# --------------------------------------------------------------------------- snapshots


class Liar(float):
    """A forged answer: any ``answer - expected`` is 0."""

    def __sub__(self, other):
        return 0.0


class Forge:
    """A forged answer that rewrites the test runner while it is unpickled."""

    def __reduce__(self):
        return (exec, ("import doctest\n"
                       "doctest.DocTestRunner.summarize = lambda self, verbose=None: "
                       "doctest.TestResults(0, 1)",))


def _hidden_test_passes(env: dict) -> bool:
    return autograde.run_doctest("q1", ">>> assert abs(sensitivity - 0.92) < 1e-09\n", dict(env))


def _saved(tmp_path: Path, **values) -> Path:
    folder = tmp_path / "snap"
    snapshot.save(values, folder, [snapshot.END])
    return folder


def test_a_lying_object_cannot_be_loaded(tmp_path):
    liar = Liar(0.5)
    assert _hidden_test_passes({"sensitivity": dill.loads(dill.dumps(liar))}), \
        "with plain dill the forged answer passes"
    env, problems = snapshot.load(_saved(tmp_path, sensitivity=liar), snapshot.END, ["sensitivity"])
    assert "sensitivity" not in env and "refused" in problems["sensitivity"]
    assert not _hidden_test_passes(env)


def test_a_pickle_cannot_run_code_while_it_loads(tmp_path):
    import doctest

    original = doctest.DocTestRunner.summarize
    folder = _saved(tmp_path, sensitivity=Forge())
    try:
        env, problems = snapshot.load(folder, snapshot.END, ["sensitivity"])
        assert doctest.DocTestRunner.summarize is original
        assert "refused to call builtins.exec" in problems["sensitivity"]
        assert not _hidden_test_passes(env)
        dill.loads(dill.dumps(Forge()))  # what plain dill would have done
        assert doctest.DocTestRunner.summarize is not original
    finally:
        doctest.DocTestRunner.summarize = original


#: Hand-written pickles a submission could plant in its snapshot folder.
EVIL_PICKLES = {
    "call os.system": b"cos\nsystem\n(S'echo pwned'\ntR.",
    "patch a trusted function": (b"\x80\x04cfnlab.metrics\nbinary_metrics\n"  # BUILD: setattr
                                 b"N}S'__code__'\nNs\x86b."),
    "reach a module dict": b"\x80\x04cfnlab.metrics\n__dict__\n.",
    "add to a trusted set": b"\x80\x04cfnlab.snapshot\n_SKIP\n(S'evil'\n\x90.",
    "eval a string": b"\x80\x04cdill._dill\n_eval_repr\nS'__import__(\"os\")'\n\x85R.",
}


@pytest.mark.parametrize("name", list(EVIL_PICKLES))
def test_hand_written_pickles_are_refused(tmp_path, name):
    from fnlab import metrics

    folder = _saved(tmp_path, x=1)
    key = "0" * 64
    (folder / "objects" / key).write_bytes(EVIL_PICKLES[name])
    index = folder / f"{snapshot.END}.json"
    index.write_text(index.read_text().replace('"values": {', f'"values": {{"evil": "{key}", '))
    code, skip = metrics.binary_metrics.__code__, set(snapshot._SKIP)
    env, problems = snapshot.load(folder, snapshot.END, ["evil", "x"])
    assert env["x"] == 1 and "evil" not in env, problems
    assert "refused" in problems["evil"]
    assert metrics.binary_metrics.__code__ is code and snapshot._SKIP == skip


@pytest.fixture
def notebook_function():
    """A function defined as a notebook cell defines it: in ``__main__``."""
    main = sys.modules["__main__"].__dict__
    exec("def attention_share(att, mask):\n"
         "    return float(np.asarray(att)[mask].sum() / np.asarray(att).sum())\n", main)
    yield main["attention_share"]
    main.pop("attention_share", None)


def test_honest_variables_come_back_as_plain_data(tmp_path, notebook_function):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
    values = {
        "sensitivity": 0.92, "ids": np.arange(5), "table": pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
        "model": model, "attention_share": notebook_function, "rng": np.random.default_rng(0),
        "nothing": ..., "shape": torch.Size([2, 3]), "where": Path("/x"), "np": np,
    }
    folder = _saved(tmp_path, **values)
    env, problems = snapshot.load(folder, snapshot.END, ["sensitivity", "ids", "table", "model",
                                                         "attention_share", "rng", "nothing",
                                                         "shape", "where", "np"])
    # a function the notebook defined is code: never loaded as a value (a test may only call
    # it through autograde.StudentFunction, in a process of its own)
    assert list(problems) == ["attention_share"] and "not gradable" in problems["attention_share"]
    assert "attention_share" not in env
    assert env["sensitivity"] == 0.92 and env["nothing"] is ... and env["np"] is np
    assert env["table"].equals(values["table"]) and list(env["ids"]) == [0, 1, 2, 3, 4]
    assert torch.equal(env["model"](torch.ones(1, 3)), model(torch.ones(1, 3)))
    assert env["shape"] == torch.Size([2, 3]) and env["where"] == Path("/x")
    assert _hidden_test_passes(env)
