"""The course book builds offline, strictly (warnings are errors), with every notebook as a page.

The build runs in a temporary copy of book/ against the real notebooks/, with a fake
course run holding one "executed" notebook, so the test needs no course run.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from fnlab import book, classroom
from fnlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# a 1x1 PNG: stands in for a figure of an executed notebook
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000" "1f15c4890000000d4944415478"
    "9c63f8ffff3f0005fe02fea7d6a4ea0000000049454e44ae426082")).decode()

pytestmark = pytest.mark.slow


def _book_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "book"
    dest.mkdir()
    for name in ("_config.yml", "intro.md", "instructors.md"):
        shutil.copyfile(ROOT / "book" / name, dest / name)
    return dest


def _fake_run(tmp_path: Path, device: str = "auto") -> Path:
    """A course run folder with an executed copy of the first notebook (a figure, a table)."""
    run = tmp_path / "runs" / "20990101-000000"
    run.mkdir(parents=True)
    first = NOTEBOOKS[0]
    nb = nbformat.read(first, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code" and "parameters" not in
                c.metadata.get("tags", []))
    code.outputs = [nbformat.v4.new_output("display_data", data={"image/png": PNG,
                                                                "text/plain": "<Figure>"}),
                    nbformat.v4.new_output("stream", text="RUN-OUTPUT-MARKER\n")]
    code.execution_count = 1
    nbformat.write(nb, run / first.name)
    summary = {"profile": "smoke", "dataset": "auto", "parameters": {"device": device},
               "fnlab_version": "0", "python": "3", "total_seconds": 12.3,
               "notebooks": [{"name": first.stem, "status": "ok", "seconds": 12.3,
                              "figures": {"auc": 0.91, "fn": 4, "dataset": "synthetic"}}]}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("book")
    run = _fake_run(tmp)
    result = book.build_book(_book_copy(tmp), strict=True, runs_base=tmp / "runs", echo=False)
    return result, run


def test_strict_offline_build_makes_a_page_of_every_notebook(built):
    result, run = built
    assert result.returncode == 0, result.log[-3000:]
    assert not [w for w in result.warnings if "WARNING" in w], result.warnings
    assert set(result.pages) == {p.stem for p in NOTEBOOKS}
    assert result.ok
    assert result.sources.run == run
    index = (result.html_dir / "intro.html").read_text()  # index.html redirects to it
    for p in NOTEBOOKS:
        assert f"notebooks/{p.stem}.html" in index, f"{p.stem} missing from the table of contents"
    assert (result.html_dir / "instructors.html").is_file()


def test_pages_come_from_the_run_when_it_has_them(built):
    result, _ = built
    first = NOTEBOOKS[0].stem
    assert result.sources.pages[first] == "run"
    assert all(result.sources.pages[p.stem] == "source" for p in NOTEBOOKS[1:])
    html = result.pages[first].read_text()
    assert "RUN-OUTPUT-MARKER" in html and "<img" in html
    if len(NOTEBOOKS) > 1:
        assert any("is not in run" in n for n in result.sources.notes)


def test_instructors_page_has_cpu_timings_and_says_gpu_was_not_measured(built):
    result, _ = built
    html = re.sub(r"<[^>]+>", "", (result.html_dir / "instructors.html").read_text())
    assert "20990101-000000" in html and "12.3" in html and "0.910" in html
    assert "Not measured: no course run on a CUDA device" in html
    assert "fnlab classroom grade" in html and "FNLAB_DATA_DIR" in html


def test_book_pages_hide_solutions_and_hidden_tests(built):
    result, _ = built
    for p in NOTEBOOKS:
        page_nb = result.sources.book_dir / "notebooks" / p.name
        assert not classroom.find_leaks(p, page_nb), p.name
        assert "BEGIN SOLUTION" not in page_nb.read_text()


def test_strip_exercises_keeps_solutions_for_an_instructor_copy():
    master = json.loads(NOTEBOOKS[0].read_text())
    solutions, hidden = classroom.secret_lines(master)
    kept = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                     for c in book.strip_exercises(master, solutions=True)["cells"])
    assert all(line in kept for line in solutions + hidden)
    assert "BEGIN SOLUTION" not in kept and "BEGIN TEST CONFIG" not in kept


def test_without_a_run_the_clean_notebooks_are_used_with_a_note(tmp_path):
    book_dir = _book_copy(tmp_path)
    sources = book.prepare_book(book_dir, runs_base=tmp_path / "no-runs")
    assert sources.run is None
    assert set(sources.pages.values()) == {"source"}
    assert any("no course run found" in n for n in sources.notes)
    toc = (book_dir / "_toc.yml").read_text()
    assert all(f"- file: notebooks/{p.stem}" in toc for p in NOTEBOOKS)
    timings = (book_dir / "notebooks" / "_timings.md").read_text()
    assert "no course run was found" in timings and "Not measured" in timings


def test_gpu_runs_get_their_own_timing_table(tmp_path):
    _fake_run(tmp_path, device="cuda")
    text = book.timings_markdown(tmp_path / "runs")
    assert "no course run was found" in text  # no CPU run
    assert "Not measured: no course run on a CUDA" not in text and "20990101-000000" in text


def test_strict_build_fails_on_a_warning(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 00 · Broken\n\nSee {doc}`no-such-page`.")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbdir / "00_broken.ipynb")
    result = book.build_book(_book_copy(tmp_path), strict=True, notebooks_folder=nbdir,
                             runs_base=tmp_path / "runs", echo=False)
    assert result.returncode != 0 and not result.ok
    assert any("no-such-page" in w for w in result.warnings), result.warnings


def test_cli_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["book", "build", "--run", str(tmp_path)]) == 2
    assert "is not a course run folder" in capsys.readouterr().err


def test_timings_page_lists_the_runs_lesson_claims(tmp_path):
    run = _fake_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["notebooks"][0]["claims"] = [
        {"id": "auc_high", "statement": "s", "value": 0.91, "bound": 0.8, "op": ">=", "holds": True},
        {"id": "few_fn", "statement": "s", "value": 7, "bound": 3, "op": "<=", "holds": False}]
    (run / "summary.json").write_text(json.dumps(summary))
    text = book.timings_markdown(tmp_path / "runs")
    assert "Lesson claims of this run: 1 of 2 hold." in text
    assert "| `auc_high` | yes | 0.910 | >= 0.800 |" in text
    assert "| `few_fn` | **no** | 7 | <= 3 |" in text
