"""How fast the command line answers (issue 22): ``fnlab --help`` and every subcommand's.

Each command runs in a fresh interpreter ``--repeats`` times; the median wall time is
reported beside that of ``python -c pass`` (the interpreter alone) and ``python -c
"import torch"`` (what the parser used to import), all in one run so that the load on a
shared machine hits every figure alike. Goal: ``fnlab --help`` under 1 s.

Usage::

    python benchmarks/bench_cli.py            # writes benchmarks/results/cli.json
    python benchmarks/bench_cli.py --smoke    # one repeat each
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # noqa: N812  (also puts the project root on sys.path)

NAME = "cli"
ROOT = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ("info", "data", "train", "evaluate", "course", "classroom", "book")


def _seconds(argv: list[str], repeats: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        times.append(time.perf_counter() - t)
        if proc.returncode not in (0, 2):
            raise C.BenchError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr[-300:]}")
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(parser, NAME)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    repeats = 1 if args.smoke else args.repeats
    py = sys.executable
    commands = {"python -c pass": [py, "-c", "pass"],
                "python -c 'import torch'": [py, "-c", "import torch"],
                "fnlab --help": [py, "-m", "fnlab", "--help"]}
    commands.update({f"fnlab {name} --help": [py, "-m", "fnlab", name, "--help"]
                     for name in SUBCOMMANDS})
    commands["fnlab train --epochs 0 (usage error)"] = [py, "-m", "fnlab", "train", "--epochs",
                                                        "0", "--out", "x"]
    load_start = C.load_average()
    measured = {label: _seconds(cmd, repeats) for label, cmd in commands.items()}
    base = measured["python -c pass"]
    rows = [[label, C.fmt(s, 3), C.fmt(s / base, 1)] for label, s in measured.items()]
    C.print_table(["command", "median seconds", "x python alone"], rows,
                  title=f"median of {repeats} fresh processes")
    top = measured["fnlab --help"]
    slowest = max(v for k, v in measured.items() if k.startswith("fnlab"))
    result = {
        "name": NAME, "title": "Command-line start-up", "smoke": bool(args.smoke),
        "machine": C.machine_info(), "command": C.command_line(argv),
        "load_average": {"start": load_start, "end": C.load_average()},
        "figures": {"repeats": repeats, "seconds": measured},
        "tables": [{"title": "Command-line start-up (median wall seconds, fresh process)",
                    "columns": ["command", "median seconds", "x python alone"], "rows": rows}],
        "goals": [C.goal("fnlab --help under 1 s", top < 1.0, f"{top:.3f} s"),
                  C.goal("every subcommand's --help and a usage error under 1 s", slowest < 1.0,
                         f"slowest {slowest:.3f} s")],
    }
    C.write_result(result, C.out_path(args, NAME))
    return 0


if __name__ == "__main__":
    sys.exit(main())
