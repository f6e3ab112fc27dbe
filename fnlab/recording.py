"""Let a notebook record its key figures and its lesson claims for the course report.

``fnlab course run`` sets ``$FNLAB_RECORD`` to a JSON file per notebook; a
notebook calls :func:`record` with its headline numbers (AUC, sensitivity,
specificity, false negatives at its operating point) and :func:`claim` for each
lesson it teaches: a measurable statement with the value this run measured and
the bound it must meet. Outside a course run the calls only return what they
were given, so notebooks work the same in JupyterLab.

A claim is ``{id, statement, value, bound, op, holds}``: ``holds`` is computed
from ``value op bound`` (``op`` one of ``>=``, ``<=``, ``>``, ``<``) unless the
notebook passes it (for a claim made of several conditions, with ``value`` and
``bound`` the deciding figures). :func:`claim_problems` finds what makes a
notebook's claims unusable (none, an id twice, no bound).

Example
-------
>>> import os, tempfile, json
>>> path = os.path.join(tempfile.mkdtemp(), "fig.json")
>>> os.environ["FNLAB_RECORD"] = path
>>> record(auc=0.91, fn=3)
{'auc': 0.91, 'fn': 3}
>>> c = claim("auc_high", "test AUC is at least 0.9", 0.91, 0.9, echo=False)
>>> c["holds"], read_claims(path)[0]["id"]
(True, 'auc_high')
>>> json.load(open(path))["auc"]
0.91
>>> del os.environ["FNLAB_RECORD"]
"""

from __future__ import annotations

import math
import operator
import os
from pathlib import Path

from fnlab.fileio import read_json, write_json

RECORD_ENV = "FNLAB_RECORD"
#: Key under which a record file keeps the list of claims.
CLAIMS_KEY = "claims"
#: Environment variable: ``1`` makes a claim that does not hold raise :class:`ClaimNotHeld`
#: (``make test`` sets it for the notebooks under nbval, so a failed lesson fails its cell).
STRICT_ENV = "FNLAB_STRICT_CLAIMS"


class ClaimNotHeld(AssertionError):
    """A lesson claim that does not hold, raised only when ``$FNLAB_STRICT_CLAIMS`` is 1."""
#: Comparison operators a claim may use.
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


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


def _write(target: Path, current: dict) -> None:
    write_json(target, current, sort_keys=True)


def record(**figures) -> dict:
    """Merge ``figures`` into the current notebook's record file (if a course run set one)."""
    figures = {k: _plain(v) for k, v in figures.items()}
    figures.pop(CLAIMS_KEY, None)  # claims go through claim()
    path = os.environ.get(RECORD_ENV)
    if path:
        target = Path(path)
        current = read_json(target, {})
        current.update(figures)
        _write(target, current)
    return figures


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def claim(id: str, statement: str, value, bound, op: str = ">=", holds: bool | None = None,
          echo: bool = True) -> dict:
    """Record one lesson claim and return it; print whether it holds (``echo``).

    ``value`` is what this run measured, ``bound`` what the lesson needs, ``op`` how
    they compare. ``holds`` defaults to ``value op bound``; a NaN or missing value
    never holds. Pass ``holds`` for a claim of several conditions.

    >>> claim("fewer_misses", "the ensemble misses fewer", 3, 5, op="<", echo=False)["holds"]
    True
    >>> claim("x", "nan never holds", float("nan"), 0.5, echo=False)["holds"]
    False
    >>> os.environ[STRICT_ENV] = "1"
    >>> claim("y", "two is less than one", 2, 1, op="<", echo=False)
    Traceback (most recent call last):
    ...
    fnlab.recording.ClaimNotHeld: claim y: DOES NOT HOLD: two is less than one (measured 2, needs < 1)
    >>> del os.environ[STRICT_ENV]
    """
    if op not in OPS:
        raise ValueError(f"claim {id!r}: op must be one of {', '.join(OPS)}, got {op!r}")
    value, bound = _plain(value), _plain(bound)
    if holds is None:
        holds = _finite(value) and _finite(bound) and bool(OPS[op](value, bound))
    entry = {"id": str(id), "statement": str(statement), "value": value, "bound": bound,
             "op": op, "holds": bool(holds)}
    path = os.environ.get(RECORD_ENV)
    if path:
        target = Path(path)
        current = read_json(target, {})
        current.setdefault(CLAIMS_KEY, []).append(entry)
        _write(target, current)
    if echo:
        print(format_claim(entry))
    if not entry["holds"] and os.environ.get(STRICT_ENV, "").strip() == "1":
        raise ClaimNotHeld(format_claim(entry))
    return entry


def format_claim(entry: dict) -> str:
    """One line: whether the claim holds, its statement, its value against its bound."""
    def num(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    verdict = "HOLDS" if entry.get("holds") else "DOES NOT HOLD"
    return (f"claim {entry.get('id')}: {verdict}: {entry.get('statement')} "
            f"(measured {num(entry.get('value'))}, needs {entry.get('op', '>=')} "
            f"{num(entry.get('bound'))})")


def claim_problems(claims: list[dict] | None) -> list[str]:
    """What makes a notebook's claims unusable: none recorded, an id twice, no bound.

    >>> claim_problems([])
    ['records no claims']
    >>> claim_problems([{"id": "a", "bound": 1}, {"id": "a", "bound": None}])
    ["claim 'a' recorded twice", "claim 'a' has no bound"]
    """
    if not claims:
        return ["records no claims"]
    problems, seen = [], set()
    for c in claims:
        cid = c.get("id")
        if cid in seen:
            problems.append(f"claim {cid!r} recorded twice")
        seen.add(cid)
    for c in claims:
        if c.get("bound") is None:
            problems.append(f"claim {c.get('id')!r} has no bound")
    return problems


def read_record(path: str | Path) -> dict:
    """The figures recorded so far at ``path``, without the claims ({} when none)."""
    data = read_json(path, {})
    data.pop(CLAIMS_KEY, None)
    return data


def read_claims(path: str | Path) -> list[dict]:
    """The claims recorded so far at ``path``, in order ([] when none)."""
    claims = read_json(path, {}).get(CLAIMS_KEY) or []
    return [c for c in claims if isinstance(c, dict)]
