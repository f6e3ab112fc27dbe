"""Exercises that only the right answer passes.

For every course notebook, ``tests/exercise_tables/nbNN.py`` lists plausible wrong answers
for each otter question (``WRONG_ANSWERS = {question: {label: source}}``). This test
executes the notebook once (smoke profile, synthetic X-rays: the exercises do not depend
on the budget), then, in the same kernel, for each question:

* the solution cell followed by the hidden tests passes;
* each wrong answer (its source replaces the solution cell) followed by the hidden tests
  fails;
* the public checks (what a student sees) pass for the solution and say that they are a
  sanity check, not the grade.

Every question must list at least two wrong answers.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TABLES = Path(__file__).resolve().parent / "exercise_tables"
MIN_WRONG = 2
#: what a public check's messages must say (case-insensitive), somewhere in its cell
SANITY_WORDS = re.compile(r"sanity check", re.I)


@dataclass
class Question:
    name: str
    solution: str = ""
    public: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)


def questions(nb) -> list[Question]:
    """The otter questions of a master notebook, in order, with their solution and tests."""
    out, current, where = [], None, None
    for cell in nb.cells:
        src = cell.source
        if cell.cell_type == "raw":
            head = src.strip().splitlines()[0].strip() if src.strip() else ""
            if head == "# BEGIN QUESTION":
                name = re.search(r"^name:\s*(\S+)", src, re.M)
                current = Question(name.group(1) if name else f"q{len(out) + 1}")
                out.append(current)
            elif head in ("# BEGIN SOLUTION", "# BEGIN TESTS"):
                where = head.split()[-1].lower()
            elif head in ("# END SOLUTION", "# END TESTS"):
                where = None
            elif head == "# END QUESTION":
                current = None
            continue
        if current is None or cell.cell_type != "code":
            continue
        if where == "solution":
            current.solution = src
        elif where == "tests":
            (current.hidden if re.search(r"hidden:\s*true", src) else current.public).append(src)
    return out


def wrong_answers(notebook: Path) -> dict[str, dict[str, str]]:
    """The table of wrong answers for ``notebook`` (``{}`` when it has no table file)."""
    path = TABLES / f"nb{notebook.name[:2]}.py"
    if not path.is_file():
        return {}
    spec = importlib.util.spec_from_file_location(f"exercise_table_{notebook.name[:2]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NOTEBOOK == notebook.name, f"{path.name} names {module.NOTEBOOK}"
    return module.WRONG_ANSWERS


def _smoke(nb) -> None:
    """Point the parameters cell at the smoke profile and the synthetic X-rays."""
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source += '\ndataset = "synthetic"\nprofile = "smoke"\ndevice = "cpu"\n'
            return
    raise AssertionError("no parameters cell")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_question_lists_wrong_answers(notebook):
    nb = nbformat.read(notebook, as_version=4)
    table = wrong_answers(notebook)
    for q in questions(nb):
        assert len(table.get(q.name, {})) >= MIN_WRONG, (
            f"{notebook.name} {q.name}: list at least {MIN_WRONG} wrong answers in "
            f"tests/exercise_tables/nb{notebook.name[:2]}.py")
        assert q.hidden, f"{notebook.name} {q.name}: no hidden test"
    unknown = set(table) - {q.name for q in questions(nb)}
    assert not unknown, f"{notebook.name}: the table names unknown questions {sorted(unknown)}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_public_checks_say_they_are_a_sanity_check(notebook):
    nb = nbformat.read(notebook, as_version=4)
    for q in questions(nb):
        assert any(SANITY_WORDS.search(src) for src in q.public), (
            f"{notebook.name} {q.name}: the public check should say it is a sanity check "
            "(the grade comes from hidden tests)")


@dataclass
class Executed:
    """What one smoke execution of a notebook showed."""

    exercise_failures: list[str]
    figure_problems: list[str]
    not_gradable: list[str] = field(default_factory=list)


#: Run in the kernel after the notebook: every notebook value a hidden test reads must come back
#: through the grader's plain-data snapshot loader (fnlab.snapshot), or an honest student's
#: answer would score 0 as "not gradable".
_GRADABLE = """
import builtins as _b, types as _t, dill as _dill
from fnlab.grading import course_info as _ci
from fnlab.snapshot import identifiers as _ids, load_value as _load
_info = _ci({path!r})
_bad = []
for _n in sorted(_ids({tests!r})):
    if hasattr(_b, _n) or _n in _info["helpers"] or _n in _info["functions"] or _n not in globals():
        continue
    if isinstance(globals()[_n], _t.ModuleType):
        continue
    try:
        _load(_dill.dumps(globals()[_n], protocol=4), _n)
    except Exception as _e:
        _bad.append(_n + ": " + str(_e)[:120])
print("\\n".join(_bad))
"""


def execute(notebook: Path, data_dir: Path) -> Executed:
    """Run ``notebook`` (smoke, synthetic) with every shown figure checked for overlaps, then
    try each question's solution and wrong answers against its hidden tests, in one kernel."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(notebook, as_version=4)
    table = wrong_answers(notebook)
    _smoke(nb)
    env = {"FNLAB_OFFLINE": "1", "FNLAB_STATIC_WIDGETS": "1",
           "FNLAB_DATA_DIR": os.environ.get("FNLAB_DATA_DIR", str(data_dir))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(notebook.parent)}})

    def runs(src: str) -> bool:
        try:
            client.execute_cell(nbformat.v4.new_code_cell(src), 0)
        except CellExecutionError:
            return False
        return True

    failures, not_gradable = [], []
    try:
        with client.setup_kernel():
            runs("from fnlab.figure_check import watch_figures\nwatch_figures()")
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    client.execute_cell(cell, index)
            out = client.execute_cell(nbformat.v4.new_code_cell(
                "from fnlab.figure_check import FOUND\n"
                "print('\\n'.join(f'figure {n}: {line}' for n, line in FOUND))"), 0)
            figures = [line for o in out.outputs if o.get("name") == "stdout"
                       for line in o["text"].splitlines() if line.strip()]
            for q in questions(nb):
                out = client.execute_cell(nbformat.v4.new_code_cell(_GRADABLE.format(
                    path=str(notebook), tests="\n".join(q.hidden))), 0)
                not_gradable += [f"{q.name}: {line}" for o in out.outputs
                                 if o.get("name") == "stdout"
                                 for line in o["text"].splitlines() if line.strip()]
            for q in questions(nb):
                if not (runs(q.solution) and all(runs(t) for t in q.public + q.hidden)):
                    failures.append(f"{q.name}: the solution fails its own tests")
                for label, source in table.get(q.name, {}).items():
                    if runs(source) and all(runs(t) for t in q.hidden):
                        failures.append(f"{q.name}: wrong answer {label!r} passes the hidden tests")
                runs(q.solution)  # leave the right answer in place for later questions
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Executed(failures, figures, not_gradable)


@pytest.fixture(scope="module", params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def executed(request, tmp_path_factory):
    return request.param, execute(request.param, tmp_path_factory.mktemp("data"))


@pytest.mark.notebook
@pytest.mark.slow
def test_only_the_right_answer_passes(executed):
    notebook, result = executed
    assert not result.exercise_failures, f"{notebook.name}: " + "; ".join(result.exercise_failures)


@pytest.mark.notebook
@pytest.mark.slow
def test_figures_have_no_overlapping_text(executed):
    notebook, result = executed
    assert not result.figure_problems, f"{notebook.name}: " + "; ".join(result.figure_problems)


@pytest.mark.notebook
@pytest.mark.slow
def test_hidden_tests_read_only_values_the_grader_can_load(executed):
    notebook, result = executed
    assert not result.not_gradable, f"{notebook.name}: " + "; ".join(result.not_gradable)
