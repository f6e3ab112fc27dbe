"""``fnlab book build``: the course book (Jupyter Book 1.x), offline, from the latest course run."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    book = subparsers.add_parser("book", help="build the course book (Jupyter Book, offline)")
    bsub = book.add_subparsers(dest="book_command", metavar="ACTION")
    build = bsub.add_parser(
        "build",
        help="build book/_build/html from the executed notebooks of the latest course run",
        description="Copy the executed notebooks of the newest run under runs/ (or --run) into "
        "book/notebooks/, write book/_toc.yml and run `jupyter-book build` with execution off. "
        "Without a run, the clean notebooks are used. Exits 1 when the build fails (with "
        "--strict: on any Sphinx warning) or a notebook did not become a page.",
    )
    build.add_argument("--run", default=None, metavar="DIR",
                       help="course run folder (default: the newest under runs/)")
    build.add_argument("--strict", action="store_true",
                       help="treat every Sphinx warning as an error (-W --keep-going), as CI does")
    build.add_argument("--solutions", action="store_true",
                       help="keep exercise solutions and hidden tests (an instructor's copy)")
    build.add_argument("--book-dir", default=None, help=argparse.SUPPRESS)
    build.set_defaults(func=_build)
    book.set_defaults(func=lambda args: book.print_help() or 0)


def _build(args: argparse.Namespace) -> int:
    from fnlab.book import build_book
    from fnlab.cli import UsageError

    try:
        result = build_book(args.book_dir, args.run, strict=args.strict, solutions=args.solutions)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    missing = sorted(set(result.sources.pages) - set(result.pages))
    if missing:
        print(f"no HTML page for: {', '.join(missing)}")
    if not result.ok:
        print(f"book build FAILED (jupyter-book exit {result.returncode}, "
              f"{len(result.warnings)} warnings/errors)")
        return 1
    print(f"book: {result.html_dir / 'index.html'} ({len(result.pages)} notebook pages"
          f"{', strict' if args.strict else ''})")
    return 0
