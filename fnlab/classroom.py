"""Classroom use: student copies of the notebooks and offline grading, with otter-grader.

Every course notebook is an otter-grader *master notebook* (see
``notebooks/CONVENTIONS.md``): each exercise is an otter question with a marked
solution, public checks the student sees and hidden checks only the grader runs.

- :func:`make_student_copies` (``make student`` / ``fnlab classroom student``) runs
  ``otter assign`` on each notebook and writes the student copy (solutions
  replaced by ``...``, hidden tests removed, no outputs, the ``parameters`` cell
  kept) to the git-ignored ``student/`` folder. The autograder zip and the
  solution copy otter makes go to the git-ignored ``grading/`` folder. Every
  student copy is checked for leaked solution or hidden-test lines before it is
  kept (:func:`find_leaks`).
- :func:`grade` (``fnlab classroom grade``, defined in :mod:`fnlab.grading`) runs
  each submission in a bubblewrap sandbox with no test in sight, then scores it
  with otter's tests in a second, fresh sandbox that reads only snapshots of its
  variables; it writes one CSV row per submission and question plus a ``TOTAL``
  row per submission.

Why otter-grader rather than nbgrader: otter needs no course database or
exchange directory (nbgrader needs a gradebook database and its
``source/release/submitted`` course layout); its questions live in the notebook
itself, one file per assignment, in a format that stays readable as a plain
notebook; and its tests are plain doctests that run offline, without Docker or a
server, which is what an offline classroom and CI need.

Example
-------
>>> copies = make_student_copies(["00_welcome"])  # doctest: +SKIP
>>> copies[0].student.name  # doctest: +SKIP
'00_welcome.ipynb'
>>> results = grade(["alice/00_welcome.ipynb"], out_csv="grades.csv")  # doctest: +SKIP
>>> results[0].total, results[0].possible  # doctest: +SKIP
(2.0, 2.0)
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from fnlab.config import PROJECT_ROOT
from fnlab.grading import (
    COURSE_MEMBER,
    CSV_COLUMNS,
    TOTAL,
    UNSAFE_WARNING,
    GradeResult,
    SandboxUnavailable,
    available_autograders,
    course_info,
    default_grading_dir,
    grade,
    grade_submission,
    submission_assignment,
    write_grades_csv,
)
from fnlab.grading import read_notebook as _load

_BEGIN_SOLUTION = re.compile(r"^\s*#\s*BEGIN SOLUTION\b", re.I)
_END_SOLUTION = re.compile(r"^\s*#\s*END SOLUTION\b", re.I)
_SOLUTION_LINE = re.compile(r"#\s*SOLUTION(\s+NO PROMPT)?\s*$", re.I)
_TEST_CONFIG_END = re.compile(r'^\s*"""\s*#\s*END TEST CONFIG', re.I)


def _root() -> Path:
    return PROJECT_ROOT or Path.cwd()


def default_student_dir() -> Path:
    """Where student copies go: ``<checkout>/student`` (git-ignored)."""
    return _root() / "student"


# --------------------------------------------------------------------------- leaks


def _raw_marker(cell, marker: str) -> bool:
    return cell.get("cell_type") == "raw" and _source(cell).strip().upper().startswith(marker)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _meaningful(line: str) -> bool:
    """Whether a line is worth checking for (not blank, not ``...``, not just brackets)."""
    text = line.strip()
    return bool(text) and bool(re.search(r"[A-Za-z0-9]", text)) and text not in {"...", "pass"}


def secret_lines(master: dict) -> tuple[list[str], list[str]]:
    """The solution lines and hidden-test lines of an otter master notebook.

    Solution lines: every line between ``# BEGIN SOLUTION`` and ``# END SOLUTION``
    inside a code cell, every line ending in ``# SOLUTION``, and the text of
    markdown cells inside a raw solution block. Hidden-test lines: the code after
    the ``# END TEST CONFIG`` header of a test cell whose config says
    ``hidden: true``. Lines that also appear in the notebook outside any secret
    (``plt.show()``, say) are left out, since the student copy may show them.

    >>> nb = {"cells": [
    ...     {"cell_type": "code", "source": "x = ...\\n# BEGIN SOLUTION\\nx = 42\\n# END SOLUTION"},
    ...     {"cell_type": "code", "source": '\"\"\" # BEGIN TEST CONFIG\\nhidden: true\\n'
    ...      '\"\"\" # END TEST CONFIG\\nassert x == 42'}]}
    >>> secret_lines(nb)
    (['x = 42'], ['assert x == 42'])
    """
    solutions: list[str] = []
    hidden: list[str] = []
    public: list[str] = []
    in_solution_block = False
    for cell in master.get("cells", []):
        kind, src = cell.get("cell_type"), _source(cell)
        if kind == "raw":
            if _raw_marker(cell, "# BEGIN SOLUTION"):
                in_solution_block = True
            elif _raw_marker(cell, "# END SOLUTION"):
                in_solution_block = False
            continue
        if kind == "markdown" and in_solution_block:
            solutions += src.splitlines()
            continue
        if kind != "code":
            public += src.splitlines()
            continue
        lines = src.splitlines()
        if lines and lines[0].lstrip().startswith('"""') and "BEGIN TEST CONFIG" in lines[0].upper():
            end = next((i for i, ln in enumerate(lines) if _TEST_CONFIG_END.match(ln)), None)
            config = "\n".join(lines[1:end]) if end else ""
            body = lines[end + 1:] if end is not None else []
            if re.search(r"^\s*hidden\s*:\s*true\s*$", config, re.I | re.M):
                hidden += body
            else:
                public += body
            continue
        inside = False
        for ln in lines:
            if _BEGIN_SOLUTION.match(ln):
                inside = True
            elif _END_SOLUTION.match(ln):
                inside = False
            elif inside or _SOLUTION_LINE.search(ln):
                solutions.append(_SOLUTION_LINE.sub("", ln))
            else:
                public.append(ln)
    shown = {ln.strip() for ln in public}

    def keep(lines: list[str]) -> list[str]:
        out = []
        for ln in lines:
            text = ln.strip()
            if _meaningful(text) and text not in shown and text not in out:
                out.append(text)
        return out

    return keep(solutions), keep(hidden)


def _all_strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _all_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _all_strings(v)]
    return []


def _visible_lines(student: dict) -> set[str]:
    """Every stripped line a student can read in a notebook: cells, outputs and metadata."""
    texts = _all_strings(student.get("cells", [])) + _all_strings(student.get("metadata", {}))
    lines = set()
    for text in texts:
        for ln in text.splitlines():
            ln = ln.strip()
            lines.add(ln)
            if ln.startswith((">>> ", "... ")):  # otter stores public tests as doctests
                lines.add(ln[4:].strip())
    return lines


def find_leaks(master: dict | str | Path, student: dict | str | Path) -> list[str]:
    """Solution or hidden-test lines of ``master`` that appear in ``student`` (empty: no leak).

    Both may be notebook dicts or paths. Each leak is reported as
    ``"solution: <line>"`` or ``"hidden test: <line>"``.
    """
    master, student = _load(master), _load(student)
    visible = _visible_lines(student)
    solutions, hidden = secret_lines(master)
    return ([f"solution: {ln}" for ln in solutions if ln in visible]
            + [f"hidden test: {ln}" for ln in hidden if ln in visible])


# --------------------------------------------------------------------------- student copies


@dataclass
class AssignmentFiles:
    """What ``otter assign`` made for one notebook."""

    name: str
    student: Path
    solution: Path
    autograder: Path
    questions: list[str] = field(default_factory=list)


def autograder_questions(zip_path: str | Path) -> list[str]:
    """Question names graded by an autograder zip (its ``tests/*.py`` files)."""
    with zipfile.ZipFile(zip_path) as zf:
        return sorted(Path(n).stem for n in zf.namelist()
                      if n.startswith("tests/") and n.endswith(".py"))


def make_student_copies(
    notebooks: list[str] | None = None,
    out: str | Path | None = None,
    grading: str | Path | None = None,
    *,
    folder: str | Path | None = None,
    quiet: bool = True,
) -> list[AssignmentFiles]:
    """Run ``otter assign`` on each course notebook; write student copies and autograders.

    ``notebooks``: names as ``fnlab course run`` takes them (``00_welcome``, ``00``);
    default all of ``folder`` (default ``notebooks/``). Writes
    ``out/<name>.ipynb`` (default ``student/``), and ``grading/<name>-autograder.zip``
    plus the solution copy ``grading/solutions/<name>.ipynb`` (default ``grading/``).
    Raises RuntimeError naming the notebook when otter fails or a student copy
    would leak a solution or hidden-test line (the copy is then not written).
    """
    from fnlab.course import select_notebooks

    paths = select_notebooks(notebooks, Path(folder) if folder else None)
    if not paths:
        raise ValueError(f"no NN_*.ipynb notebooks found in {folder or 'notebooks/'}")
    out = Path(out) if out else default_student_dir()
    grading = Path(grading) if grading else default_grading_dir()
    from otter.assign import main as otter_assign  # heavy import: only when used

    made = []
    for path in paths:
        name = path.stem
        with tempfile.TemporaryDirectory(prefix=f"fnlab-assign-{name}-") as tmp:
            dist = Path(tmp) / "dist"
            sink = io.StringIO()
            try:
                with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
                    otter_assign(str(path), str(dist), no_pdfs=True, no_run_tests=True)
            except Exception as exc:  # noqa: BLE001 - name the notebook, keep otter's message
                raise RuntimeError(f"otter assign failed on {path}: {exc}") from exc
            student_nb = dist / "student" / path.name
            solution_nb = dist / "autograder" / path.name
            zips = sorted((dist / "autograder").glob("*-autograder_*.zip"))
            if not (student_nb.is_file() and solution_nb.is_file() and zips):
                raise RuntimeError(
                    f"otter assign on {path} made no student copy or autograder zip: check its "
                    "'# ASSIGNMENT CONFIG' cell (generate: true) and its questions")
            leaks = find_leaks(path, student_nb)
            if leaks:
                raise RuntimeError(f"student copy of {path.name} would leak: " + "; ".join(leaks[:5]))
            out.mkdir(parents=True, exist_ok=True)
            (grading / "solutions").mkdir(parents=True, exist_ok=True)
            files = AssignmentFiles(name, out / path.name, grading / "solutions" / path.name,
                                    grading / f"{name}-autograder.zip")
            shutil.copyfile(student_nb, files.student)
            shutil.copyfile(solution_nb, files.solution)
            shutil.copyfile(zips[-1], files.autograder)
            with zipfile.ZipFile(files.autograder, "a") as zf:  # what the checks may use
                zf.writestr(COURSE_MEMBER, json.dumps(course_info(path)))
            files.questions = autograder_questions(files.autograder)
            made.append(files)
    return made


# --------------------------------------------------------------------------- grading
# Grading lives in fnlab.grading (sandboxed, two steps); these names stay importable from here.

__all__ = [
    "AssignmentFiles", "CSV_COLUMNS", "GradeResult", "SandboxUnavailable", "TOTAL",
    "UNSAFE_WARNING", "autograder_questions", "available_autograders", "default_grading_dir",
    "default_student_dir", "find_leaks", "grade", "grade_submission", "make_student_copies",
    "secret_lines", "submission_assignment", "write_grades_csv",
]
