"""The two grading steps that run inside the sandbox: *execute*, then *check*.

:mod:`fnlab.classroom` runs each step as ``python -I -m fnlab.autograde STEP ...``
inside its own bubblewrap sandbox (:mod:`fnlab.sandbox`):

1. ``execute NOTEBOOK SNAPSHOTS``: runs the submission top to bottom in a fresh
   kernel with no test in sight (errors do not stop it), and after each
   ``grader.check("q")`` cell and at the end saves a snapshot of the notebook's
   variables (:func:`fnlab.snapshot.save`). Everything this step leaves behind is
   the submission's to write, so nothing here is trusted later but the
   snapshots' *values*.
2. ``check SNAPSHOTS``: after every process of step 1 is gone, a fresh sandbox
   reads the *plans* on stdin (each question's doctests, hidden ones included,
   the course helpers and the functions questions ask for: never a file the
   sandbox could read), and runs each question against its snapshot, loaded as
   plain data by :func:`fnlab.snapshot.load`, with the true builtins and the
   course helpers (:func:`check_question`). Each question is checked in a forked
   child with no stdout, its own process group and a pipe for its one answer
   (which cases passed); a function the question asks for runs in a process of
   its own that shares nothing but two pipes with it (:class:`StudentFunction`).
   The parent and its children cannot be traced (``PR_SET_DUMPABLE`` 0); the
   parent reads stdin to its end (plans and the grader's nonce) before anything
   else runs, and at the end prints one line ``FNLAB-RESULT <nonce> <json>``.
   The grader computes the scores from that line with otter's own point rules.
3. ``call SNAPSHOTS LABEL NAME``: the process of :class:`StudentFunction`
   (:func:`serve_function`).

Every step first caps its own memory (``RLIMIT_DATA``), file size, core dumps and
processes (``RLIMIT_NPROC``); the limits pass to every process it starts.

Example
-------
What the grader runs, here without a sandbox:

>>> import subprocess, sys  # doctest: +SKIP
>>> subprocess.run([sys.executable, "-I", "-m", "fnlab.autograde", "execute",
...                 "sub/00_welcome.ipynb", "sub/.snapshots"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import doctest
import importlib
import io
import json
import os
import pickle
import re
import resource
import select
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

from fnlab.snapshot import END, function_key, load

#: First word of the line that carries step 2's answer.
RESULT_MARK = "FNLAB-RESULT"
#: A ``grader.check("name")`` call, as otter's student copies write it.
CHECK_CALL = re.compile(r"""\.check\(\s*["']([A-Za-z_][A-Za-z0-9_.-]*)["']""")


def limit_resources(memory_mb: float | None, processes: int | None = None) -> None:
    """Cap this process and its children: data memory and file size at ``memory_mb``, no cores,
    at most ``processes`` processes and threads of this user (``RLIMIT_NPROC``; the kernel does
    not enforce it for root's processes, see :func:`fnlab.grading.grade`)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if processes:
        resource.setrlimit(resource.RLIMIT_NPROC, (int(processes), int(processes)))
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


#: Seconds one call of a function the notebook defined may take (see :class:`StudentFunction`).
CALL_TIMEOUT = 120.0
#: The largest answer such a call may send back, in bytes.
CALL_ANSWER_LIMIT = 256 * 2**20


def step_command(step: list[str], memory_mb: float | None = None,
                 processes: int | None = None) -> list[str]:
    """``python -I`` running :func:`main` of *this* fnlab with ``step``'s arguments.

    ``-I`` keeps the working folder and the environment out of ``sys.path``; this
    fnlab's folder is put first explicitly, so a sandbox that sees only the
    package's own folder imports this copy of it.
    """
    root = str(Path(__file__).resolve().parents[1])
    boot = (f"import sys; sys.path.insert(0, {root!r}); from fnlab.autograde import main; "
            "sys.exit(main())")
    limits = ["--memory-mb", f"{memory_mb:g}"] if memory_mb else []
    limits += ["--max-processes", str(int(processes))] if processes else []
    return [sys.executable, "-I", "-c", boot, *limits, *step]


def run_doctest(name: str, text: str, env: dict) -> bool:
    """Whether one otter (OK-format) test case passes in ``env``, as otter runs it."""
    examples = doctest.DocTestParser().parse(text, name)
    test = doctest.DocTest([e for e in examples if isinstance(e, doctest.Example)], env, name,
                           None, None, text)
    runner = doctest.DocTestRunner(verbose=False)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        runner.run(test, clear_globs=False)
    return runner.summarize(verbose=False).failed == 0


def free_names(cases: list[str]) -> set[str]:
    """Names the test cases read but never bind themselves: what their globals must provide.

    >>> sorted(free_names([">>> x = f(y)\n>>> assert abs(x - z) < 1\n"]))
    ['abs', 'f', 'y', 'z']
    """
    loaded, bound = set(), set()
    parser = doctest.DocTestParser()
    for case in cases:
        for example in parser.parse(case):
            if not isinstance(example, doctest.Example):
                continue
            try:
                tree = ast.parse(example.source)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Name):
                    (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
                elif isinstance(node, ast.arg):
                    bound.add(node.arg)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    bound.add(node.name)
                elif isinstance(node, ast.alias):
                    bound.add((node.asname or node.name).split(".")[0])
    return loaded - bound


class StudentFunction:
    """A function the notebook defined, called in a process of its own.

    The test calls this stand-in; the arguments (made by the test) go by pipe to a
    fresh ``python -I`` process (:func:`serve_function`) that loads the function
    with plain dill, runs it and sends back the pickled result, which comes back
    here only as plain data (:func:`fnlab.snapshot.load_value`). That process
    shares nothing with the checker but its two pipes: not the answer pipe, not the
    tests (they never touch a file in the sandbox), and it cannot trace the
    checker (``PR_SET_DUMPABLE`` 0), so the student's code can neither see the
    tests nor write the verdict. It raises :class:`StudentFunctionError` (a
    failed case) when the function raised, returned something that is not plain
    data, or ran longer than :data:`CALL_TIMEOUT`.
    """

    def __init__(self, snapshots: str | Path, label: str, name: str,
                 timeout: float = CALL_TIMEOUT):
        self.snapshots, self.label, self.name, self.timeout = str(snapshots), label, name, timeout
        self._proc: subprocess.Popen | None = None

    def __repr__(self) -> str:
        return f"<function {self.name} of the notebook>"

    def _start(self) -> subprocess.Popen:
        if self._proc is None:
            self._proc = subprocess.Popen(
                step_command(["call", self.snapshots, self.label, self.name]),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                close_fds=True)
        return self._proc

    def __call__(self, *args, **kwargs):
        from fnlab.snapshot import NotGradable, UnsafePickle, load_value

        proc = self._start()
        try:
            _send(proc.stdin, b"C", pickle.dumps((args, kwargs), protocol=4))
            kind, data = _receive(proc.stdout, time.monotonic() + self.timeout, CALL_ANSWER_LIMIT)
        except (OSError, EOFError, TimeoutError, ValueError):
            self.close()
            raise StudentFunctionError(f"{self.name} did not answer") from None
        if kind != b"R":
            raise StudentFunctionError(f"{self.name} raised an exception")
        try:
            return load_value(data, f"the result of {self.name}")
        except (UnsafePickle, NotGradable, Exception):  # noqa: BLE001 - any bad answer fails
            raise StudentFunctionError(f"{self.name} returned something not gradable") from None

    def close(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None


class StudentFunctionError(RuntimeError):
    """A function the notebook defined failed, or gave no plain answer (the case fails)."""


def _send(stream, kind: bytes, data: bytes) -> None:
    stream.write(kind + len(data).to_bytes(8, "big") + data)
    stream.flush()


def _read_exactly(fd: int, n: int, deadline: float) -> bytes:
    chunks, left = [], n
    while left:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([fd], [], [], wait)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(stream, deadline: float, limit: int) -> tuple[bytes, bytes]:
    head = _read_exactly(stream.fileno(), 9, deadline)
    size = int.from_bytes(head[1:], "big")
    if size > limit:
        raise ValueError("answer too large")
    return head[:1], _read_exactly(stream.fileno(), size, deadline)


def serve_function(snapshots: str | Path, label: str, name: str) -> int:
    """The ``call`` step: load function ``name`` of snapshot ``label`` and answer calls to it.

    Runs the student's code (its function and whatever its globals unpickle to),
    with plain dill: it is the untrusted side of :class:`StudentFunction`. Each
    request on stdin is a pickled ``(args, kwargs)``; each answer on stdout is
    ``R`` and the pickled result, or ``E`` when it raised or cannot be pickled.
    """
    import dill

    from fnlab.snapshot import function_key, names_used

    out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # the student's prints must not mix with the answers
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    folder = Path(snapshots)
    index = json.loads((folder / f"{label}.json").read_text())
    main_module = types.ModuleType("__main__")
    space = main_module.__dict__
    space["__builtins__"] = builtins

    def unpickle(key: str):
        with open(folder / "objects" / key, "rb") as f:
            unpickler = dill.Unpickler(f)
            unpickler._main = main_module
            return unpickler.load()

    key = function_key(folder, label, name)
    if key is None:
        return 1
    func = unpickle(key)
    todo, done = sorted(names_used(func)), {name}
    space[name] = func
    while todo:
        other = todo.pop()
        if other in done:
            continue
        done.add(other)
        with contextlib.suppress(Exception):
            if other in index.get("modules", {}):
                space[other] = importlib.import_module(str(index["modules"][other]))
            elif other in index.get("values", {}) or other in index.get("functions", {}):
                value = unpickle(str((index.get("values", {}) | index.get("functions", {}))[other]))
                space[other] = value
                if isinstance(value, types.FunctionType):
                    todo += sorted(names_used(value) - done)
    stdin = sys.stdin.buffer
    while True:
        try:
            kind, data = _receive(stdin, time.monotonic() + 3600, 1 << 40)
        except (EOFError, TimeoutError, ValueError, OSError):
            return 0
        try:
            args, kwargs = pickle.loads(data)
            answer = b"R", pickle.dumps(func(*args, **kwargs), protocol=4)
        except BaseException:  # noqa: BLE001 - the checker only learns that it failed
            answer = b"E", b""
        _send(out, *answer)


def check_question(plan: dict, snapshots: Path) -> dict:
    """Run one question's cases against its snapshot (the final one if it has none).

    The cases' globals: the true builtins, the course helpers of ``plan["helpers"]``
    (``name -> [module, attribute]``, from the instructor's notebook), a
    :class:`StudentFunction` for each name of ``plan["functions"]`` (the functions
    the question asks for), and every other name they read as plain data from the
    snapshot (:func:`fnlab.snapshot.load`). A name that is not gradable fails the
    whole question, with a note saying why.
    """
    cases = [str(c) for c in plan["cases"]]
    label = plan["name"] if (snapshots / f"{plan['name']}.json").is_file() else END
    if not (snapshots / f"{label}.json").is_file():
        return {"passed": [False] * len(cases), "problems": {"": "no snapshot of the notebook"}}
    names = free_names(cases) - set(dir(builtins))
    helpers = plan.get("helpers")
    functions = set(plan.get("functions") or []) & names
    env: dict = {}
    problems: dict[str, str] = {}
    if isinstance(helpers, dict):
        for name in sorted(names & set(helpers)):
            module, attr = helpers[name]
            try:
                obj = importlib.import_module(module)
                if attr and not hasattr(obj, attr):  # a submodule: `from fnlab import lab`
                    importlib.import_module(f"{module}.{attr}")
                env[name] = getattr(obj, attr) if attr else obj
            except (ImportError, AttributeError):
                problems[name] = f"course helper {module}{'.' + attr if attr else ''} is missing"
        names -= set(helpers)
    proxies = {}
    for name in sorted(functions):
        if function_key(snapshots, label, name) is not None:
            proxies[name] = StudentFunction(snapshots, label, name)
    values, more = load(snapshots, label, names - functions)
    problems.update(more)
    env.update(values)
    env.update(proxies)
    env["__builtins__"] = builtins
    passed = []
    try:
        for i, case in enumerate(cases):
            if problems:
                passed.append(False)
                continue
            try:
                passed.append(run_doctest(f"{plan['name']} {i}", case, dict(env)))
            except BaseException:  # noqa: BLE001 - a test that blows up fails
                passed.append(False)
    finally:
        for proxy in proxies.values():
            proxy.close()
    return {"passed": passed, "problems": problems}


def _not_traceable() -> None:
    """Make this process non-dumpable: same-user processes can no longer ptrace it or read
    its memory and file descriptors under /proc (its forked children inherit this)."""
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


def _read_all(fd: int = 0, limit: int = 64 * 2**20) -> bytes:
    """Everything on ``fd`` until the writer closes it (at most ``limit`` bytes)."""
    data = bytearray()
    while len(data) < limit:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def check(snapshots: str | Path) -> int:
    """Step 2: check the plans (stdin's first line) against ``snapshots``; print the result.

    stdin holds the plans (each question's name, cases, helpers and functions) and
    the nonce; both are read, to the end, before anything else happens: nothing
    in the sandbox can read the tests or the nonce afterwards (bwrap's own process
    1 still holds that pipe, and any process of the sandbox could read it through
    ``/proc/1/fd/0``), and neither ever touches a file. This process and the
    children it forks are not dumpable; a function of the notebook runs in a
    process of its own, started afresh (:class:`StudentFunction`).
    """
    _not_traceable()
    lines = _read_all().decode("utf-8", errors="replace").split("\n")
    try:
        plans = json.loads(lines[0])
    except ValueError:
        plans = None
    nonce = lines[1].strip() if len(lines) > 1 else ""
    if not isinstance(plans, list) or not nonce:
        print("no plans and nonce on stdin", file=sys.stderr)
        return 2
    results = {}
    for plan in plans:
        if isinstance(plan, dict) and isinstance(plan.get("name"), str) and isinstance(
                plan.get("cases"), list):
            results[plan["name"]] = _in_child(plan, Path(snapshots))
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
    parser.add_argument("--max-processes", type=int, default=None)
    sub = parser.add_subparsers(dest="step", required=True)
    ex = sub.add_parser("execute")
    ex.add_argument("notebook")
    ex.add_argument("snapshots")
    ch = sub.add_parser("check")
    ch.add_argument("snapshots")
    ca = sub.add_parser("call")
    ca.add_argument("snapshots")
    ca.add_argument("label")
    ca.add_argument("name")
    args = parser.parse_args(argv)
    limit_resources(args.memory_mb, args.max_processes)
    if args.step == "execute":
        return execute(args.notebook, args.snapshots)
    if args.step == "call":
        return serve_function(args.snapshots, args.label, args.name)
    return check(args.snapshots)


if __name__ == "__main__":
    sys.exit(main())
