"""Grading that students cannot game: each attack planted in a submission, graded for real.

Submissions here are small notebooks of the 00_welcome assignment (a few cells, no
dataset) so that each grades in seconds; tests/test_classroom.py grades the full
solution and student copies. Every attack is also run with ``--unsafe-no-sandbox``
(or, for forged objects, loaded with plain dill in tests/test_sandbox.py) to show
that it is real and that the sandbox is what stops it. Skipped where bwrap cannot
build a sandbox (`.ci/run` installs it).
"""

from __future__ import annotations

import secrets
import socket
import threading
import time

import nbformat
import pytest
from support import FULL, ZERO
from support import grade_rows as _rows
from support import grade_scores as _scores
from support import kill_processes_with as _kill
from support import processes_with as _alive

from fnlab import classroom, grading, sandbox
from fnlab.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:Traits should be given as instances")

STUB = 'class _Grader:\n    def check(self, name):\n        pass\n\ngrader = _Grader()'
CHECK1 = 'grader.check("q1_sensitivity")'
CHECK2 = 'grader.check("q2_missed_per_1000")'
UNANSWERED = ["sensitivity = ...", CHECK1, "missed_per_1000 = ...", CHECK2]

HONEST = [STUB, "tp, fn = 184, 16\nsensitivity = tp / (tp + fn)", CHECK1,
          "missed_per_1000 = 1000 * 0.10 * (1 - sensitivity)", CHECK2]

# Reads the solutions and the autograder (hidden tests) and answers from them.
READER = [STUB, r'''
import glob, os, re, zipfile
text = ""
for root in [GRADING, "/proc/1/root" + GRADING, os.path.abspath("../../.." + GRADING)]:
    for path in glob.glob(root + "/**", recursive=True):
        try:
            if path.endswith(".zip"):
                with zipfile.ZipFile(path) as z:
                    text += "".join(z.read(n).decode() for n in z.namelist())
            elif os.path.isfile(path):
                text += open(path, encoding="utf-8", errors="ignore").read()
        except Exception:
            pass
found = dict(re.findall(r"abs\((\w+) - ([0-9.]+)\)", text))
sensitivity = float(found["sensitivity"]) if "sensitivity" in found else ...''', CHECK1,
          'missed_per_1000 = float(found["missed_per_1000"]) if "missed_per_1000" in found else ...',
          CHECK2]

# Unanswered, but forges its scores: a detached watcher and a kernel thread rewrite every
# results file they can reach (otter's results.json), and the answers are objects that lie.
FORGER = [STUB, r'''
import json, subprocess, sys, threading
FORGED = {"score": 2.0, "tests": [{"name": "q1_sensitivity", "score": 1.0, "max_score": 1.0},
                                  {"name": "q2_missed_per_1000", "score": 1.0, "max_score": 1.0}]}
WATCH = """
import glob, json, os, time
end = time.time() + 60
while time.time() < end:
    for d in ['.', 'results', '/tmp', '..', '/submission', '/submission/results', '/autograder/results']:
        try:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, 'results.json'), 'w') as f:
                json.dump(%r, f)
        except OSError:
            pass
    time.sleep(0.1)
""" % (FORGED,)
subprocess.Popen(["setsid", sys.executable, "-c", WATCH, "MARKER"], start_new_session=True)
threading.Thread(target=exec, args=(WATCH,), daemon=True).start()

class Liar(float):
    def __sub__(self, other):
        return 0.0

class Forge:
    def __reduce__(self):
        return (exec, ("import doctest; doctest.DocTestRunner.summarize = "
                       "lambda self, verbose=None: doctest.TestResults(0, 1)",))

sensitivity = Liar(0.5)''', CHECK1, "missed_per_1000 = Forge()", CHECK2]

# Writes outside its folder, leaves detached processes, calls the grader's machine.
ESCAPER = [STUB, r'''
import os, socket, subprocess
os.system("echo pwned > " + OUTSIDE + "/pwned.txt")
try:
    with open(OUTSIDE + "/pwned2.txt", "w") as f:
        f.write("pwned")
except OSError as exc:
    print(exc)
os.system("setsid sleep MARKER &")
subprocess.Popen(["setsid", "sleep", "MARKER"], start_new_session=True)
try:
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
        s.sendall(b"escaped")
except OSError as exc:
    print(exc)''', *UNANSWERED]

# Needs 1.5 GiB: full marks with the default memory cap, not under --memory 1024.
MEMHOG = [STUB, "try:\n    hog = bytearray(1536 * 2**20)\n    sensitivity = 0.92\n"
          "except MemoryError:\n    sensitivity = ...\nhog = None", CHECK1,
          "missed_per_1000 = 8.0", CHECK2]

# Never ends, and leaves a detached process behind.
HANG = [STUB, 'import subprocess, time\nsubprocess.Popen(["setsid", "sleep", "MARKER"], '
        'start_new_session=True)\nwhile True:\n    time.sleep(1)', *UNANSWERED]


class Listener:
    """A server on the grader's loopback that records what connects to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(5)
            try:
                self.received.append(conn.recv(100))
            except OSError:
                pass
            conn.close()

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def autograder(tmp_path_factory):
    """00_welcome's autograder and solution, as `fnlab classroom student` makes them."""
    base = tmp_path_factory.mktemp("grading")
    made = classroom.make_student_copies(["00_welcome"], out=base / "student",
                                         grading=base / "grading")[0]
    return made


@pytest.fixture(scope="module")
def lab(tmp_path_factory, autograder):
    """Submissions with their attacks filled in, a folder outside them, a listener, markers."""
    base = tmp_path_factory.mktemp("submissions")
    outside = base / "outside"
    outside.mkdir()
    listener = Listener()
    markers = {name: f"90.{secrets.randbelow(10**8):08d}" for name in ("escaper", "hang")}
    markers["forger"] = f"FORGER-{secrets.token_hex(4)}"
    values = {"GRADING": repr(str(autograder.autograder.parent)), "OUTSIDE": repr(str(outside)),
              "PORT": str(listener.port)}
    paths = {}
    for name, cells in {"honest": HONEST, "reader": READER, "forger": FORGER,
                        "escaper": ESCAPER, "memhog": MEMHOG, "hang": HANG}.items():
        sources = []
        for src in cells:
            src = src.replace("MARKER", markers.get(name, "none"))
            for key, value in values.items():
                src = src.replace(key, value)
            sources.append(src)
        nb = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(s) for s in sources],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                     "language": "python"},
                      "otter": {"assignment_name": "00_welcome"}})
        paths[name] = base / f"{name}.ipynb"
        nbformat.write(nb, paths[name])
    broken = base / "broken.ipynb"
    broken.write_text("{not json")
    paths["broken"] = broken
    yield {"paths": paths, "outside": outside, "listener": listener, "markers": markers,
           "base": base}
    listener.close()
    for marker in markers.values():
        _kill(marker)



@pytest.fixture(scope="module")
def graded(bwrap, lab, autograder, tmp_path_factory):
    """The sandboxed CLI run, once with --jobs 2 and once with --jobs 1: (rc, csv) for each."""
    out = tmp_path_factory.mktemp("grades")
    subs = [str(lab["paths"][n]) for n in ("honest", "reader", "forger", "escaper", "memhog",
                                             "broken")]
    runs = {}
    for jobs in (2, 1):
        csv_path = out / f"jobs{jobs}.csv"
        start = time.monotonic()
        rc = main(["classroom", "grade", *subs, "--autograder", str(autograder.autograder.parent),
                   "--out", str(csv_path), "--jobs", str(jobs), "--timeout", "900"])
        runs[jobs] = (rc, csv_path, time.monotonic() - start)
    return runs


def test_honest_submission_gets_full_marks_and_attacks_get_nothing(graded):
    rc, csv_path, _ = graded[2]
    assert rc == 1, "the broken submission could not be graded"
    by = _rows(csv_path)
    assert _scores(by["honest"]) == FULL
    assert _scores(by["memhog"]) == FULL  # 1.5 GiB fits the default cap
    for attacker in ("reader", "forger", "escaper"):
        assert _scores(by[attacker]) == ZERO, (attacker, by[attacker]["TOTAL"]["note"])
    assert list(by["broken"]) == ["TOTAL"] and "not a readable notebook" in by["broken"]["TOTAL"]["note"]


def test_forged_objects_are_refused_and_named_in_the_note(graded):
    note = _rows(graded[2][1])["forger"]["TOTAL"]["note"]
    assert "sensitivity not gradable: refused to call dill._dill._create_type" in note  # a Liar
    assert "missed_per_1000 not gradable: refused to call builtins.exec" in note  # runs code


def test_jobs_2_gives_the_same_csv_as_jobs_1(graded):
    assert graded[2][0] == graded[1][0]
    assert graded[2][1].read_bytes() == graded[1][1].read_bytes()


def test_nothing_escaped_the_sandbox(graded, lab):
    assert list(lab["outside"].iterdir()) == []  # nothing written outside its folder
    assert lab["listener"].received == []  # no connection to the grader's loopback
    for name in ("escaper", "forger"):
        assert _alive(lab["markers"][name]) == [], f"{name} left a process running"


def test_unsafe_no_sandbox_warns_and_the_attacks_then_work(graded, lab, autograder, tmp_path,
                                                           capsys):
    """The control: the same attacks succeed without the sandbox (after the sandboxed runs)."""
    subs = [str(lab["paths"][n]) for n in ("reader", "escaper")]
    capsys.readouterr()
    try:
        rc = main(["classroom", "grade", *subs, "--autograder", str(autograder.autograder.parent),
                   "--out", str(tmp_path / "unsafe.csv"), "--jobs", "2", "--timeout", "900",
                   "--unsafe-no-sandbox"])
        err = capsys.readouterr().err
        assert rc == 0
        assert err.startswith("WARNING: --unsafe-no-sandbox:")
        assert "read the solutions and hidden tests" in err and "fake its scores" in err
        by = _rows(tmp_path / "unsafe.csv")
        assert _scores(by["reader"]) == FULL  # it read the hidden tests
        assert (lab["outside"] / "pwned.txt").read_text() == "pwned\n"
        assert lab["listener"].received == [b"escaped"]
        time.sleep(0.5)
        assert _alive(lab["markers"]["escaper"]), "its detached sleeps outlived grading"
    finally:
        _kill(lab["markers"]["escaper"])
        for f in lab["outside"].iterdir():
            f.unlink()


def test_timeout_and_memory_limits(bwrap, lab, autograder, tmp_path):
    subs = [lab["paths"]["hang"], lab["paths"]["memhog"]]
    start = time.monotonic()
    results = grading.grade(subs, autograder.autograder.parent, tmp_path / "limits.csv",
                            timeout=25, memory_mb=1024, jobs=2)
    assert time.monotonic() - start < 90
    hang, memhog = results
    assert hang.questions == [] and hang.note == "grading timed out after 25 s"
    # bwrap is SIGKILLed at the timeout; the kernel then kills the rest of its pid namespace
    # asynchronously (observed: one process still listed right after grade() returned)
    deadline = time.monotonic() + 10
    while _alive(lab["markers"]["hang"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(lab["markers"]["hang"]) == [], "the timed-out submission left a process"
    assert [q["score"] for q in memhog.questions] == [0.0, 1.0]  # its 1.5 GiB were refused


def test_missing_bwrap_refuses_with_one_line(monkeypatch, lab, autograder, capsys):
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    rc = main(["classroom", "grade", str(lab["paths"]["honest"]),
               "--autograder", str(autograder.autograder.parent), "--out", "/dev/null"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "bubblewrap (bwrap) is not installed" in err and "--unsafe-no-sandbox" in err
    with pytest.raises(sandbox.SandboxUnavailable, match="not installed"):
        grading.grade([lab["paths"]["honest"]], autograder.autograder.parent)


@pytest.mark.parametrize("flags, expected", [
    (["--memory", "10"], "--memory must be at least 256 MiB, not 10"),
    (["--timeout", "0"], "--timeout must be > 0 seconds, not 0"),
    (["--jobs", "0"], "--jobs must be >= 1, not 0"),
])
def test_bad_limits_exit_2(flags, expected, lab, capsys):
    assert main(["classroom", "grade", str(lab["paths"]["honest"]), *flags]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
