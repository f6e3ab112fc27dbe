"""Run the course: execute every notebook in order with papermill and report.

``fnlab course run`` and ``make course`` are thin wrappers over :func:`run_course`.
Each notebook is executed into ``runs/<stamp>/``; ``summary.json`` and
``summary.md`` give, per notebook, its status, seconds and the key figures it
recorded with :func:`fnlab.recording.record`, and the lesson claims it recorded
with :func:`fnlab.recording.claim` (each ``{id, statement, value, bound, holds}``).
A failing notebook does not stop the run: it is marked failed with the failing
cell's error. :func:`claim_failures` lists what ``--check-claims`` fails on.

Example
-------
>>> [p.name for p in list_notebooks()][:1]  # doctest: +SKIP
['00_welcome.ipynb']
>>> result = run_course(["00_welcome"])  # doctest: +SKIP
>>> result.ok  # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fnlab import __version__
from fnlab.config import (
    AUTO_REASON_ENV,
    OFFLINE_ENV,
    PNEUMONIAMNIST_ENV,
    PROJECT_ROOT,
    STATIC_WIDGETS_ENV,
    offline_mode,
)
from fnlab.exercises import strip_exercises
from fnlab.fileio import atomic_write_text, write_json
from fnlab.profiles import DEFAULT_PROFILE, PROFILES
from fnlab.recording import RECORD_ENV, claim_problems, format_claim, read_claims, read_record

NOTEBOOK_PATTERN = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")
#: Notebooks that teach no measurable lesson of their own (the welcome tour) and so
#: record no claims; every other notebook must record at least one.
NO_CLAIMS_NEEDED = frozenset({"00_welcome"})


def notebooks_dir() -> Path:
    """The course's ``notebooks/`` folder (in a checkout)."""
    if PROJECT_ROOT is None:
        raise FileNotFoundError("fnlab is not running from a checkout: no notebooks/ folder")
    return PROJECT_ROOT / "notebooks"


def list_notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered course notebooks ``NN_topic.ipynb``, in order."""
    folder = Path(folder) if folder else notebooks_dir()
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))


def select_notebooks(names: list[str] | None, folder: Path | None = None) -> list[Path]:
    """Resolve names (``00_welcome``, ``00_welcome.ipynb`` or ``00``) to notebook paths.

    Raises ValueError listing the valid names when one is unknown.
    """
    available = list_notebooks(folder)
    if not names:
        return available
    by_key: dict[str, Path] = {}
    for p in available:
        by_key[p.name] = by_key[p.stem] = by_key[p.stem[:2]] = p
    chosen, unknown = [], []
    for name in names:
        key = Path(name).name
        if key in by_key:
            chosen.append(by_key[key])
        else:
            unknown.append(name)
    if unknown:
        valid = ", ".join(p.stem for p in available)
        raise ValueError(f"unknown notebook {', '.join(map(repr, unknown))}; choose from: {valid}")
    return chosen


def known_datasets() -> list[str]:
    """Dataset names a notebook's ``dataset`` parameter accepts."""
    from fnlab.data.registry import DATASETS  # here, not at the top: `fnlab --help` stays fast

    return ["auto", *DATASETS]


def validate_choices(profile: str, dataset: str) -> None:
    """Raise ValueError listing the valid choices for an unknown profile or dataset."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    datasets = known_datasets()
    if dataset not in datasets:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(datasets)}")


@dataclass
class NotebookResult:
    name: str
    status: str  # "ok" or "failed"
    seconds: float
    output: str
    error: dict | None = None
    figures: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)


@dataclass
class CourseResult:
    out_dir: Path
    profile: str
    dataset: str
    parameters: dict
    notebooks: list[NotebookResult]
    started: str
    total_seconds: float = 0.0
    #: what ``dataset="auto"`` became, and why ("" for a named dataset)
    dataset_note: str = ""

    @property
    def ok(self) -> bool:
        return all(nb.status == "ok" for nb in self.notebooks)

    def to_dict(self) -> dict:
        return {
            "fnlab_version": __version__,
            "python": platform.python_version(),
            "started": self.started,
            "profile": self.profile,
            "dataset": self.dataset,
            "dataset_note": self.dataset_note,
            "parameters": self.parameters,
            "ok": self.ok,
            "total_seconds": round(self.total_seconds, 2),
            "claims_hold": not claim_failures(self),
            "notebooks": [asdict(nb) for nb in self.notebooks],
        }


def claim_failures(result: CourseResult) -> list[str]:
    """One line per problem ``--check-claims`` fails on, naming the notebook.

    A claim that does not hold; a notebook that ran but recorded no claims (except
    :data:`NO_CLAIMS_NEEDED`), recorded one id twice or a claim without a bound; a
    notebook that failed.
    """
    out = []
    for nb in result.notebooks:
        if nb.status != "ok":
            out.append(f"{nb.name}: notebook failed, its claims were not all checked")
        problems = claim_problems(nb.claims)
        if nb.name in NO_CLAIMS_NEEDED and not nb.claims:
            problems = []
        out += [f"{nb.name}: {p}" for p in problems]
        out += [f"{nb.name}: {format_claim(c)}" for c in nb.claims if not c.get("holds")]
    return out


def _new_run_dir(base: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = base / stamp
    i = 1
    while out.exists():
        out = base / f"{stamp}-{i}"
        i += 1
    return out


def _error_of(exc: Exception, executed: Path) -> dict:
    """The failing cell and its error, from papermill's exception or the executed notebook."""
    info = {"ename": getattr(exc, "ename", type(exc).__name__),
            "evalue": str(getattr(exc, "evalue", exc)).strip()[:2000]}
    cell = getattr(exc, "exec_count", None)
    if cell is not None:
        info["execution_count"] = cell
    try:
        import nbformat

        nb = nbformat.read(executed, as_version=4)
        for i, c in enumerate(nb.cells):
            if any(o.get("output_type") == "error" for o in c.get("outputs", [])):
                info["cell_index"] = i
                info["cell_source"] = c.source[:500]
                break
    except Exception:  # the notebook may not have been written
        pass
    return info


def format_summary_md(result: CourseResult) -> str:
    """The run report as Markdown: one row per notebook with its key figures."""
    lines = [
        f"# Course run {result.out_dir.name}",
        "",
        f"- profile: `{result.profile}`, dataset: `{result.dataset}`, fnlab {__version__}",
        *([f"- dataset used: {result.dataset_note}"] if result.dataset_note else []),
        f"- status: {'all notebooks ran' if result.ok else 'SOME NOTEBOOKS FAILED'}; "
        f"total {result.total_seconds:.1f} s",
        "",
        "| notebook | status | seconds | dataset used | AUC | sensitivity | specificity | FN | notes |",
        "|---|---|---:|---|---:|---:|---:|---:|---|",
    ]

    def fmt(v):
        if v is None:
            return ""
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    known = {"dataset", "auc", "sensitivity", "specificity", "fn"}
    for nb in result.notebooks:
        f = nb.figures
        extra = ", ".join(f"{k}={fmt(v)}" for k, v in sorted(f.items())
                          if k not in known and v is not None
                          and not isinstance(v, (dict, list)))
        if nb.error:
            extra = f"{nb.error.get('ename')}: {nb.error.get('evalue', '')[:120]}"
        lines.append(
            f"| {nb.name} | {nb.status} | {nb.seconds:.1f} | {fmt(f.get('dataset'))} | "
            f"{fmt(f.get('auc'))} | {fmt(f.get('sensitivity'))} | {fmt(f.get('specificity'))} | "
            f"{fmt(f.get('fn'))} | {extra} |"
        )
    lines += ["", "## Lesson claims", "",
              "| notebook | claim | holds | value | bound | statement |",
              "|---|---|---|---:|---:|---|"]
    for nb in result.notebooks:
        for c in nb.claims:
            lines.append(f"| {nb.name} | `{c.get('id')}` | {'yes' if c.get('holds') else '**NO**'} "
                         f"| {fmt(c.get('value'))} | {c.get('op', '>=')} {fmt(c.get('bound'))} "
                         f"| {c.get('statement')} |")
    failures = claim_failures(result)
    lines += ["", "All claims hold." if not failures else
              "Problems with the claims:\n\n" + "\n".join(f"- {f}" for f in failures)]
    return "\n".join(lines) + "\n"


def write_summary(result: CourseResult) -> None:
    out = result.out_dir
    write_json(out / "summary.json", result.to_dict(), default=str)
    atomic_write_text(out / "summary.md", format_summary_md(result))


def run_course(
    notebooks: list[str] | None = None,
    *,
    profile: str = DEFAULT_PROFILE,
    dataset: str = "auto",
    device: str | None = None,
    parameters: dict | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    kernel_name: str | None = None,
    cell_timeout: int | None = 1800,
    offline: bool | None = None,
    data_path: str | Path | None = None,
    folder: str | Path | None = None,
) -> CourseResult:
    """Execute the course notebooks in order and write the run report.

    Every choice is validated before anything is written (ValueError listing
    the valid choices). ``parameters`` are passed to every notebook on top of
    ``profile``, ``dataset`` and ``device``.

    ``dataset="auto"`` is resolved once, here, before the first notebook: the real
    PneumoniaMNIST file is downloaded then when it is not cached (unless ``offline``,
    default ``$FNLAB_OFFLINE``). When there is nothing to download from, the notebooks
    run in offline mode (``FNLAB_OFFLINE=1`` in their kernels' environment) so that no
    kernel waits for the network again; the report's ``dataset_note`` says what was
    used and why. ``data_path`` names a PneumoniaMNIST ``.npz`` explicitly (a rebuilt or
    variant file): ``auto`` and ``pneumoniamnist`` use it in every notebook
    (``$FNLAB_PNEUMONIAMNIST`` in the kernels' environment). ``folder``: where the
    notebooks are (default: the checkout's ``notebooks/``).
    """
    validate_choices(profile, dataset)
    if data_path is not None:
        data_path = Path(data_path).expanduser().resolve()
        if not data_path.is_file():
            raise ValueError(f"--data-path {data_path}: file not found")
        if dataset not in ("auto", "pneumoniamnist"):
            raise ValueError(f"--data-path names a PneumoniaMNIST .npz; it cannot be used with "
                             f"--dataset {dataset}")
    paths = select_notebooks(notebooks, folder)
    if not paths:
        raise ValueError(f"no notebooks found in {folder or notebooks_dir()}")
    import papermill as pm
    from tqdm.auto import tqdm

    params = {"profile": profile, "dataset": dataset}
    if device:
        params["device"] = device
    params.update(parameters or {})

    if out is None:
        out_dir = _new_run_dir((PROJECT_ROOT or Path.cwd()) / "runs")
    else:
        # absolute: each notebook runs with notebooks/ as its working folder and writes its
        # figures to this path
        out_dir = Path(out).resolve()
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise ValueError(f"--out {out_dir} already exists and is not an empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = CourseResult(out_dir, profile, dataset, params, [],
                          datetime.now(timezone.utc).isoformat(timespec="seconds"))
    saved = {name: os.environ.get(name)
             for name in (OFFLINE_ENV, PNEUMONIAMNIST_ENV, STATIC_WIDGETS_ENV, AUTO_REASON_ENV,
                          "TQDM_DISABLE")}
    try:
        os.environ[STATIC_WIDGETS_ENV] = "1"  # no browser: widgets render as static outputs
        # no progress bars inside the kernels: a saved notebook would keep a widget stuck at
        # "0%" (tqdm reads TQDM_DISABLE; the run's own bar passes disable= and is unaffected)
        os.environ["TQDM_DISABLE"] = "1"
        if data_path is not None:
            os.environ[PNEUMONIAMNIST_ENV] = str(data_path)
        result.dataset_note = _prepare_dataset(dataset, offline)
        return _run_notebooks(result, paths, params, pm, tqdm, progress, kernel_name,
                              cell_timeout)
    finally:  # the kernels' environment ends with the run
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _prepare_dataset(dataset: str, offline: bool | None) -> str:
    """Resolve ``"auto"`` once for the whole run (see :func:`run_course`); set
    ``$FNLAB_OFFLINE`` for the kernels when they must not try the network."""
    if offline:
        os.environ[OFFLINE_ENV] = "1"
    if dataset != "auto":
        return ""
    from fnlab.data import medmnist
    from fnlab.data.registry import resolve_dataset

    name, reason = resolve_dataset("auto", offline=offline)
    if name != "pneumoniamnist" and medmnist.cached_path(28) is None and not offline_mode():
        os.environ[OFFLINE_ENV] = "1"  # the download failed: no kernel retries it
        os.environ[AUTO_REASON_ENV] = reason  # and every notebook says why in the same words
    return f"{name} ({reason})"


#: The kernel manager of course runs: on POSIX the kernel talks over IPC sockets on this
#: machine (no TCP ports opened, and no "Kernel is running over TCP without encryption"
#: warning per notebook); elsewhere Jupyter's default.
LOCAL_KERNEL_MANAGER = ("fnlab.course.LocalKernelManager" if os.name == "posix"
                        else "jupyter_client.manager.AsyncKernelManager")


def __getattr__(name):  # the kernel manager class is built on first use (jupyter_client is heavy)
    if name == "LocalKernelManager":
        from jupyter_client.manager import AsyncKernelManager

        class LocalKernelManager(AsyncKernelManager):
            """A kernel reached over IPC sockets beside its connection file (POSIX only)."""

            def __init__(self, **kwargs):
                kwargs.setdefault("transport", "ipc")
                # each kernel's sockets in a folder of its own: kernels started side by side
                # (a sweep's workers) in one working folder would otherwise share socket names
                kwargs.setdefault("ip", os.path.join(tempfile.mkdtemp(prefix="fnlab-kernel-"),
                                                     "kernel"))
                super().__init__(**kwargs)

        globals()["LocalKernelManager"] = LocalKernelManager
        return LocalKernelManager
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _reader_copy(executed: Path) -> None:
    """Rewrite an executed notebook as students read it: no otter markers, no hidden tests.

    The run copy is what a student opens; the grading machinery works from the master
    notebooks, never from these copies.
    """
    if not executed.is_file():
        return
    try:
        nb = json.loads(executed.read_text())
    except (OSError, ValueError):
        return
    if isinstance(nb, dict):
        atomic_write_text(executed, json.dumps(strip_exercises(nb), indent=1,
                                               ensure_ascii=False) + "\n")


def _run_notebooks(result, paths, params, pm, tqdm, progress, kernel_name, cell_timeout):
    out_dir = result.out_dir
    t_all = time.perf_counter()
    bar = tqdm(paths, desc="course", unit="notebook", disable=not progress, file=sys.stdout)
    for path in bar:
        bar.set_postfix_str(path.stem)
        executed = out_dir / path.name
        record_path = out_dir / f"{path.stem}.figures.json"
        old_env = os.environ.get(RECORD_ENV)
        os.environ[RECORD_ENV] = str(record_path)
        t0 = time.perf_counter()
        error = None
        try:
            pm.execute_notebook(
                str(path), str(executed), parameters=params, cwd=str(path.parent),
                progress_bar=False, kernel_name=kernel_name, execution_timeout=cell_timeout,
                kernel_manager_class=LOCAL_KERNEL_MANAGER,
            )
        except Exception as exc:  # noqa: BLE001 - any failure is recorded, the run goes on
            error = _error_of(exc, executed)
        finally:
            _reader_copy(executed)
            if old_env is None:
                os.environ.pop(RECORD_ENV, None)
            else:
                os.environ[RECORD_ENV] = old_env
        seconds = time.perf_counter() - t0
        nb = NotebookResult(path.stem, "failed" if error else "ok", round(seconds, 2),
                            executed.name, error, read_record(record_path),
                            read_claims(record_path))
        result.notebooks.append(nb)
        result.total_seconds = time.perf_counter() - t_all
        write_summary(result)  # after every notebook, so progress is never lost
        status = "ok" if not error else f"FAILED ({error['ename']}: {error['evalue'][:200]})"
        tqdm.write(f"{path.stem}: {status} in {seconds:.1f} s", file=sys.stdout)
    bar.close()
    return result


def latest_run(base: str | Path | None = None) -> Path | None:
    """The newest run folder under ``runs/`` that has a summary.json, or None."""
    base = Path(base) if base else (PROJECT_ROOT or Path.cwd()) / "runs"
    runs = sorted(p for p in base.glob("*") if (p / "summary.json").is_file())
    return runs[-1] if runs else None
