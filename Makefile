# ArchiveChain — the two set-up commands are `make up` (main job) and `make test` (whole suite).
# `make install` does the installs alone; running it twice changes nothing.
# `make up` takes HOSPITALS=, DATA_DIR=, BASE_PORT= (first node's port) and CHAIN_PORT= (anvil's).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= data
HOSPITALS ?= 3
PYTEST_ARGS ?= -n 2
BASE_PORT ?=
CHAIN_PORT ?=
UP_ARGS := $(if $(BASE_PORT),--base-port $(BASE_PORT)) $(if $(CHAIN_PORT),--chain-port $(CHAIN_PORT))

.PHONY: install up down test lint typecheck compile gas bench clean images compose-test

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "==> install 1/2: Python packages into $(VENV) (pip; a minute or two the first time)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@
	@echo "==> install 1/2: Python packages done"

node_modules/.installed: package.json package-lock.json
	@echo "==> install 2/2: JavaScript packages into node_modules (npm ci: solc, anvil, ipfs; two or three quiet minutes the first time)"
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@
	@echo "==> install 2/2: JavaScript packages done"

up: install
	$(BIN)/archivechain up --hospitals $(HOSPITALS) --data-dir $(DATA_DIR) $(UP_ARGS)

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

# Container images for docker-compose.yml (see docs/deployment.md, "Containers"). BASE names a
# Debian bookworm image made locally once (scripts/docker_base.sh: debootstrap + docker import);
# scripts/docker_context.py stages the wheels and the pinned npm packages on the host, so no image
# build resolves, downloads from a package index or compiles anything; the four build in parallel
# (scripts/docker_images.sh).
BASE ?= archivechain/debian:bookworm
images: install
	sh scripts/docker_images.sh $(BASE) $(BIN)/python

# The compose consortium end to end (scripts/compose_test.sh runs the README's "Containers" blocks,
# `make images` first among them); run by .ci/run. At most 30 minutes, then it fails.
compose-test: install
	timeout 1800 bash scripts/compose_test.sh

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
