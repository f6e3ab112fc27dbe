"""A ``.npz`` decompression bomb is refused fast and cheaply (issue 23, item 5).

Builds a 3.8 MB ``.npz`` whose ``train_images.npy`` inflates to 3.8 GB of zeros (see
``tests/support.py:write_npz_bomb``) and, in a fresh process for each reader
(``fnlab.data.check.check_path``, ``fnlab.data.medmnist.load_npz``, the registry's
``load_dataset`` that ``fnlab train`` uses), measures the seconds to the refusal and
the peak memory it added (``ru_maxrss`` after the call minus before it, the imports
done first). Goals: refused in under a second, using under 100 MB.

Usage::

    python benchmarks/bench_npz_bomb.py            # writes benchmarks/results/npz_bomb.json
    python benchmarks/bench_npz_bomb.py --smoke    # a 0.5 GB bomb
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as C  # noqa: N812  (also puts the project root on sys.path)

NAME = "npz_bomb"
ROOT = Path(__file__).resolve().parent.parent

READERS = {
    "data check": "from fnlab.data.check import check_path as f; call = lambda p: f(p).problems",
    "load_npz": "from fnlab.data.medmnist import load_npz as f; call = lambda p: f(p)",
    "train's loader": ("from fnlab.data.registry import load_dataset as f; "
                       "call = lambda p: f('pneumoniamnist', data_path=p)"),
}

PROBE = """
import json, resource, sys, time
{setup}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    out = call(sys.argv[1]); refused = bool(out) and isinstance(out, list)
    why = out[0] if refused else "loaded"
except Exception as exc:
    refused, why = True, f"{{type(exc).__name__}}: {{exc}}"
seconds = time.perf_counter() - t
added = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({{"refused": refused, "seconds": seconds, "added_mb": added, "why": why}}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_args(parser, NAME)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from support import write_npz_bomb

    shape = (10_000, 224, 224) if args.smoke else (76_000, 224, 224)
    with tempfile.TemporaryDirectory() as tmp:
        bomb = write_npz_bomb(Path(tmp) / "bomb.npz", shape=shape)
        on_disk = bomb.stat().st_size
        rows, measured = [], {}
        for reader, setup in READERS.items():
            proc = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup), str(bomb)],
                                  capture_output=True, text=True, timeout=600,
                                  env={**__import__("os").environ, "PYTHONPATH": str(ROOT),
                                       "OMP_NUM_THREADS": "1"})
            if proc.returncode:
                raise C.BenchError(f"{reader}: {proc.stderr.strip()[-500:]}")
            m = json.loads(proc.stdout.strip().splitlines()[-1])
            measured[reader] = m
            rows.append([reader, "yes" if m["refused"] else "NO", C.fmt(m["seconds"], 3),
                         C.fmt(m["added_mb"], 1), m["why"][:90]])
    inflated = 1 * shape[0] * shape[1] * shape[2]
    C.print_table(["reader", "refused", "seconds", "added MB", "reason"], rows,
                  title=f"bomb: {on_disk / 1e6:.1f} MB on disk, {inflated / 1e9:.2f} GB inflated")
    worst_s = max(m["seconds"] for m in measured.values())
    worst_mb = max(m["added_mb"] for m in measured.values())
    all_refused = all(m["refused"] for m in measured.values())
    result = {
        "name": NAME, "machine": C.machine_info(), "command": C.command_line(argv),
        "bomb": {"bytes_on_disk": on_disk, "bytes_inflated": inflated, "shape": shape},
        "readers": measured,
        "goals": [C.goal("refused by every reader", all_refused),
                  C.goal("refused in under 1 s", all_refused and worst_s < 1.0,
                         f"slowest {worst_s:.3f} s"),
                  C.goal("under 100 MB added", all_refused and worst_mb < 100,
                         f"largest {worst_mb:.1f} MB")],
    }
    C.write_result(result, C.out_path(args, NAME))
    return 0 if all_refused else 1


if __name__ == "__main__":
    sys.exit(main())
