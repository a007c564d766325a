# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both run scripts/install.sh first (a no-op taking seconds once .venv/ is ready).
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
PYTEST_ARGS ?=

.PHONY: setup demo test lint clean

setup:
	bash scripts/install.sh

# The main job. Until the end-to-end pipeline lands this runs the most complete real path:
# a 2-rank sharded DMP training job launched through torchx (local_cwd).
demo: setup
	torchx run -s local_cwd components/c2al.py:dmp_check -j 1x2 --steps 30

test: setup
	python -m pytest -q -ra $(PYTEST_ARGS) tests

lint: setup
	ruff check c2al_rec components benchmarks tests

clean:
	rm -rf runs .pytest_cache
