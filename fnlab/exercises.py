"""A course notebook's exercises, as the students' pages and the run copies show them.

The notebooks mark their exercises the way otter-grader's assign format does (``# BEGIN
QUESTION``, ``# BEGIN SOLUTION``, ``# BEGIN TESTS`` and their ``END`` lines, in raw cells).
:func:`strip_exercises` takes the solutions and hidden tests out, for the book's pages
(:mod:`fnlab.book`) and the executed copies a course run keeps (:mod:`fnlab.course`).
"""

from __future__ import annotations

import copy
import re

__all__ = ["strip_exercises"]

_MARKER = re.compile(r"^#\s*(ASSIGNMENT CONFIG|BEGIN\s+\w+|END\s+\w+)", re.I)
_SOLUTION_LINE = re.compile(r"#\s*SOLUTION(\s+NO PROMPT)?\s*$", re.I)


def _src(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _raw_kind(cell) -> str | None:
    """``"BEGIN QUESTION"``, ``"END SOLUTION"``, ... for otter's raw marker cells, else None."""
    if cell.get("cell_type") != "raw":
        return None
    m = _MARKER.match(_src(cell).strip())
    return re.sub(r"\s+", " ", m.group(1).upper()) if m else None


def _hide_solution_code(source: str) -> str:
    """Replace ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` bodies and ``# SOLUTION`` lines by ``...``."""
    out, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        if re.match(r"#\s*BEGIN SOLUTION\b", stripped, re.I):
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + "...")
        elif re.match(r"#\s*END SOLUTION\b", stripped, re.I):
            inside = False
        elif inside:
            continue
        elif _SOLUTION_LINE.search(line):
            m = re.match(r"^(\s*[\w\.\[\]'\", ]+?\s*=)\s*", line)
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{m.group(1)} ..." if m else indent + "...")
        else:
            out.append(line)
    return "\n".join(out)


def _drop_solution_markers(source: str) -> str:
    lines = [ln for ln in source.splitlines()
             if not re.match(r"\s*#\s*(BEGIN|END) SOLUTION\b", ln, re.I)]
    return "\n".join(_SOLUTION_LINE.sub("", ln).rstrip() for ln in lines)


def _test_config(source: str) -> tuple[str, str] | None:
    """(config text, test body) of an otter test cell with a ``# BEGIN TEST CONFIG`` header."""
    lines = source.splitlines()
    if not (lines and lines[0].lstrip().startswith('"""') and "BEGIN TEST CONFIG" in lines[0].upper()):
        return None
    end = next((i for i, ln in enumerate(lines) if "END TEST CONFIG" in ln.upper()), None)
    if end is None:
        return None
    return "\n".join(lines[1:end]), "\n".join(lines[end + 1:]).lstrip("\n")


def strip_exercises(nb: dict, solutions: bool = False) -> dict:
    """A copy of an otter master notebook fit for the book.

    Otter's raw marker cells go. Without ``solutions``: solution code becomes ``...``
    (as in the student copy), written-answer solutions and hidden tests go, and the
    exercise cells lose their outputs (they were computed from the solution). With
    ``solutions``: only the markers and test-config headers go.

    >>> nb = {"cells": [{"cell_type": "raw", "source": "# BEGIN SOLUTION", "metadata": {}},
    ...     {"cell_type": "code", "source": "x = ...\\n# BEGIN SOLUTION\\nx = 42\\n# END SOLUTION",
    ...      "metadata": {}, "outputs": [], "execution_count": 1},
    ...     {"cell_type": "raw", "source": "# END SOLUTION", "metadata": {}}]}
    >>> [c["source"] for c in strip_exercises(nb)["cells"]]
    ['x = ...\\n...']
    >>> [c["source"] for c in strip_exercises(nb, solutions=True)["cells"]]
    ['x = ...\\nx = 42']
    """
    nb = copy.deepcopy(nb)
    cells, in_question, in_solution = [], False, False
    for cell in nb.get("cells", []):
        kind = _raw_kind(cell)
        if kind is not None:
            in_question = {"BEGIN QUESTION": True, "END QUESTION": False}.get(kind, in_question)
            in_solution = {"BEGIN SOLUTION": True, "END SOLUTION": False}.get(kind, in_solution)
            continue
        src = _src(cell)
        if cell.get("cell_type") == "code":
            test = _test_config(src)
            if test is not None:
                config, body = test
                if re.search(r"^\s*hidden\s*:\s*true\s*$", config, re.I | re.M) and not solutions:
                    continue
                src = body
            has_solution = "SOLUTION" in src.upper()
            if solutions:
                src = _drop_solution_markers(src)
            else:
                src = _hide_solution_code(src)
                if in_question or in_solution or has_solution:
                    cell["outputs"], cell["execution_count"] = [], None
        elif cell.get("cell_type") == "markdown" and in_solution and not solutions:
            continue  # a written answer's solution
        cell["source"] = src
        cells.append(cell)
    nb["cells"] = cells
    return nb


# --------------------------------------------------------------------------- timings
