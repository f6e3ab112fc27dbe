"""Strip outputs, execution counts and editor metadata from notebooks (run before commit).

Usage: python tools/clean_notebooks.py notebooks/*.ipynb

Keeps cell tags (``parameters``), the python3 kernelspec and the language name.
"""

from __future__ import annotations

import sys

import nbformat

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def clean(path: str) -> bool:
    """Clean one notebook in place; return True when it changed."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    nb.metadata = nbformat.NotebookNode(
        kernelspec=KERNELSPEC, language_info={"name": "python"}
    )
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags")
        cell.metadata = nbformat.NotebookNode(tags=tags) if tags else nbformat.NotebookNode()
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    after = nbformat.writes(nb)
    if after != before:
        nbformat.write(nb, path)
        return True
    return False


if __name__ == "__main__":
    changed = [p for p in sys.argv[1:] if clean(p)]
    for p in changed:
        print(f"cleaned {p}")
