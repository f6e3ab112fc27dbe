"""The threshold slider works in a real browser: JupyterLab + headless Chromium (Playwright).

Starts JupyterLab on 127.0.0.1 (random free port, a token, a temporary root folder
holding a copy of notebooks/04_thresholds.ipynb), opens the notebook in Debian's
Chromium driven by Playwright's Python package (no browser download, ever), runs all
cells, drags the ``threshold`` slider and checks that the confusion-matrix readout
(``.fnlab-readout``, ``TP=<n> FP=<n> TN=<n> FN=<n>``) changes. Every wait is bounded;
the server and its kernels are stopped at the end.

Skips with the reason when /usr/bin/chromium or Playwright is missing
(``apt-get install chromium``; ``.ci/run`` installs it when it can).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
THRESHOLDS_NOTEBOOK = ROOT / "notebooks" / "04_thresholds.ipynb"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
READOUT = re.compile(r"TP=(\d+) FP=(\d+) TN=(\d+) FN=(\d+)")
SERVER_START_S = 120  # JupyterLab start on a busy 2-core runner
RUN_ALL_S = 420  # 04 trains (or loads) the smoke model before the widget appears
CHANGE_S = 60

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STAND_IN_CELLS = [
    "import ipywidgets as widgets\nimport numpy as np",
    "y_true = np.array([0, 0, 0, 1, 1, 1, 0, 1])\n"
    "scores = np.array([0.1, 0.35, 0.6, 0.4, 0.8, 0.95, 0.2, 0.55])",
    "def readout_text(t):\n"
    "    says = scores >= t\n"
    "    tp = int(np.sum(says & (y_true == 1))); fp = int(np.sum(says & (y_true == 0)))\n"
    "    tn = int(np.sum(~says & (y_true == 0))); fn = int(np.sum(~says & (y_true == 1)))\n"
    "    return f'<b>TP={tp} FP={fp} TN={tn} FN={fn}</b>'\n"
    "\n"
    "threshold = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01,\n"
    "                                description='threshold', continuous_update=False)\n"
    "readout = widgets.HTML(readout_text(0.5))\n"
    "readout.add_class('fnlab-readout')\n"
    "threshold.observe(lambda change: setattr(readout, 'value', readout_text(change['new'])),\n"
    "                  names='value')\n"
    "widgets.VBox([threshold, readout])",
]


def _stand_in(path: Path) -> None:
    """A notebook with exactly the widget contract of 04_thresholds (used until 04 exists)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in STAND_IN_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"JupyterLab did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and every kernel it started (they share its process group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # kernels left behind by a clean server exit


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on loopback serving a temporary folder with the notebook under test."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) "
                    "to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
    root = tmp_path / "lab"
    root.mkdir()
    if THRESHOLDS_NOTEBOOK.is_file():
        name = THRESHOLDS_NOTEBOOK.name
        shutil.copyfile(THRESHOLDS_NOTEBOOK, root / name)
    else:
        name = "04_stand_in.ipynb"
        _stand_in(root / name)
    home = tmp_path / "jupyter"
    config_dir = home / "config"
    config_dir.mkdir(parents=True)
    # Offline and quiet: no news feed, no update check, no extension-manager lookups.
    (config_dir / "jupyter_server_config.json").write_text(json.dumps({"LabApp": {
        "news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
        "extension_manager": "readonly"}}))
    # every cell stays in the DOM (no virtual scrolling), so the widget can be found anywhere
    tracker = home / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config_dir), JUPYTER_RUNTIME_DIR=str(home / "rt"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), IPYTHONDIR=str(home / "ipython"))
    env.pop("FNLAB_RECORD", None)
    env.pop("FNLAB_STATIC_WIDGETS", None)  # a browser drives this kernel: live widgets
    port, token = _free_port(), secrets.token_hex(16)
    as_root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []  # CI containers
    log = tmp_path / "jupyterlab.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser",
             "--ServerApp.open_browser=False", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", *as_root],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{base}/api/status?token={token}", proc, log, SERVER_START_S)
        yield {"url": f"{base}/lab/tree/{name}?token={token}", "log": log, "name": name}
    finally:
        _stop(proc)


def _readout(page) -> str:
    return page.locator(".fnlab-readout").first.inner_text(timeout=5_000)


def test_threshold_slider_changes_the_confusion_matrix_readout(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            try:
                _drive(page, lab)
            except Exception:
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
                raise
        finally:
            browser.close()


def _drive(page, lab) -> None:
    page.goto(lab["url"], timeout=90_000)
    page.locator(".jp-Notebook").first.wait_for(timeout=90_000)
    # the kernel must be connected and idle (the status bar moves from "No Kernel |
    # Initializing" through "Connecting" to "<kernel> | Idle") before cells are run
    page.wait_for_function(
        "() => { const bar = document.querySelector('#jp-main-statusbar')?.innerText || '';"
        " return /\\|\\s*Idle/.test(bar) && !/No Kernel/.test(bar); }", timeout=120_000)
    with contextlib.suppress(Exception):  # JupyterLab's first-start news question
        page.get_by_role("button", name="No", exact=True).click(timeout=2_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name=re.compile(r"^Run All Cells")).click()
    # the first cell gets an execution count (or *) once the kernel has taken the work
    page.wait_for_function(
        "() => /\\[(\\d+|\\*)\\]/.test(document.querySelector('.jp-CodeCell .jp-InputPrompt')?.innerText || '')",
        timeout=60_000)

    slider = page.locator(".widget-slider", has=page.get_by_text("threshold", exact=True)).first
    readout = page.locator(".fnlab-readout").first
    try:
        slider.wait_for(state="attached", timeout=RUN_ALL_S * 1000)
        page.wait_for_function(
            "() => /TP=\\d+ FP=\\d+ TN=\\d+ FN=\\d+/.test("
            "document.querySelector('.fnlab-readout')?.innerText || '')",
            timeout=60_000)
    except Exception as exc:
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        shown = [errors.nth(i).inner_text() for i in range(min(errors.count(), 3))]
        raise AssertionError(f"no threshold widget after Run All ({exc}); stderr: {shown}") from exc
    before = _readout(page)
    counts_before = READOUT.search(before).groups()

    slider.scroll_into_view_if_needed()
    readout.scroll_into_view_if_needed()
    handle = slider.locator(".noUi-handle").first
    track = slider.locator(".noUi-target, .slider").first
    box, track_box = handle.bounding_box(), track.bounding_box()
    assert box and track_box, "slider not laid out"
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    target = track_box["x"] + track_box["width"] * 0.95  # threshold ~0.95
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(target, y, steps=12)
    page.mouse.up()

    page.wait_for_function(
        "(before) => { const t = document.querySelector('.fnlab-readout')?.innerText || '';"
        " return /TP=\\d+ FP=\\d+ TN=\\d+ FN=\\d+/.test(t) && t !== before; }",
        arg=before, timeout=CHANGE_S * 1000)
    after = _readout(page)
    counts_after = READOUT.search(after).groups()
    assert counts_after != counts_before, (before, after)
    tp0, fp0, tn0, fn0 = map(int, counts_before)
    tp1, fp1, tn1, fn1 = map(int, counts_after)
    assert tp0 + fn0 == tp1 + fn1 and fp0 + tn0 == fp1 + tn1, "positives and negatives are fixed"
    assert fn1 >= fn0, "a higher threshold never misses fewer pneumonias"
