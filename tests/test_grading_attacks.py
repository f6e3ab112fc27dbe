"""Issue 23's attacks on the scoring step, each planted for real, and the batch that keeps its rows.

- The snapshot loader builds plain data only: the dill ``_create_array`` gadget chain
  and ``unittest.mock.ANY`` are refused (and shown to work with plain dill/pickle).
- A check runs with the true builtins: a notebook's own ``abs``, ``isinstance`` or
  ``float`` changes nothing (and is shown to forge a test when it is looked up first).
- A function a question asks for (03 q2 ``my_weighted_bce``) runs in a process of its
  own that can neither write the verdict nor return a lying object.
- A batch writes a row for every submission, whatever is wrong with it, checks
  ``--out`` first, and keeps its rows as it goes.
- The sandbox's RAM-backed folders are sized from ``--memory``; the process limit holds.

The sandboxed tests skip, saying why, where bwrap cannot build a sandbox (`.ci/run`
installs it).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dill
import nbformat
import pytest
from support import FULL, ZERO
from support import grade_rows as _rows
from support import grade_scores as _scores

from fnlab import autograde, classroom, grading, sandbox, snapshot
from fnlab.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:Traits should be given as instances")

STUB = 'class _Grader:\n    def check(self, name):\n        pass\n\ngrader = _Grader()'
CHECK1 = 'grader.check("q1_sensitivity")'
CHECK2 = 'grader.check("q2_missed_per_1000")'
HONEST = [STUB, "tp, fn = 184, 16\nsensitivity = tp / (tp + fn)", CHECK1,
          "missed_per_1000 = 1000 * 0.10 * (1 - sensitivity)", CHECK2]
UNANSWERED = [STUB, "sensitivity = ...", CHECK1, "missed_per_1000 = ...", CHECK2]
WRONG = [STUB, "sensitivity = 0.5", CHECK1, "missed_per_1000 = 3.0", CHECK2]

# The gadget chain: unanswered, but each answer unpickles into a call of `hook`
# (a notebook function set as its own __new__ and __init__), which writes a passing
# verdict on every descriptor it can and exits.
GADGET = [STUB, r'''
import copyreg, json, os
import dill._dill

def hook(*args, **kwargs):
    verdict = json.dumps({"passed": [True, True], "problems": {"": "forged"}}).encode()
    for fd in range(3, 1024):
        try:
            os.write(fd, verdict)
        except OSError:
            pass
    os._exit(0)

hook.__new__ = hook
hook.__init__ = hook

class Gadget:
    def __reduce__(self):
        return (dill._dill._create_array, (copyreg._reconstructor, (None, hook, None), None, None))

sensitivity = Gadget()''', CHECK1, "missed_per_1000 = Gadget()", CHECK2]

# Unanswered, but rewrites its snapshots so that both answers are `unittest.mock.ANY`
# (which equals everything), named by reference in a hand-written pickle.
MOCK_ANY = [STUB, r'''
import hashlib, json, os
import fnlab.snapshot as _snapshot

ANY_PICKLE = b"\x80\x04cunittest.mock\nANY\n."
_save = _snapshot.save

def save(namespace, folder, labels):
    _save(namespace, folder, labels)
    key = hashlib.sha256(ANY_PICKLE).hexdigest()
    with open(os.path.join(folder, "objects", key), "wb") as f:
        f.write(ANY_PICKLE)
    for label in labels:
        path = os.path.join(folder, label + ".json")
        with open(path) as f:
            index = json.load(f)
        index["values"].update(sensitivity=key, missed_per_1000=key)
        with open(path, "w") as f:
            json.dump(index, f)

_snapshot.save = save
sensitivity = ...''', CHECK1, "missed_per_1000 = ...", CHECK2]

# Wrong answers, and builtins the tests use shadowed so that they pass anyway.
SHADOW = [STUB, "def abs(x):\n    return 0.0\n\ndef isinstance(obj, cls):\n    return True\n\n"
          "def float(x):\n    return 0.92\n\nsensitivity = 0.5", CHECK1, "missed_per_1000 = 3.0",
          CHECK2]

# Writes 2 GB to /tmp in 200 MB files (each under the --memory file-size cap): the answer is
# right only when that fails inside the sandbox, having written at most --memory.
TMP_FILLER = [STUB, r'''
import errno, os
written, failed = 0, False
try:
    for i in range(10):
        with open(f"/tmp/fill{i}", "wb") as f:
            for _ in range(200):
                f.write(b"x" * 2**20)
                written += 2**20
except OSError as exc:
    failed = exc.errno == errno.ENOSPC
for i in range(10):
    try:
        os.remove(f"/tmp/fill{i}")
    except OSError:
        pass
sensitivity = 0.92 if failed and written <= 512 * 2**20 else ...''', CHECK1,
              "missed_per_1000 = 8.0", CHECK2]

# 03 q2 asks for a function: an honest one, one that tries to write the verdict and read the
# tests, and one that returns a tensor that agrees with everything.
IMPORTS03 = "import numpy as np\nimport torch\nimport torch.nn.functional as F\n" \
            "from fnlab.losses import create_loss"
CHECK03 = 'grader.check("q2_weighted_bce")'
HONEST_BCE = '''def my_weighted_bce(logits, targets, w):
    t = targets.float()
    return -(w * t * F.logsigmoid(logits) + (1 - t) * F.logsigmoid(-logits)).mean()'''
FORGING_BCE = r'''import glob, json, os
def my_weighted_bce(logits, targets, w):
    found = "".join(open(p).read() for p in glob.glob("/tests/*") if os.path.isfile(p))
    verdict = json.dumps({"passed": [True] * 9, "problems": {"": found[:200]}}).encode()
    for fd in range(3, 1024):
        try:
            os.write(fd, verdict)
        except OSError:
            pass
    for fd in glob.glob("/proc/*/fd/*"):
        try:
            with open(fd, "wb") as f:
                f.write(verdict)
        except OSError:
            pass
    try:  # the check step's stdin (plans, nonce), through bwrap's process 1, then its output
        nonce = open("/proc/1/fd/0").read().split("\\n")[1]
        with open("/proc/1/fd/1", "w") as f:
            f.write("FNLAB-RESULT " + nonce + " " + json.dumps(
                {"q2_weighted_bce": {"passed": [True], "problems": {}}}) + "\\n")
    except (OSError, IndexError):
        pass
    os._exit(0)'''
#: The same forgery limited to its own process's descriptors: the unsandboxed tests below
#: call it on this machine, where writing through /proc/*/fd/* as root would overwrite the
#: files every other process has open (it did: matplotlib's fonts, kernels' output).
FORGING_BCE_OWN_FDS = (FORGING_BCE[:FORGING_BCE.index("    for fd in glob.glob")]
                       .replace("        try:\n            os.write(fd, verdict)",
                                "        try:\n            import stat\n"
                                "            if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
                                "                os.write(fd, verdict)")
                       + "    os._exit(0)")  # pipes only: never a file this machine has open
LYING_BCE = '''class Agree(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return True

def my_weighted_bce(logits, targets, w):
    return torch.zeros(1).as_subclass(Agree)'''


def _notebook(path: Path, cells: list[str], assignment: str) -> Path:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(s) for s in cells],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                 "language": "python"},
                  "otter": {"assignment_name": assignment}})
    nbformat.write(nb, path)
    return path



# --------------------------------------------------------------------------- the loader


@pytest.fixture
def in_main():
    """Define code as a notebook cell does: in ``__main__`` (dill saves it by value)."""
    space = sys.modules["__main__"].__dict__
    added: list[str] = []

    def define(source: str) -> dict:
        before = set(space)
        exec(source, space)
        added.extend(set(space) - before)
        return space

    yield define
    for name in added:
        space.pop(name, None)


def _plant(folder: Path, name: str, data: bytes) -> None:
    """Put a hand-written pickle in a snapshot as variable ``name`` (a submission can: the
    snapshot is written by its own kernel)."""
    key = hashlib.sha256(data).hexdigest()
    (folder / "objects" / key).write_bytes(data)
    index_path = folder / f"{snapshot.END}.json"
    index = json.loads(index_path.read_text())
    index["values"][name] = key
    index_path.write_text(json.dumps(index))


def test_the_gadget_chain_is_refused_and_calls_nothing(tmp_path, in_main):
    marker = tmp_path / "hook-ran"
    space = in_main(f'''
import copyreg
import dill._dill

def _issue23_hook(*args, **kwargs):
    open({str(marker)!r}, "w").close()
    return 0.92

_issue23_hook.__new__ = _issue23_hook
_issue23_hook.__init__ = _issue23_hook

class _Issue23Gadget:
    def __reduce__(self):
        return (dill._dill._create_array,
                (copyreg._reconstructor, (None, _issue23_hook, None), None, None))
''')
    data = dill.dumps(space["_Issue23Gadget"](), protocol=4)
    with pytest.raises(Exception):  # noqa: B017 - plain dill calls the hook (then fails)
        dill.loads(data)
    assert marker.exists(), "with plain dill the gadget runs the notebook's code"
    marker.unlink()
    folder = tmp_path / "snap"
    snapshot.save({"x": 1}, folder, [snapshot.END])
    _plant(folder, "sensitivity", data)
    env, problems = snapshot.load(folder, snapshot.END, ["sensitivity", "x"])
    assert not marker.exists() and "sensitivity" not in env and env["x"] == 1
    assert problems["sensitivity"].startswith("not gradable: refused")
    # the same chain with a class instead of a notebook function: _create_array builds arrays
    # with numpy's own rebuild function only, whatever its arguments
    chain = (b"\x80\x04cdill._dill\n_create_array\n(ccopyreg\n_reconstructor\n"
             b"Ncbuiltins\nint\nN\x87NNtR.")
    with pytest.raises(snapshot.UnsafePickle, match="refused to build an array with copyreg"):
        snapshot.load_value(chain)


def test_unittest_mock_any_is_refused(tmp_path):
    data = b"\x80\x04cunittest.mock\nANY\n."
    assert pickle.loads(data) == 0.92 and pickle.loads(data) == "anything"  # what it would do
    folder = tmp_path / "snap"
    snapshot.save({"x": 1}, folder, [snapshot.END])
    _plant(folder, "answer", data)
    plan = {"name": "q", "cases": [">>> assert answer == 42\n"], "helpers": {}, "functions": []}
    result = autograde.check_question(plan, folder)
    assert result["passed"] == [False]
    assert result["problems"] == {"answer": "not gradable: refused to look up unittest.mock.ANY"}


@pytest.mark.parametrize("value", [len, float, snapshot, [1, print], {"f": sorted}, range])
def test_functions_classes_and_modules_are_not_plain_data(value):
    with pytest.raises((snapshot.NotGradable, snapshot.UnsafePickle)):
        snapshot.load_value(dill.dumps(value, protocol=4))


# --------------------------------------------------------------------------- the builtins

SHADOWED = """
def abs(x):
    return 0.0

def isinstance(obj, cls):
    return True

def float(x):
    return 0.92
"""
CASES = [">>> assert abs(answer - 0.92) < 1e-9\n", ">>> assert isinstance(answer, str)\n",
         ">>> assert float(answer) == 0.92\n"]


def test_shadowed_builtins_change_nothing(tmp_path, in_main):
    space = in_main(SHADOWED)
    forged = {n: space[n] for n in ("abs", "isinstance", "float")}
    # looked up in the notebook's names first (what issue 23 found), they pass every case
    assert all(autograde.run_doctest("q", case, {**forged, "answer": 0.5}) for case in CASES)
    plan = {"name": "q", "cases": CASES, "helpers": {}, "functions": []}
    attacker = tmp_path / "attacker"
    snapshot.save({**forged, "answer": 0.5}, attacker, [snapshot.END])
    assert autograde.check_question(plan, attacker)["passed"] == [False, False, False]
    honest = tmp_path / "honest"
    snapshot.save({"answer": "0.92"}, honest, [snapshot.END])  # a str that floats to 0.92
    assert autograde.check_question(plan, honest)["passed"] == [False, True, True]


def test_course_helpers_come_from_the_instructors_imports(tmp_path, in_main):
    """A notebook's own `binary_metrics` cannot stand in for the course helper a test uses."""
    space = in_main("def binary_metrics(*args, **kwargs):\n    return {'fn': 0}\n")
    plan = {"name": "q", "cases": [">>> assert binary_metrics(p, 0.5)['fn'] == fn\n"],
            "helpers": {"binary_metrics": ["fnlab.metrics", "binary_metrics"]}, "functions": []}
    from fnlab.predictions import Predictions

    preds = Predictions(y_true=[1, 1, 0], scores=[0.9, 0.2, 0.1])
    forged = tmp_path / "forged"
    snapshot.save({"binary_metrics": space["binary_metrics"], "p": preds, "fn": 0}, forged,
                  [snapshot.END])
    assert autograde.check_question(plan, forged)["passed"] == [False]  # it has one miss
    honest = tmp_path / "honest"
    snapshot.save({"p": preds, "fn": 1}, honest, [snapshot.END])
    assert autograde.check_question(plan, honest)["passed"] == [True]


def test_course_info_names_helpers_and_functions_of_a_course_notebook():
    root = Path(__file__).resolve().parents[1] / "notebooks"
    info = grading.course_info(root / "03_weighted_loss.ipynb")
    assert info["helpers"]["lab"] == ["fnlab", "lab"]  # the lesson face: lab.create_loss, ...
    assert info["helpers"]["F"] == ["torch.nn.functional", None]
    assert "my_weighted_bce" in info["functions"]
    assert "attention_share" in grading.course_info(root / "02_cnn_vs_attention.ipynb")["functions"]


# --------------------------------------------------------------------------- functions


BCE_CASE = (">>> g = torch.Generator().manual_seed(3)\n"
            ">>> z, t = torch.randn(50, generator=g), (torch.rand(50, generator=g) > 0.6).float()\n"
            ">>> for weight in (0.5, 1.0, 7.0):\n"
            "...     assert torch.allclose(my_weighted_bce(z, t, weight),\n"
            "...                           create_loss('bce', pos_weight=weight)(z, t), atol=1e-5)\n")
BCE_PLAN = {"name": "q2_weighted_bce", "cases": [BCE_CASE],
            "helpers": {"torch": ["torch", None], "create_loss": ["fnlab.losses", "create_loss"]},
            "functions": ["my_weighted_bce"]}


@pytest.mark.parametrize("source, passes", [
    ("import torch.nn.functional as F\n" + HONEST_BCE, True),
    (FORGING_BCE_OWN_FDS, False),
    ("import torch\n" + LYING_BCE, False),
])
def test_a_function_the_question_asks_for_runs_apart(tmp_path, in_main, source, passes):
    """The verdict comes from the checker's own child (autograde._in_child, with its answer
    pipe) whatever the function writes or returns."""
    import torch

    from fnlab.losses import create_loss

    space = in_main(source)
    func = space["my_weighted_bce"]
    z, t = torch.randn(8), (torch.rand(8) > 0.5).float()
    if "Agree" in source:  # called where the test runs, its answer agrees with anything
        assert torch.allclose(func(z, t, 2.0), create_loss("bce", pos_weight=7.0)(z, t))
    if "os.write" in source:  # called where the answer pipe is open, it writes the verdict
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                func(z, t, 2.0)
            finally:
                os._exit(1)
        os.waitpid(pid, 0)
        os.close(write_end)
        assert b'"passed": [true' in os.read(read_end, 65536)
        os.close(read_end)
    folder = tmp_path / "snap"
    names = ["my_weighted_bce", "F", "torch"]
    snapshot.save({n: space[n] for n in names if n in space}, folder, [snapshot.END])
    # in a fresh interpreter: forked from this test process, whose torch thread pool is already
    # running, the checker's child can deadlock inside torch (it hung CI for 25 minutes once)
    code = ("import json, sys\nfrom pathlib import Path\nfrom fnlab import autograde\n"
            "print(json.dumps(autograde._in_child(json.loads(sys.argv[1]), Path(sys.argv[2]))))")
    env = {**os.environ, "PYTHONPATH": str(Path(autograde.__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(BCE_PLAN), str(folder)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["passed"] == [passes], result
    assert "forged" not in json.dumps(result)


# --------------------------------------------------------------------------- the sandbox


FILL = ("import errno\nwritten = 0\ntry:\n"
        "    for i in range({files}):\n"
        "        with open(f'{where}/fill{{i}}', 'wb') as f:\n"
        "            for _ in range(200):\n"
        "                f.write(b'x' * 2**20)\n"
        "                written += 2**20\n"
        "except OSError as exc:\n"
        "    print('failed', errno.errorcode[exc.errno], written >> 20)\n"
        "else:\n"
        "    print('wrote', written >> 20)\n")


def test_ram_backed_folders_are_sized(bwrap, tmp_path):
    sized = sandbox.Sandbox(env={"PATH": "/usr/bin:/bin"}, cwd="/tmp", tmp_mb=256, shm_mb=128)
    control = sandbox.Sandbox(env={"PATH": "/usr/bin:/bin"}, cwd="/tmp")
    run = sandbox.run(control.command([sys.executable, "-I", "-c",
                                       FILL.format(files=2, where="/tmp")], bwrap=bwrap),
                      120, tmp_path / "log")
    assert "wrote 400" in run.output, run.output  # without a size the tmpfs takes it all
    for where, cap in (("/tmp", 256), ("/dev/shm", 128)):
        run = sandbox.run(sized.command([sys.executable, "-I", "-c",
                                         FILL.format(files=10, where=where)], bwrap=bwrap),
                          120, tmp_path / "log")
        failed = run.output.split()
        assert failed[:2] == ["failed", "ENOSPC"], run.output
        assert int(failed[2]) <= cap
    run = sandbox.run(sized.command(["/bin/sh", "-c", "echo x > /written"], bwrap=bwrap), 60,
                      tmp_path / "log")
    assert run.returncode != 0 and "Read-only file system" in run.output


def test_the_check_step_drains_its_stdin_first(bwrap, tmp_path):
    """Any process of a sandbox can read its stdin through bwrap's process 1 (/proc/1/fd/0):
    the check step reads it to the end (tests and nonce) before any student code starts."""
    script = ("import subprocess, sys\n"
              "if sys.argv[1] == 'drain':\n    sys.stdin.buffer.read()\n"
              "print('got', subprocess.run(['cat', '/proc/1/fd/0'], capture_output=True, "
              "text=True, timeout=10).stdout.strip() or 'nothing')\n")
    box = sandbox.Sandbox(env={"PATH": "/usr/bin:/bin"}, cwd="/tmp")
    for mode, expected in (("keep", "got SECRET"), ("drain", "got nothing")):
        run = sandbox.run(box.command([sys.executable, "-I", "-c", script, mode], bwrap=bwrap),
                          60, tmp_path / "log", stdin="SECRET\n")
        assert expected in run.output, (mode, run.output)


def test_process_limit(bwrap, tmp_path, monkeypatch):
    """RLIMIT_NPROC as the grading steps set it (autograde.limit_resources). The kernel does not
    enforce it on root's processes, so when this runs as root the sandbox is started as
    `nobody` (what a grader that is not root gets), with the system's Python (this one may
    live where nobody cannot read)."""
    code = ("import subprocess, sys\nsys.path.insert(0, sys.argv[1])\n"
            "from fnlab.autograde import limit_resources\nlimit_resources(None, processes=16)\n"
            "procs = []\ntry:\n    for _ in range(40):\n"
            "        procs.append(subprocess.Popen(['sleep', '30']))\n"
            "except OSError as exc:\n    print('refused after', len(procs), exc.errno)\n"
            "else:\n    print('started', len(procs))\n"
            "for p in procs:\n    p.kill()\n")
    root = str(Path(autograde.__file__).resolve().parents[1])
    python, prefix = sys.executable, []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if not (setpriv and os.path.isfile("/usr/bin/python3")):
            pytest.skip("running as root (RLIMIT_NPROC not enforced) and no setpriv or "
                        "/usr/bin/python3 to run as nobody")
        monkeypatch.setattr(sandbox, "python_paths", lambda: [])
        python, prefix = "/usr/bin/python3", [setpriv, "--reuid=65534", "--regid=65534",
                                              "--clear-groups"]
    box = sandbox.Sandbox(ro=[(str(Path(autograde.__file__).parent),) * 2],
                          env={"PATH": "/usr/bin:/bin"}, cwd="/tmp")
    run = sandbox.run([*prefix, *box.command([python, "-I", "-c", code, root], bwrap=bwrap)],
                      120, tmp_path / "log")
    if "Permission denied" in run.output:
        pytest.skip(f"this checkout is not readable by nobody: {run.output.strip()[-200:]}")
    assert run.output.startswith("refused after"), run.output
    assert int(run.output.split()[2]) < 16


# --------------------------------------------------------------------------- graded batches


@pytest.fixture(scope="module")
def autograders(tmp_path_factory):
    base = tmp_path_factory.mktemp("grading")
    made = classroom.make_student_copies(["00_welcome", "03_weighted_loss"],
                                         out=base / "student", grading=base / "grading")
    return made[0].autograder.parent


@pytest.fixture(scope="module")
def batch(bwrap, autograders, tmp_path_factory):
    """One sandboxed batch: good submissions, attacks and malformed files, --jobs 2."""
    base = tmp_path_factory.mktemp("batch")
    subs = [_notebook(base / "honest.ipynb", HONEST, "00_welcome"),
            _notebook(base / "unanswered.ipynb", UNANSWERED, "00_welcome"),
            _notebook(base / "wrong.ipynb", WRONG, "00_welcome"),
            _notebook(base / "gadget.ipynb", GADGET, "00_welcome"),
            _notebook(base / "mock_any.ipynb", MOCK_ANY, "00_welcome"),
            _notebook(base / "shadow.ipynb", SHADOW, "00_welcome"),
            _notebook(base / "honest03.ipynb", [STUB, IMPORTS03, HONEST_BCE, CHECK03],
                      "03_weighted_loss"),
            _notebook(base / "forging03.ipynb", [STUB, IMPORTS03, FORGING_BCE, CHECK03],
                      "03_weighted_loss"),
            _notebook(base / "lying03.ipynb", [STUB, IMPORTS03, LYING_BCE, CHECK03],
                      "03_weighted_loss")]
    for name, text in {"list": "[1, 2, 3]", "metadata_list": '{"metadata": []}',
                       "otter_str": '{"metadata": {"otter": "x"}}', "string": '"notebook"',
                       "cells_dict": '{"cells": {}, "metadata": {"otter": '
                                     '{"assignment_name": "00_welcome"}}}'}.items():
        (base / f"{name}.ipynb").write_text(text)
        subs.insert(3, base / f"{name}.ipynb")
    out = base / "grades.csv"
    rc = main(["classroom", "grade", *map(str, subs), "--autograder", str(autograders),
               "--out", str(out), "--jobs", "2", "--timeout", "600"])
    return rc, out, subs


def test_attacks_score_nothing_and_honest_work_keeps_full_marks(batch):
    rc, out, _ = batch
    by = _rows(out)
    assert _scores(by["honest"]) == FULL
    assert _scores(by["unanswered"]) == ZERO
    for attack in ("gadget", "mock_any"):
        assert _scores(by[attack]) == ZERO, by[attack]["TOTAL"]["note"]
    assert "not gradable: refused" in by["gadget"]["TOTAL"]["note"]
    assert "refused to look up unittest.mock.ANY" in by["mock_any"]["TOTAL"]["note"]
    # shadowing abs, isinstance and float gains nothing over the same wrong answers
    assert _scores(by["shadow"]) == _scores(by["wrong"]) and by["wrong"]["TOTAL"]["score"] != "2.0"
    assert float(by["honest03"]["q2_weighted_bce"]["score"]) == 1.0
    for attack in ("forging03", "lying03"):
        assert float(by[attack]["q2_weighted_bce"]["score"]) == 0.0, by[attack]


def test_every_submission_has_its_row(batch):
    rc, out, subs = batch
    assert rc == 1  # some could not be graded
    by = _rows(out)
    assert sorted(by) == sorted(Path(s).stem for s in subs)
    for name in ("list", "string"):
        assert list(by[name]) == ["TOTAL"] and "not an object" in by[name]["TOTAL"]["note"]
    for name in ("metadata_list", "otter_str"):
        assert list(by[name]) == ["TOTAL"] and "cannot tell which assignment" in \
            by[name]["TOTAL"]["note"]
    assert "no 'cells' list" in by["cells_dict"]["TOTAL"]["note"]


def test_the_csv_never_shows_a_test(batch, autograders):
    _, out, _ = batch
    text = out.read_text()
    for zp in autograders.glob("*-autograder.zip"):
        for test in grading.load_tests(zp):
            for case in test.test_cases:
                for line in case.body.splitlines():
                    line = line.lstrip(">. ").strip()
                    if len(line) > 8:
                        assert line not in text, line
    assert "forged" not in text


def test_two_gigabytes_in_tmp_fail_inside_the_sandbox(bwrap, autograders, tmp_path):
    sub = _notebook(tmp_path / "filler.ipynb", TMP_FILLER, "00_welcome")
    [res] = grading.grade([sub], autograders, tmp_path / "grades.csv", memory_mb=512,
                          timeout=600)
    assert res.total == res.possible == 2.0, res.note  # the fill failed with ENOSPC under 512 MB


def test_out_is_checked_before_grading(autograders, tmp_path, capsys, monkeypatch):
    graded = []
    monkeypatch.setattr(grading, "_grade_one", lambda *a, **k: graded.append(a))
    sub = _notebook(tmp_path / "honest.ipynb", HONEST, "00_welcome")
    for bad in (str(tmp_path), "/proc/no/grades.csv", ""):
        rc = main(["classroom", "grade", str(sub), "--autograder", str(autograders),
                   "--out", bad, "--unsafe-no-sandbox"])
        err = capsys.readouterr().err.replace(grading.UNSAFE_WARNING, "")
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "--out" in err, err
    assert graded == []  # refused before anything was graded


def test_rows_are_written_as_submissions_finish(bwrap, autograders, tmp_path):
    """A batch killed after its first submission keeps that submission's rows."""
    first = _notebook(tmp_path / "first.ipynb", HONEST, "00_welcome")
    hang = _notebook(tmp_path / "hang.ipynb", [STUB, "import time\nwhile True:\n    time.sleep(1)"],
                     "00_welcome")
    out = tmp_path / "grades.csv"
    env = {**os.environ, "PYTHONPATH": str(Path(grading.__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "fnlab", "classroom", "grade", str(first),
                             str(hang), "--autograder", str(autograders), "--out", str(out),
                             "--timeout", "600"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_file() and "first" in _rows(out):
                break
            time.sleep(1)
        assert proc.poll() is None, "the batch ended before it could be killed"
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    by = _rows(out)
    assert list(by) == ["first"] and _scores(by["first"]) == FULL
