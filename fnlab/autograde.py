"""The two grading steps that run inside the sandbox: *execute*, then *check*.

:mod:`fnlab.classroom` runs each step as ``python -I -m fnlab.autograde STEP ...``
inside its own bubblewrap sandbox (:mod:`fnlab.sandbox`):

1. ``execute NOTEBOOK SNAPSHOTS``: runs the submission top to bottom in a fresh
   kernel with no test in sight (errors do not stop it), and after each
   ``grader.check("q")`` cell and at the end saves a snapshot of the notebook's
   variables (:func:`fnlab.snapshot.save`). Everything this step leaves behind is
   the submission's to write, so nothing here is trusted later but the
   snapshots' *values*.
2. ``check PLANS SNAPSHOTS``: after every process of step 1 is gone, a fresh
   sandbox runs each question's test cases (the hidden ones included; a *plan*
   is one question's doctests, written by the grader) against that question's
   snapshot, loaded with :func:`fnlab.snapshot.load`, which runs none of the
   submission's code. Each question is checked in a forked child with no
   stdout, its own process group and a pipe for its one answer (which cases
   passed); the parent cannot be traced by it (``PR_SET_DUMPABLE`` 0), reads
   the grader's nonce from stdin only after every child is done, and prints
   one line ``FNLAB-RESULT <nonce> <json>``. The grader computes the scores
   from that line with otter's own point rules.

Both steps first cap their own memory (``RLIMIT_DATA``), file size and core
dumps; the limits pass to every process they start.

Example
-------
What the grader runs, here without a sandbox:

>>> import subprocess, sys  # doctest: +SKIP
>>> subprocess.run([sys.executable, "-I", "-m", "fnlab.autograde", "execute",
...                 "sub/00_welcome.ipynb", "sub/.snapshots"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import contextlib
import doctest
import io
import json
import os
import re
import resource
import signal
import sys
from pathlib import Path

from fnlab.snapshot import END, identifiers, load

#: First word of the line that carries step 2's answer.
RESULT_MARK = "FNLAB-RESULT"
#: A ``grader.check("name")`` call, as otter's student copies write it.
CHECK_CALL = re.compile(r"""\.check\(\s*["']([A-Za-z_][A-Za-z0-9_.-]*)["']""")


def limit_resources(memory_mb: float | None) -> None:
    """Cap this process and its children: data memory and file size at ``memory_mb``, no cores."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_mb:
        limit = int(memory_mb * 1024 * 1024)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


# --------------------------------------------------------------------------- step 1


def snapshot_cell(folder: str, labels: list[str]):
    import nbformat

    src = (f'__import__("fnlab.snapshot", fromlist=["save"]).save(globals(), {folder!r}, '
           f"{labels!r})")
    return nbformat.v4.new_code_cell(src, metadata={"tags": ["fnlab_snapshot"]})


def with_snapshots(cells: list, folder: str) -> list:
    """The cells with a snapshot after each cell that calls ``grader.check``, and one at the end."""
    out = []
    for cell in cells:
        out.append(cell)
        if cell.get("cell_type") == "code":
            names = list(dict.fromkeys(CHECK_CALL.findall(cell.get("source", ""))))
            if names:
                out.append(snapshot_cell(folder, names))
    out.append(snapshot_cell(folder, [END]))
    return out


def execute(notebook: str | Path, snapshots: str | Path) -> int:
    """Step 1: run ``notebook`` in a fresh python3 kernel, saving snapshots to ``snapshots``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    notebook = Path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    nb.cells = with_snapshots(nb.cells, str(snapshots))
    client = NotebookClient(nb, kernel_name="python3", allow_errors=True, timeout=None,
                            resources={"metadata": {"path": str(notebook.parent)}})
    try:
        client.execute()
    except DeadKernelError as exc:
        print(f"the kernel died: {exc}", file=sys.stderr)
        return 3
    return 0


# --------------------------------------------------------------------------- step 2


def run_doctest(name: str, text: str, env: dict) -> bool:
    """Whether one otter (OK-format) test case passes in ``env``, as otter runs it."""
    examples = doctest.DocTestParser().parse(text, name)
    test = doctest.DocTest([e for e in examples if isinstance(e, doctest.Example)], env, name,
                           None, None, text)
    runner = doctest.DocTestRunner(verbose=False)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        runner.run(test, clear_globs=False)
    return runner.summarize(verbose=False).failed == 0


def check_question(plan: dict, snapshots: Path) -> dict:
    """Run one question's cases against its snapshot (the final one if it has none)."""
    cases = [str(c) for c in plan["cases"]]
    label = plan["name"] if (snapshots / f"{plan['name']}.json").is_file() else END
    if not (snapshots / f"{label}.json").is_file():
        return {"passed": [False] * len(cases), "problems": {"": "no snapshot of the notebook"}}
    names = set().union(*(identifiers(c) for c in cases)) if cases else set()
    env, problems = load(snapshots, label, names)
    passed = []
    for i, case in enumerate(cases):
        try:
            passed.append(run_doctest(f"{plan['name']} {i}", case, env))
        except BaseException:  # noqa: BLE001 - a test that blows up fails
            passed.append(False)
    return {"passed": passed, "problems": problems}


def _not_traceable() -> None:
    """Make this process non-dumpable: same-user processes can no longer ptrace it or read
    its memory and file descriptors under /proc."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


def _in_child(plan: dict, snapshots: Path) -> dict:
    """Check one question in a forked child; only its answer comes back, through a pipe."""
    n = len(plan["cases"])
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's but the pipe
        try:
            os.setpgid(0, 0)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, write_end)
            os.closerange(write_end + 1, 65536)
            answer = json.dumps(check_question(plan, snapshots))
            os.write(write_end, answer.encode()[:60000])
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # anything it started and left in its group
    os.set_blocking(read_end, False)
    try:
        data = os.read(read_end, 65536)
    except BlockingIOError:
        data = b""
    os.close(read_end)
    try:
        answer = json.loads(data.decode())
        passed = answer["passed"]
        if not (isinstance(passed, list) and len(passed) == n
                and all(isinstance(p, bool) for p in passed)):
            raise ValueError
        problems = {str(k)[:100]: str(v)[:300] for k, v in dict(answer.get("problems", {})).items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {"passed": [False] * n, "problems": {"": "the check of this question failed"}}
    return {"passed": passed, "problems": problems}


def check(plans: str | Path, snapshots: str | Path) -> int:
    """Step 2: check every question planned in ``plans`` against ``snapshots``; print the result."""
    _not_traceable()
    results = {}
    for path in sorted(Path(plans).glob("*.json")):
        plan = json.loads(path.read_text(encoding="utf-8"))
        results[plan["name"]] = _in_child(plan, Path(snapshots))
    nonce = sys.stdin.readline().strip()  # read only now: no child ever had stdin
    print(f"{RESULT_MARK} {nonce} {json.dumps(results)}", flush=True)
    return 0


def parse_result(output: str, nonce: str) -> dict | None:
    """Step 2's answer from its output: the last line carrying ``nonce``, or None."""
    prefix = f"{RESULT_MARK} {nonce} "
    for line in reversed(output.splitlines()):
        if line.startswith(prefix):
            try:
                value = json.loads(line[len(prefix):])
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fnlab.autograde")
    parser.add_argument("--memory-mb", type=float, default=None)
    sub = parser.add_subparsers(dest="step", required=True)
    ex = sub.add_parser("execute")
    ex.add_argument("notebook")
    ex.add_argument("snapshots")
    ch = sub.add_parser("check")
    ch.add_argument("plans")
    ch.add_argument("snapshots")
    args = parser.parse_args(argv)
    limit_resources(args.memory_mb)
    if args.step == "execute":
        return execute(args.notebook, args.snapshots)
    return check(args.plans, args.snapshots)


if __name__ == "__main__":
    sys.exit(main())
