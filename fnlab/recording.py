"""Let a notebook record its key figures for the course run report.

``fnlab course run`` sets ``$FNLAB_RECORD`` to a JSON file per notebook; a
notebook calls :func:`record` with its headline numbers (AUC, sensitivity,
specificity, false negatives at its operating point). Outside a course run the
call only returns the figures, so notebooks work the same in JupyterLab.

Example
-------
>>> import os, tempfile, json
>>> path = os.path.join(tempfile.mkdtemp(), "fig.json")
>>> os.environ["FNLAB_RECORD"] = path
>>> record(auc=0.91, fn=3)
{'auc': 0.91, 'fn': 3}
>>> json.load(open(path))
{'auc': 0.91, 'fn': 3}
>>> del os.environ["FNLAB_RECORD"]
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

RECORD_ENV = "FNLAB_RECORD"


def _plain(value):
    """Turn NumPy scalars and arrays into JSON-safe Python values (NaN -> None)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def record(**figures) -> dict:
    """Merge ``figures`` into the current notebook's record file (if a course run set one)."""
    figures = {k: _plain(v) for k, v in figures.items()}
    path = os.environ.get(RECORD_ENV)
    if path:
        target = Path(path)
        current = read_record(target)
        current.update(figures)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(current, indent=2, sort_keys=True))
        tmp.replace(target)
    return figures


def read_record(path: str | Path) -> dict:
    """The figures recorded so far at ``path`` ({} when none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
