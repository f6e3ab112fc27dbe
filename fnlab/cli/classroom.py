"""``fnlab classroom``: student copies (otter assign) and offline grading (otter run) to CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

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
        description="Grade each submission with `otter run` (offline, no Docker) and write one "
        "CSV row per submission and question plus a TOTAL row. Exits 1 when a submission "
        "could not be graded (its TOTAL row says why), 2 on a bad argument.",
    )
    grade.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="notebooks to grade")
    grade.add_argument("--autograder", default=None, metavar="DIR",
                       help="folder of <notebook>-autograder.zip files (default: grading/)")
    grade.add_argument("--out", default="grades.csv", help="CSV to write (default: grades.csv)")
    grade.add_argument("--profile", default="smoke",
                       help=f"profile the submissions run in: {', '.join(PROFILES)} or "
                       f"{AS_SUBMITTED} (default: smoke, so grading stays fast)")
    grade.add_argument("--timeout", type=float, default=1800,
                       help="seconds allowed per submission (default: 1800)")
    grade.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
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
    from fnlab.classroom import available_autograders, grade
    from fnlab.cli import UsageError

    choices = [*PROFILES, AS_SUBMITTED]
    if args.profile not in choices:
        raise UsageError(f"unknown profile {args.profile!r}; choose one of: {', '.join(choices)}")
    if args.jobs < 1 or args.timeout <= 0:
        raise UsageError("--jobs must be >= 1 and --timeout > 0")
    missing = [s for s in args.submissions if not Path(s).is_file()]
    if missing:
        raise UsageError(f"no such submission: {', '.join(missing)}")
    if not available_autograders(args.autograder):
        where = args.autograder or "grading/"
        raise UsageError(f"no autograder zips in {where}; run `fnlab classroom student` first")

    def show(res):
        if res.note and not res.questions:
            print(f"{res.submission}: NOT GRADED ({res.note})", flush=True)
        else:
            print(f"{res.submission} [{res.notebook}]: {res.total:g} / {res.possible:g}", flush=True)

    profile = None if args.profile == AS_SUBMITTED else args.profile
    results = grade(args.submissions, args.autograder, args.out, profile=profile,
                    timeout=args.timeout, jobs=args.jobs, progress=show)
    failed = [r for r in results if not r.questions]
    print(f"grades: {args.out} ({len(results) - len(failed)} graded, {len(failed)} not graded)")
    return 1 if failed else 0
