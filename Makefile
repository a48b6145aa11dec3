# audiotrain — run `make help` for the list of targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY := true

.DEFAULT_GOAL := help

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

env: $(STAMP) ## Create the virtual environment (.venv) with every pinned dependency

demo: $(STAMP) ## Synthesise demo songs, train a tiny ACE-Step LoRA on CPU, record it in MLflow
	$(BIN)/python experiments/make_demo_data.py demo_data/songs
	$(BIN)/audiotrain model=acestep experiment=acestep_demo data=demo_data/songs
	@echo ""
	@echo "Open the MLflow UI with:  make ui   (or: $(BIN)/audiotrain ui) and browse to http://127.0.0.1:5000"

test: $(STAMP) ## Run every test but the gpu ones, slow included (under 20 minutes on 2 CPU cores; .ci/run runs it)
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=10

test-fast: $(STAMP) ## The edit loop: every test but the slow and gpu ones (under 5 minutes on 2 CPU cores)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not gpu"

bench: $(STAMP) ## Print speed/memory ratios measured side by side (framework overhead, feature cache)
	$(BIN)/python experiments/bench.py

ui: $(STAMP) ## Serve the MLflow UI for ./mlflow.db on 127.0.0.1:5000
	$(BIN)/audiotrain ui

clean: ## Remove runs, caches, demo data and the MLflow store (keeps .venv)
	rm -rf exps outputs multirun demo_data .audiotrain_cache mlflow.db mlartifacts build *.egg-info

.PHONY: help env demo test test-fast bench ui clean
