"""``fnlab classroom``: student copies (otter assign) and sandboxed offline grading to CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from fnlab.grading import DEFAULT_MEMORY_MB
from fnlab.profiles import PROFILES

AS_SUBMITTED = "as-submitted"


def register(subparsers) -> None:
    room = subparsers.add_parser(
        "classroom", help="student copies of the notebooks and offline grading (otter-grader)")
    rsub = room.add_subparsers(dest="classroom_command", metavar="ACTION")

    student = rsub.add_parser(
        "student",
        help="write student copies (solutions removed, hidden tests out) and autograders",
        description="Run `otter assign` on each notebook: student copies go to --out "
        "(default student/), autograder zips and solution copies to --grading (default grading/).",
    )
    student.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                         help="notebook names (e.g. 00_welcome or 00); default: all")
    student.add_argument("--out", default=None, help="folder for student copies (default: student/)")
    student.add_argument("--grading", default=None,
                         help="folder for autograder zips and solutions (default: grading/)")
    student.set_defaults(func=_student)

    grade = rsub.add_parser(
        "grade",
        help="grade submitted notebooks offline into a CSV",
        description="Grade each submission offline with its otter tests and write one CSV row per "
        "submission and question plus a TOTAL row. Each submission runs in a bubblewrap sandbox "
        "(read-only system, no network, private /tmp, only its own scratch folder writable, no "
        "view of the solutions or hidden tests, every process killed when it ends) and is scored "
        "in a second, fresh sandbox from snapshots of its variables. Exits 1 when a submission "
        "could not be graded (its TOTAL row says why), 2 on a bad argument, without bwrap or with "
        "an unreachable --scheduler.",
    )
    grade.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="notebooks to grade")
    grade.add_argument("--autograder", default=None, metavar="DIR",
                       help="folder of <notebook>-autograder.zip files (default: grading/)")
    grade.add_argument("--out", default="grades.csv", help="CSV to write (default: grades.csv)")
    grade.add_argument("--profile", default="smoke",
                       help=f"profile the submissions run in: {', '.join(PROFILES)} or "
                       f"{AS_SUBMITTED} (default: smoke, so grading stays fast)")
    grade.add_argument("--timeout", type=float, default=1800,
                       help="seconds allowed per submission, all of it killed after (default: 1800)")
    grade.add_argument("--memory", type=float, default=DEFAULT_MEMORY_MB, metavar="MB",
                       help="memory cap of each process of a submission, in MiB (RLIMIT_DATA; "
                       f"default: {DEFAULT_MEMORY_MB})")
    grade.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    grade.add_argument("--scheduler", default=None,
                       help="grade on Dask workers instead: local (a LocalCluster on this "
                       "machine) or a scheduler address tcp://HOST:PORT; each worker grades in "
                       "its own bubblewrap sandbox, and the CSV is the same")
    grade.add_argument("--workers", type=int, default=None, metavar="N",
                       help="workers of the local cluster with --scheduler local (default: one "
                       "per core, as memory allows)")
    grade.add_argument("--unsafe-no-sandbox", action="store_true",
                       help="run student code without the bubblewrap sandbox (UNSAFE: it can read "
                       "the solutions, change files, use the network and fake its scores)")
    grade.set_defaults(func=_grade)
    room.set_defaults(func=lambda args: room.print_help() or 0)


def _student(args: argparse.Namespace) -> int:
    from fnlab.classroom import make_student_copies
    from fnlab.cli import UsageError
    from fnlab.course import select_notebooks

    try:
        select_notebooks(args.notebooks)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    made = make_student_copies(args.notebooks, out=args.out, grading=args.grading)
    for files in made:
        print(f"{files.name}: {files.student}  ({len(files.questions)} graded questions; "
              f"autograder {files.autograder})")
    if made:
        print(f"{len(made)} student copies in {made[0].student.parent}/; solutions and "
              f"autograders in {made[0].autograder.parent}/ (keep these away from students)")
    return 0


def _grade(args: argparse.Namespace) -> int:
    import math
    import sys
    import warnings

    from fnlab.cli import UsageError
    from fnlab.cluster import SchedulerUnreachable
    from fnlab.grading import (
        UNSAFE_WARNING,
        OutputUnusable,
        SandboxUnavailable,
        available_autograders,
        grade,
    )

    choices = [*PROFILES, AS_SUBMITTED]
    if args.profile not in choices:
        raise UsageError(f"unknown profile {args.profile!r}; choose one of: {', '.join(choices)}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, not {args.jobs}")
    if args.scheduler is not None:
        from fnlab.cluster import check_scheduler

        try:
            args.scheduler = check_scheduler(args.scheduler)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.jobs > 1:
            raise UsageError("--jobs grades with threads on this machine; with --scheduler the "
                             "Dask workers set how many submissions run at once")
    if args.workers is not None and (args.scheduler != "local" or args.workers < 1):
        raise UsageError("--workers N (N >= 1) sizes the cluster of --scheduler local")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UsageError(f"--timeout must be > 0 seconds, not {args.timeout:g}")
    if not (math.isfinite(args.memory) and args.memory >= 256):
        raise UsageError(f"--memory must be at least 256 MiB, not {args.memory:g}")
    missing = [s for s in args.submissions if not Path(s).is_file()]
    if missing:
        raise UsageError(f"no such submission: {', '.join(missing)}")
    if not available_autograders(args.autograder):
        where = args.autograder or "grading/"
        raise UsageError(f"no autograder zips in {where}; run `fnlab classroom student` first")

    if args.scheduler not in (None, "local"):
        from fnlab.cluster import probe_scheduler

        try:  # a port that is not a Dask scheduler: one line now, not a hang later
            probe_scheduler(args.scheduler)
        except SchedulerUnreachable as exc:
            raise UsageError(str(exc)) from None

    def show(res):
        if res.note and not res.questions:
            print(f"{res.submission}: NOT GRADED ({res.note})", flush=True)
        else:
            note = f" ({res.note})" if res.note else ""
            print(f"{res.submission} [{res.notebook}]: {res.total:g} / {res.possible:g}{note}",
                  flush=True)

    profile = None if args.profile == AS_SUBMITTED else args.profile
    if args.unsafe_no_sandbox:
        print(UNSAFE_WARNING, file=sys.stderr, flush=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="WARNING: --unsafe-no-sandbox")
            results = grade(args.submissions, args.autograder, args.out, profile=profile,
                            timeout=args.timeout, memory_mb=args.memory, jobs=args.jobs,
                            sandbox=not args.unsafe_no_sandbox, progress=show,
                            scheduler=args.scheduler, workers=args.workers)
    except (SandboxUnavailable, SchedulerUnreachable, OutputUnusable) as exc:
        raise UsageError(str(exc)) from None
    failed = [r for r in results if not r.questions]
    print(f"grades: {args.out} ({len(results) - len(failed)} graded, {len(failed)} not graded)")
    return 1 if failed else 0
