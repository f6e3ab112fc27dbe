"""Every course notebook follows the conventions in notebooks/CONVENTIONS.md."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REQUIRED_PARAMETERS = ("dataset", "profile", "seed", "epochs", "device")


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"
    assert NOTEBOOKS[0].name == "00_welcome.ipynb"


@pytest.fixture(params=NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def nb(request):
    node = nbformat.read(request.param, as_version=4)
    nbformat.validate(node)  # valid nbformat
    node.path = request.param
    return node


def _markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_name_pattern(nb):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", nb.path.name)


def test_stored_without_outputs(nb):
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{nb.path.name}: cells {dirty} carry outputs; run make clean-notebooks"


def test_python3_kernelspec(nb):
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_exactly_one_parameters_cell_with_the_standard_names(nb):
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{nb.path.name}: {len(cells)} cells tagged parameters"
    assert cells[0].cell_type == "code"
    names = set(re.findall(r"^(\w+)\s*=", cells[0].source, re.M))
    missing = [p for p in REQUIRED_PARAMETERS if p not in names]
    assert not missing, f"{nb.path.name}: parameters cell lacks {missing}"


def test_title_objectives_and_clinical_framing(nb):
    first_md = next(c for c in nb.cells if c.cell_type == "markdown")
    number = nb.path.name[:2]
    assert first_md.source.startswith(f"# {number} "), f"{nb.path.name}: title must start '# {number} '"
    assert "## Learning objectives" in first_md.source
    md = _markdown(nb).lower()
    assert "false negative" in md, f"{nb.path.name}: no clinical framing about false negatives"


def test_summary_and_exercises_with_checks(nb):
    md = _markdown(nb)
    assert "## Summary" in md and "## Exercises" in md
    raws = [c.source for c in nb.cells if c.cell_type == "raw"]
    assert raws and raws[0].startswith("# ASSIGNMENT CONFIG"), "first cell: otter ASSIGNMENT CONFIG"
    questions = [r for r in raws if r.startswith("# BEGIN QUESTION")]
    assert questions, f"{nb.path.name}: no graded exercise"
    assert sum(r.startswith("# BEGIN TESTS") for r in raws) == len(questions), \
        "every exercise needs an autograded check"
    assert sum(r.startswith("# BEGIN SOLUTION") for r in raws) == len(questions), \
        "every exercise needs a marked solution"


def test_notebooks_use_no_network_and_no_absolute_paths(nb):
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "/work/" not in code and "urlopen" not in code and "download(" not in code


def _notebook_stats():
    import importlib.util

    spec = importlib.util.spec_from_file_location("notebook_stats",
                                                  ROOT / "tools" / "notebook_stats.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_course_reads_like_a_textbook(capsys):
    """Short cells, few prints, little plumbing, one short import cell (tools/notebook_stats.py)."""
    stats = _notebook_stats()
    totals = stats.course_totals(NOTEBOOKS)
    with capsys.disabled():
        print(f"\ncourse: {totals['prints']} print calls, longest code cell "
              f"{totals['longest_cell']} lines, plumbing {totals['plumbing_share']:.1%} of "
              f"{totals['code_lines']} code lines")
    assert not stats.problems(totals), "; ".join(stats.problems(totals))


def test_notebooks_build_one_lesson_face_and_branch_on_no_profile(nb):
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code"
                     and "parameters" not in c.metadata.get("tags", []))
    assert "from fnlab import lab" in code, f"{nb.path.name}: import the lesson face"
    assert re.search(r"^lesson = lab\.Lesson\(", code, re.M), f"{nb.path.name}: build one Lesson"
    assert not re.search(r"\bprofile\s*(==|!=|\bin\b)", code), (
        f"{nb.path.name}: a profile branch; put the budget in fnlab.profiles and use lesson.budget")
    assert not re.search(r"^\s*if .*\bholds\b.*:\s*$", code, re.M), (
        f"{nb.path.name}: a verdict tree; write the prose in Markdown, or one claim(then=, otherwise=)")


def test_every_lesson_records_claims_once_each(nb):
    """``make test`` checks the claims while nbval runs the notebooks (FNLAB_STRICT_CLAIMS=1):
    a claim that does not hold fails its cell. What that cannot see is checked here: a lesson
    that records no claim, or one id recorded from two places."""
    if nb.path.name.startswith("00_"):
        pytest.skip("the welcome notebook teaches no lesson")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    ids = re.findall(r"""lesson\.claim\(\s*["'](\w+)["']""", code)
    assert ids, f"{nb.path.name}: records no lesson claim (lesson.claim)"
    twice = sorted({i for i in ids if ids.count(i) > 1})
    assert not twice, f"{nb.path.name}: claim ids recorded from two places: {twice}"
