"""Grading that students cannot game: each submission runs in a sandbox, and is scored in another.

:func:`grade` (``fnlab classroom grade``) grades each submission in two steps,
each inside its own bubblewrap sandbox (:mod:`fnlab.sandbox`; the steps
themselves are :mod:`fnlab.autograde`):

1. **execute**: the submission (``profile`` injected after its ``parameters``
   cell) runs top to bottom in a fresh kernel. The sandbox sees a read-only
   system and Python, no network, a private ``/tmp``, and one writable folder:
   the submission's scratch copy (with read-only copies of the cached
   datasets). It sees nothing of ``grading/``: no autograder, no solution, no
   hidden test. It saves snapshots of the notebook's variables after each
   ``grader.check`` cell and at the end. When it ends or runs out of time, every
   process it started is killed.
2. **check**: a fresh sandbox, which sees the scratch folder read-only and gets
   each question's test cases (public and hidden) on stdin, never as a file,
   rebuilds the variables each question reads from its snapshot as plain data
   only (:mod:`fnlab.snapshot`) and runs the test cases with the true builtins
   and the course helpers the instructor's notebook imports (:func:`course_info`);
   a function the question asks for runs in a process of its own
   (:class:`fnlab.autograde.StudentFunction`). Its answer (which cases passed)
   comes back as one line marked with a nonce the submission never sees; the
   scores are computed here with otter's point rules.

So the score never comes from a file the submission could write, no process of
the submission is alive when it is read, and no code of the submission runs
where it could write it. What is *not* isolated: memory (``RLIMIT_DATA``) and
file size are capped per process, not in total (the RAM-backed ``/tmp`` and
``/dev/shm`` are sized from the memory cap); the number of processes
(``RLIMIT_NPROC``) is capped only when the grader is not root; CPU use and the
disk space of the scratch folder are not limited.

Example
-------
>>> from fnlab.grading import grade
>>> results = grade(["alice/00_welcome.ipynb"], "grading/", "grades.csv",
...                 jobs=2, timeout=600, memory_mb=4096)  # doctest: +SKIP
>>> results[0].total, results[0].possible  # doctest: +SKIP
(2.0, 2.0)
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fnlab import autograde
from fnlab import sandbox as sb
from fnlab.config import PROJECT_ROOT, data_dir
from fnlab.fileio import atomic_write_text
from fnlab.sandbox import SandboxUnavailable

#: CSV columns written by :func:`write_grades_csv`.
CSV_COLUMNS = ("submission", "notebook", "question", "score", "max_score", "note")
#: ``question`` value of the per-submission total row.
TOTAL = "TOTAL"
#: Default memory cap per process of a submission, in MiB (``RLIMIT_DATA``).
DEFAULT_MEMORY_MB = 4096
#: Default cap on the processes and threads of one submission's step (``RLIMIT_NPROC``).
DEFAULT_PROCESSES = 512
#: Where the submission's scratch folder appears inside the sandbox.
INSIDE = "/submission"
#: Why grading refuses to run without bwrap.
NO_SANDBOX = ("grading runs student code only inside a bubblewrap sandbox: install it "
              "(Debian/Ubuntu: apt-get install bubblewrap) or pass --unsafe-no-sandbox (unsafe)")
#: What grading without the sandbox risks.
UNSAFE_WARNING = (
    "WARNING: --unsafe-no-sandbox: submissions run as this user with this machine's files and "
    "network: a submission can read the solutions and hidden tests in grading/, change or "
    "delete files, use the network, leave processes running and fake its scores")
#: Host variables passed into the sandbox (thread counts), when set.
PASS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TZ")


def default_grading_dir() -> Path:
    """Where autograder zips and solution copies go: ``<checkout>/grading`` (git-ignored)."""
    return (PROJECT_ROOT or Path.cwd()) / "grading"


def read_notebook(nb: dict | str | Path) -> dict:
    """A notebook as a dict (a dict is returned as is); ValueError naming the file if unreadable."""
    if isinstance(nb, dict):
        return nb
    path = Path(nb)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: not a readable notebook ({exc})") from None
    if not isinstance(nb, dict):
        raise ValueError(f"{path}: not a notebook (its JSON is a {type(nb).__name__}, "
                         "not an object)")
    return nb


def _clean(text: str, limit: int = 300) -> str:
    """Text safe for a CSV note: printable, one line, never read as a spreadsheet formula."""
    text = re.sub(r"[^\x20-\x7e]", "?", str(text))[:limit]
    return "'" + text if text and text[0] in "=+-@" else text


@dataclass
class GradeResult:
    """The grade of one submission: per-question scores, or a note saying why none."""

    submission: str
    notebook: str | None
    questions: list[dict] = field(default_factory=list)  # {"name", "score", "max_score"}
    note: str = ""

    @property
    def total(self) -> float:
        return float(sum(q["score"] for q in self.questions))

    @property
    def possible(self) -> float:
        return float(sum(q["max_score"] for q in self.questions))

    def rows(self) -> list[dict]:
        """CSV rows: one per question, then the ``TOTAL`` row."""
        rows = [{"submission": self.submission, "notebook": self.notebook or "",
                 "question": q["name"], "score": q["score"], "max_score": q["max_score"],
                 "note": ""} for q in self.questions]
        rows.append({"submission": self.submission, "notebook": self.notebook or "",
                     "question": TOTAL, "score": self.total, "max_score": self.possible,
                     "note": self.note})
        return rows


def available_autograders(autograder_dir: str | Path | None = None) -> dict[str, Path]:
    """Assignment name -> autograder zip in ``autograder_dir`` (default ``grading/``).

    Accepts the zips :func:`fnlab.classroom.make_student_copies` writes
    (``<name>-autograder.zip``) and otter's own (``<name>-autograder_<stamp>.zip``,
    newest wins).
    """
    folder = Path(autograder_dir) if autograder_dir else default_grading_dir()
    found: dict[str, Path] = {}
    for zp in sorted(folder.glob("*-autograder*.zip")):
        name = re.sub(r"-autograder(_[0-9T_]+)?$", "", zp.stem)
        found[name] = zp
    return found


def submission_assignment(path: str | Path, known: list[str] | None = None) -> str | None:
    """The otter assignment a submission belongs to.

    Its notebook metadata (``otter.assignment_name``, kept in student copies) wins;
    otherwise the longest name in ``known`` that starts the file name
    (``00_welcome_alice.ipynb`` -> ``00_welcome``). None when neither tells.
    """
    nb = read_notebook(path)
    metadata = nb.get("metadata")
    otter = metadata.get("otter") if isinstance(metadata, dict) else None
    name = otter.get("assignment_name") if isinstance(otter, dict) else None
    if isinstance(name, str) and name:
        return name
    stem = Path(path).stem
    matches = [k for k in (known or []) if stem == k or stem.startswith(k + "_")
               or stem.startswith(k + "-")]
    return max(matches, key=len) if matches else None


def _prepare_submission(path: Path, assignment: str, folder: Path, profile: str | None) -> Path:
    """A copy of the submission to grade: assignment name set, profile pinned when asked."""
    nb = read_notebook(path)
    if not isinstance(nb.get("cells"), list):
        raise ValueError(f"{path}: not a notebook (no 'cells' list)")
    if not isinstance(nb.get("metadata"), dict):
        nb["metadata"] = {}
    if not isinstance(nb["metadata"].get("otter"), dict):
        nb["metadata"]["otter"] = {}
    nb["metadata"]["otter"]["assignment_name"] = assignment
    target = folder / f"{assignment}.ipynb"
    target.write_text(json.dumps(nb), encoding="utf-8")
    if profile:
        import nbformat
        from papermill.parameterize import parameterize_notebook

        node = nbformat.read(target, as_version=4)
        for cell in node.cells:  # what papermill's own loader adds before parameterizing
            cell.metadata.setdefault("tags", [])
        node.metadata.setdefault("papermill", {})
        if any("parameters" in c.get("metadata", {}).get("tags", []) for c in node.cells):
            node = parameterize_notebook(node, {"profile": profile})
            nbformat.write(node, target)
    return target


# --------------------------------------------------------------------------- the tests


#: Member of an autograder zip that names the course helpers and the functions questions ask for.
COURSE_MEMBER = "fnlab-course.json"


def course_info(master: dict | str | Path) -> dict:
    """What the checks of a course notebook may use besides the student's plain values.

    ``helpers``: every name the notebook imports, ``name -> [module, attribute]``
    (attribute None for ``import numpy as np``); the checks get these from the
    real modules, never from the submission. ``functions``: the functions the
    notebook defines at top level (``def my_weighted_bce``), the only code of a
    submission the checks may call (see :class:`fnlab.autograde.StudentFunction`).

    >>> nb = {"cells": [{"cell_type": "code", "source": "import numpy as np\n"
    ...                  "from fnlab.metrics import binary_metrics as bm\ndef f(x):\n    return x"}]}
    >>> course_info(nb)
    {'helpers': {'np': ['numpy', None], 'bm': ['fnlab.metrics', 'binary_metrics']}, 'functions': ['f']}
    """
    import ast

    helpers: dict[str, list] = {}
    functions: list[str] = []
    for cell in read_notebook(master).get("cells", []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else str(src)
        src = "\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        helpers[alias.asname] = [alias.name, None]
                    else:
                        top = alias.name.split(".")[0]
                        helpers[top] = [top, None]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    if alias.name != "*":
                        helpers[alias.asname or alias.name] = [node.module, alias.name]
        functions += [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    return {"helpers": helpers,
            "functions": sorted(set(functions) - set(helpers))}


def load_course(zip_path: str | Path, assignment: str) -> dict | None:
    """:func:`course_info` of an assignment: from its autograder zip (:data:`COURSE_MEMBER`,
    written by :func:`fnlab.classroom.make_student_copies`), else from the solution copy
    ``solutions/<assignment>.ipynb`` beside the zip, else None (then no course helper
    and no student function can be used by a check)."""
    info = None
    try:
        with zipfile.ZipFile(zip_path) as zf:
            if COURSE_MEMBER in zf.namelist():
                info = json.loads(zf.read(COURSE_MEMBER))
    except (OSError, zipfile.BadZipFile, ValueError):
        info = None
    if info is None:
        solution = Path(zip_path).parent / "solutions" / f"{assignment}.ipynb"
        try:
            info = course_info(solution) if solution.is_file() else None
        except ValueError:
            info = None
    if not (isinstance(info, dict) and isinstance(info.get("helpers"), dict)
            and isinstance(info.get("functions"), list)):
        return None
    helpers = {str(k): [str(v[0]), None if v[1] is None else str(v[1])]
               for k, v in info["helpers"].items() if isinstance(v, list) and len(v) == 2}
    return {"helpers": helpers, "functions": [str(f) for f in info["functions"]]}


_tests_lock = threading.Lock()
_tests_cache: dict[tuple[str, float], list] = {}


def load_tests(zip_path: str | Path) -> list:
    """The questions of an autograder zip as otter ``OKTestFile`` objects (parsed once).

    Raises ValueError naming the zip when it is unreadable or holds a test that
    is not in otter's OK format.
    """
    zip_path = Path(zip_path).resolve()
    key = (str(zip_path), zip_path.stat().st_mtime)
    with _tests_lock:
        if key in _tests_cache:
            return _tests_cache[key]
        from otter.nbmeta_config import NBMetadataConfig
        from otter.test_files import OKTestFile, create_test_file

        tests = []
        try:
            with zipfile.ZipFile(zip_path) as zf, tempfile.TemporaryDirectory() as tmp:
                names = sorted(n for n in zf.namelist()
                               if re.fullmatch(r"tests/[A-Za-z0-9_.-]+\.py", n))
                for name in names:
                    target = Path(tmp) / Path(name).name
                    target.write_bytes(zf.read(name))
                    test = create_test_file(str(target), NBMetadataConfig())
                    if not isinstance(test, OKTestFile):
                        raise ValueError(f"{name} is not an OK-format otter test")
                    tests.append(test)
        except (OSError, zipfile.BadZipFile, ValueError, RuntimeError, SyntaxError) as exc:
            raise ValueError(f"{zip_path}: not a usable autograder zip ({exc})") from None
        if not tests:
            raise ValueError(f"{zip_path}: no tests/*.py in this autograder zip")
        _tests_cache[key] = tests
        return tests


def _score(test, passed: list[bool]) -> tuple[float, float]:
    """``(score, possible)`` of one otter test file given which cases passed."""
    from otter.test_files.abstract_test import TestCaseResult

    scored = type(test)(test.name, test.path, test.test_cases, test.all_or_nothing)
    scored.test_case_results = [TestCaseResult(test_case=tc, message="", passed=p)
                                for tc, p in zip(test.test_cases, passed)]
    return round(float(scored.score), 5), round(float(scored.possible), 5)


# --------------------------------------------------------------------------- the two steps


@dataclass
class _Steps:
    """Runs the two steps of one submission, in bwrap sandboxes (``bwrap`` set) or not."""

    bwrap: str | None
    memory_mb: float | None
    work: Path
    processes: int | None = None

    @property
    def scratch(self) -> Path:
        return self.work / "submission"

    def _inside(self, path: Path) -> str:
        """A path of the scratch folder as the step sees it."""
        if not self.bwrap:
            return str(path)
        return str(Path(INSIDE) / path.relative_to(self.scratch))

    def _argv(self, step: list[str]) -> list[str]:
        return autograde.step_command(step, self.memory_mb, self.processes)

    def _env(self, home: str) -> dict[str, str]:
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
               "HOME": home, "LANG": "C.UTF-8", "TMPDIR": "/tmp", "MPLBACKEND": "Agg",
               "MPLCONFIGDIR": "/tmp/matplotlib", "JUPYTER_RUNTIME_DIR": "/tmp/jupyter",
               "IPYTHONDIR": "/tmp/ipython", "JUPYTER_PLATFORM_DIRS": "1",
               "PYTHONDONTWRITEBYTECODE": "1", "FNLAB_DEVICE": "cpu",
               "FNLAB_DATA_DIR": f"{INSIDE}/data",
               # the kernel imports this fnlab (the sandbox sees only its package folder)
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        env.update({k: os.environ[k] for k in PASS_ENV if k in os.environ})
        return env

    def _run(self, step: list[str], box: sb.Sandbox, timeout: float, log: str,
             stdin: str | None = None) -> sb.Finished:
        if self.bwrap:
            if self.memory_mb:  # RAM-backed: /tmp and /dev/shm together hold at most memory_mb
                box.tmp_mb, box.shm_mb = self.memory_mb / 2, self.memory_mb / 4
            return sb.run(box.command(self._argv(step), bwrap=self.bwrap), timeout,
                          self.work / log, stdin=stdin)
        env = {k: v for k, v in os.environ.items() if k != "FNLAB_RECORD"}
        env.setdefault("MPLBACKEND", "Agg")
        return sb.run(self._argv(step), timeout, self.work / log, env=env,
                      cwd=str(self.scratch), stdin=stdin)

    def execute(self, notebook: Path, timeout: float) -> sb.Finished:
        import fnlab

        ro = [(str(Path(fnlab.__file__).resolve().parent),) * 2]
        for f in sorted(data_dir().glob("*")):  # cached datasets, read-only; no run cache
            if f.is_file() and not f.is_symlink():
                ro.append((str(f), f"{INSIDE}/data/{f.name}"))
        (self.scratch / "data").mkdir(exist_ok=True)
        (self.scratch / "home").mkdir(exist_ok=True)
        box = sb.Sandbox(ro=ro, rw=[(str(self.scratch), INSIDE)],
                         env=self._env(f"{INSIDE}/home"), cwd=INSIDE)
        step = ["execute", self._inside(notebook), self._inside(self.scratch / ".snapshots")]
        return self._run(step, box, timeout, "execute.log")

    def check(self, plans: list[dict], timeout: float, nonce: str) -> sb.Finished:
        """Step 2; the plans (the tests) go in by stdin: no file in the sandbox holds them."""
        import fnlab

        ro = [(str(Path(fnlab.__file__).resolve().parent),) * 2, (str(self.scratch), INSIDE)]
        box = sb.Sandbox(ro=ro, env=self._env("/tmp"), cwd="/tmp")
        step = ["check", self._inside(self.scratch / ".snapshots")]
        return self._run(step, box, timeout, "check.log",
                         stdin=json.dumps(plans) + "\n" + nonce + "\n")


def _bwrap_error(output: str) -> str:
    """bwrap's own complaint in a step's output (``": bwrap: ..."``), or ``""``."""
    lines = [ln for ln in output.splitlines() if ln.startswith("bwrap: ")]
    return f": {lines[-1]}" if lines else ""


def _plans(tests: list, course: dict | None) -> list[dict]:
    """What step 2 checks: each question's cases, the course helpers and the functions asked for."""
    return [{"name": test.name, "cases": [tc.body for tc in test.test_cases],
             "helpers": course["helpers"] if course else None,
             "functions": course["functions"] if course else []} for test in tests]


def _scrub(text: str, tests: list) -> str:
    """``text`` with every line of the tests' code replaced by ``[test]``: a note never shows a
    hidden test, whatever a step printed."""
    lines = set()
    for test in tests:
        for tc in test.test_cases:
            for ln in str(tc.body).splitlines():
                ln = re.sub(r"^\s*(>>>|\.\.\.)\s?", "", ln).strip()
                if len(ln) >= 6 and re.search(r"[^A-Za-z0-9_]", ln):
                    lines.add(ln)
    for ln in sorted(lines, key=len, reverse=True):
        text = text.replace(ln, "[test]")
    return text


def _grade_one(path: Path, graders: dict[str, Path], *, bwrap: str | None,
               profile: str | None, timeout: float, memory_mb: float | None,
               names: dict[str, str] | None = None, processes: int | None = None) -> GradeResult:
    """Grade one submission; never raises: whatever goes wrong is that submission's note.

    ``names``: paths to show instead of the ones read here (a Dask worker grades
    copies; its CSV must name the files as the instructor gave them)."""
    try:
        return _grade_one_unsafe(path, graders, bwrap=bwrap, profile=profile, timeout=timeout,
                                 memory_mb=memory_mb, names=names, processes=processes)
    except Exception as exc:  # noqa: BLE001 - one submission must never lose the batch
        shown = (names or {}).get(str(path), str(path))
        why = str(exc)
        for here, there in (names or {}).items():
            why = why.replace(here, there)
        return GradeResult(shown, None, note=_clean(
            f"not graded: {type(exc).__name__} while grading ({why})"))


def _grade_one_unsafe(path: Path, graders: dict[str, Path], *, bwrap: str | None,
                      profile: str | None, timeout: float, memory_mb: float | None,
                      names: dict[str, str] | None = None,
                      processes: int | None = None) -> GradeResult:
    names = names or {}

    def clean(text, limit: int = 300) -> str:
        text = str(text)
        for here, shown in names.items():
            text = text.replace(here, shown)
        return _clean(text, limit)

    result = GradeResult(names.get(str(path), str(path)), None)
    try:
        assignment = submission_assignment(path, list(graders))
    except ValueError as exc:
        result.note = clean(exc)
        return result
    result.notebook = assignment
    if assignment not in graders:
        result.note = clean(f"cannot tell which assignment {path.name} is (found {assignment!r}); "
                            f"autograders: {', '.join(sorted(graders))}")
        return result
    try:
        tests = load_tests(graders[assignment])
    except ValueError as exc:
        result.note = clean(exc)
        return result
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="fnlab-grade-", ignore_cleanup_errors=True) as tmp:
        steps = _Steps(bwrap, memory_mb, Path(tmp), processes)
        steps.scratch.mkdir()
        try:
            notebook = _prepare_submission(path, assignment, steps.scratch, profile)
        except Exception as exc:  # noqa: BLE001 - a bad submission must not stop the batch
            result.note = clean(f"{path}: cannot prepare for grading ({exc})")
            return result
        ran = steps.execute(notebook, max(1.0, deadline - time.monotonic()))
        if ran.timed_out:
            result.note = f"grading timed out after {timeout:g} s"
            return result
        notes = []
        if ran.returncode == 3:
            notes.append("the notebook's kernel died before the end (out of memory?)")
        elif ran.returncode != 0:
            notes.append(f"the notebook could not be executed (exit {ran.returncode}"
                         f"{_bwrap_error(ran.output)})")
        plans = _plans(tests, load_course(graders[assignment], assignment))
        nonce = secrets.token_hex(16)
        checked = steps.check(plans, max(1.0, deadline - time.monotonic()), nonce)
        if checked.timed_out:
            result.note = f"grading timed out after {timeout:g} s"
            return result
        answer = autograde.parse_result(checked.output, nonce)
    if answer is None:
        result.note = clean(f"the check step gave no result (exit {checked.returncode}"
                            f"{_bwrap_error(checked.output)})")
        return result
    for test in tests:
        got = answer.get(test.name) if isinstance(answer.get(test.name), dict) else {}
        passed = got.get("passed")
        if not (isinstance(passed, list) and len(passed) == len(test.test_cases)
                and all(isinstance(p, bool) for p in passed)):
            passed = [False] * len(test.test_cases)
        score, possible = _score(test, passed)
        result.questions.append({"name": test.name, "score": score, "max_score": possible})
        problems = got.get("problems") if isinstance(got.get("problems"), dict) else {}
        notes += [f"{test.name}: {name + ' ' if name else ''}{why}" for name, why in problems.items()]
    result.note = clean(_scrub("; ".join(dict.fromkeys(notes)), tests), 500)
    return result


def _sandbox_or_warn(sandboxed: bool) -> str | None:
    """bwrap's path when sandboxed (SandboxUnavailable when it cannot be used), else None."""
    if sandboxed:
        try:
            return sb.check_bwrap()
        except SandboxUnavailable as exc:
            raise SandboxUnavailable(f"{exc}; {NO_SANDBOX}") from None
    warnings.warn(UNSAFE_WARNING, RuntimeWarning, stacklevel=3)
    return None


def grade_submission(
    path: str | Path,
    autograder_dir: str | Path | None = None,
    *,
    profile: str | None = "smoke",
    timeout: float = 1800,
    memory_mb: float | None = DEFAULT_MEMORY_MB,
    sandbox: bool = True,
) -> GradeResult:
    """Grade one submission (see :func:`grade`); never raises for a bad submission.

    The result then has no questions and a ``note`` saying why (unknown
    assignment, unreadable file, timeout). Raises
    :class:`~fnlab.sandbox.SandboxUnavailable` when ``sandbox`` is on and bwrap
    cannot be used.
    """
    graders = available_autograders(autograder_dir)
    if not graders:
        where = autograder_dir or default_grading_dir()
        return GradeResult(str(path), None,
                           note=f"no autograder zips in {where}: run `fnlab classroom student` first")
    bwrap = _sandbox_or_warn(sandbox)
    return _grade_one(Path(path), graders, bwrap=bwrap, profile=profile, timeout=timeout,
                      memory_mb=memory_mb, processes=DEFAULT_PROCESSES)


def grade(
    submissions: list[str | Path],
    autograder_dir: str | Path | None = None,
    out_csv: str | Path | None = None,
    *,
    profile: str | None = "smoke",
    timeout: float = 1800,
    memory_mb: float | None = DEFAULT_MEMORY_MB,
    jobs: int = 1,
    sandbox: bool = True,
    progress=None,
    scheduler: str | None = None,
    workers: int | None = None,
    client=None,
    processes: int | None = DEFAULT_PROCESSES,
) -> list[GradeResult]:
    """Grade submissions, ``jobs`` at a time, each in its own sandbox; write the CSV if asked.

    ``scheduler`` (``"local"`` or a Dask scheduler address, see :mod:`fnlab.cluster`;
    ``workers`` sizes a local cluster) or ``client`` (a ``distributed.Client``): grade
    on Dask workers instead of ``jobs`` threads here, each submission inside the
    grading sandbox of the worker that grades it (:func:`grade_on_dask`); the CSV is
    the same.

    ``profile`` (default ``"smoke"``) is injected after each submission's
    ``parameters`` cell so grading stays fast (None: as submitted). ``timeout``:
    seconds per submission, both steps together; ``memory_mb``: the memory cap
    of each of its processes (None: no cap). ``sandbox=False`` runs student code
    unsandboxed, with a :class:`RuntimeWarning` saying what that risks.
    ``processes``: the most processes and threads each step of a submission may
    have (``RLIMIT_NPROC``; not enforced by the kernel when grading as root).
    ``progress``: optional callable receiving each :class:`GradeResult` as it ends.
    Results come in the order of ``submissions``, whatever ``jobs``. ``out_csv``
    is checked before anything is graded (:class:`OutputUnusable`) and rewritten
    as each submission finishes, so a killed batch keeps the rows it graded;
    every submission has its rows, whatever went wrong with it (then a note).

    >>> results = grade(["alice/00_welcome.ipynb", "bob/00_welcome.ipynb"],
    ...                 "grading/", "grades.csv", jobs=2)  # doctest: +SKIP
    >>> [(r.total, r.possible) for r in results]  # doctest: +SKIP
    [(2.0, 2.0), (0.0, 2.0)]
    """
    missing = [str(s) for s in submissions if not Path(s).is_file()]
    if missing:
        raise FileNotFoundError(f"no such submission: {', '.join(missing)}")
    sink = _CsvSink(out_csv) if out_csv is not None else None  # checked first
    user_progress = progress

    def progress(res, index=None):
        if sink is not None:
            sink.add(res, index)
        if user_progress:
            user_progress(res)

    graders = available_autograders(autograder_dir)
    if not graders:
        where = autograder_dir or default_grading_dir()
        results = [GradeResult(str(s), None, note=f"no autograder zips in {where}: run "
                               "`fnlab classroom student` first") for s in submissions]
        for i, res in enumerate(results):
            progress(res, i)
    elif scheduler is not None or client is not None:
        results = grade_on_dask(submissions, graders, scheduler=scheduler, workers=workers,
                                client=client, profile=profile, timeout=timeout,
                                memory_mb=memory_mb, sandbox=sandbox, progress=progress)
    else:
        bwrap = _sandbox_or_warn(sandbox)

        def one(item):
            i, sub = item
            res = _grade_one(Path(sub), graders, bwrap=bwrap, profile=profile, timeout=timeout,
                             memory_mb=memory_mb, processes=processes)
            progress(res, i)
            return res

        if jobs > 1 and len(submissions) > 1:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                results = list(pool.map(one, enumerate(submissions)))
        else:
            results = [one(item) for item in enumerate(submissions)]
    if sink is not None:
        sink.finish(results)
    return results


class OutputUnusable(ValueError):
    """The grades CSV cannot be written where asked (checked before grading starts)."""


class _CsvSink:
    """The grades CSV, rewritten (atomically) as each submission finishes: a batch that is
    killed keeps every row it graded; at the end the rows are in the submissions' order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._done: dict[int, GradeResult] = {}
        if str(path) == os.devnull:
            return
        if not str(path).strip() or self.path.is_dir():
            raise OutputUnusable(f"--out {str(path)!r}: not a CSV file name (a folder or empty)")
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputUnusable(f"--out {path}: cannot create its folder ({exc.strerror})") from None
        if self.path.exists() and not self.path.is_file():
            raise OutputUnusable(f"--out {path}: not a regular file")
        try:  # a real write, not a permission guess (root passes every access check)
            fd, probe = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise OutputUnusable(f"--out {path}: cannot write in {parent} ({exc.strerror})") from None

    def add(self, result: GradeResult, index: int | None) -> None:
        with self._lock:
            self._done[len(self._done) if index is None else index] = result
            self._write([self._done[i] for i in sorted(self._done)])

    def finish(self, results: list[GradeResult]) -> None:
        with self._lock:
            self._write(results)

    def _write(self, results: list[GradeResult]) -> None:
        if str(self.path) == os.devnull:
            return
        write_grades_csv(results, self.path)


# --------------------------------------------------------------------------- on Dask workers


def _worker_bwrap() -> tuple[str | None, str]:
    """(bwrap's path, "") on this worker when it can build a sandbox, else (None, why)."""
    try:
        return sb.check_bwrap(), ""
    except SandboxUnavailable as exc:
        import socket

        return None, f"{socket.gethostname()}: {exc}"


def _grade_shipped(shown: str, filename: str, notebook: bytes, graders: dict[str, tuple],
                   *, sandbox: bool, profile: str | None, timeout: float,
                   memory_mb: float | None) -> GradeResult:
    """A Dask task: grade one submission from its bytes, on this worker, in its sandbox.

    ``graders``: assignment -> (zip path on the instructor's machine, zip bytes). The
    files are written to a temporary folder here (the workers need no shared file
    system); the result names them as the instructor did.
    """
    bwrap = None
    if sandbox:
        bwrap, why = _worker_bwrap()
        if bwrap is None:
            return GradeResult(shown, None, note=_clean(f"not graded: no sandbox on this "
                                                        f"worker ({why})"))
    with tempfile.TemporaryDirectory(prefix="fnlab-grade-dask-") as tmp:
        names, local = {}, {}
        (Path(tmp) / "grading").mkdir()
        for assignment, (zip_shown, blob) in graders.items():
            zp = Path(tmp) / "grading" / Path(zip_shown).name
            zp.write_bytes(blob)
            local[assignment], names[str(zp)] = zp, str(zip_shown)
        sub = Path(tmp) / "submission" / filename
        sub.parent.mkdir()
        sub.write_bytes(notebook)
        names[str(sub)] = shown
        return _grade_one(sub, local, bwrap=bwrap, profile=profile, timeout=timeout,
                          memory_mb=memory_mb, names=names, processes=DEFAULT_PROCESSES)


def grade_on_dask(submissions: list[str | Path], graders: dict[str, Path], *,
                  scheduler: str | None = "local", workers: int | None = None, client=None,
                  profile: str | None = "smoke", timeout: float = 1800,
                  memory_mb: float | None = DEFAULT_MEMORY_MB, sandbox: bool = True,
                  progress=None, retries: int = 2) -> list[GradeResult]:
    """Grade ``submissions`` on Dask workers (see :func:`grade`), in their order.

    Each submission and the autograder zips travel to the worker as bytes, so the
    workers need no shared folder; each worker grades in its own bubblewrap sandbox
    (the per-submission steps of :func:`grade`). Before anything runs, every worker
    present must be able to build a sandbox (else :class:`SandboxUnavailable`); a
    worker that joins later and cannot is named in that submission's note.
    ``sandbox=False`` grades unsandboxed with the :data:`UNSAFE_WARNING`.

    >>> grade_on_dask(["alice/00_welcome.ipynb"], available_autograders("grading/"),
    ...               scheduler="tcp://10.0.0.5:8786")  # doctest: +SKIP
    """
    from contextlib import nullcontext

    from distributed import as_completed

    from fnlab.cluster import connect

    if not sandbox:
        warnings.warn(UNSAFE_WARNING, RuntimeWarning, stacklevel=3)
    blobs = {a: (str(zp), Path(zp).read_bytes()) for a, zp in graders.items()}
    subs = [(str(s), Path(s).name, Path(s).read_bytes()) for s in submissions]
    ctx = nullcontext(client) if client is not None else connect(
        scheduler or "local", workers, allowed_failures=retries)
    with ctx as cl:
        if sandbox:
            probes = cl.run(_worker_bwrap)
            missing = {w: why for w, (path, why) in probes.items() if path is None}
            if missing:
                raise SandboxUnavailable(
                    f"no bubblewrap sandbox on Dask worker(s) {', '.join(sorted(missing))} "
                    f"({next(iter(missing.values()))}); {NO_SANDBOX}")
        [shared] = cl.scatter([blobs], broadcast=True)
        futures = [cl.submit(_grade_shipped, shown, name, data, shared, sandbox=sandbox,
                             profile=profile, timeout=timeout, memory_mb=memory_mb,
                             pure=False, retries=retries, key=f"fnlab-grade-{i}-"
                             f"{secrets.token_hex(4)}")
                   for i, (shown, name, data) in enumerate(subs)]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[GradeResult | None] = [None] * len(futures)
        for fut in as_completed(futures, loop=cl.loop):
            i = index[fut.key]
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker must not lose the batch
                res = GradeResult(subs[i][0], None, note=_clean(
                    f"not graded: the Dask task failed ({type(exc).__name__}: {exc})"))
            results[i] = res
            if progress:
                progress(res)
    return results


def write_grades_csv(results: list[GradeResult], path: str | Path) -> Path:
    """Write ``submission, notebook, question, score, max_score, note`` rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for res in results:
        writer.writerows(res.rows())
    atomic_write_text(path, buffer.getvalue(), mode=0o644, newline="")  # never half a file
    return path
