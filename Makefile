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
	@echo "Setting up $(VENV) with the pinned dependencies (about 2 minutes the first time; log: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --upgrade pip && $(BIN)/pip install -e '.[dev]'; } > $(VENV)/install.log 2>&1 \
	  || { tail -n 25 $(VENV)/install.log; echo "make: installing failed; the whole log is $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

env: $(STAMP) ## Create the virtual environment (.venv) with every pinned dependency

demo: $(STAMP) ## Synthesise demo songs, train a tiny ACE-Step LoRA on CPU (about 30 s after set-up), record it in MLflow
	@echo "1/2 Making 12 short demo songs (synthesised; mp3 + description + lyrics) in demo_data/songs"
	@$(BIN)/python experiments/make_demo_data.py demo_data/songs
	@echo "2/2 Training a tiny ACE-Step LoRA on them on the CPU (about 30 s on 2 cores): $(BIN)/audiotrain model=acestep experiment=acestep_demo data=demo_data/songs"
	@$(BIN)/audiotrain model=acestep experiment=acestep_demo data=demo_data/songs
	@echo "To look at it: make ui (MLflow on 127.0.0.1:5000; Ctrl-C stops it), then open the \"in the UI\" address above."

PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider -n auto --dist loadfile

test: $(STAMP) ## Run every test but the gpu ones, slow included, one worker per core (15 min in CI, 21-23 min on a 2-core VM; .ci/run runs it)
	$(PYTEST) --durations=10

test-fast: $(STAMP) ## The edit loop: every test but the slow and gpu ones (about 4 minutes on 2 CPU cores)
	$(PYTEST) -m "not slow and not gpu"

bench: $(STAMP) ## Print ratios measured side by side (framework overhead, feature cache, data preparation, padding; 25 min on 2 cores)
	$(BIN)/python experiments/bench.py

bench-memory: $(STAMP) ## Peak memory of one training step of each released model: LoRA, full, 8-bit, original set-up (docs/memory.md)
	$(BIN)/python experiments/bench_memory.py

bench-gpu: $(STAMP) ## On a CUDA GPU: LoRA steps/s and peak memory of each released model, fp16 guard, bnb CUDA (bench_gpu.json)
	$(BIN)/python experiments/bench_gpu.py

ui: $(STAMP) ## Serve the MLflow UI for ./mlflow.db on 127.0.0.1:5000
	$(BIN)/audiotrain ui

clean: ## Remove runs, caches, demo data and the MLflow store (keeps .venv)
	rm -rf exps outputs multirun demo_data .audiotrain_cache mlflow.db mlartifacts build *.egg-info

.PHONY: help env demo test test-fast bench bench-memory bench-gpu ui clean
