"""The ``fnlab`` command line.

Each subcommand lives in its own module under :mod:`fnlab.cli` with a
``register(subparsers)`` function; this module only wires them together.

Example
-------
>>> from fnlab.cli import main
>>> main(["--version"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fnlab import __version__

#: Subcommand modules, in the order ``fnlab --help`` lists them.
SUBCOMMAND_MODULES = ("info", "data", "train", "evaluate", "course", "classroom", "book")


class UsageError(Exception):
    """A bad argument value: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fnlab",
        description="fnlab: a course kit for false-negative-aware pneumonia detection.",
    )
    parser.add_argument("--version", action="version", version=f"fnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"fnlab.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"fnlab.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"fnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
