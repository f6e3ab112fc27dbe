"""Classroom: student copies leak nothing, solutions score full marks, blank copies score zero.

Every course notebook gets a student copy (otter assign, a few seconds each); grading
(each submission runs in a bubblewrap sandbox, ~20 s each) is exercised on 00_welcome only,
to keep CI fast; tests/test_sandbox_grading.py plants attacks in submissions. Grading tests
skip, with the reason, where bwrap cannot build a sandbox.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import nbformat
import pytest

from fnlab import classroom
from fnlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# otter-grader's own traitlets usage, not ours
pytestmark = pytest.mark.filterwarnings("ignore:Traits should be given as instances")


def _master_secrets(nb) -> tuple[list[str], list[str]]:
    """Independently of fnlab.classroom: solution body lines and hidden-test lines."""
    solution, hidden = [], []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        lines = cell.source.splitlines()
        if lines and "BEGIN TEST CONFIG" in lines[0]:
            end = next(i for i, ln in enumerate(lines) if "END TEST CONFIG" in ln)
            if re.search(r"hidden:\s*true", "\n".join(lines[:end])):
                hidden += lines[end + 1:]
            continue
        inside = False
        for ln in lines:
            if re.match(r"\s*# BEGIN SOLUTION", ln):
                inside = True
            elif re.match(r"\s*# END SOLUTION", ln):
                inside = False
            elif inside:
                solution.append(ln)

    def meaningful(lines):
        return [ln.strip() for ln in lines if re.search(r"\w", ln) and ln.strip() != "..."]

    return meaningful(solution), meaningful(hidden)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _student_text(nb) -> str:
    """Everything a student can read in a notebook file: sources, outputs and metadata
    (otter keeps the public tests there as doctests: '>>> assert ...')."""
    text = "\n".join(_strings(nb))
    return text + "\n" + re.sub(r"(?m)^\s*(>>>|\.\.\.) ", "", text)


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """Student copies of every course notebook: name -> AssignmentFiles or the error."""
    base = tmp_path_factory.mktemp("classroom")
    made = {}
    for path in NOTEBOOKS:
        try:
            made[path.stem] = classroom.make_student_copies(
                [path.stem], out=base / "student", grading=base / "grading")[0]
        except Exception as exc:  # reported by the test of that notebook
            made[path.stem] = exc
    return made


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def pair(request, copies):
    made = copies[request.param.stem]
    if isinstance(made, Exception):
        pytest.fail(f"otter assign failed on {request.param.name}: {made}")
    return nbformat.read(request.param, as_version=4), nbformat.read(made.student, as_version=4), made


def test_every_notebook_has_a_student_copy_and_an_autograder(pair):
    master, student, made = pair
    nbformat.validate(student)
    assert made.autograder.is_file() and made.solution.is_file()
    n_questions = sum(c.cell_type == "raw" and c.source.startswith("# BEGIN QUESTION")
                      for c in master.cells)
    assert len(made.questions) == n_questions


def test_no_solution_or_hidden_test_leaks_into_the_student_copy(pair):
    master, student, made = pair
    solution, hidden = _master_secrets(master)
    assert solution, f"{made.name}: no '# BEGIN SOLUTION' lines found"
    text = _student_text(student)
    public = "\n".join(c.source for c in master.cells if c.cell_type != "raw"
                       and "BEGIN SOLUTION" not in c.source and "BEGIN TEST CONFIG" not in c.source)
    leaked = [ln for ln in solution + hidden if ln in text and ln not in public]
    assert not leaked, f"{made.name}: student copy shows {leaked}"
    assert "BEGIN SOLUTION" not in text and "BEGIN TEST CONFIG" not in text
    assert not classroom.find_leaks(master, student)


def test_student_copy_has_no_outputs_and_keeps_the_parameters_cell(pair):
    master, student, made = pair
    code = [c for c in student.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    master_params = [c for c in master.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0].source == master_params[0].source
    assert 'profile = "lessons"' in params[0].source  # students get the default profile
    assert any("otter.Notebook(" in c.source for c in code), "otter init cell missing"
    assert not any(c.cell_type == "raw" for c in student.cells), "otter markers left in"


def test_leak_detector_catches_a_leaky_copy():
    master = {"cells": [
        {"cell_type": "raw", "source": "# BEGIN SOLUTION"},
        {"cell_type": "code", "source": "x = ...\n# BEGIN SOLUTION\nx = 6 * 7\n# END SOLUTION"},
        {"cell_type": "raw", "source": "# END SOLUTION"},
        {"cell_type": "code", "source": 'y = 2 * x  # SOLUTION'},
        {"cell_type": "code", "source": '""" # BEGIN TEST CONFIG\nhidden: true\n""" # END TEST CONFIG\n'
                                         "assert x == 42"},
        {"cell_type": "code", "source": "assert isinstance(x, int)"},
    ]}
    clean = {"cells": [{"cell_type": "code", "source": "x = ...\n..."},
                       {"cell_type": "code", "source": "assert isinstance(x, int)"}], "metadata": {}}
    assert classroom.find_leaks(master, clean) == []
    leaky = {"cells": [{"cell_type": "code", "source": "x = 6 * 7"}],
             "metadata": {"otter": {"tests": {"q": ">>> assert x == 42\n"}}}}
    assert classroom.find_leaks(master, leaky) == ["solution: x = 6 * 7", "hidden test: assert x == 42"]


def test_student_copy_otter_checks_run_in_a_kernel(copies):
    """The init cell and every grader.check cell run without error in the course's env."""
    from nbclient import NotebookClient

    made = copies["00_welcome"]
    student = nbformat.read(made.student, as_version=4)
    keep = [c for c in student.cells if c.cell_type == "code"
            and ("otter.Notebook(" in c.source or "grader.check(" in c.source)]
    mini = nbformat.v4.new_notebook(cells=keep, metadata=student.metadata)
    NotebookClient(mini, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(made.student.parent)}}).execute()
    errors = [o for c in mini.cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    checks = [c for c in mini.cells if "grader.check(" in c.source]
    assert checks and all(c.outputs for c in checks)
    shown = json.dumps([c.outputs for c in checks])
    for q in made.questions:
        assert q in shown


def test_grade_cli_scores_solution_full_and_untouched_copy_zero(copies, bwrap, tmp_path, capsys):
    made = copies["00_welcome"]
    blank = tmp_path / "bob" / "00_welcome.ipynb"  # an untouched student copy
    blank.parent.mkdir()
    blank.write_bytes(made.student.read_bytes())
    broken = tmp_path / "carol.ipynb"
    broken.write_text("{not json")
    out = tmp_path / "grades.csv"
    rc = main(["classroom", "grade", str(made.solution), str(blank), str(broken),
               "--autograder", str(made.autograder.parent), "--out", str(out), "--jobs", "2"])
    assert rc == 1, "one submission could not be graded"
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(classroom.CSV_COLUMNS)
    by = {}
    for r in rows:
        by.setdefault(r["submission"], {})[r["question"]] = r
    sol, bob, carol = by[str(made.solution)], by[str(blank)], by[str(broken)]
    assert set(sol) == set(made.questions) | {"TOTAL"} == set(bob)
    for q in made.questions:
        assert float(sol[q]["score"]) == float(sol[q]["max_score"]) > 0
        assert float(bob[q]["score"]) == 0.0 < float(bob[q]["max_score"])
    assert float(sol["TOTAL"]["score"]) == float(sol["TOTAL"]["max_score"]) == len(made.questions)
    assert float(bob["TOTAL"]["score"]) == 0.0
    assert all(r["notebook"] == "00_welcome" for r in (*sol.values(), *bob.values()))
    assert list(carol) == ["TOTAL"] and "not a readable notebook" in carol["TOTAL"]["note"]
    assert "NOT GRADED" in capsys.readouterr().out


def test_grade_names_unknown_assignments_and_missing_autograders(copies, bwrap, tmp_path):
    made = copies["00_welcome"]
    stray = tmp_path / "homework.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), stray)
    res = classroom.grade_submission(stray, made.autograder.parent)
    assert not res.questions and "cannot tell which assignment" in res.note
    assert "00_welcome" in res.note
    res = classroom.grade_submission(made.student, tmp_path)
    assert "no autograder zips" in res.note
    assert classroom.submission_assignment(stray, ["00_welcome"]) is None
    named = tmp_path / "00_welcome_dave.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), named)
    assert classroom.submission_assignment(named, ["00_welcome", "01_x"]) == "00_welcome"


@pytest.mark.parametrize("argv, expected", [
    (["classroom", "grade", "nope.ipynb"], "no such submission: nope.ipynb"),
    (["classroom", "student", "99_nothing"], "unknown notebook '99_nothing'"),
])
def test_cli_bad_arguments_exit_2(argv, expected, capsys):
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


def test_grade_cli_rejects_unknown_profile(copies, capsys):
    made = copies["00_welcome"]
    assert main(["classroom", "grade", str(made.student), "--profile", "huge"]) == 2
    assert "choose one of: lessons, smoke, full, as-submitted" in capsys.readouterr().err
