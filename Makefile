PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: install dev demo test test-fast test-newest lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

demo: install
	$(BIN)/tmass-lake demo $(DEMO_DIR)

test: dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q

# The inner loop: everything but the end-to-end tests marked slow (under 90 s on 2 cores).
test-fast: dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q -m "not slow"

# The suite against the newest hats, lsdb, nested-pandas and hats-import (pre-releases excluded), in a
# venv of its own so the pinned development venv is untouched: what a cap in pyproject.toml must cite.
NEWEST := .venv-newest
test-newest:
	$(PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/pip install --quiet --upgrade pip
	$(NEWEST)/bin/pip install --quiet --upgrade -e '.[dev]' hats lsdb nested-pandas hats-import
	$(NEWEST)/bin/pip list 2>/dev/null | grep -iE '^(hats|lsdb|nested-pandas|hats-import|astropy|pandas) '
	$(NEWEST)/bin/ruff check src tests benchmarks
	$(NEWEST)/bin/pytest -q

bench: dev
	$(BIN)/python benchmarks/bench_build.py --rows 2000000

clean:
	rm -rf $(VENV) $(NEWEST) $(DEMO_DIR) .pytest_cache
