"""Lessons across seeds: the course in the default profile at several seeds, claims x seeds.

Each cell (dataset x seed) is one ``fnlab course run --profile lessons -p seed N``
in a fresh ``FNLAB_DATA_DIR`` (no cached data or Runs: a cold start, as a student's
first run), so its seconds are the honest course time. From each run's
``summary.json`` it takes every lesson claim (value, bound, holds) and every
notebook's seconds, and prints and writes:

* a table claims x seeds (value, and whether it holds),
* a table notebooks x seeds (seconds),
* goals: every claim holds at every seed; the course <= 15 minutes and no notebook
  over 3 minutes at every seed.

Datasets: ``synthetic`` always; ``pneumoniamnist`` too when a real file is given
(``--npz``, named with ``fnlab course run --data-path``; the file is never copied
into the repository).

Usage::

    python benchmarks/bench_lessons.py                         # seeds 0 1 2, synthetic
    python benchmarks/bench_lessons.py --seeds 3 4 --notebooks 02,05
    python benchmarks/bench_lessons.py --npz ../shared/data/pneumoniamnist_28_union.npz
    python benchmarks/bench_lessons.py --jobs 3                # the seeds side by side (claims
                                                               # only: the seconds are inflated)
    python benchmarks/bench_lessons.py --smoke                 # quick form for the tests
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import _common as C  # noqa: N812  (also puts the project root on sys.path)
from bench_course import BenchError, prepare_data_dir, run_course

TITLE = "Lessons across seeds"
#: Whole course and per-notebook limits of the default profile (issue: lessons hold).
COURSE_LIMIT_S = 15 * 60
NOTEBOOK_LIMIT_S = 3 * 60


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds to run the course at (default: 0 1 2)")
    p.add_argument("--profile", default="lessons", help="course profile (default: lessons)")
    p.add_argument("--npz", default=None,
                   help="a real PneumoniaMNIST .npz: also run every seed on it")
    p.add_argument("--notebooks", default=None,
                   help="comma list of notebooks (e.g. 02,05); default all")
    p.add_argument("--jobs", type=int, default=1,
                   help="course runs at once (default 1); with more, each gets one torch "
                        "thread and its seconds are inflated by the sharing")
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="copy each run's executed notebooks and report to DIR/<dataset>-s<seed>")
    p.add_argument("--timeout", type=float, default=3 * COURSE_LIMIT_S,
                   help="seconds before one course run is abandoned (default 45 min)")
    C.add_common_args(p, "lessons")
    args = p.parse_args(argv)
    if args.jobs < 1:
        raise BenchError(f"--jobs must be at least 1, got {args.jobs}")
    if any(s < 0 for s in args.seeds):
        raise BenchError(f"--seeds must be non-negative integers, got {args.seeds}")
    args.datasets = ["synthetic"]
    args.npz_path = None
    if args.npz:
        args.npz_path = Path(args.npz).expanduser()
        if not args.npz_path.is_file():
            raise BenchError(f"--npz {args.npz_path}: file not found")
        args.datasets.append("pneumoniamnist")
    if args.smoke:  # one notebook with claims, the quick profile, one seed
        args.seeds, args.profile, args.notebooks = args.seeds[:1], "smoke", "01"
    args.notebook_list = ([n.strip() for n in args.notebooks.split(",") if n.strip()]
                          if args.notebooks else [])
    return args


def run_cell(args, dataset: str, seed: int) -> dict:
    """One course run; returns its claims, notebook seconds and status."""
    tmp = Path(tempfile.mkdtemp(prefix=f"fnlab-bench-lessons-{dataset}-{seed}-"))
    try:
        npz = prepare_data_dir(tmp / "data",
                               args.npz_path if dataset == "pneumoniamnist" else None)
        summary, wall, tail = run_course(args.profile, dataset, args.notebook_list, tmp / "data",
                                         tmp / "run", args.timeout, parameters={"seed": seed},
                                         data_path=npz)
        if args.keep:  # for reading the outputs as a student would
            shutil.copytree(tmp / "run", Path(args.keep) / f"{dataset}-s{seed}",
                            dirs_exist_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    notebooks = summary.get("notebooks", [])
    failed = [nb["name"] for nb in notebooks if nb["status"] != "ok"]
    cell = {"dataset": dataset, "seed": seed, "wall_seconds": wall,
            "total_seconds": float(summary.get("total_seconds", wall)), "failed": failed,
            "seconds": {nb["name"]: nb["seconds"] for nb in notebooks},
            "claims": {f"{nb['name']}:{c['id']}": c for nb in notebooks
                       for c in nb.get("claims") or []},
            "notebooks_without_claims": [nb["name"] for nb in notebooks
                                         if not nb.get("claims")
                                         and not nb["name"].startswith("00")]}
    if failed:
        cell["tail"] = tail[-1500:]
    print(f"{dataset} seed {seed}: {cell['total_seconds']:.0f} s, "
          f"{sum(c['holds'] for c in cell['claims'].values())} of {len(cell['claims'])} claims "
          f"hold" + (f", FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return cell


def _value(c: dict | None) -> str:
    if c is None:
        return "—"
    return f"{C.fmt(c.get('value'))} {'✓' if c.get('holds') else '✗ NOT HELD'}"


def main(argv=None) -> int:
    args = parse_args(argv)
    rec = C.Recorder("lessons", f"{TITLE} ({args.profile} profile)",
                     argv=[sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    grid = [(ds, seed) for ds in args.datasets for seed in args.seeds]
    if args.jobs == 1:
        cells = [run_cell(args, ds, seed) for ds, seed in grid]
    else:  # one torch thread per run, so that the runs share the cores without thrashing
        from concurrent.futures import ThreadPoolExecutor

        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            cells = list(pool.map(lambda cell: run_cell(args, *cell), grid))
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
                    "caption": f"`fnlab course run --profile {args.profile} -p seed N` in a "
                               "fresh data folder per cell; each claim's measured value, ✓ "
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
               None if args.jobs > 1 else worst <= COURSE_LIMIT_S and not slow,
               f"slowest course {worst:.0f} s" + (f"; slow: {', '.join(slow)}" if slow else "")),
    ]
    C.print_table(claims_table["columns"], claims_table["rows"], rec.title)
    C.print_table(seconds_table["columns"], seconds_table["rows"], "Seconds per notebook")
    for g in goals:
        verdict = {True: 'MET', False: 'NOT MET', None: 'NOT MEASURED'}[g['met']]
        print(f"goal {verdict}: {g['goal']} — {g['detail']}")
    notes = ["SMOKE run: notebook 01 in the smoke profile; its claims need not hold."] \
        if args.smoke else []
    if args.jobs > 1:
        notes.append(f"{args.jobs} course runs at once, one torch thread each: the seconds are "
                     "inflated by the sharing and do not measure the time goal.")
    figures = {"profile": args.profile, "seeds": args.seeds, "datasets": args.datasets,
               "cells": cells, "claims_not_held": not_held, "slowest_course_seconds": worst}
    result = rec.finish(figures, smoke=args.smoke, table=claims_table, tables=[seconds_table],
                        goals=goals, notes=notes,
                        config={"profile": args.profile, "seeds": args.seeds, "jobs": args.jobs,
                                "npz": str(args.npz_path) if args.npz_path else None,
                                "notebooks": args.notebook_list or "all"})
    C.write_result(result, C.out_path(args, "lessons"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
