"""Shared helpers of the benchmark scripts: machine facts, load average, JSON, tables.

Every ``benchmarks/bench_*.py`` writes one JSON file with :func:`write_result`. The
schema (``schema_version`` 1) is::

    name, title, schema_version, smoke, date, command,
    cpu_count, torch_version, device,              # also inside "machine"
    machine {...}, load_average {"start": [1, 5, 15 min], "end": [...]},
    wall_seconds, config {...}, figures {...},
    table {"columns": [...], "rows": [[str, ...], ...], "caption": str}   (optional)
    tables [{"title", "columns", "rows", "caption"}, ...]                 (optional)
    goals [{"goal": str, "met": bool | None, "detail": str}, ...]         (optional)
    notes [str, ...]                                                      (optional)

``run_all.py`` renders ``table``/``tables``, ``goals`` and ``notes`` into the README;
a JSON without tables gets its scalar ``figures`` as a two-column table.

Example
-------
>>> info = machine_info()
>>> info["cpu_count"] >= 1 and "torch_version" in info
True
>>> markdown_table(["a", "b"], [[1, "x"]]).splitlines()[1]
'|---|---|'
>>> mean_sd([1.0, 2.0, 3.0], 2)
'2.00 ± 1.00'
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
SCHEMA_VERSION = 1
#: keys every results JSON has (``tests/test_benchmarks.py`` checks them)
REQUIRED_KEYS = ("name", "title", "schema_version", "smoke", "date", "command", "cpu_count",
                 "torch_version", "device", "machine", "load_average", "wall_seconds",
                 "figures")

if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------- machine
class BenchError(SystemExit):
    """A clear one-line error, ``<script>: error: <message>`` on stderr, exit status 2."""

    def __init__(self, message: str):
        print(f"{Path(sys.argv[0]).stem}: error: {message}", file=sys.stderr)
        super().__init__(2)


def shared_file(name: str) -> Path | None:
    """``../shared/data/<name>`` beside the checkout when it exists, else None."""
    from fnlab.config import shared_data_dir

    shared = shared_data_dir()
    path = shared / name if shared is not None else None
    return path if path is not None and path.is_file() else None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none).

    >>> la = load_average(); la is None or len(la) == 3
    True
    """
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict:
    """CPU count and model, Python, torch/torchvision versions, threads, devices, commit."""
    import torch

    info = {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "git_commit": _git_commit(),
    }
    try:
        import torchvision

        info["torchvision_version"] = torchvision.__version__
    except ImportError:  # pragma: no cover - always installed with fnlab
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    try:
        import fnlab

        info["fnlab_version"] = fnlab.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def command_line(argv: list[str] | None = None) -> str:
    """The command that produced a result, relative to the project root.

    >>> command_line([str(BENCH_DIR / "bench_models.py"), "--smoke"])
    'python benchmarks/bench_models.py --smoke'
    >>> command_line([str(BENCH_DIR / "x.py"), "--out", str(RESULTS_DIR / "x.json")])
    'python benchmarks/x.py --out benchmarks/results/x.json'
    """
    argv = list(sys.argv if argv is None else argv)
    if argv:
        script = Path(argv[0])
        try:
            argv[0] = str(script.resolve().relative_to(ROOT))
        except ValueError:
            argv[0] = str(script)
    root = str(ROOT) + os.sep
    argv = [a[len(root):] if a.startswith(root) else a for a in argv]
    return "python " + " ".join(shlex.quote(a) for a in argv)


# --------------------------------------------------------------------------- results
class Recorder:
    """Start the clock and the load-average record of one benchmark run.

    >>> rec = Recorder("demo", "A demo")
    >>> out = rec.finish({"x": 1.0}, smoke=True)
    >>> sorted(set(REQUIRED_KEYS) - set(out))
    []
    """

    def __init__(self, name: str, title: str, argv: list[str] | None = None):
        self.name, self.title = name, title
        self.command = command_line(argv)
        self.started = time.perf_counter()
        self.date = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.load_start = load_average()

    def finish(self, figures: dict, *, smoke: bool, config: dict | None = None,
               table: dict | None = None, tables: list[dict] | None = None,
               goals: list[dict] | None = None, notes: list[str] | None = None,
               device: str | None = None) -> dict:
        """The results dict (see the module docstring), ready for :func:`write_result`."""
        machine = machine_info()
        out = {
            "name": self.name,
            "title": self.title,
            "schema_version": SCHEMA_VERSION,
            "smoke": bool(smoke),
            "date": self.date,
            "command": self.command,
            "cpu_count": machine["cpu_count"],
            "torch_version": machine["torch_version"],
            "device": device or machine["device"],
            "machine": machine,
            "load_average": {"start": self.load_start, "end": load_average()},
            "wall_seconds": round(time.perf_counter() - self.started, 2),
            "config": config or {},
            "figures": figures,
        }
        if table is not None:
            out["table"] = table
        if tables:
            out["tables"] = tables
        if goals:
            out["goals"] = goals
        if notes:
            out["notes"] = notes
        return jsonable(out)


def jsonable(value):
    """NumPy scalars/arrays to Python, NaN/inf to None, Paths to str (recursively).

    >>> jsonable({"a": float("nan"), "b": (1, 2)})
    {'a': None, 'b': [1, 2]}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def smoke_dir() -> Path:
    """Where smoke results go by default: a folder in the system temp dir (never the repo)."""
    import tempfile

    return Path(tempfile.gettempdir()) / "fnlab-bench-smoke"


def default_out(name: str, smoke: bool) -> Path:
    """``benchmarks/results/<name>.json``; smoke runs go to :func:`smoke_dir`."""
    return (smoke_dir() if smoke else RESULTS_DIR) / f"{name}.json"


def write_result(result: dict, path: str | Path) -> Path:
    """Write ``result`` as indented JSON (atomically) and say where.

    >>> import tempfile
    >>> p = write_result({"name": "x"}, Path(tempfile.mkdtemp()) / "x.json")  # doctest: +ELLIPSIS
    wrote .../x.json
    >>> json.loads(p.read_text())
    {'name': 'x'}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(result), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}", flush=True)
    return path


def read_result(path: str | Path) -> dict:
    """Read a results JSON, raising ValueError naming the file when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable results JSON ({exc})") from exc


def goal(text: str, met: bool | None, detail: str = "") -> dict:
    """One goal line: ``met`` True/False, or None when it could not be measured.

    >>> goal("AUC >= 0.975", False, "0.961")["met"]
    False
    """
    return {"goal": text, "met": None if met is None else bool(met), "detail": detail}


# --------------------------------------------------------------------------- formatting
def fmt(value, digits: int = 3) -> str:
    """A number for a table (``—`` for None/NaN; ints without decimals).

    >>> fmt(0.12345), fmt(None), fmt(7), fmt(1234.5, 0)
    ('0.123', '—', '7', '1,234')
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "—"
    return f"{v:,.{digits}f}"


def mean_sd(values, digits: int = 3) -> str:
    """``mean ± sd`` (sample sd) of the finite values; just the value for one.

    >>> mean_sd([0.5], 2), mean_sd([], 2)
    ('0.50', '—')
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return "—"
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return fmt(m, digits)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    return f"{fmt(m, digits)} ± {fmt(sd, digits)}"


def summary_stats(values) -> dict:
    """mean, sd (sample), min, max and n of the finite values (None when empty).

    >>> summary_stats([1, 2, 3])["sd"]
    1.0
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": m, "sd": sd, "min": min(vals), "max": max(vals), "n": len(vals)}


def markdown_table(columns, rows) -> str:
    """A GitHub Markdown table (numbers right-aligned by their column's first row)."""
    cols = [str(c) for c in columns]

    def cell(v) -> str:
        return str(fmt(v) if isinstance(v, float) else v).replace("|", "\\|").replace("\n", " ")

    def numeric(v) -> bool:
        text = str(v).replace(",", "").replace("±", " ").split()
        try:
            float(text[0])
            return True
        except (IndexError, ValueError):
            return False

    align = ["---:" if rows and numeric(rows[0][i]) and i > 0 else "---"
             for i in range(len(cols))]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(cell(v) for v in r) + " |")
    return "\n".join(lines)


def print_table(columns, rows, title: str | None = None) -> None:
    """Print a Markdown table to stdout (the scripts' human-readable output)."""
    if title:
        print(f"\n{title}")
    print(markdown_table(columns, rows), flush=True)


def add_common_args(parser, name: str) -> None:
    """``--smoke`` and ``--out`` (default ``benchmarks/results/<name>[.smoke].json``)."""
    parser.add_argument("--smoke", action="store_true",
                        help="tiny, fast form (for the tests); written to "
                             f"$TMPDIR/fnlab-bench-smoke/{name}.json unless --out is given")
    parser.add_argument("--out", default=None,
                        help=f"results JSON (default benchmarks/results/{name}.json)")


def out_path(args, name: str) -> Path:
    """``args.out`` or the default for ``name`` and ``args.smoke``."""
    return Path(args.out) if args.out else default_out(name, args.smoke)
