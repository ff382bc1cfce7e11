# ArchiveChain — the two set-up commands are `make up` (main job) and `make test` (whole suite).
# `make install` does the installs alone; running it twice changes nothing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
HOSPITALS ?= 3
PYTEST_ARGS ?= -n 2

.PHONY: install up down test lint typecheck compile gas bench clean

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

up: install
	$(BIN)/archivechain up --hospitals $(HOSPITALS) --data-dir $(DATA_DIR)

down: install
	$(BIN)/archivechain down --data-dir $(DATA_DIR)

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

compile: install
	$(BIN)/archivechain contracts compile

gas: install
	$(BIN)/python scripts/gas_report.py

bench: install
	$(BIN)/python scripts/bench_anchoring.py --quick
	$(BIN)/python scripts/bench_ingest.py --quick

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
