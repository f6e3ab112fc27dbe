"""Lessons across seeds: the course in the default profile at several seeds, claims x seeds.

The grid (datasets x seeds) runs as one ``fnlab course sweep --profiles lessons
--fresh-data``: each cell is one course run (``fnlab course run --profile lessons
-p seed N``) in a fresh ``FNLAB_DATA_DIR`` (no cached data or Runs: a cold start, as
a student's first run), on a Dask LocalCluster of ``--jobs`` workers (default 1:
the cells one after the other, so their seconds are the honest course time) or on a
running scheduler (``--scheduler tcp://HOST:PORT``). From the sweep's ``sweep.json``
it takes every lesson claim (value, bound, holds) and every notebook's seconds, and
prints and writes:

* a table claims x seeds (value, and whether it holds),
* a table notebooks x seeds (seconds),
* goals: every claim holds at every seed; the course <= 15 minutes and no notebook
  over 3 minutes at every seed.

Datasets: ``synthetic`` always; ``pneumoniamnist`` too when a real file is given
(``--npz``, named with ``fnlab course run --data-path``; the file is never copied
into the repository).

Usage::

    python benchmarks/bench_lessons.py                         # seeds 0-4, synthetic
    python benchmarks/bench_lessons.py --seeds 3 4 --notebooks 02,05
    python benchmarks/bench_lessons.py --npz ../shared/data/pneumoniamnist_28_union.npz
    python benchmarks/bench_lessons.py --jobs 3                # the seeds side by side (claims
                                                               # only: the seconds are inflated)
    python benchmarks/bench_lessons.py --scheduler tcp://HOST:8786   # on a running cluster
    python benchmarks/bench_lessons.py --speedup --profile smoke --seeds 0 1 --notebooks 00,01
                                                               # the same grid on 1 worker and on
                                                               # 2 (--workers): lessons_speedup.json
    python benchmarks/bench_lessons.py --smoke                 # quick form for the tests

``--speedup`` runs the grid twice on fresh data folders, on a 1-worker and on a
``--workers`` (default 2) worker LocalCluster, and records the wall time of each
sweep and the speed-up; each cell then gets ``cores / workers`` torch threads
(unless ``OMP_NUM_THREADS`` is set, which it records).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C  # noqa: N812  (also puts the project root on sys.path)

BenchError = C.BenchError

TITLE = "Lessons across seeds"
#: Whole course and per-notebook limits of the default profile (issue: lessons hold).
COURSE_LIMIT_S = 15 * 60
NOTEBOOK_LIMIT_S = 3 * 60


#: The seeds every lesson claim must hold at (issue: "every claim holds at synthetic seeds
#: 0-4 and real seeds 0-2").
SYNTHETIC_SEEDS = (0, 1, 2, 3, 4)
REAL_SEEDS = (0, 1, 2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds to run the course at (default: 0 1 2 3 4 on synthetic X-rays, "
                        "0 1 2 with --real-only)")
    p.add_argument("--profile", default="lessons", help="course profile (default: lessons)")
    p.add_argument("--npz", default=None,
                   help="a real PneumoniaMNIST .npz: also run every seed on it")
    p.add_argument("--real-only", action="store_true",
                   help="with --npz: run the seeds on the real data only (written to "
                        "benchmarks/results/lessons_real.json)")
    p.add_argument("--notebooks", default=None,
                   help="comma list of notebooks (e.g. 02,05); default all")
    p.add_argument("--jobs", "--workers", dest="jobs", type=int, default=None,
                   help="workers of the local Dask cluster: course runs at once (default 1; "
                        "with --speedup, 2); with more, each gets cores/workers torch threads "
                        "and its seconds are inflated by the sharing")
    p.add_argument("--scheduler", default="local",
                   help="local (a LocalCluster) or the address of a running Dask scheduler "
                        "(default: local)")
    p.add_argument("--speedup", action="store_true",
                   help="run the grid on 1 worker and on --workers (default 2) workers and "
                        "record the speed-up (lessons_speedup.json)")
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="copy each run's executed notebooks and report to DIR/<dataset>-s<seed>")
    p.add_argument("--timeout", type=float, default=3 * COURSE_LIMIT_S,
                   help="seconds before one course run is abandoned (default 45 min)")
    C.add_common_args(p, "lessons")
    args = p.parse_args(argv)
    if args.jobs is None:
        args.jobs = 2 if args.speedup else 1
    if args.jobs < 1:
        raise BenchError(f"--jobs must be at least 1, got {args.jobs}")
    if args.speedup and (args.scheduler != "local" or args.jobs < 2):
        raise BenchError("--speedup compares local clusters: --scheduler local, --workers >= 2")
    if args.seeds is None:
        args.seeds = list(REAL_SEEDS if args.real_only else SYNTHETIC_SEEDS)
    if any(s < 0 for s in args.seeds):
        raise BenchError(f"--seeds must be non-negative integers, got {args.seeds}")
    args.datasets = ["synthetic"]
    args.npz_path = None
    if args.npz:
        args.npz_path = Path(args.npz).expanduser()
        if not args.npz_path.is_file():
            raise BenchError(f"--npz {args.npz_path}: file not found")
        args.datasets.append("pneumoniamnist")
    if args.real_only:
        if not args.npz:
            raise BenchError("--real-only needs --npz FILE (the real data to run on)")
        args.datasets = ["pneumoniamnist"]
    args.name = "lessons_real" if args.real_only else "lessons"
    if args.smoke and args.speedup:  # two cells of the first notebook, the quick profile
        args.seeds, args.profile, args.notebooks = [0, 1], "smoke", "00"
    elif args.smoke:  # one notebook with claims, the quick profile, one seed
        args.seeds, args.profile, args.notebooks = args.seeds[:1], "smoke", "01"
    args.notebook_list = ([n.strip() for n in args.notebooks.split(",") if n.strip()]
                          if args.notebooks else [])
    return args


def run_sweep(args, workers: int | None, out: Path) -> tuple[dict, float]:
    """One ``fnlab course sweep`` of the grid in fresh data folders; (sweep.json, wall s)."""
    cmd = [sys.executable, "-m", "fnlab", "course", "sweep", "--profiles", args.profile,
           "--datasets", *args.datasets, "--seeds", *map(str, args.seeds), "--fresh-data",
           "--out", str(out), "--no-progress", "--scheduler", args.scheduler,
           "--timeout", f"{args.timeout:g}", *args.notebook_list]
    if args.scheduler == "local":
        cmd += ["--workers", str(workers)]
    if args.npz_path:
        cmd += ["--data-path", str(args.npz_path.resolve())]
    print("running: " + " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=C.ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    report = out / "sweep.json"
    if not report.is_file():
        raise BenchError(f"the sweep wrote no {report} (exit {proc.returncode}):\n"
                         f"{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(report.read_text()), wall


def bench_cell(c: dict, keep: str | None, out: Path) -> dict:
    """A sweep cell as this benchmark's cell: claims, notebook seconds and status."""
    notebooks = c.get("notebooks") or []
    failed = [nb["name"] for nb in notebooks if nb["status"] != "ok"]
    if c["status"] in ("error", "not run"):
        failed.append(f"(cell {c['status']}: {str(c.get('error'))[:200]})")
    cell = {"dataset": c["dataset"], "seed": c["seed"], "wall_seconds": c.get("wall_seconds"),
            "total_seconds": float(c.get("seconds") or c.get("wall_seconds") or 0.0),
            "failed": failed, "retries": c.get("retries", 0), "worker": c.get("worker"),
            "seconds": {nb["name"]: nb["seconds"] for nb in notebooks},
            "claims": {f"{nb['name']}:{cl['id']}": cl for nb in notebooks
                       for cl in nb.get("claims") or []},
            "notebooks_without_claims": [nb["name"] for nb in notebooks
                                         if not nb.get("claims")
                                         and not nb["name"].startswith("00")]}
    if failed:
        cell["tail"] = str(c.get("log_tail") or c.get("error") or "")[-1500:]
    if keep and c.get("run"):  # for reading the outputs as a student would
        shutil.copytree(out / c["id"] / c["run"], Path(keep) / f"{c['dataset']}-s{c['seed']}",
                        dirs_exist_ok=True)
    print(f"{c['dataset']} seed {c['seed']}: {cell['total_seconds']:.0f} s, "
          f"{sum(bool(v.get('holds')) for v in cell['claims'].values())} of "
          f"{len(cell['claims'])} claims hold"
          + (f", FAILED: {', '.join(failed)}" if failed else "")
          + (f" ({cell['retries']} retries)" if cell["retries"] else ""), flush=True)
    return cell


def speedup(args, rec) -> int:
    """The same grid on a 1-worker and on a ``--workers`` local cluster: the speed-up."""
    runs = []
    for workers in (1, args.jobs):
        tmp = Path(tempfile.mkdtemp(prefix=f"fnlab-bench-speedup-{workers}-"))
        try:
            report, wall = run_sweep(args, workers, tmp / "sweep")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        cells = report.get("cells", [])
        runs.append({"workers": workers, "wall_seconds": round(wall, 2),
                     "sweep_seconds": report.get("total_seconds"),
                     "cell_seconds": round(sum(float(c.get("seconds") or 0) for c in cells), 2),
                     "threads_per_cell": report.get("threads_per_cell"),
                     "cells_ok": sum(c["status"] == "ok" for c in cells), "cells": len(cells),
                     "retries": report.get("retries", 0)})
        print(f"{workers} worker(s): sweep {report.get('total_seconds')} s", flush=True)
    base = runs[0]["sweep_seconds"] or runs[0]["wall_seconds"]
    for r in runs:
        r["speedup"] = round(base / (r["sweep_seconds"] or r["wall_seconds"]), 3)
    grid = (f"{len(args.datasets)} dataset(s) x {len(args.seeds)} seed(s), {args.profile} "
            f"profile, notebooks {', '.join(args.notebook_list) or 'all'}")
    rows = [[r["workers"], r["threads_per_cell"] or "—", C.fmt(r["sweep_seconds"], 1),
             C.fmt(r["cell_seconds"], 1), f"{r['cells_ok']}/{r['cells']}", C.fmt(r["speedup"], 2)]
            for r in runs]
    table = {"columns": ["workers", "torch threads per cell", "sweep wall s", "sum of cell s",
                         "cells ok", "speed-up"], "rows": rows,
             "caption": f"`fnlab course sweep --fresh-data --workers N` on the same grid ({grid})"
                        "; sweep wall time from sweep.json; speed-up = 1-worker wall / N-worker "
                        "wall."}
    ok = all(r["cells_ok"] == r["cells"] for r in runs)
    goals = [C.goal(f"a {args.jobs}-worker local cluster runs the grid >= 1.5x faster than one "
                    "worker (2 cores: up to ~2x expected)",
                    runs[-1]["speedup"] >= 1.5 if ok else None,
                    f"speed-up {runs[-1]['speedup']:.2f}" + ("" if ok else "; some cells failed"))]
    C.print_table(table["columns"], table["rows"], rec.title)
    notes = [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} was set: every cell ran with "
             "that many torch threads."] if os.environ.get("OMP_NUM_THREADS") else []
    if args.smoke:
        notes.append("SMOKE run: notebook 00 at seeds 0 and 1 in the smoke profile.")
    result = rec.finish({"grid": grid, "runs": runs, "speedup": runs[-1]["speedup"]},
                        smoke=args.smoke, table=table, goals=goals, notes=notes,
                        config={"profile": args.profile, "seeds": args.seeds,
                                "datasets": args.datasets, "workers": args.jobs,
                                "notebooks": args.notebook_list or "all",
                                "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
    C.write_result(result, C.out_path(args, "lessons_speedup"))
    return 0


def _value(c: dict | None) -> str:
    if c is None:
        return "—"
    return f"{C.fmt(c.get('value'))} {'✓' if c.get('holds') else '✗ NOT HELD'}"


def main(argv=None) -> int:
    args = parse_args(argv)
    argv_ = [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
    if args.speedup:
        return speedup(args, C.Recorder("lessons_speedup", "Course sweep on Dask: speed-up of "
                                        f"{args.jobs} local workers over one", argv=argv_))
    rec = C.Recorder(args.name, f"{TITLE} ({args.profile} profile"
                     + (", real data only)" if args.real_only else ")"), argv=argv_)
    tmp = Path(tempfile.mkdtemp(prefix="fnlab-bench-lessons-"))
    try:
        report, wall = run_sweep(args, args.jobs, tmp / "sweep")
        cells = [bench_cell(c, args.keep, tmp / "sweep") for c in report.get("cells", [])]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    labels = [f"{c['dataset']} s{c['seed']}" for c in cells]
    claim_ids = list(dict.fromkeys(k for c in cells for k in c["claims"]))
    bounds = {}
    for c in cells:
        for k, v in c["claims"].items():
            bounds.setdefault(k, f"{v.get('op', '>=')} {C.fmt(v.get('bound'))}")
    claim_rows = [[k, bounds[k], *(_value(c["claims"].get(k)) for c in cells)]
                  for k in claim_ids]
    names = list(dict.fromkeys(n for c in cells for n in c["seconds"]))
    second_rows = [[n, *(C.fmt(c["seconds"].get(n), 1) for c in cells)] for n in names]
    second_rows.append(["**total**", *(C.fmt(c["total_seconds"], 1) for c in cells)])
    claims_table = {"columns": ["claim", "bound", *labels], "rows": claim_rows,
                    "caption": f"`fnlab course sweep --profiles {args.profile} --fresh-data`: "
                               f"each cell `fnlab course run --profile {args.profile} -p seed "
                               "N` in a fresh data folder; each claim's measured value, ✓ "
                               "when it holds."}
    seconds_table = {"columns": ["notebook", *labels], "rows": second_rows,
                     "caption": "seconds per notebook (cold cache), from summary.json"}
    not_held = [f"{k} ({lab})" for k in claim_ids for c, lab in zip(cells, labels)
                if not (c["claims"].get(k) or {}).get("holds")]
    failed = [f"{n} ({lab})" for c, lab in zip(cells, labels) for n in c["failed"]]
    missing = [f"{n} ({lab})" for c, lab in zip(cells, labels)
               for n in c["notebooks_without_claims"]]
    slow = [f"{n} ({lab}, {s:.0f} s)" for c, lab in zip(cells, labels)
            for n, s in c["seconds"].items() if s > NOTEBOOK_LIMIT_S]
    worst = max((c["total_seconds"] for c in cells), default=0.0)
    goals = [
        C.goal("every claim holds at every seed", not (not_held or failed or missing),
               f"{len(claim_ids)} claims x {len(cells)} runs"
               + (f"; not held: {', '.join(not_held)}" if not_held else "")
               + (f"; failed notebooks: {', '.join(failed)}" if failed else "")
               + (f"; no claims: {', '.join(missing)}" if missing else "")),
        C.goal(f"course <= {COURSE_LIMIT_S // 60} min and no notebook over "
               f"{NOTEBOOK_LIMIT_S // 60} min, every run",
               None if args.jobs > 1 or args.scheduler != "local"
               else worst <= COURSE_LIMIT_S and not slow,
               f"slowest course {worst:.0f} s" + (f"; slow: {', '.join(slow)}" if slow else "")),
    ]
    C.print_table(claims_table["columns"], claims_table["rows"], rec.title)
    C.print_table(seconds_table["columns"], seconds_table["rows"], "Seconds per notebook")
    for g in goals:
        verdict = {True: 'MET', False: 'NOT MET', None: 'NOT MEASURED'}[g['met']]
        print(f"goal {verdict}: {g['goal']} — {g['detail']}")
    notes = ["SMOKE run: notebook 01 in the smoke profile; its claims need not hold."] \
        if args.smoke else []
    if args.jobs > 1 or args.scheduler != "local":
        notes.append(f"{args.jobs} course runs at once, {report.get('threads_per_cell') or '?'} "
                     "torch thread(s) each: the seconds are inflated by the sharing and do not "
                     "measure the time goal." if args.scheduler == "local" else
                     f"on the Dask scheduler {args.scheduler}: the cells ran side by side.")
    retried = [f"{c['dataset']} s{c['seed']} ({c['retries']})" for c in cells if c["retries"]]
    if retried:
        notes.append(f"retried cells (a kernel that did not start, a lost worker): "
                     f"{', '.join(retried)}")
    figures = {"profile": args.profile, "seeds": args.seeds, "datasets": args.datasets,
               "cells": cells, "claims_not_held": not_held, "slowest_course_seconds": worst,
               "sweep_wall_seconds": round(wall, 2), "scheduler": report.get("scheduler")}
    result = rec.finish(figures, smoke=args.smoke, table=claims_table, tables=[seconds_table],
                        goals=goals, notes=notes,
                        config={"profile": args.profile, "seeds": args.seeds, "jobs": args.jobs,
                                "scheduler": args.scheduler,
                                "npz": str(args.npz_path) if args.npz_path else None,
                                "notebooks": args.notebook_list or "all"})
    C.write_result(result, C.out_path(args, args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
