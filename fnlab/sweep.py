"""Run the course over a grid (seeds x datasets x profiles) on Dask workers, one report.

``fnlab course sweep`` is a thin wrapper over :func:`run_sweep`. Each grid
*cell* (a dataset, a profile, a seed) is one course run, exactly what
``fnlab course run`` does (:func:`fnlab.course.run_course`: the notebooks in order,
with papermill), in its own folder; the cells run in parallel on the workers of a
Dask cluster (:mod:`fnlab.cluster`: a LocalCluster by default, or a scheduler
address). The sweep writes ``sweep.json``, ``sweep.md`` (every cell's status,
seconds, figures and lesson claims; claims x cells) and ``sweep.png`` (the headline
figures across seeds) in ``out``, after every cell.

How a cell runs. The Dask task (:func:`run_cell`) starts the course run as a
separate process on its worker (``python -c ... fnlab.sweep._cell_main``), and waits
for it. A process per cell, rather than :func:`~fnlab.course.run_course` called in
the worker itself, because the course run sets process-wide environment variables
(``FNLAB_DATA_DIR``, ``FNLAB_OFFLINE``, ``FNLAB_PNEUMONIAMNIST``, its torch thread
count): two cells in one worker process (a ``dask worker --nthreads 8`` of a cluster
fnlab did not start) would see each other's; a process of its own also gives a cell
its own memory, returned when it ends, and a clean kill. On Linux that process dies
with its worker (``PR_SET_PDEATHSIG``), and its Jupyter kernels follow it.

Cell folder (``out/<dataset>-<profile>-s<seed>/``)::

    cell.json          the cell's result, written last: its presence means the cell ran
    attempt-1.json     who ran attempt 1 (worker, host, pids), when, and how it ended
    attempt-1.log      the course run's output
    attempt-1/         the course run: executed notebooks, summary.json, summary.md
    attempt-2.json ... a retry
    data/              the cell's own data folder, with ``fresh_data``

Faults. A kernel that fails to start, or a cell process that is killed, makes the
attempt ask for a retry, preferably on another worker; a worker that dies mid-cell
makes Dask's scheduler run the cell again elsewhere. Either way at most
``retries`` more attempts (default 2); the report lists every attempt. With
``resume=True`` a cell whose ``cell.json`` says it ran (every notebook ``ok``, the
same notebooks and parameters) is not run again, so a sweep stopped by Ctrl-C or a
lost cluster continues where it stopped; a cell with a failed notebook is run again.

Shared Run cache. Cells get ``FNLAB_DATA_DIR`` = ``data_dir`` (default: this
machine's data folder, :func:`fnlab.config.data_dir`). On a shared file system,
cells that need the same trained Run share it: one trains, the others wait for it
(the per-key file lock of :func:`fnlab.runs.get_or_train`). A worker that cannot see
or write that folder uses its own (its ``FNLAB_DATA_DIR`` or default) and trains
there; ``cell.json`` says which. ``fresh_data=True`` gives each cell a fresh folder
instead (a cold start, for timing).

Example
-------
>>> result = run_sweep(seeds=[0, 1], datasets=["synthetic"], profiles=["smoke"],
...                    notebooks=["00", "01"], out="runs/sweep1", workers=2)  # doctest: +SKIP
>>> [(c["id"], c["status"], c["retries"]) for c in result.cells]  # doctest: +SKIP
[('synthetic-smoke-s0', 'ok', 0), ('synthetic-smoke-s1', 'ok', 0)]
>>> result.ok, (result.out_dir / "sweep.md").is_file()  # doctest: +SKIP
(True, True)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fnlab import __version__
from fnlab.course import (
    CourseResult,
    NotebookResult,
    claim_failures,
    known_datasets,
    notebooks_dir,
    select_notebooks,
)
from fnlab.fileio import atomic_write_text, read_json, write_json
from fnlab.profiles import DEFAULT_PROFILE, PROFILES

SWEEP_JSON, SWEEP_MD, SWEEP_PNG = "sweep.json", "sweep.md", "sweep.png"
CELL_JSON = "cell.json"
#: Figures plotted across seeds in ``sweep.png`` (those a notebook recorded).
HEADLINE = ("auc", "sensitivity", "specificity", "fn")
#: Default number of retries of a cell (a kernel that did not start, a lost worker).
DEFAULT_RETRIES = 2
#: Parameters a sweep sets itself (the grid, ``--device``); ``-p`` cannot set them.
RESERVED_PARAMETERS = ("seed", "profile", "dataset", "device")
#: A notebook error that means its kernel never started (retried on another worker).
KERNEL_START = re.compile(r"Kernel died before replying to kernel_info|Kernel didn't respond|"
                          r"No such kernel|NoSuchKernel|kernel failed to start", re.I)
#: What a spec must match for a finished cell to be reused by ``resume``.
SPEC_KEYS = ("dataset", "profile", "seed", "notebooks", "parameters", "device", "data_path")
_POLL_S = 0.5


class SweepUsageError(ValueError):
    """A bad choice for a sweep (the CLI prints it as one line and exits 2)."""


@dataclass(frozen=True)
class Cell:
    """One grid cell: a course run of one dataset, profile and seed."""

    dataset: str
    profile: str
    seed: int

    @property
    def id(self) -> str:
        """Folder name and key: ``synthetic-smoke-s0``."""
        return f"{self.dataset}-{self.profile}-s{self.seed}"

    @property
    def label(self) -> str:
        """Column label: ``synthetic/smoke s0``."""
        return f"{self.dataset}/{self.profile} s{self.seed}"


def make_grid(seeds, datasets, profiles) -> list[Cell]:
    """The cells of seeds x datasets x profiles (datasets, then profiles, then seeds).

    Raises ValueError naming the valid choices for an empty axis or an unknown
    dataset or profile. Repeated values count once.

    >>> [c.id for c in make_grid([0, 1], ["synthetic"], ["smoke"])]
    ['synthetic-smoke-s0', 'synthetic-smoke-s1']
    >>> make_grid([], ["synthetic"], ["smoke"])
    Traceback (most recent call last):
    ...
    ValueError: empty grid: no seeds; give at least one, e.g. --seeds 0 1 2
    """
    datasets_known, seeds = known_datasets(), list(dict.fromkeys(seeds or []))
    datasets, profiles = list(dict.fromkeys(datasets or [])), list(dict.fromkeys(profiles or []))
    if not seeds:
        raise ValueError("empty grid: no seeds; give at least one, e.g. --seeds 0 1 2")
    if not datasets:
        raise ValueError(f"empty grid: no datasets; choose from: {', '.join(datasets_known)}")
    if not profiles:
        raise ValueError(f"empty grid: no profiles; choose from: {', '.join(PROFILES)}")
    bad = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool) or s < 0]
    if bad:
        raise ValueError(f"seeds must be non-negative integers, not {', '.join(map(str, bad))}")
    unknown = [d for d in datasets if d not in datasets_known]
    if unknown:
        raise ValueError(f"unknown dataset {', '.join(map(repr, unknown))}; choose from: "
                         f"{', '.join(datasets_known)}")
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        raise ValueError(f"unknown profile {', '.join(map(repr, unknown))}; choose from: "
                         f"{', '.join(PROFILES)}")
    return [Cell(d, p, s) for d in datasets for p in profiles for s in seeds]


# --------------------------------------------------------------------------- files
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_attempts(cell_dir: str | Path) -> list[dict]:
    """The cell's attempts (``attempt-N.json``), in order."""
    found = []
    for path in Path(cell_dir).glob("attempt-*.json"):
        m = re.fullmatch(r"attempt-(\d+)\.json", path.name)
        info = read_json(path) if m else None
        if info is not None:
            info.pop("spec", None)
            info["attempt"] = int(m.group(1))
            info.setdefault("outcome", "did not finish (worker lost, or the sweep stopped)")
            found.append(info)
    return sorted(found, key=lambda a: a["attempt"])


def _claim_attempt(cell_dir: Path, info: dict) -> int:
    """Create the next ``attempt-N.json`` (exclusively: two attempts never share N)."""
    n = 1 + max((a["attempt"] for a in read_attempts(cell_dir)), default=0)
    while True:
        path = cell_dir / f"attempt-{n}.json"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            n += 1
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({**info, "attempt": n}, f, indent=2, default=str)
        return n


# --------------------------------------------------------------------------- one cell (worker)
def _worker_and_key():
    """The Dask worker running this task and the task's key, or (None, None)."""
    try:
        from distributed import get_worker

        worker = get_worker()
        return worker, worker.get_current_task()
    except Exception:  # noqa: BLE001 - not in a Dask task (a direct call, a test)
        return None, None


def _cancelled(worker, key) -> bool:
    """True when the scheduler cancelled or released this task (Ctrl-C, a lost client)."""
    if worker is None or key is None:
        return False
    try:
        ts = worker.state.tasks.get(key)
    except Exception:  # noqa: BLE001
        return False
    return ts is None or ts.state in ("cancelled", "released", "forgotten")


def _choose_data_dir(spec: dict, cell_dir: Path) -> tuple[Path, str]:
    """``FNLAB_DATA_DIR`` for the cell and a note saying why."""
    if spec.get("fresh_data"):
        path = cell_dir / "data"
        path.mkdir(parents=True, exist_ok=True)
        return path, "fresh for this cell"
    shared = Path(spec["data_dir"]) if spec.get("data_dir") else None
    if shared is not None and shared.is_dir() and os.access(shared, os.W_OK | os.X_OK):
        return shared, "shared"
    from fnlab.config import data_dir

    own = data_dir(create=True)
    return own, (f"{shared} is not reachable from this worker; its own data folder"
                 if shared is not None else "the worker's own data folder")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _kernel_start_failure(notebooks: list[dict]) -> str | None:
    """The error of a notebook whose kernel never started (no cell ran), or None."""
    for nb in notebooks:
        err = nb.get("error") or {}
        text = f"{err.get('ename', '')}: {err.get('evalue', '')}"
        if nb.get("status") != "ok" and "cell_index" not in err and KERNEL_START.search(text):
            return f"{nb['name']}: {text}"[:500]
    return None


def run_cell(spec: dict) -> dict:
    """Run one cell (a Dask task; also callable directly) and return its result.

    Starts the course run as a process of its own (see the module docstring),
    records the attempt, and writes ``cell.json``. The result's ``status``:
    ``ok`` (every notebook ran), ``failed`` (a notebook failed; the others ran),
    ``error`` (the course run could not run or timed out), or ``retry`` (its kernel
    did not start or its process was killed, and attempts are left: the sweep runs
    it again, preferably on another worker).
    """
    cell_dir = Path(spec["cell_dir"])
    cell_dir.mkdir(parents=True, exist_ok=True)
    worker, key = _worker_and_key()
    info = {"sweep": spec["sweep"], "worker": getattr(worker, "address", None),
            "host": socket.gethostname(), "worker_pid": os.getpid(), "started": _now(),
            "spec": spec}
    n = _claim_attempt(cell_dir, info)
    info["attempt"] = n
    meta, log, run_dir = (cell_dir / f"attempt-{n}.json", cell_dir / f"attempt-{n}.log",
                          cell_dir / f"attempt-{n}")
    data_dir, data_note = _choose_data_dir(spec, cell_dir)
    info.update(run_dir=str(run_dir), data_dir=str(data_dir), data_note=data_note)
    write_json(meta, info, default=str)  # before the cell process reads it
    env = {k: v for k, v in os.environ.items() if k != "FNLAB_RECORD"}
    env["FNLAB_DATA_DIR"] = str(data_dir)
    env.setdefault("MPLBACKEND", "Agg")
    if spec.get("threads"):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env.setdefault(var, str(spec["threads"]))
    code = "import sys; from fnlab.sweep import _cell_main; sys.exit(_cell_main(sys.argv[1:]))"
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, str(meta), str(os.getpid())],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=str(cell_dir), start_new_session=True)
        info["cell_pid"] = proc.pid
        write_json(meta, info, default=str)
        deadline = None if not spec.get("timeout") else time.monotonic() + spec["timeout"]
        stopped = None
        try:
            while proc.poll() is None:
                try:
                    proc.wait(timeout=_POLL_S)
                except subprocess.TimeoutExpired:
                    pass
                if proc.poll() is None and _cancelled(worker, key):
                    stopped = "cancelled"
                elif proc.poll() is None and deadline and time.monotonic() > deadline:
                    stopped = f"timed out after {spec['timeout']:g} s"
                if stopped:
                    break
        finally:
            if proc.poll() is None:  # cancelled, timed out, or this thread was interrupted
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
    wall = time.perf_counter() - t0
    summary = read_json(run_dir / "summary.json") or {}
    notebooks = summary.get("notebooks") or []
    this_sweep = [a for a in read_attempts(cell_dir) if a.get("sweep") == spec["sweep"]]
    attempts_left = len(this_sweep) < int(spec.get("max_attempts", 1 + DEFAULT_RETRIES))
    error, status = None, None
    kernel = _kernel_start_failure(notebooks)
    if stopped:
        status, error = "error", f"the cell {stopped}"
    elif proc.returncode and proc.returncode < 0:
        error = f"the cell's process was killed (signal {-proc.returncode})"
        status = "retry" if attempts_left else "error"
    elif proc.returncode or not summary:
        status = "error"
        error = f"the course run ended with exit {proc.returncode}: {_tail(log, 1)}"
    elif kernel and attempts_left:
        status, error = "retry", f"a kernel failed to start: {kernel}"
    else:
        status = "ok" if all(nb.get("status") == "ok" for nb in notebooks) else "failed"
    outcome = {"ok": "ok", "failed": "ran; a notebook failed"}.get(status, error)
    info.update(ended=_now(), seconds=round(wall, 2), returncode=proc.returncode,
                outcome=outcome)
    write_json(meta, info, default=str)
    attempts = read_attempts(cell_dir)
    result = {
        "id": spec["id"], "dataset": spec["dataset"], "profile": spec["profile"],
        "seed": spec["seed"], "status": status, "error": error,
        "seconds": float(summary.get("total_seconds") or 0.0), "wall_seconds": round(wall, 2),
        "attempt": n, "attempts": attempts, "retries": len(attempts) - 1,
        "worker": info["worker"], "host": info["host"], "run": run_dir.name,
        "data_dir": str(data_dir), "data_note": data_note,
        "dataset_note": summary.get("dataset_note", ""), "claims_hold": summary.get("claims_hold"),
        "notebooks": notebooks, "spec": {k: spec.get(k) for k in SPEC_KEYS}, "ended": _now(),
    }
    if status == "error":
        result["log_tail"] = _tail(log)
    if status != "retry":
        write_json(cell_dir / CELL_JSON, result, default=str)
    return result


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGKILL when the worker thread that started us dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)


def _cell_main(argv: list[str]) -> int:
    """The cell process: ``run_course`` for the spec in ``attempt-N.json``."""
    meta, parent = Path(argv[0]), int(argv[1])
    _die_with_parent(parent)
    info = json.loads(meta.read_text())
    spec = info["spec"]
    from fnlab.course import run_course

    result = run_course(spec["notebooks"], profile=spec["profile"], dataset=spec["dataset"],
                        device=spec.get("device"), parameters=spec["parameters"],
                        out=info["run_dir"], progress=False, offline=spec.get("offline"),
                        data_path=spec.get("data_path"), folder=spec["folder"])
    failed = [nb.name for nb in result.notebooks if nb.status != "ok"]
    print(f"{len(result.notebooks) - len(failed)} notebooks ok, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else ""), flush=True)
    return 0


# --------------------------------------------------------------------------- the sweep (client)
@dataclass
class SweepResult:
    """A sweep's cells (result dicts, grid order) and where its report is."""

    out_dir: Path
    cells: list[dict]
    grid: dict
    started: str
    scheduler: str = ""
    total_seconds: float = 0.0
    interrupted: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every cell ran and every notebook in it ran."""
        return all(c["status"] == "ok" for c in self.cells)

    def claim_problems(self) -> list[str]:
        """What ``--check-claims`` fails on, one line per problem, naming the cell."""
        out = []
        for c in self.cells:
            if c["status"] in ("error", "not run", "retry"):
                out.append(f"{c['id']}: the cell did not run ({c.get('error') or c['status']})")
                continue
            out += [f"{c['id']}: {line}" for line in claim_failures(_course_result(c))]
        return out

    def claims(self) -> list[dict]:
        """Claims x cells: one entry per ``notebook:id`` with each cell's value and holds."""
        table: dict[str, dict] = {}
        for c in self.cells:
            for nb in c.get("notebooks") or []:
                for cl in nb.get("claims") or []:
                    key = f"{nb['name']}:{cl.get('id')}"
                    row = table.setdefault(key, {
                        "key": key, "notebook": nb["name"], "id": cl.get("id"),
                        "statement": cl.get("statement"), "op": cl.get("op", ">="),
                        "bound": cl.get("bound"), "cells": {}})
                    row["cells"][c["id"]] = {"value": cl.get("value"),
                                             "holds": bool(cl.get("holds"))}
        return list(table.values())

    def to_dict(self) -> dict:
        claims = self.claims()
        held = sum(v["holds"] for row in claims for v in row["cells"].values())
        total = sum(len(row["cells"]) for row in claims)
        return {
            "fnlab_version": __version__, "started": self.started, "scheduler": self.scheduler,
            "grid": self.grid, "ok": self.ok, "interrupted": self.interrupted,
            "total_seconds": round(self.total_seconds, 2),
            "claims_hold": not self.claim_problems(),
            "claims_held": held, "claims_checked": total,
            "retries": sum(c.get("retries", 0) for c in self.cells),
            **self.extra,
            "cells": self.cells, "claims": claims, "problems": self.claim_problems(),
        }


def _course_result(cell: dict) -> CourseResult:
    fields = ("name", "status", "seconds", "output", "error", "figures", "claims")
    nbs = [NotebookResult(**{k: nb.get(k) for k in fields if k in nb})
           for nb in cell.get("notebooks") or []]
    for nb in nbs:
        nb.figures, nb.claims = nb.figures or {}, nb.claims or []
    return CourseResult(Path(cell.get("run", ".")), cell["profile"], cell["dataset"], {}, nbs, "")


def retries_text(n: int) -> str:
    """``"1 retry"``, ``"2 retries"``."""
    return f"{n} retr{'y' if n == 1 else 'ies'}"


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def format_sweep_md(result: SweepResult) -> str:
    """The sweep report as Markdown: cells, their figures, claims x cells, problems."""
    d = result.to_dict()
    g = result.grid
    cells = result.cells
    failed = [c for c in cells if c["status"] != "ok"]
    lines = [
        f"# Course sweep {result.out_dir.name}", "",
        f"- grid: seeds {', '.join(map(str, g['seeds']))} x datasets {', '.join(g['datasets'])}"
        f" x profiles {', '.join(g['profiles'])} = {len(cells)} cells; notebooks "
        f"{', '.join(g['notebooks'])}" + (f"; parameters {g['parameters']}"
                                          if g.get("parameters") else ""),
        f"- scheduler: {result.scheduler}; fnlab {__version__}; started {result.started}",
        "- status: " + ("every cell ran" if not failed else
                        f"{len(failed)} of {len(cells)} cells did not all run")
        + (" (INTERRUPTED: rerun with --resume to continue)" if result.interrupted else "")
        + f"; {result.total_seconds:.1f} s wall; {retries_text(d['retries'])}",
        f"- lesson claims: {d['claims_held']} of {d['claims_checked']} hold", "",
        "## Cells", "",
        "| cell | status | seconds | attempts | worker | data | report | notes |",
        "|---|---|---:|---:|---|---|---|---|",
    ]
    for c in cells:
        run = f"{c['id']}/{c['run']}/summary.md" if c.get("run") else ""
        failed_nbs = [nb["name"] for nb in c.get("notebooks") or [] if nb.get("status") != "ok"]
        notes = []
        if c.get("error"):
            notes.append(str(c["error"]).replace("\n", " ").replace("|", "/")[:200])
        if failed_nbs:
            notes.append("failed: " + ", ".join(
                f"{nb['name']} ({(nb.get('error') or {}).get('ename', '?')}: "
                f"{(nb.get('error') or {}).get('evalue', '')[:80]})"
                for nb in c["notebooks"] if nb.get("status") != "ok").replace("|", "/"))
        if c.get("resumed"):
            notes.append("from an earlier run of the sweep (--resume)")
        retried = [a for a in c.get("attempts") or [] if a.get("outcome") != "ok"
                   and a["attempt"] != c.get("attempt")]
        for a in retried:
            notes.append(f"attempt {a['attempt']} on {a.get('worker') or a.get('host')}: "
                         f"{str(a.get('outcome'))[:120]}".replace("|", "/"))
        lines.append(f"| {c['id']} | {c['status']} | {c.get('seconds', 0):.1f} | "
                     f"{len(c.get('attempts') or [])} | {c.get('worker') or '—'} | "
                     f"{c.get('data_note') or '—'} | {f'[summary]({run})' if run else '—'} | "
                     f"{'; '.join(notes)} |")
    lines += ["", "## Figures", "",
              "| cell | notebook | status | seconds | AUC | sensitivity | specificity | FN | other |",
              "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for c in cells:
        for nb in c.get("notebooks") or []:
            f = nb.get("figures") or {}
            other = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(f.items())
                              if k not in (*HEADLINE, "dataset") and v is not None
                              and not isinstance(v, (dict, list)))
            lines.append(f"| {c['id']} | {nb['name']} | {nb.get('status')} | "
                         f"{nb.get('seconds', 0):.1f} | "
                         + " | ".join(_fmt(f.get(k)) for k in HEADLINE) + f" | {other} |")
    claims = result.claims()
    lines += ["", "## Lesson claims (claims x cells)", ""]
    if claims:
        lines += ["| claim | bound | " + " | ".join(c["id"] for c in cells) + " |",
                  "|---|---|" + "---:|" * len(cells)]
        for row in claims:
            vals = []
            for c in cells:
                v = row["cells"].get(c["id"])
                vals.append("—" if v is None else
                            f"{_fmt(v['value'])} {'✓' if v['holds'] else '✗ NOT HELD'}")
            lines.append(f"| `{row['key']}` | {row['op']} {_fmt(row['bound'])} | "
                         + " | ".join(vals) + " |")
        lines += ["", "_Each claim's measured value in each cell; ✓ when it holds._"]
    else:
        lines.append("No claims recorded.")
    lines += ["", "## Headline figures across seeds", ""]
    lines.append(f"![headline figures across seeds]({SWEEP_PNG})"
                 if (result.out_dir / SWEEP_PNG).is_file() else "No headline figures recorded.")
    problems = result.claim_problems()
    lines += ["", "## Problems", ""]
    lines += [f"- {p}" for p in problems] if problems else ["None: every claim holds."]
    return "\n".join(lines) + "\n"


def plot_headline(result: SweepResult, path: str | Path) -> Path | None:
    """``sweep.png``: each headline figure (AUC, sensitivity, specificity, FN) against the
    seed, one line per notebook (and dataset/profile when the grid has several); None
    when no cell recorded one."""
    series: dict[str, dict[str, list]] = {}
    many = len(result.grid["datasets"]) > 1 or len(result.grid["profiles"]) > 1
    for c in result.cells:
        for nb in c.get("notebooks") or []:
            for k in HEADLINE:
                v = (nb.get("figures") or {}).get(k)
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    name = nb["name"] + (f" ({c['dataset']}/{c['profile']})" if many else "")
                    series.setdefault(k, {}).setdefault(name, []).append((c["seed"], v))
    if not series:
        return None
    from matplotlib.figure import Figure

    keys = [k for k in HEADLINE if k in series]
    names = sorted({name for k in keys for name in series[k]})
    colour = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig = Figure(figsize=(3.6 * len(keys), 3.4 + 0.25 * ((len(names) + 3) // 4)),
                 layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    handles = {}
    for ax, k in zip(axes, keys):
        for name, pts in sorted(series[k].items()):
            pts = sorted(pts)
            (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                              color=colour[name], label=name)
            handles.setdefault(name, line)
        ax.set_title({"fn": "false negatives", "auc": "AUC"}.get(k, k))
        ax.set_xlabel("seed")
        ax.set_xticks(sorted(set(result.grid["seeds"])))
    fig.legend([handles[n] for n in names], names, loc="outside lower center",
               ncols=min(4, len(names)), fontsize="small")
    fig.suptitle("Headline figures across seeds")
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def write_report(result: SweepResult, figure: bool = True) -> None:
    """``sweep.json``, ``sweep.md`` and (``figure``) ``sweep.png`` in the sweep folder."""
    out = result.out_dir
    if figure:
        png = out / SWEEP_PNG
        if plot_headline(result, png) is None:
            png.unlink(missing_ok=True)
    write_json(out / SWEEP_JSON, result.to_dict(), default=str)
    atomic_write_text(out / SWEEP_MD, format_sweep_md(result))


def _finished(cell_dir: Path, spec: dict) -> dict | None:
    """The cell's ``cell.json`` when ``resume`` may reuse it: every notebook ran, same spec."""
    done = read_json(cell_dir / CELL_JSON)
    if not done or done.get("status") != "ok":
        return None
    if any(done.get("spec", {}).get(k) != spec.get(k) for k in SPEC_KEYS):
        return None
    return done


def _new_sweep_dir() -> Path:
    from fnlab.config import PROJECT_ROOT

    base = (PROJECT_ROOT or Path.cwd()) / "runs"
    stamp = datetime.now().strftime("sweep-%Y%m%d-%H%M%S")
    out, i = base / stamp, 1
    while out.exists():
        out, i = base / f"{stamp}-{i}", i + 1
    return out


def _not_run(cell: Cell, status: str, error: str | None, cell_dir: Path) -> dict:
    attempts = read_attempts(cell_dir) if cell_dir.is_dir() else []
    return {"id": cell.id, "dataset": cell.dataset, "profile": cell.profile, "seed": cell.seed,
            "status": status, "error": error, "seconds": 0.0, "wall_seconds": 0.0,
            "attempt": None, "attempts": attempts, "retries": max(0, len(attempts) - 1),
            "worker": None, "run": None, "notebooks": []}


def run_sweep(
    seeds=(0,),
    datasets=("auto",),
    profiles=(DEFAULT_PROFILE,),
    notebooks: list[str] | None = None,
    *,
    out: str | Path | None = None,
    scheduler: str = "local",
    workers: int | None = None,
    client=None,
    resume: bool = False,
    parameters: dict | None = None,
    device: str | None = None,
    data_path: str | Path | None = None,
    data_dir: str | Path | None = None,
    fresh_data: bool = False,
    offline: bool | None = None,
    retries: int = DEFAULT_RETRIES,
    timeout: float | None = None,
    progress: bool = True,
    folder: str | Path | None = None,
) -> SweepResult:
    """Run the course for every cell of seeds x datasets x profiles on Dask; write the report.

    Everything is validated before anything is written or any cluster started
    (ValueError naming the valid choices). ``notebooks``: names as for
    ``fnlab course run`` (default all), from ``folder`` (default the checkout's
    ``notebooks/``, which the workers must see at the same path). ``scheduler``:
    ``"local"`` (a LocalCluster of ``workers`` processes, default sized to the
    machine) or a scheduler address; ``client``: an existing
    :class:`distributed.Client` instead. ``parameters`` go to every notebook
    (``seed``, ``profile``, ``dataset`` and ``device`` come from the grid).
    ``data_dir``/``fresh_data``: the cells' ``FNLAB_DATA_DIR`` (see the module
    docstring). ``retries``: extra attempts of a cell whose kernel did not start
    or whose worker died. ``timeout``: seconds one cell may run (None: no limit).
    ``resume``: continue the sweep in ``out`` (see the module docstring).

    Ctrl-C writes the report (unfinished cells ``not run``), cancels the cells
    still running and re-raises KeyboardInterrupt.
    """
    from fnlab.cluster import check_scheduler, default_workers, probe_scheduler

    try:  # every choice, before anything is written or started
        cells = make_grid(seeds, datasets, profiles)
        paths = select_notebooks(notebooks, folder)
        if not paths:
            raise ValueError(f"no notebooks found in {folder or notebooks_dir()}")
        nb_folder = paths[0].parent.resolve()
        parameters = dict(parameters or {})
        reserved = [k for k in RESERVED_PARAMETERS if k in parameters]
        if reserved:
            raise ValueError(f"parameter {', '.join(reserved)} is set by the sweep (use --seeds, "
                             "--profiles, --datasets, --device), not by -p")
        if retries < 0:
            raise ValueError(f"--retries must be >= 0, not {retries}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"--timeout must be > 0 seconds, not {timeout}")
        if fresh_data and data_dir is not None:
            raise ValueError("--fresh-data and --data-dir exclude each other")
        if data_path is not None:
            data_path = Path(data_path).expanduser().resolve()
            if not data_path.is_file():
                raise ValueError(f"--data-path {data_path}: file not found")
            if not any(d in ("auto", "pneumoniamnist") for d in datasets):
                raise ValueError("--data-path names a PneumoniaMNIST .npz: it needs the "
                                 "dataset auto or pneumoniamnist in --datasets")
        if client is None:
            scheduler = check_scheduler(scheduler)  # tcp:// or local; a ValueError otherwise
            if workers is not None and workers < 1:
                raise ValueError(f"--workers must be >= 1, not {workers}")
            if workers is not None and scheduler != "local":
                raise ValueError("--workers sizes a local cluster; a running scheduler has the "
                                 "workers that joined it")
        out_dir = Path(out).expanduser().resolve() if out is not None else _new_sweep_dir()
        if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not resume)):
            raise ValueError(f"--out {out_dir} already exists and is not an empty folder; pass "
                             "--resume to continue the sweep in it")
    except ValueError as exc:
        raise SweepUsageError(str(exc)) from None
    if client is None and scheduler != "local":
        probe_scheduler(scheduler)  # SchedulerUnreachable (one line) before --out is made
    if not fresh_data:
        from fnlab.config import data_dir as default_data_dir

        data_dir = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    names = [p.stem for p in paths]
    grid = {"seeds": list(dict.fromkeys(seeds)), "datasets": list(dict.fromkeys(datasets)),
            "profiles": list(dict.fromkeys(profiles)), "notebooks": names,
            "parameters": parameters, "device": device,
            "data_path": str(data_path) if data_path else None}
    token = secrets.token_hex(4)

    def spec_of(cell: Cell, threads: int | None) -> dict:
        uses_file = data_path is not None and cell.dataset in ("auto", "pneumoniamnist")
        return {"sweep": token, "id": cell.id, "dataset": cell.dataset, "profile": cell.profile,
                "seed": cell.seed, "notebooks": names, "folder": str(nb_folder),
                "parameters": {**parameters, "seed": cell.seed}, "device": device,
                "data_path": str(data_path) if uses_file else None, "offline": offline,
                "cell_dir": str(out_dir / cell.id),
                "data_dir": None if fresh_data else str(data_dir), "fresh_data": fresh_data,
                "threads": threads, "max_attempts": retries + 1, "timeout": timeout}

    made_out = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    if data_dir is not None and not fresh_data:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    todo = []
    for cell in cells:
        done = _finished(out_dir / cell.id, spec_of(cell, None)) if resume else None
        if done is not None:
            results[cell.id] = {**done, "resumed": True}
        else:
            todo.append(cell)
    result = SweepResult(out_dir, [], grid, _now())

    def collect(interrupted=False) -> SweepResult:
        result.cells = [results.get(c.id) or _not_run(
            c, "not run", "interrupted" if interrupted else None, out_dir / c.id) for c in cells]
        result.interrupted = interrupted
        result.total_seconds = time.perf_counter() - t_all
        return result

    t_all = time.perf_counter()
    if not todo:
        result.scheduler = "none needed (every cell already ran)"
        write_report(collect())
        return result
    from contextlib import nullcontext

    from fnlab.cluster import connect

    local = client is None and scheduler == "local"
    n_workers = (workers or default_workers(len(todo))) if local else None
    threads = max(1, (os.cpu_count() or 1) // n_workers) if local else None
    ctx = nullcontext(client) if client is not None else connect(
        scheduler, n_workers if local else None, allowed_failures=retries)
    connected = False
    try:
        with ctx as cl:
            connected = True
            from fnlab.cluster import describe

            per_cell = os.environ.get("OMP_NUM_THREADS") or threads  # a set value wins
            result.scheduler = describe(cl) + (f" (1 thread each, {per_cell} torch thread(s) "
                                               "per cell)" if local else "")
            result.extra = {"workers": len(cl.scheduler_info().get("workers", {})),
                            "threads_per_cell": int(per_cell) if local and str(per_cell).isdigit()
                            else None}
            _run_on(cl, todo, spec_of, threads, results, out_dir, retries, progress, collect)
    except BaseException:  # the scheduler went away since the probe, or Ctrl-C meanwhile
        if not connected and made_out and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # leave no empty --out behind
        raise
    write_report(collect())
    return result


def _run_on(client, todo, spec_of, threads, results, out_dir, retries, progress, collect):
    """Submit the cells, gather them as they finish (retrying), report after each."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    specs = {c.id: spec_of(c, threads) for c in todo}
    by_key, submitted = {}, []

    def submit(cell: Cell, avoid: str | None = None, n: int = 0):
        kwargs = {}
        if avoid:
            others = [w for w in client.scheduler_info().get("workers", {}) if w != avoid]
            if others:
                kwargs = {"workers": others, "allow_other_workers": True}
        fut = client.submit(run_cell, specs[cell.id], key=f"fnlab-cell-{cell.id}-"
                            f"{specs[cell.id]['sweep']}-{n}", pure=False, retries=retries,
                            **kwargs)
        by_key[fut.key] = (cell, n)
        submitted.append(fut)
        return fut

    futures = [submit(c) for c in todo]
    bar = tqdm(total=len(todo), desc="sweep", unit="cell", disable=not progress,
               file=sys.stdout)
    pending = as_completed(futures, loop=client.loop)
    try:
        for fut in pending:
            cell, n = by_key.pop(fut.key)
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - a cell that could not run is reported
                why = f"{type(exc).__name__}: {exc}"
                if type(exc).__name__ == "KilledWorker":
                    why = (f"the workers running it died {retries + 1} times (Dask "
                           f"KilledWorker); see {cell.id}/attempt-*.log")
                res = _not_run(cell, "error", why[:1000], out_dir / cell.id)
            if res["status"] == "retry":
                tqdm.write(f"{cell.label}: attempt {res['attempt']} on {res.get('worker')}: "
                           f"{res['error'][:200]}; retrying", file=sys.stdout)
                pending.add(submit(cell, res.get("worker"), n + 1))
                continue
            results[cell.id] = res
            write_report(collect(), figure=False)
            bar.update(1)
            extra = f" ({retries_text(res['retries'])})" if res.get("retries") else ""
            detail = "" if res["status"] == "ok" else ": " + str(
                res.get("error") or ", ".join(nb["name"] for nb in res.get("notebooks") or []
                                              if nb.get("status") != "ok"))[:200]
            tqdm.write(f"{cell.label}: {res['status']} in {res.get('seconds', 0):.1f} s"
                       f"{extra}{detail}", file=sys.stdout)
    except KeyboardInterrupt:
        try:
            client.cancel([f for f in submitted if not f.done()])
        except Exception:  # noqa: BLE001
            pass
        bar.close()
        write_report(collect(interrupted=True))
        print(f"interrupted: the report so far is in {out_dir / SWEEP_MD}; continue the sweep "
              f"with --resume --out {out_dir}", file=sys.stderr, flush=True)
        raise
    bar.close()
