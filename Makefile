PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: install dev demo test test-fast lint bench clean

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

bench: dev
	$(BIN)/python benchmarks/bench_build.py --rows 2000000

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
