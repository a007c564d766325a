# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both run scripts/install.sh first (a no-op taking seconds once .venv/ is ready).
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
PYTEST_ARGS ?=

.PHONY: setup demo test lint clean

setup:
	bash scripts/install.sh

# The main job: the whole C2AL workflow (data, baseline, discovery, C2AL, evaluation, export,
# predict) on generated data; stages whose output exists are skipped (rm -rf runs/demo to redo).
# Its record (README demo block, docs/demo_ne_diff.png): python scripts/record_demo.py afterwards.
demo: setup
	c2al-rec pipeline --config launch/configs/demo.toml --out runs/demo --skip-done

test: setup
	python -m pytest -q -ra $(PYTEST_ARGS) tests

lint: setup
	ruff check c2al_rec components benchmarks tests

clean:
	rm -rf runs .pytest_cache
