# Two entry points for a fresh machine: `make repro` and `make test`. Both create .venv on first use and
# install the pinned dependencies (requirements.lock, then requirements-nodeps.txt) plus this package.
# pip byte-compiles what it installs (~30 s of the ~85 s on 2 cores): keep it. Where PYTHONDONTWRITEBYTECODE is
# set, nothing compiled later is ever cached, and with `--no-compile` every stage recompiled torch, GX and
# DVC from source (a fresh-clone `dvc repro` took 680 s instead of ~520 s).
VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fersynth-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv browser repro test test-fast lint bench mlflow-server clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The report's test opens it in headless Chromium (Debian's package); installed here when missing and we are root.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "no chromium: the report's browser test will skip (apt-get install chromium)"

# `fersynth warm`: the stages run in forks of one process that imported PyTorch, MLflow and Great
# Expectations once (same outputs; a fresh-clone `dvc repro` measured ~150 s faster on 2 cores). The first
# stage (demo) runs cold beside the server's imports instead of waiting for them (~6 s).
repro: $(STAMP)
	$(BIN)/fersynth warm --cold-while-loading -- $(BIN)/dvc repro

# The slow tests (the end-to-end one is mostly DVC and process start-up, about one core) run beside the fast
# suite; the slow report is printed after the fast one, and either failing fails the target.
test: $(STAMP) browser
	@$(BIN)/python -m pytest -m slow -p no:cacheprovider > .pytest-slow.log 2>&1 & slow=$$!; \
	$(BIN)/python -m pytest -m "not slow"; fast=$$?; \
	wait $$slow; slow_rc=$$?; cat .pytest-slow.log; \
	echo "make test: fast suite exit $$fast, slow suite exit $$slow_rc"; \
	[ $$fast -eq 0 ] && [ $$slow_rc -eq 0 ]

test-fast: $(STAMP) browser
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_variants.py
	$(BIN)/python benchmarks/bench_generation.py
	$(BIN)/python benchmarks/bench_loader.py
	$(BIN)/python benchmarks/bench_training.py

# A tracking server for parallel (`dvc queue start -j N`) and team runs: PostgreSQL (Debian's package, installed
# when missing and we are root: --install-postgres; else sqlite, said in one line) behind `mlflow server` on
# 127.0.0.1, state in .mlflow-server/. Export the MLFLOW_TRACKING_URI line it prints where DVC runs; Ctrl-C or
# `fersynth mlflow-server stop` stops both.
MLFLOW_PORT ?= 5000
mlflow-server: $(STAMP)
	$(BIN)/fersynth mlflow-server start --port $(MLFLOW_PORT) --install-postgres

clean-venv:
	rm -rf $(VENV)
