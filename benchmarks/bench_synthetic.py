"""Benchmark: synthetic chest X-rays generated per second on ONE CPU core.

Usage::

    python benchmarks/bench_synthetic.py [--smoke] [--out PATH]

Thread pools (OpenMP, OpenBLAS, MKL, numexpr) are limited to one thread *before*
NumPy is imported, so the figure is a single-core rate. Each size is generated
once to warm the caches (coordinate grids, texture banks), then timed over
``--repeats`` runs; the best run is reported (the least disturbed by other work
on the machine).

The rate is images per *CPU second of this process* (``time.process_time``):
what one core delivers, even on a shared machine where other jobs take turns
on the cores. On an idle machine it equals the wall-clock rate, which is kept
beside it (``wall_seconds``, ``wall_images_per_second``) along with the load
average, so a busy machine shows up as a gap between the two.

Writes ``benchmarks/results/synthetic.json`` (or ``--out``)::

    {"cpu_count", "numpy_version", "torch_version", "device": "cpu",
     "results": [{"size", "images", "seconds", "images_per_second", ...}],
     "goal_images_per_second_64": 2000, "goal_met": bool}

``--smoke`` generates a few hundred images per size (a quick check for tests).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fnlab.data.synthetic import generate  # noqa: E402

GOAL_64 = 2000
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "synthetic.json"


def _torch_version() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def bench(size: int, images: int, repeats: int, **settings) -> dict:
    """Time ``generate(images, image_size=size)``; return the best of ``repeats`` runs."""
    generate(64, image_size=size, seed=99, **settings)  # warm-up: grids, texture banks
    best = None
    for r in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        generate(images, image_size=size, seed=r, **settings)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if best is None or cpu < best[1]:
            best = (wall, cpu)
    wall, cpu = best
    cpu = max(cpu, 1e-9)
    return {
        "size": size,
        "images": images,
        "seconds": round(cpu, 4),
        "images_per_second": round(images / cpu, 1),
        "wall_seconds": round(wall, 4),
        "wall_images_per_second": round(images / wall, 1),
        "settings": settings,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="a few hundred images per size (seconds)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"where to write the JSON (default {DEFAULT_OUT})")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per size; the best is kept (default 3, smoke 1)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.smoke else 3)
    plan = [(64, 300 if args.smoke else 5000, {}),
            (128, 100 if args.smoke else 1000, {})]
    if not args.smoke:
        plan.insert(1, (64, 5000, {"sites": 4, "shortcut_site": 1, "images_per_patient": 3}))

    results = [bench(size, n, repeats, **settings) for size, n, settings in plan]
    rate_64 = max(r["images_per_second"] for r in results if r["size"] == 64)
    report = {
        "benchmark": "synthetic",
        "cpu_count": os.cpu_count(),
        "threads": 1,
        "numpy_version": np.__version__,
        "torch_version": _torch_version(),
        "python_version": platform.python_version(),
        "machine": platform.machine(),
        "device": "cpu",
        "smoke": bool(args.smoke),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "results": results,
        "goal_images_per_second_64": GOAL_64,
        "goal_met": bool(rate_64 >= GOAL_64),
    }

    print(f"synthetic chest X-rays, one core (numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs on the machine)")
    print(f"{'size':>5} {'images':>7} {'cpu s':>8} {'images/s':>9} {'wall s':>8} "
          f"{'wall img/s':>10}  settings")
    for r in results:
        print(f"{r['size']:>5} {r['images']:>7} {r['seconds']:>8.3f} "
              f"{r['images_per_second']:>9.0f} {r['wall_seconds']:>8.3f} "
              f"{r['wall_images_per_second']:>10.0f}  {r['settings'] or 'default'}")
    load = report["load_average"]
    if load:
        print(f"load average {load[0]:.1f} (1 min): wall clock trails CPU time when the "
              "machine is busy")
    verdict = "met" if report["goal_met"] else "NOT met"
    print(f"goal >= {GOAL_64} images/s at 64 px on one core: {verdict} ({rate_64:.0f})")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
