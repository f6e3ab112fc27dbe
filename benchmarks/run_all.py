"""Run every benchmark, then regenerate the README's results section from the JSON files.

``make bench`` runs this script. Each ``benchmarks/bench_*.py`` writes
``benchmarks/results/<name>.json``; the block between ``<!-- results:start -->`` and
``<!-- results:end -->`` in ``README.md`` is then rebuilt from those files (tables,
goals met / not met, machine, load average, the command to rerun). Nothing else in
the README is touched.

Usage::

    python benchmarks/run_all.py                 # every benchmark, README updated
    python benchmarks/run_all.py --full          # also the full-profile course on real data
    python benchmarks/run_all.py --smoke         # smoke forms into a temp folder, README untouched
    python benchmarks/run_all.py --only models,inference
    python benchmarks/run_all.py --report-only   # just rebuild the README block
    python benchmarks/run_all.py --wait-load 3   # wait (<= --wait-max s) for a quiet machine
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # noqa: N812

START, END = "<!-- results:start -->", "<!-- results:end -->"


# name -> (script, extra arguments); the JSON is <results>/<name>.json
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "models": ("bench_models.py", []),
    "trainer": ("bench_trainer.py", []),
    "synthetic": ("bench_synthetic.py", []),
    "inference": ("bench_inference.py", []),
    "course": ("bench_course.py", []),
    "lessons": ("bench_lessons.py", []),
    "course_full": ("bench_course.py", ["--full"]),
    "recipe": ("bench_recipe.py", []),
    "lessons_real": ("bench_lessons.py", ["--npz", "../shared/data/pneumoniamnist_28_union.npz",
                                          "--real-only", "--jobs", "2"]),
    "course_real": ("bench_course.py", ["--npz", "../shared/data/pneumoniamnist_28_union.npz"]),
    "external": ("bench_external.py", []),
}
#: order of sections in the README
ORDER = ["lessons", "lessons_real", "course", "course_real", "recipe", "external", "models",
         "trainer", "synthetic", "inference", "course_full"]


# --------------------------------------------------------------------------- running
def _supports(script: Path, flag: str, cache: dict) -> bool:
    """Whether ``script --help`` mentions ``flag`` (scripts owned by others may differ)."""
    if script not in cache:
        try:
            out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                                 text=True, timeout=120, cwd=C.ROOT)
            cache[script] = out.stdout + out.stderr
        except (OSError, subprocess.SubprocessError):
            cache[script] = ""
    return flag in cache[script]


def run_benchmark(name: str, results_dir: Path, smoke: bool, help_cache: dict,
                  extra: list[str] | None = None) -> dict:
    """Run one benchmark script into ``results_dir/<name>.json``; return its status."""
    script_name, args = BENCHMARKS[name]
    script = C.BENCH_DIR / script_name
    if not script.is_file():
        print(f"== {name}: {script_name} not present, skipped", flush=True)
        return {"name": name, "status": "missing"}
    out = results_dir / f"{name}.json"
    cmd = [sys.executable, str(script), *args, *(extra or [])]
    if smoke and _supports(script, "--smoke", help_cache):
        cmd.append("--smoke")
    if _supports(script, "--out", help_cache):
        cmd += ["--out", str(out)]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=C.ROOT)
    seconds = time.perf_counter() - t0
    status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    if proc.returncode == 0 and not out.is_file():
        default = C.RESULTS_DIR / f"{name}.json"  # a script without --out
        status = "ok" if default.is_file() else "ok, but no JSON written"
    print(f"== {name}: {status} in {seconds:.0f} s", flush=True)
    return {"name": name, "status": status, "seconds": seconds}


def wait_for_quiet(max_load: float, max_wait: float, poll: float = 60.0) -> list[float] | None:
    """Poll the 1-minute load average until it is below ``max_load`` or ``max_wait`` passes."""
    waited = 0.0
    while True:
        la = C.load_average()
        if la is None or la[0] < max_load:
            print(f"load average {la}: starting", flush=True)
            return la
        if waited >= max_wait:
            print(f"load average {la} still >= {max_load} after {waited:.0f} s: running "
                  "anyway (recorded in every JSON)", flush=True)
            return la
        print(f"load average {la} >= {max_load}: waiting ({waited:.0f}/{max_wait:.0f} s)",
              flush=True)
        time.sleep(poll)
        waited += poll


# --------------------------------------------------------------------------- rendering
TITLES = {"synthetic": "Synthetic chest X-ray generator (one core)",
          "trainer": "Trainer overhead: fnlab fit vs a bare PyTorch loop"}


def normalise(name: str, data: dict, path: Path | None = None) -> dict:
    """Fill what a results JSON written without ``_common`` lacks (title, command, date,
    load average as start/end, goals from ``goal_met``, a table from lists of rows)."""
    data = dict(data)
    data.setdefault("title", TITLES.get(name, name))
    if "command" not in data and name in BENCHMARKS:
        script, extra = BENCHMARKS[name]
        data["command"] = " ".join(["python", f"benchmarks/{script}", *extra]
                                   + (["--smoke"] if data.get("smoke") else []))
    if "date" not in data and path is not None:
        from datetime import datetime, timezone

        data["date"] = datetime.fromtimestamp(path.stat().st_mtime,
                                              timezone.utc).isoformat(timespec="seconds")
    la = data.get("load_average")
    if isinstance(la, (list, tuple)):
        data["load_average"] = {"start": [round(float(v), 2) for v in la], "end": None}
    if "goals" not in data and isinstance(data.get("goal_met"), bool):
        targets = ", ".join(f"{k[5:]} >= {v}" for k, v in data.items()
                            if k.startswith("goal_") and k != "goal_met")
        data["goals"] = [C.goal(targets or "goal", data["goal_met"])]
    if not data.get("table") and not data.get("tables") and "figures" not in data:
        tables, scalars = [], []
        for key, value in data.items():
            if key in ("goals", "notes"):
                continue
            if (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
                cols = [k for k in value[0] if not isinstance(value[0][k], (dict, list))]
                rows = [[_auto(v.get(c)) for c in cols] for v in value]
                extra = [", ".join(f"{k}={x}" for k, x in (v.get("settings") or {}).items())
                         or "default" for v in value] if "settings" in value[0] else None
                if extra:
                    cols, rows = cols + ["settings"], [r + [e] for r, e in zip(rows, extra)]
                tables.append({"title": key, "columns": cols, "rows": rows})
        if tables:
            data["tables"] = tables
        else:
            _flatten("", {k: v for k, v in data.items() if k not in ("machine",)}, scalars)
            data["tables"] = [{"columns": ["figure", "value"], "rows": scalars[:60]}]
    return data


def load_results(results_dir: Path) -> dict[str, dict]:
    """Every ``*.json`` in ``results_dir`` by name, README order first."""
    found = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            data = C.read_result(path)
        except ValueError as exc:
            print(f"skipping {exc}", file=sys.stderr)
            continue
        if isinstance(data, dict):
            found[path.stem] = normalise(path.stem, data, path)
    ordered = {n: found[n] for n in ORDER if n in found}
    ordered.update({n: d for n, d in found.items() if n not in ordered})
    return ordered


def _auto(value) -> str:
    """A cell: strings as they are, floats >= 100 without decimals, else 3 decimals."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and abs(value) >= 100:
        return C.fmt(value, 0)
    return C.fmt(value)


def _flatten(prefix: str, value, out: list) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        out.append([prefix, _auto(value)])


def _goal_lines(goals) -> list[str]:
    if isinstance(goals, dict):  # {"text": bool} written by other scripts
        goals = [{"goal": k, "met": v, "detail": ""} for k, v in goals.items()]
    lines = []
    for g in goals or []:
        if not isinstance(g, dict):
            continue
        met = g.get("met")
        tag = ("**goal met**" if met else "**goal not met**" if met is not None
               else "**goal not measured**")
        detail = f": {g['detail']}" if g.get("detail") else ""
        lines.append(f"- {tag} — {g.get('goal', '?')}{detail}")
    return lines


def _load_line(data: dict) -> str:
    la = data.get("load_average") or {}
    if isinstance(la, (list, tuple)):
        la = {"start": list(la)}
    start, end = la.get("start"), la.get("end")
    cpus = data.get("cpu_count") or 1
    text = (f"load average (1/5/15 min) at start {start}, at end {end}"
            if start or end else "load average not recorded")
    if start and start[0] > cpus:
        text += (f" — **measured on a busy machine ({start[0]} runnable on {cpus} cores): "
                 "timings are inflated**")
    return text


def render_section(name: str, data: dict) -> str:
    """One benchmark's Markdown: heading, tables, goals, notes, how it was measured."""
    title = data.get("title", name)
    if data.get("smoke"):
        title += " (SMOKE run, not meaningful)"
    parts = [f"### {title}", ""]
    tables = list(data.get("tables") or [])
    if data.get("table"):
        tables.insert(0, data["table"])
    if not tables:  # a script without tables: its scalar figures
        rows: list = []
        _flatten("", data.get("figures", {}), rows)
        tables = [{"columns": ["figure", "value"], "rows": rows[:60]}]
    for t in tables:
        if t.get("title"):
            parts += [f"**{t['title']}**", ""]
        parts += [C.markdown_table(t.get("columns", []), t.get("rows", [])), ""]
        if t.get("caption"):
            parts += [f"_{t['caption']}_", ""]
    goals = _goal_lines(data.get("goals"))
    if goals:
        parts += goals + [""]
    for note in data.get("notes") or []:
        parts.append(f"- {note}")
    if data.get("notes"):
        parts.append("")
    wall = data.get("wall_seconds")
    parts += [
        f"Measured {data.get('date', '?')} on {data.get('cpu_count', '?')} CPU(s), torch "
        f"{data.get('torch_version', '?')}, device {data.get('device', '?')}"
        + (f", {float(wall) / 60:.1f} min" if isinstance(wall, (int, float)) else "")
        + f"; {_load_line(data)}. Rerun: `{data.get('command', 'python benchmarks/run_all.py')}`",
        "",
    ]
    return "\n".join(parts)


def render_results(results_dir: Path, command: str = "make bench") -> str:
    """The README block: goals at a glance, then one section per results JSON."""
    results = load_results(results_dir)
    if not results:
        return f"Not yet measured: run `{command}`.\n"
    any_ = next(iter(results.values()))
    machine = any_.get("machine") or {}
    lines = [
        f"_Generated by `benchmarks/run_all.py` from `benchmarks/results/*.json`; do not edit "
        f"by hand. Rerun everything with `{command}` "
        "(`python benchmarks/run_all.py --full` adds the full-profile course)._",
        "",
        f"Machine: {machine.get('cpu_count', any_.get('cpu_count', '?'))} CPU(s) "
        f"({machine.get('cpu_model', '?')}), Python {machine.get('python', '?')}, torch "
        f"{machine.get('torch_version', any_.get('torch_version', '?'))}, "
        f"{'CUDA ' + machine['cuda_device'] if machine.get('cuda_device') else 'no GPU'}.",
        "",
    ]
    glance = []
    for name, data in results.items():
        for line in _goal_lines(data.get("goals")):
            glance.append(line.replace("- ", f"- {data.get('title', name)}: ", 1))
    if glance:
        lines += ["**Goals at a glance**", ""] + glance + [""]
    sections = [render_section(name, data).rstrip() for name, data in results.items()]
    return ("\n".join(lines) + "\n" + "\n\n".join(sections)).rstrip() + "\n"


def update_readme(readme: Path, block: str) -> None:
    """Replace the text between the results markers in ``readme`` with ``block``."""
    readme = Path(readme)
    text = readme.read_text()
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise ValueError(f"{readme}: no '{START}' ... '{END}' markers to fill")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{block}{END}{tail}")
    print(f"updated the results block of {readme}", flush=True)


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="the quick forms, into a temp folder; the README is left alone "
                        "unless --readme is given")
    p.add_argument("--full", action="store_true",
                   help="also the full-profile course on real 28 px data (~30 min)")
    p.add_argument("--only", default=None, help=f"comma list of: {', '.join(BENCHMARKS)}")
    p.add_argument("--skip", default="", help="comma list of benchmarks to leave out")
    p.add_argument("--results-dir", default=None,
                   help="where the JSON files go (default benchmarks/results; smoke: "
                        "$TMPDIR/fnlab-bench-smoke)")
    p.add_argument("--readme", default=None,
                   help="README to update (default README.md; none with --smoke)")
    p.add_argument("--no-readme", action="store_true", help="do not touch any README")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing; rebuild the README block from the JSON files")
    p.add_argument("--wait-load", type=float, default=None,
                   help="wait until the 1-minute load average is below this before starting")
    p.add_argument("--wait-max", type=float, default=3600.0,
                   help="longest wait for --wait-load, in seconds (default 3600)")
    args = p.parse_args(argv)
    names = ([n.strip() for n in args.only.split(",") if n.strip()] if args.only
             else [n for n in ORDER if n != "course_full" or args.full])
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    bad = sorted((set(names) | skip) - set(BENCHMARKS))
    if bad:
        p.error(f"unknown benchmark(s) {bad}; choose from: {', '.join(BENCHMARKS)}")
    args.names = [n for n in names if n not in skip]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    results_dir = Path(args.results_dir) if args.results_dir else (
        C.smoke_dir() if args.smoke else C.RESULTS_DIR)
    results_dir.mkdir(parents=True, exist_ok=True)
    statuses = []
    if not args.report_only:
        if args.wait_load is not None:
            wait_for_quiet(args.wait_load, args.wait_max)
        help_cache: dict = {}
        for name in args.names:
            statuses.append(run_benchmark(name, results_dir, args.smoke, help_cache))
    readme = None if args.no_readme else (
        Path(args.readme) if args.readme else None if args.smoke else C.ROOT / "README.md")
    block = render_results(results_dir)
    if readme is not None:
        update_readme(readme, block)
    else:
        print(block)
    print(f"results in {results_dir}")
    failed = [s for s in statuses if not s["status"].startswith(("ok", "missing"))]
    for s in statuses:
        print(f"  {s['name']}: {s['status']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
