"""Course sweeps and grading on Dask: a real LocalCluster (2 workers, loopback only).

The sweep runs tiny notebooks in the smoke profile (the point is the machinery:
cells, retries, resume, the report), reached by the scheduler's address, the code
path of a remote cluster. One cluster serves the whole module; a test that kills a
worker waits for the nanny to bring it back.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from fnlab import course, sweep
from fnlab.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:Traits should be given as instances")

TINY_TRAIN = '''
import numpy as np
from fnlab.data.imageset import ImageSet
from fnlab.recording import claim, record
from fnlab.runs import get_or_train
from fnlab.train import TrainConfig

rng = np.random.default_rng(0)
def make(split, k):
    y = np.arange(k) % 2
    x = (rng.random((k, 16, 16)) * 90).astype(np.uint8)
    x[y == 1, 4:10, 4:12] += 120
    return ImageSet(x, y, split=split, source="tiny")
data = {"train": make("train", 64), "val": make("val", 32), "test": make("test", 32)}
# the same Run for every seed: the cells share it through the shared data folder
cfg = TrainConfig(dataset="tiny", model="smallcnn", model_kwargs={"width": 8}, epochs=1,
                  batch_size=16, augment=None, progress=False, device="cpu", seed=0)
run = get_or_train(cfg, data=data, ci=False)
record(cached=bool(run.cached), sensitivity=float(run.metrics["test"]["sensitivity"]))
claim("run_ready", "the shared Run is there", 1, 1)
'''
CLAIMS = ('from fnlab.recording import claim, record\n'
          'record(auc=0.80 + 0.01 * seed, fn=3 - seed)\n'
          'claim("auc_ok", "AUC at least 0.8", 0.80 + 0.01 * seed, 0.8)')


def _notebook(path: Path, *cells: str, kernel: str = "python3") -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\ndataset = "auto"\ndevice = "auto"\n'
                                       'seed = 0')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def kernels_dir(tmp_path_factory) -> Path:
    """A Jupyter data folder the workers search (JUPYTER_PATH) for extra kernelspecs."""
    return tmp_path_factory.mktemp("jupyter")


@pytest.fixture(scope="module")
def cluster(kernels_dir):
    """A LocalCluster of 2 single-thread worker processes on loopback."""
    from distributed import Client, LocalCluster

    env = {"JUPYTER_PATH": str(kernels_dir), "FNLAB_OFFLINE": "1"}
    lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, env=env)
    client = Client(lc, set_as_default=False)
    yield lc, client
    client.close()
    lc.close()


@pytest.fixture
def address(cluster) -> str:
    lc, client = cluster
    client.wait_for_workers(2, timeout=120)
    return lc.scheduler_address


@pytest.fixture
def course_dir(tmp_path, monkeypatch):
    """An empty notebooks/ folder that the sweep uses as the course."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    monkeypatch.setattr(course, "notebooks_dir", lambda: nbdir)
    return nbdir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sweep_argv(out: Path, *extra: str) -> list[str]:
    return ["course", "sweep", "--datasets", "synthetic", "--profiles", "smoke", "--out",
            str(out), "--data-dir", str(out.parent / "data"), "--no-progress", *extra]


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("extra, expected", [
    (["--seeds"], "empty grid: no seeds"),
    (["--datasets"], "empty grid: no datasets; choose from: auto, synthetic"),
    (["--profiles", "smoke", "huge"], "unknown profile 'huge'; choose from: lessons, smoke, full"),
    (["--datasets", "imagenet"], "unknown dataset 'imagenet'; choose from: auto, synthetic"),
    (["99_nothing"], "unknown notebook '99_nothing'; choose from: 00_a"),
    (["-p", "seed", "3"], "parameter seed is set by the sweep (use --seeds"),
    (["--profiles", "smoke", "00"], "--profiles took '00', a notebook: put NOTEBOOKs before"),
    (["--seeds", "0", "00"], "--seeds took '00', a notebook"),
    (["--seeds", "-1"], "--seeds '-1': seeds are non-negative integers"),
    (["--scheduler", "my laptop"], "use local (a LocalCluster on this machine) or a scheduler"),
    (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers sizes a local cluster"),
])
def test_bad_choices_exit_2_with_the_valid_ones_and_write_nothing(course_dir, capsys, extra,
                                                                  expected):
    _notebook(course_dir / "00_a.ipynb", "x = 1")
    out = course_dir.parent / "out"
    assert main(["course", "sweep", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_used_out_folder_needs_resume(course_dir, capsys):
    _notebook(course_dir / "00_a.ipynb", "x = 1")
    out = course_dir.parent / "used"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["course", "sweep", "--out", str(out)]) == 2
    assert "pass --resume to continue the sweep in it" in capsys.readouterr().err


def test_unreachable_scheduler_is_one_line_within_seconds(course_dir, capsys):
    _notebook(course_dir / "00_a.ipynb", "x = 1")
    address = f"tcp://127.0.0.1:{_free_port()}"
    out = course_dir.parent / "out"
    start = time.monotonic()
    assert main(["course", "sweep", "--scheduler", address, "--out", str(out)]) == 2
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot reach the Dask scheduler at {address}" in err
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------- sweeps
@pytest.mark.slow
def test_two_seeds_by_two_notebooks_report_claims_and_a_shared_run(course_dir, address,
                                                                   capsys):
    _notebook(course_dir / "00_claims.ipynb", CLAIMS)
    _notebook(course_dir / "01_shared_run.ipynb", TINY_TRAIN)
    out = course_dir.parent / "sweep"
    rc = main(_sweep_argv(out, "--seeds", "0", "1", "--scheduler", address, "--check-claims"))
    printed = capsys.readouterr().out
    assert rc == 0, printed
    report = json.loads((out / "sweep.json").read_text())
    assert report["ok"] and report["claims_hold"] and report["retries"] == 0
    cells = {c["id"]: c for c in report["cells"]}
    assert list(cells) == ["synthetic-smoke-s0", "synthetic-smoke-s1"]
    for c in cells.values():
        assert c["status"] == "ok" and c["seconds"] > 0 and len(c["attempts"]) == 1
        assert [nb["name"] for nb in c["notebooks"]] == ["00_claims", "01_shared_run"]
        assert c["data_note"] == "shared" and c["data_dir"] == str(out.parent / "data")
        assert (out / c["id"] / "attempt-1" / "00_claims.ipynb").is_file()
    # one cell trained the Run, the other waited for it (the per-key lock) and loaded it
    cached = sorted(c["notebooks"][1]["figures"]["cached"] for c in cells.values())
    assert cached == [False, True]
    claims = {row["key"]: row for row in report["claims"]}
    assert set(claims) == {"00_claims:auc_ok", "01_shared_run:run_ready"}
    assert claims["00_claims:auc_ok"]["cells"]["synthetic-smoke-s1"] == {"value": 0.81,
                                                                          "holds": True}
    md = (out / "sweep.md").read_text()
    assert "| claim | bound | synthetic-smoke-s0 | synthetic-smoke-s1 |" in md
    assert "| `00_claims:auc_ok` | >= 0.800 | 0.800 ✓ | 0.810 ✓ |" in md
    assert "[summary](synthetic-smoke-s0/attempt-1/summary.md)" in md
    assert (out / "sweep.png").stat().st_size > 1000 and "](sweep.png)" in md
    assert "lesson claims: 4 of 4 hold" in printed

    # --resume: every cell already ran, so nothing runs again
    rc = main(_sweep_argv(out, "--seeds", "0", "1", "--scheduler", address, "--resume"))
    assert rc == 0
    again = json.loads((out / "sweep.json").read_text())
    assert all(c["resumed"] for c in again["cells"])
    assert not list(out.glob("*/attempt-2*"))


@pytest.mark.slow
def test_a_notebook_error_is_reported_with_its_cell_and_resume_reruns_only_that_cell(
        course_dir, address, capsys):
    _notebook(course_dir / "00_claims.ipynb", CLAIMS,
              "if seed == 1:\n    raise ValueError('boom at seed 1')")
    out = course_dir.parent / "sweep"
    assert main(_sweep_argv(out, "--seeds", "0", "1", "--scheduler", address)) == 1
    report = json.loads((out / "sweep.json").read_text())
    s0, s1 = report["cells"]
    assert s0["status"] == "ok" and s1["status"] == "failed"
    assert s1["notebooks"][0]["error"]["evalue"] == "boom at seed 1"
    md = (out / "sweep.md").read_text()
    assert "| synthetic-smoke-s1 | failed |" in md and "boom at seed 1" in md
    assert "synthetic-smoke-s1 (failed)" in capsys.readouterr().out

    # fixed: --resume runs the failed cell again, and not the one that ran
    _notebook(course_dir / "00_claims.ipynb", CLAIMS)
    assert main(_sweep_argv(out, "--seeds", "0", "1", "--scheduler", address, "--resume")) == 0
    report = json.loads((out / "sweep.json").read_text())
    s0, s1 = report["cells"]
    assert s0.get("resumed") and s0["attempt"] == 1
    assert s1["status"] == "ok" and s1["attempt"] == 2 and s1["retries"] == 1
    assert not (out / s0["id"] / "attempt-2.json").exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_worker_killed_mid_cell_gets_the_cell_retried(course_dir, address, cluster):
    _notebook(course_dir / "00_sleep.ipynb",
              "import time\nfrom fnlab.recording import claim\ntime.sleep(6)\n"
              "claim('slept', 'slept', 1, 1)")
    out = course_dir.parent / "sweep"
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("rc", main(
        _sweep_argv(out, "--seeds", "0", "1", "--scheduler", address))))
    thread.start()
    meta = out / "synthetic-smoke-s0" / "attempt-1.json"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # wait until the notebook is running in its kernel
        info = json.loads(meta.read_text()) if meta.is_file() else {}
        if info.get("cell_pid") and (out / "synthetic-smoke-s0" / "attempt-1" /
                                     "00_sleep.ipynb").is_file():
            break
        time.sleep(0.2)
    else:
        pytest.fail("the cell never started")
    time.sleep(1.0)
    os.kill(info["worker_pid"], signal.SIGKILL)  # the worker dies mid-cell
    thread.join(180)
    assert not thread.is_alive() and box["rc"] == 0
    report = json.loads((out / "sweep.json").read_text())
    s0, s1 = report["cells"]
    assert s0["status"] == s1["status"] == "ok"
    assert s0["retries"] == 1 and s1["retries"] == 0 and report["retries"] == 1
    first, second = s0["attempts"]
    assert first["outcome"].startswith("did not finish") and second["outcome"] == "ok"
    assert first["worker_pid"] != second["worker_pid"]
    assert s0["run"] == "attempt-2" and s0["notebooks"][0]["claims"][0]["holds"]
    md = (out / "sweep.md").read_text()
    assert "attempt 1 on tcp://" in md and "did not finish" in md
    time.sleep(2)
    assert not _alive(first["cell_pid"]), "the killed worker's cell process lives on"


FLAKY = '''
import os, sys
marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "failed-once")
if not os.path.exists(marker):
    open(marker, "w").close()
    sys.exit(1)
from ipykernel import kernelapp
kernelapp.launch_new_instance()
'''


@pytest.mark.slow
def test_a_kernel_that_fails_to_start_is_retried_on_another_worker(course_dir, address,
                                                                   kernels_dir):
    spec = kernels_dir / "kernels" / "fnlab-flaky"
    spec.mkdir(parents=True)
    (spec / "flaky.py").write_text(FLAKY)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(spec / "flaky.py"), "-f", "{connection_file}"],
        "display_name": "flaky", "language": "python"}))
    _notebook(course_dir / "00_flaky.ipynb", "from fnlab.recording import claim\n"
              "claim('ran', 'it ran', 1, 1)", kernel="fnlab-flaky")
    out = course_dir.parent / "sweep"
    assert main(_sweep_argv(out, "--seeds", "0", "--scheduler", address)) == 0
    (cell,) = json.loads((out / "sweep.json").read_text())["cells"]
    assert cell["status"] == "ok" and cell["retries"] == 1
    first, second = cell["attempts"]
    assert "a kernel failed to start" in first["outcome"]
    assert first["worker"] != second["worker"], "retried on another worker"
    assert "kernel failed to start" in (out / "sweep.md").read_text()


def test_a_worker_without_the_shared_folder_uses_its_own(course_dir, tmp_path, monkeypatch):
    _notebook(course_dir / "00_env.ipynb", "import os\nfrom fnlab.recording import record\n"
              "record(data=os.environ['FNLAB_DATA_DIR'])")
    own = tmp_path / "own-data"
    monkeypatch.setenv("FNLAB_DATA_DIR", str(own))
    spec = {"sweep": "t", "id": "synthetic-smoke-s0", "dataset": "synthetic", "profile": "smoke",
            "seed": 0, "notebooks": ["00_env"], "folder": str(course_dir),
            "parameters": {"seed": 0}, "device": None, "data_path": None, "offline": True,
            "cell_dir": str(tmp_path / "sweep" / "synthetic-smoke-s0"),
            "data_dir": str(tmp_path / "not-mounted-here"), "fresh_data": False,
            "threads": 1, "max_attempts": 1, "timeout": 120}
    res = sweep.run_cell(spec)  # directly, as a worker would
    assert res["status"] == "ok" and res["data_dir"] == str(own)
    assert "not-mounted-here is not reachable from this worker" in res["data_note"]
    assert res["notebooks"][0]["figures"]["data"] == str(own)
    assert json.loads((Path(spec["cell_dir"]) / "cell.json").read_text())["status"] == "ok"


# --------------------------------------------------------------------------- grading
STUB = 'class _Grader:\n    def check(self, name):\n        pass\n\ngrader = _Grader()'
HONEST = [STUB, "tp, fn = 184, 16\nsensitivity = tp / (tp + fn)", 'grader.check("q1_sensitivity")',
          "missed_per_1000 = 1000 * 0.10 * (1 - sensitivity)",
          'grader.check("q2_missed_per_1000")']
HALF = [STUB, "sensitivity = 0.92", 'grader.check("q1_sensitivity")', "missed_per_1000 = ...",
        'grader.check("q2_missed_per_1000")']


@pytest.mark.slow
def test_grading_through_the_scheduler_gives_the_same_csv(address, tmp_path, monkeypatch,
                                                          capsys):
    from fnlab import classroom, sandbox

    try:
        sandbox.check_bwrap()
    except sandbox.SandboxUnavailable as exc:
        pytest.skip(str(exc))
    made = classroom.make_student_copies(["00_welcome"], out=tmp_path / "student",
                                         grading=tmp_path / "grading")[0]
    subs = tmp_path / "subs"
    subs.mkdir()
    for name, cells in (("alice", HONEST), ("bob", HALF)):
        nb = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(s) for s in cells],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                     "language": "python"},
                      "otter": {"assignment_name": "00_welcome"}})
        nbformat.write(nb, subs / f"{name}.ipynb")
    (subs / "carol.ipynb").write_text("{not json")
    monkeypatch.chdir(tmp_path)  # relative names, as an instructor types them
    names = [f"subs/{n}.ipynb" for n in ("alice", "bob", "carol")]
    common = ["classroom", "grade", *names, "--autograder", str(made.autograder.parent),
              "--timeout", "600"]
    assert main([*common, "--out", "local.csv"]) == 1  # carol cannot be graded
    assert main([*common, "--out", "dask.csv", "--scheduler", address]) == 1
    assert (tmp_path / "dask.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    with open(tmp_path / "dask.csv") as f:
        totals = {r["submission"]: r for r in csv.DictReader(f) if r["question"] == "TOTAL"}
    assert list(totals) == names
    assert float(totals["subs/alice.ipynb"]["score"]) == 2.0
    assert float(totals["subs/bob.ipynb"]["score"]) == 1.0
    assert totals["subs/carol.ipynb"]["note"].startswith("subs/carol.ipynb: not a readable")
    capsys.readouterr()
    bad = f"tcp://127.0.0.1:{_free_port()}"
    assert main([*common, "--out", "x.csv", "--scheduler", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot reach the Dask scheduler" in err
    assert main([*common, "--out", "x.csv", "--scheduler", address, "--jobs", "2"]) == 2
