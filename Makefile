# fnlab — every target creates the virtual environment (.venv) first when it is missing,
# so on a fresh clone one command does all the set-up. Versions come from constraints.txt.

PYTHON    ?= python3
VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.fnlab-installed
PROFILE   ?= lessons
DATASET   ?= auto
NOTEBOOKS ?=
PYTEST_ARGS ?=
# the notebooks under nbval fail a cell whose lesson claim does not hold (FNLAB_STRICT_CLAIMS=1);
# CLAIMS=yes also runs the whole course with --check-claims at the end (a run folder and summary)
CLAIMS    ?= no
# NOTEBOOK_TESTS=no leaves out the nbval run of the notebooks (unit tests alone)
NOTEBOOK_TESTS ?= yes

.PHONY: help setup course test lint lab book student grade bench clean-notebooks clean

help:
	@echo "make course   run every notebook with papermill into runs/<stamp>/ (PROFILE=lessons|smoke|full, DATASET=auto|...)"
	@echo "              DATASET=auto: real PneumoniaMNIST (cached, or downloaded once, ~4 MB); synthetic offline"
	@echo "              or when the download fails (FNLAB_OFFLINE=1 make course: never download)"
	@echo "make test     the whole test suite: unit, notebooks (nbval), real data, classroom, book, browser, lint;"
	@echo "              every notebook fails on a lesson claim that does not hold (CLAIMS=yes: also a course run)"
	@echo "make lab      open the notebooks in JupyterLab"
	@echo "make book     build the course book (offline) from the latest course run"
	@echo "make student  write student copies of the notebooks (solutions removed) to student/"
	@echo "make grade    grade SUBMISSIONS (default submissions/*.ipynb) in the sandbox into grades.csv"
	@echo "make bench    run every benchmark and regenerate benchmarks/results and the README table"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $@

setup: $(STAMP)

course: $(STAMP)
	$(PY) -m fnlab course run --profile $(PROFILE) --dataset $(DATASET) $(NOTEBOOKS)

# the tests never try the network: FNLAB_OFFLINE=1 (dataset=auto: cached official file or synthetic)
test: $(STAMP)
	$(PY) -m ruff check fnlab tests benchmarks tools notebooks
	FNLAB_OFFLINE=1 FNLAB_STATIC_WIDGETS=1 $(PY) -m pytest tests $(PYTEST_ARGS); unit=$$?; nb=0; \
	if [ "$(NOTEBOOK_TESTS)" != "no" ]; then \
	    FNLAB_OFFLINE=1 FNLAB_STATIC_WIDGETS=1 FNLAB_STRICT_CLAIMS=1 $(PY) -m pytest notebooks \
	        --nbval-lax --nbval-cell-timeout=600; nb=$$?; fi; \
	[ $$unit -eq 0 ] && [ $$nb -eq 0 ]
	@if [ "$(CLAIMS)" != "no" ]; then \
	    FNLAB_OFFLINE=1 $(PY) -m fnlab course run --profile $(PROFILE) --dataset $(DATASET) \
	        --offline --check-claims --no-progress \
	        --out runs/check-claims-$$(date +%Y%m%d-%H%M%S); fi

lint: $(STAMP)
	$(PY) -m ruff check fnlab tests benchmarks tools notebooks

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

book: $(STAMP)
	$(PY) -m fnlab book build

student: $(STAMP)
	$(PY) -m fnlab classroom student

# SUBMISSIONS='submissions/*.ipynb' make grade: sandboxed grading (needs bwrap) into grades.csv
SUBMISSIONS ?= submissions/*.ipynb
grade: $(STAMP)
	$(PY) -m fnlab classroom grade $(SUBMISSIONS) --out grades.csv

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean-notebooks: $(STAMP)
	$(PY) tools/clean_notebooks.py notebooks/*.ipynb

clean:
	rm -rf runs student grading book/_build book/notebooks .pytest_cache
