"""Course wall time: ``fnlab course run`` (what ``make course`` runs), total and per notebook.

Runs ``python -m fnlab course run`` in a subprocess with ``FNLAB_DATA_DIR`` pointing
at a fresh folder (no cached datasets or trained Runs: the cold start of a fresh
clone), then reads the run's ``summary.json``.

* default: the default profile (``lessons``, what ``make course`` runs) on the default
  dataset (``auto``: synthetic in a fresh data folder on a machine without network);
  goals: the whole course under 15 minutes, no notebook over 3 minutes, every claim
  holds. ``--npz FILE`` runs it on real data (named with ``--data-path``).
* ``--profile smoke``: the quick code-path profile; goal: under 5 minutes.
* ``--full``: the ``full`` profile on real 28 px PneumoniaMNIST: the ``.npz``
  (``--npz``, default ``../shared/data/pneumoniamnist_28_variant.npz``) is named with
  ``fnlab course run --data-path`` (never copied into the repository);
  goal: under 30 minutes.
* ``--smoke``: the benchmark's own quick form for the tests (first notebook only).

Usage::

    python benchmarks/bench_course.py                  # lessons profile, every notebook
    python benchmarks/bench_course.py --npz ../shared/data/pneumoniamnist_28_union.npz
    python benchmarks/bench_course.py --full           # full profile on real data
    python benchmarks/bench_course.py --data-dir /tmp/fnlab-data --full --keep
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

TITLE = "Course wall time"
GOALS = {"lessons": 900.0, "smoke": 300.0, "full": 1800.0}
#: per-notebook goal of the default profile (issue: "no notebook over 3 minutes")
NOTEBOOK_GOAL = {"lessons": 180.0}
SMOKE_NOTEBOOKS = ["00"]


BenchError = C.BenchError


def default_npz() -> Path | None:
    """The shared real-data file beside the checkout, or None."""
    return C.shared_file("pneumoniamnist_28_variant.npz")


def prepare_data_dir(data_dir: Path, npz: Path | None) -> str | None:
    """Create ``data_dir``; return ``npz`` (absolute) for ``--data-path``, or None.

    A rebuilt or variant ``.npz`` is not the official download, so it is named
    explicitly (``fnlab course run --data-path``), never copied into the cache.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    return str(Path(npz).resolve()) if npz is not None else None


def run_course(profile: str, dataset: str, notebooks: list[str], data_dir: Path, out: Path,
               timeout: float, parameters: dict | None = None,
               data_path: str | None = None) -> tuple[dict, float, str]:
    """Run the course CLI; return (summary.json, wall seconds, output tail).

    ``parameters`` go to every notebook (``-p KEY VALUE``), e.g. ``{"seed": 1}``;
    ``data_path`` names a PneumoniaMNIST ``.npz`` (``--data-path``).
    """
    extra = [a for k, v in (parameters or {}).items() for a in ("-p", str(k), str(v))]
    if data_path:
        extra += ["--data-path", str(data_path)]
    cmd = [sys.executable, "-m", "fnlab", "course", "run", "--profile", profile,
           "--dataset", dataset, "--out", str(out), "--no-progress", *extra, *notebooks]
    env = dict(os.environ, FNLAB_DATA_DIR=str(data_dir))
    print("running: " + " ".join(cmd[1:]) + f"  (FNLAB_DATA_DIR={data_dir})", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=C.ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"the course run did not finish within {timeout:.0f} s "
                         f"(--timeout); partial report in {out}") from exc
    wall = time.perf_counter() - t0
    tail = (proc.stdout + proc.stderr)[-3000:]
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        raise BenchError(f"the course run wrote no {summary_path} (exit {proc.returncode}):\n"
                         f"{tail}")
    return json.loads(summary_path.read_text()), wall, tail


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default=None, choices=sorted(GOALS),
                   help="course profile (default lessons; full with --full)")
    p.add_argument("--full", action="store_true",
                   help="the full profile on real 28 px data (goal < 30 min)")
    p.add_argument("--dataset", default=None,
                   help="dataset parameter (default: auto; pneumoniamnist with --full)")
    p.add_argument("--npz", default=None,
                   help="real data for --full (default ../shared/data/"
                        "pneumoniamnist_28_variant.npz), named with --data-path")
    p.add_argument("--data-dir", default=None,
                   help="FNLAB_DATA_DIR for the run (default: a fresh temporary folder)")
    p.add_argument("--notebooks", default=None,
                   help="comma list of notebooks (e.g. 00,01); default all")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds before the run is abandoned (default 3 x the goal)")
    p.add_argument("--keep", action="store_true", help="keep the executed notebooks")
    p.add_argument("--smoke", action="store_true",
                   help="quick form for the tests: the first notebook, smoke profile; "
                        "written to $TMPDIR/fnlab-bench-smoke/course.json unless --out")
    p.add_argument("--out", default=None,
                   help="results JSON (default benchmarks/results/course.json, or "
                        "course_full.json with --full)")
    args = p.parse_args(argv)
    if args.smoke and args.full:
        raise BenchError("--smoke and --full exclude each other")
    if args.profile is None:
        args.profile = "full" if args.full else "smoke" if args.smoke else "lessons"
    args.name = "course_full" if args.full else "course"
    if args.npz and not args.full and args.dataset is None:
        args.dataset = "pneumoniamnist"
        args.name = "course_real"
    if args.dataset is None:
        args.dataset = "pneumoniamnist" if args.full else "auto"
    args.notebook_list = (SMOKE_NOTEBOOKS if args.smoke else
                          [n.strip() for n in args.notebooks.split(",") if n.strip()]
                          if args.notebooks else [])
    if args.timeout is None:
        args.timeout = GOALS[args.profile] * 3
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rec = C.Recorder(args.name, TITLE + (" (full profile, real 28 px data)" if args.full
                                         else f" ({args.profile} profile, {args.dataset})"),
                     argv=[sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    npz = None
    if args.dataset == "pneumoniamnist":
        npz = Path(args.npz).expanduser() if args.npz else default_npz()
        if npz is None:
            raise BenchError("real data needed: pass --npz PATH (a PneumoniaMNIST .npz) "
                             "or put ../shared/data/pneumoniamnist_28_variant.npz beside the "
                             "checkout")
        if not npz.is_file():
            raise BenchError(f"--npz {npz}: file not found")
    tmp = Path(tempfile.mkdtemp(prefix="fnlab-bench-course-"))
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else tmp / "data"
    out = tmp / "run"
    try:
        copied = prepare_data_dir(data_dir, npz)
        summary, wall, tail = run_course(args.profile, args.dataset, args.notebook_list,
                                         data_dir, out, args.timeout, data_path=copied)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    notebooks = [{"name": nb["name"], "status": nb["status"], "seconds": nb["seconds"],
                  "dataset": (nb.get("figures") or {}).get("dataset"),
                  "error": (nb.get("error") or {}).get("ename"),
                  "claims": [{k: c.get(k) for k in ("id", "value", "bound", "holds")}
                             for c in nb.get("claims") or []]}
                 for nb in summary.get("notebooks", [])]
    claims = [c for nb in notebooks for c in nb["claims"]]
    claims_failed = [c["id"] for c in claims if not c["holds"]]
    total = float(summary.get("total_seconds", wall))
    failed = [nb["name"] for nb in notebooks if nb["status"] != "ok"]
    limit = GOALS[args.profile]
    rows = [[nb["name"], nb["status"], C.fmt(nb["seconds"], 1), nb["dataset"] or "—",
             f"{sum(c['holds'] for c in nb['claims'])}/{len(nb['claims'])}"]
            for nb in notebooks]
    rows.append(["**total**", "ok" if not failed else f"{len(failed)} failed",
                 C.fmt(total, 1), "", f"{len(claims) - len(claims_failed)}/{len(claims)}"])
    table = {"columns": ["notebook", "status", "seconds", "dataset", "claims hold"],
             "rows": rows,
             "caption": f"`fnlab course run --profile {args.profile} --dataset {args.dataset}` "
                        f"with a fresh FNLAB_DATA_DIR (no cached data or Runs); seconds per "
                        f"notebook from summary.json; process wall time {wall:.1f} s."}
    goals = []
    if not args.smoke:
        goals.append(C.goal(f"course in the {args.profile} profile under {limit / 60:.0f} min "
                            f"on this machine", total < limit and not failed,
                            f"{total:.0f} s ({total / 60:.1f} min), {len(notebooks)} notebooks"
                            + (f"; FAILED: {', '.join(failed)}" if failed else "")))
        per_nb = NOTEBOOK_GOAL.get(args.profile)
        if per_nb is not None:
            slow = [f"{nb['name']} {nb['seconds']:.0f} s" for nb in notebooks
                    if nb["seconds"] > per_nb]
            longest = max(notebooks, key=lambda nb: nb["seconds"], default=None)
            goals.append(C.goal(f"no notebook over {per_nb / 60:.0f} min", not slow,
                                ("over: " + ", ".join(slow)) if slow else
                                f"longest {longest['name']} {longest['seconds']:.0f} s"
                                if longest else "no notebooks"))
        if claims:
            goals.append(C.goal("every lesson claim holds", not claims_failed,
                                f"{len(claims) - len(claims_failed)} of {len(claims)} hold"
                                + (f"; not: {', '.join(claims_failed)}" if claims_failed
                                   else "")))
    notes = []
    if args.smoke:
        notes.append("SMOKE run: the first notebook only.")
    if failed:
        notes.append(f"failed notebooks: {', '.join(failed)}; output tail:\n{tail[-800:]}")
    figures = {"profile": args.profile, "dataset": args.dataset,
               "total_seconds": total, "process_wall_seconds": wall,
               "notebooks": notebooks, "n_failed": len(failed),
               "goal_seconds": limit, "data_path": copied,
               "claims_failed": claims_failed}
    C.print_table(table["columns"], table["rows"], rec.title)
    for g in goals:
        print(f"goal {'MET' if g['met'] else 'NOT MET'}: {g['goal']} — {g['detail']}")
    result = rec.finish(figures, smoke=args.smoke, table=table, goals=goals, notes=notes,
                        config={"profile": args.profile, "dataset": args.dataset,
                                "notebooks": args.notebook_list or "all",
                                "npz": str(npz) if npz else None})
    C.write_result(result, Path(args.out) if args.out else C.default_out(args.name, args.smoke))
    return 0


if __name__ == "__main__":
    sys.exit(main())
