"""Files written whole or not at all, and JSON read without surprises.

One place for what the Run store, the course runner, the sweep, the lesson records and
the grade book all need: a reader (another process, a crashed run resumed) sees the old
file or the new one, never half of one. The temporary file is hidden (a leading dot),
unique to the writer, in the target's folder (so :func:`os.replace` is atomic) and
removed when the write fails.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> write_json(p, {"auc": 0.9})
>>> read_json(p)
{'auc': 0.9}
>>> read_json(p.with_name("missing.json")) is None
True
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "read_json", "write_json"]


def atomic_write_text(path: str | Path, text: str, *, mode: int | None = None,
                      newline: str | None = None) -> None:
    """Write ``text`` to ``path`` atomically (``mode``: the file's permissions, e.g. 0o644).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "notes.md"
    >>> atomic_write_text(p, "# notes\\n"); p.read_text()
    '# notes\\n'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
            f.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, data: Any, *, sort_keys: bool = False, allow_nan: bool = True,
               default=None) -> None:
    """``data`` as indented JSON (and a final newline), written atomically."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys, allow_nan=allow_nan, default=default)
    atomic_write_text(path, text + "\n")


def read_json(path: str | Path, default=None):
    """The JSON object (a dict) in ``path``; ``default`` when the file is missing, unreadable,
    not JSON or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
    return data if isinstance(data, dict) else default
