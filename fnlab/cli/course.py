"""``fnlab course run``: execute the course notebooks with papermill and write a report;
``fnlab course sweep``: the same over a grid of seeds, datasets and profiles, on Dask."""

from __future__ import annotations

import argparse
import ast

from fnlab.profiles import DEFAULT_PROFILE, PROFILES


def _value(text: str):
    """Parse a -p value as a Python literal when it is one (3, 0.5, True), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def register(subparsers) -> None:
    course = subparsers.add_parser("course", help="run the whole course in batch (papermill)")
    csub = course.add_subparsers(dest="course_command", metavar="ACTION")
    run = csub.add_parser(
        "run",
        help="execute notebooks in order into runs/<stamp>/ with summary.json and summary.md",
        description="Execute the course notebooks in order with papermill. Exits 1 if any "
        "notebook fails (the others still run) or, with --check-claims, a lesson claim does "
        "not hold; 2 on a bad argument.",
    )
    run.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                     help="notebook names (e.g. 00_welcome or 00); default: all, in order")
    run.add_argument("--profile", default=DEFAULT_PROFILE,
                     help=f"one of: {', '.join(PROFILES)} (default: {DEFAULT_PROFILE}, sized so "
                     "that every lesson holds on a laptop CPU)")
    run.add_argument("--dataset", default="auto",
                     help="auto (real PneumoniaMNIST: cached, or downloaded once; synthetic when "
                     "offline or the download fails) or a dataset name")
    run.add_argument("--offline", action="store_true",
                     help="never download: auto uses the cached official PneumoniaMNIST or the "
                     "synthetic X-rays; the notebooks get FNLAB_OFFLINE=1")
    run.add_argument("--data-path", default=None, metavar="FILE",
                     help="a PneumoniaMNIST .npz named explicitly (a rebuilt or variant file; "
                     "loaded with a warning when it is not the official one)")
    run.add_argument("--device", default=None, help="auto, cpu, cuda, mps (default: the notebook's)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                     metavar=("KEY", "VALUE"), help="extra parameter for every notebook")
    run.add_argument("--out", default=None, help="output folder (default: runs/<timestamp>)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--check-claims", action="store_true",
                     help="exit 1 when a lesson claim does not hold, or a notebook records no "
                     "claims, an id twice or a claim without a bound")
    run.set_defaults(func=_run)

    sweep = csub.add_parser(
        "sweep",
        help="run the course over seeds x datasets x profiles on Dask workers, one report",
        description="Run the course (as `fnlab course run` does) once per grid cell, the cells "
        "in parallel on Dask workers: a LocalCluster on this machine (--scheduler local, the "
        "default) or a running scheduler (--scheduler tcp://HOST:PORT, e.g. dask-jobqueue's "
        "SLURMCluster). Each cell in OUT/<dataset>-<profile>-s<seed>/; OUT/sweep.json, sweep.md "
        "and sweep.png report every cell and the claims x cells. A cell whose kernel does not "
        "start or whose worker dies is retried (--retries). Exits 1 when a cell failed or, "
        "with --check-claims, a claim does not hold; 2 on a bad argument or an unreachable "
        "scheduler; 130 on Ctrl-C (continue with --resume).",
    )
    sweep.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                       help="notebook names (e.g. 00_welcome or 00; before the grid options or "
                       "after --); default: all, in order")
    sweep.add_argument("--seeds", nargs="*", default=["0"], metavar="SEED",
                       help="seeds (default: 0)")
    sweep.add_argument("--datasets", nargs="*", default=["auto"], metavar="DATASET",
                       help="datasets (default: auto)")
    sweep.add_argument("--profiles", nargs="*", default=[DEFAULT_PROFILE], metavar="PROFILE",
                       help=f"profiles, of: {', '.join(PROFILES)} (default: {DEFAULT_PROFILE})")
    sweep.add_argument("--scheduler", default="local",
                       help="local (a LocalCluster on this machine, loopback only) or the "
                       "address of a running Dask scheduler, tcp://HOST:PORT (default: local)")
    sweep.add_argument("--workers", type=int, default=None, metavar="N",
                       help="workers of the local cluster (default: one per core, as memory "
                       "allows, at most one per cell)")
    sweep.add_argument("--out", default=None,
                       help="sweep folder (default: runs/sweep-<timestamp>)")
    sweep.add_argument("--resume", action="store_true",
                       help="continue the sweep in --out: cells that already ran (every "
                       "notebook ok, same notebooks and parameters) are not run again")
    sweep.add_argument("--retries", type=int, default=2,
                       help="extra attempts of a cell whose kernel did not start or whose "
                       "worker died (default: 2)")
    sweep.add_argument("--timeout", type=float, default=None, metavar="S",
                       help="seconds one cell may run before it is stopped (default: no limit)")
    sweep.add_argument("--data-dir", default=None, metavar="DIR",
                       help="FNLAB_DATA_DIR of every cell; on a shared file system cells "
                       "share trained Runs (default: this machine's data folder)")
    sweep.add_argument("--fresh-data", action="store_true",
                       help="a fresh data folder per cell (a cold start: no cached Runs)")
    sweep.add_argument("--offline", action="store_true", help="never download (as course run)")
    sweep.add_argument("--data-path", default=None, metavar="FILE",
                       help="a PneumoniaMNIST .npz for the auto and pneumoniamnist cells")
    sweep.add_argument("--device", default=None, help="auto, cpu, cuda, mps (default: the notebook's)")
    sweep.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                       metavar=("KEY", "VALUE"), help="extra parameter for every notebook")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.add_argument("--check-claims", action="store_true",
                       help="exit 1 when a lesson claim does not hold in some cell (as course run)")
    sweep.set_defaults(func=_sweep)
    course.set_defaults(func=lambda args: course.print_help() or 0)


def _run(args: argparse.Namespace) -> int:
    from fnlab.cli import UsageError
    from fnlab.cli.validate import check_device
    from fnlab.course import claim_failures, run_course, select_notebooks, validate_choices

    try:  # validate everything before anything is written
        validate_choices(args.profile, args.dataset)
        select_notebooks(args.notebooks)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    check_device(args.device)  # the notebooks run here: the device must be here
    params = {k: _value(v) for k, v in args.parameter}
    try:
        result = run_course(args.notebooks, profile=args.profile, dataset=args.dataset,
                            device=args.device, parameters=params, out=args.out,
                            progress=not args.no_progress, offline=args.offline or None,
                            data_path=args.data_path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    failed = [nb.name for nb in result.notebooks if nb.status != "ok"]
    print(f"report: {result.out_dir / 'summary.md'}")
    if result.dataset_note:
        print(f"dataset used: {result.dataset_note}")
    print(f"{len(result.notebooks) - len(failed)} notebooks ok, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else "")
          + f" ({result.total_seconds:.1f} s)")
    claims = [c for nb in result.notebooks for c in nb.claims]
    print(f"lesson claims: {sum(bool(c.get('holds')) for c in claims)} of {len(claims)} hold")
    problems = claim_failures(result) if args.check_claims else []
    for line in problems:
        print(f"claim check: {line}")
    return 1 if failed or problems else 0


def _sweep(args: argparse.Namespace) -> int:
    from fnlab.cli import UsageError
    from fnlab.cli.validate import check_device_name
    from fnlab.cluster import SchedulerUnreachable
    from fnlab.sweep import SweepUsageError, retries_text, run_sweep

    params = {k: _value(v) for k, v in args.parameter}
    seeds = _seeds_and_notebook_hints(args)
    check_device_name(args.device)  # a name only: the workers may have CUDA
    try:
        result = run_sweep(seeds, args.datasets, args.profiles, args.notebooks,
                           out=args.out, scheduler=args.scheduler, workers=args.workers,
                           resume=args.resume, parameters=params, device=args.device,
                           data_path=args.data_path, data_dir=args.data_dir,
                           fresh_data=args.fresh_data, offline=args.offline or None,
                           retries=args.retries, timeout=args.timeout,
                           progress=not args.no_progress)
    except (SweepUsageError, SchedulerUnreachable) as exc:
        raise UsageError(str(exc)) from None
    d = result.to_dict()
    bad = [c for c in result.cells if c["status"] != "ok"]
    print(f"report: {result.out_dir / 'sweep.md'}")
    print(f"{len(result.cells) - len(bad)} cells ok, {len(bad)} not"
          + (f": {', '.join(c['id'] + ' (' + c['status'] + ')' for c in bad)}" if bad else "")
          + f" ({result.total_seconds:.1f} s; {retries_text(d['retries'])}; {result.scheduler})")
    print(f"lesson claims: {d['claims_held']} of {d['claims_checked']} hold")
    problems = result.claim_problems() if args.check_claims else []
    for line in problems:
        print(f"claim check: {line}")
    return 1 if bad or problems else 0


def _seeds_and_notebook_hints(args: argparse.Namespace) -> list[int]:
    """The seeds as integers; a UsageError when a grid option swallowed a notebook name
    (``--profiles smoke 03``: the list options take every word that follows them)."""
    import re

    from fnlab.cli import UsageError
    from fnlab.course import known_datasets, list_notebooks
    from fnlab.profiles import PROFILES

    try:
        names = {p.stem for p in list_notebooks()} | {p.stem[:2] for p in list_notebooks()}
    except (FileNotFoundError, OSError):
        names = set()
    names |= {n + ".ipynb" for n in names}
    for option, values, valid in (("--profiles", args.profiles, PROFILES),
                                  ("--datasets", args.datasets, known_datasets())):
        stray = [v for v in values if v not in valid and v in names]
        if stray:
            raise UsageError(f"{option} took {', '.join(map(repr, stray))}, a notebook: put "
                             "NOTEBOOKs before the grid options, or after --")
    from fnlab.cli.validate import MAX_SEED

    seeds = []
    for value in args.seeds:
        if re.fullmatch(r"0|[1-9][0-9]*", value) and int(value) <= MAX_SEED:
            seeds.append(int(value))
        elif value in names:
            raise UsageError(f"--seeds took {value!r}, a notebook: put NOTEBOOKs before the "
                             "grid options, or after --")
        else:
            raise UsageError(f"--seeds {value!r}: seeds are non-negative integers up to "
                             f"{MAX_SEED} (0 1 2)")
    return seeds
