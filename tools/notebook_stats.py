"""How the course notebooks read: print calls, cell lengths, plumbing share, imports.

The targets (issue "Notebooks a student reads like a good textbook"): no code cell over
30 lines, at most 60 ``print(`` calls in the whole course, plumbing at most 15% of the
code lines outside exercises, one short import cell per notebook.

A *code line* is a non-blank line that is not only a comment. Exercise cells (from
``# BEGIN QUESTION`` to ``# END QUESTION``) are left out of every count: they are the
student's, not the lesson's. A line is *plumbing* when it belongs to a statement that
only sets the notebook up or books its results: an import, the ``parameters`` cell,
building the :class:`fnlab.lab.Lesson`, ``lesson.record(...)`` and ``lesson.claim(...)``
(the claim's call, not the computation of its value), and the older spellings of the same
(``seed_everything``, ``resolve_dataset``, ``get_profile``, ``lesson_config``,
``lesson_run``, ``lesson_data``, ``get_or_train``, ``record``, ``claim``).

Usage::

    python tools/notebook_stats.py notebooks/*.ipynb      # a table and the totals
    python tools/notebook_stats.py --check notebooks/*.ipynb  # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

MAX_CELL_LINES = 30
MAX_PRINTS = 60
MAX_PLUMBING = 0.15
MAX_IMPORT_LINES = 8

_PLUMBING_CALLS = {"Lesson", "record", "claim", "seed_everything", "resolve_dataset",
                   "lesson_config", "lesson_run", "lesson_data", "get_or_train", "get_profile"}


@dataclass
class NotebookStats:
    name: str
    code_lines: int = 0
    plumbing_lines: int = 0
    prints: int = 0
    longest_cell: int = 0
    longest_cell_index: int = -1
    import_lines: int = 0
    long_cells: list = field(default_factory=list)


def _code_lines(src: str) -> list[int]:
    """1-based numbers of the lines that are code (not blank, not only a comment)."""
    return [i for i, line in enumerate(src.splitlines(), 1)
            if line.strip() and not line.strip().startswith("#")]


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Expr):
        node = node.value
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        node = node.value
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Name):
            return f.id
        if isinstance(f, ast.Attribute):
            return f.attr
    return None


def _plumbing_line_numbers(src: str) -> set[int]:
    """Line numbers of the statements in ``src`` that are plumbing (see the module doc)."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return set()
    lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or _call_name(node) in _PLUMBING_CALLS:
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def notebook_stats(path: str | Path) -> NotebookStats:
    """Count what a student reads in one notebook (exercise cells left out)."""
    nb = json.loads(Path(path).read_text())
    stats = NotebookStats(Path(path).name)
    in_question = False
    for index, cell in enumerate(nb["cells"]):
        src = "".join(cell.get("source", []))
        if cell["cell_type"] == "raw":
            if "# BEGIN QUESTION" in src:
                in_question = True
            elif "# END QUESTION" in src:
                in_question = False
            continue
        if cell["cell_type"] != "code" or in_question:
            continue
        code = _code_lines(src)
        tags = cell.get("metadata", {}).get("tags", [])
        plumbing = set(code) if "parameters" in tags else _plumbing_line_numbers(src) & set(code)
        stats.code_lines += len(code)
        stats.plumbing_lines += len(plumbing)
        stats.prints += len(re.findall(r"\bprint\(", src))
        imports = sum(1 for i in code if re.match(r"\s*(import|from)\s", src.splitlines()[i - 1]))
        stats.import_lines += imports
        if len(code) > stats.longest_cell:
            stats.longest_cell, stats.longest_cell_index = len(code), index
        if len(code) > MAX_CELL_LINES:
            stats.long_cells.append((index, len(code)))
    return stats


def course_totals(paths) -> dict:
    """The course-wide figures the targets are about."""
    per = [notebook_stats(p) for p in paths]
    code = sum(s.code_lines for s in per)
    plumbing = sum(s.plumbing_lines for s in per)
    return {"notebooks": per, "prints": sum(s.prints for s in per),
            "longest_cell": max((s.longest_cell for s in per), default=0),
            "code_lines": code, "plumbing_lines": plumbing,
            "plumbing_share": plumbing / code if code else 0.0,
            "long_cells": [(s.name, i, n) for s in per for i, n in s.long_cells],
            "max_import_lines": max((s.import_lines for s in per), default=0)}


def problems(totals: dict) -> list[str]:
    """The targets this course misses, one line each ([] when every target is met)."""
    out = []
    if totals["prints"] > MAX_PRINTS:
        out.append(f"{totals['prints']} print calls (at most {MAX_PRINTS})")
    for name, index, n in totals["long_cells"]:
        out.append(f"{name} cell {index}: {n} code lines (at most {MAX_CELL_LINES})")
    if totals["plumbing_share"] > MAX_PLUMBING:
        out.append(f"plumbing {totals['plumbing_share']:.0%} of code lines (at most "
                   f"{MAX_PLUMBING:.0%})")
    for s in totals["notebooks"]:
        if s.import_lines > MAX_IMPORT_LINES:
            out.append(f"{s.name}: {s.import_lines} import lines (at most {MAX_IMPORT_LINES})")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    totals = course_totals(args.notebooks)
    print(f"{'notebook':40s} {'code':>5s} {'plumb':>5s} {'print':>5s} {'longest':>7s} {'imports':>7s}")
    for s in totals["notebooks"]:
        print(f"{s.name:40s} {s.code_lines:5d} {s.plumbing_lines:5d} {s.prints:5d} "
              f"{s.longest_cell:7d} {s.import_lines:7d}")
    print(f"course: {totals['prints']} prints (target <= {MAX_PRINTS}), longest cell "
          f"{totals['longest_cell']} lines (<= {MAX_CELL_LINES}), plumbing "
          f"{totals['plumbing_share']:.1%} of {totals['code_lines']} code lines "
          f"(<= {MAX_PLUMBING:.0%})")
    missed = problems(totals)
    for line in missed:
        print(f"target missed: {line}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
