"""The import graph follows the layers drawn in docs/ARCHITECTURE.md (issue 22).

Every ``fnlab`` module belongs to one layer; a module may import from its own layer and the
layers below it, never from a layer above. Imports made inside functions count as much as
those at the top (they hide the graph, not change it). A new module fails here until it is
given a layer, and no two modules may import each other (directly or round a longer loop).
"""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fnlab"

#: lowest first; the same table is drawn in docs/ARCHITECTURE.md
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("fnlab", "fnlab.config", "fnlab.fileio", "fnlab.recipe", "fnlab.profiles",
              "fnlab.recording", "fnlab.exercises", "fnlab.figure_check")),
    ("data", ("fnlab.data", "fnlab.data.*")),
    ("measuring", ("fnlab.predictions", "fnlab.metrics", "fnlab.thresholds", "fnlab.ensemble",
                   "fnlab.calibration", "fnlab.operating")),
    ("figures", ("fnlab.plots", "fnlab.widgets")),
    ("models", ("fnlab.models", "fnlab.losses")),
    ("training", ("fnlab.train",)),
    ("run store", ("fnlab.runs",)),
    ("analyses", ("fnlab.explain", "fnlab.robustness", "fnlab.external", "fnlab.report")),
    ("lesson face", ("fnlab.lessons", "fnlab.lab")),
    ("course machinery", ("fnlab.course", "fnlab.book", "fnlab.sweep", "fnlab.cluster",
                          "fnlab.classroom", "fnlab.grading", "fnlab.autograde",
                          "fnlab.sandbox", "fnlab.snapshot")),
    ("command line", ("fnlab.cli", "fnlab.cli.*", "fnlab.__main__")),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def layer_of(module: str) -> int | None:
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch(module, p) for p in patterns):
            return i
    return None


def imports_of(path: Path) -> set[str]:
    """Every fnlab module ``path`` imports, anywhere in the file (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            candidates = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found.update(c for c in candidates if c in MODULES)
    return found


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for module, deps in GRAPH.items():
        here = layer_of(module)
        for dep in sorted(deps):
            there = layer_of(dep)
            if here is not None and there is not None and there > here:
                upward.append(f"{module} ({LAYERS[here][0]}) imports {dep} ({LAYERS[there][0]})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_cycles():
    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for dep in GRAPH.get(node, ()):
                if dep == start:
                    return path + [start]
                if dep not in seen:
                    seen.add(dep)
                    stack.append((dep, path + [dep]))
        return None

    cycles = {" -> ".join(c) for m in GRAPH if (c := cycle_from(m))}
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))


def test_the_check_sees_imports_inside_functions(tmp_path):
    """An upward import planted inside a function is found (the check can fail)."""
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from fnlab.lab import Lesson\n    return Lesson\n")
    assert "fnlab.lab" in imports_of(planted)
    assert layer_of("fnlab.lab") > layer_of("fnlab.runs")
