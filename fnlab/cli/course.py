"""``fnlab course run``: execute the course notebooks with papermill and write a report."""

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
    course.set_defaults(func=lambda args: course.print_help() or 0)


def _run(args: argparse.Namespace) -> int:
    from fnlab.cli import UsageError
    from fnlab.course import claim_failures, run_course, select_notebooks, validate_choices

    try:  # validate everything before anything is written
        validate_choices(args.profile, args.dataset)
        select_notebooks(args.notebooks)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
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
