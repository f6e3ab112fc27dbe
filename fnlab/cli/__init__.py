"""The ``fnlab`` command line.

Each subcommand lives in its own module under :mod:`fnlab.cli` with a
``register(subparsers)`` function; this module wires them together and turns every
error into one line on stderr:

- a bad argument (argparse, or :class:`UsageError` from a subcommand): exit code 2;
- an error fnlab raises on purpose (bad data, a damaged Run, a missing file): exit 1;
- anything else (a bug): exit 1 with ``internal error`` and a hint to rerun with
  ``FNLAB_DEBUG=1``, which shows the full traceback of every error.

Example
-------
>>> from fnlab.cli import main
>>> main(["--version"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import importlib
import linecache
import os
import re
import sys
from pathlib import Path

from fnlab import __version__

#: Subcommand modules, in the order ``fnlab --help`` lists them.
SUBCOMMAND_MODULES = ("info", "data", "train", "evaluate", "course", "classroom", "book")


#: Set to 1 to see the full traceback instead of the one-line error.
DEBUG_ENV = "FNLAB_DEBUG"

_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class UsageError(Exception):
    """A bad argument value: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: ``fnlab train: error: ... (see ...)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_flatten(message)} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fnlab",
        description="fnlab: a course kit for false-negative-aware pneumonia detection.",
    )
    parser.add_argument("--version", action="version", version=f"fnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"fnlab.cli.{name}").register(sub)
    return parser


def _flatten(text: str) -> str:
    text = _ANSI.sub("", str(text))
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _pickle_refusal(exc: BaseException) -> str | None:
    """The line for a checkpoint that ``torch.load(weights_only=True)`` refused because it
    holds pickled objects: complete, and without torch's advice to load it unsafely."""
    import pickle

    cause, seen = exc, set()
    while cause is not None and not isinstance(cause, pickle.UnpicklingError):
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
        if id(cause) in seen:
            return None
    if cause is None:
        return None
    path = getattr(exc, "path", None) or str(exc).split(": corrupt or tampered", 1)[0]
    found = re.search(r"GLOBAL ([\w.]+)", str(cause))
    what = f" ({found.group(1)})" if found else ""
    where = f"{path}: " if path and path != str(exc) else ""
    return (f"{where}refused to load: the checkpoint holds pickled Python objects{what} "
            "besides tensors, and fnlab only loads checkpoints in PyTorch's safe mode "
            "(tensors and plain containers), because unpickling can run arbitrary code; "
            "retrain the run with fnlab train or restore the checkpoint.pt that fnlab wrote")


def data_error(command: str, exc: BaseException) -> int:
    """Print ``exc`` as ``fnlab COMMAND: error: ...`` (one line) and return exit code 1."""
    print(f"fnlab {command}: error: {error_line(exc)}", file=sys.stderr)
    return 1


def error_line(exc: BaseException) -> str:
    """One line for an exception: what the CLI prints after ``error:``.

    Multi-line messages are joined; a folder's list of layout problems is cut to the
    first three (``fnlab data check`` lists them all); manual download steps are left
    out of a "not cached" message (``fnlab data download`` prints them when it fails).

    >>> error_line(ValueError("first line\\n  second line"))
    'first line second line'
    """
    refusal = _pickle_refusal(exc)
    if refusal:
        return refusal
    from fnlab.data.folders import DatasetLayoutError

    if isinstance(exc, DatasetLayoutError) and exc.problems:
        shown = "; ".join(f"{p}: {r}" for p, r in exc.problems[:3])
        more = len(exc.problems) - 3
        return _flatten(f"{exc.root}: {len(exc.problems)} problem(s): {shown}"
                        + (f"; ... and {more} more" if more > 0 else "")
                        + f" (fnlab data check {exc.root} lists them all)")
    text = str(exc)
    if isinstance(exc, FileNotFoundError) and "fnlab data download" in text:
        text = text.split("Manual steps:", 1)[0]
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    return _flatten(text) or type(exc).__name__


def _raised_by_fnlab(exc: BaseException) -> bool:
    """True when a ``raise`` statement in fnlab's own code raised ``exc`` (a deliberate
    error with a message for the user, not a bug surfacing from inside a library)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    try:
        inside = Path(filename).resolve().is_relative_to(_PACKAGE_DIR)
    except (OSError, ValueError):
        return False
    return inside and linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")


def is_expected(exc: BaseException) -> bool:
    """True for errors that say what is wrong with the input or the machine: fnlab's own
    exception classes and deliberate raises, missing files and other OS errors, missing
    optional packages. Anything else is reported as an internal error (a bug)."""
    if isinstance(exc, (OSError, ImportError, MemoryError)):
        return True
    if type(exc).__module__.split(".")[0] == "fnlab":
        return True
    return _raised_by_fnlab(exc)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _prog(args) -> str:
    words = [args.command] + [v for k, v in vars(args).items()
                              if k.endswith("_command") and isinstance(v, str)]
    return " ".join(["fnlab", *words])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version exit 0; a bad argument exits 2
        if exc.code in (0, None):
            raise
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    prog = _prog(args)
    import warnings

    formatwarning = warnings.formatwarning
    warnings.formatwarning = _warning_line(prog)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"{prog}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _debug():
            raise
        if is_expected(exc):
            print(f"{prog}: error: {error_line(exc)}", file=sys.stderr)
        else:
            print(f"{prog}: internal error: {type(exc).__name__}: {error_line(exc)} (rerun "
                  f"with {DEBUG_ENV}=1 for the traceback, and please report it)",
                  file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = formatwarning


def _warning_line(prog: str):
    """``warnings.formatwarning`` for the command line: one line per warning, without
    the source line Python shows (``fnlab train: warning: x.npz: md5 ... differs``).

    >>> _warning_line("fnlab train")(UserWarning("a\\nb"), UserWarning, "f.py", 3)
    'fnlab train: warning: UserWarning: a b\\n'
    """
    def format_line(message, category, filename, lineno, line=None) -> str:
        text = _flatten(str(message))
        if category.__module__.split(".")[0] != "fnlab":
            text = f"{category.__name__}: {text}"
        return f"{prog}: warning: {text}\n"

    return format_line


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
