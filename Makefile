# crisiswatch — every target does its own set-up from a fresh clone.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck unit integration bench reliability kafka-up kafka-down clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x "$(PY)" || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy rules streams connectors bench

test: setup lint typecheck
	@bash scripts/ensure-prometheus.sh
	$(BIN)/pytest

demo: setup
	@bash scripts/demo.sh

bench: setup
	@bash scripts/bench.sh

kafka-up: setup
	$(BIN)/crisiswatch kafka up

kafka-down: setup
	$(BIN)/crisiswatch kafka down

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache

reliability: setup
	@bash scripts/reliability.sh
