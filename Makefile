# Two entry points for a fresh machine: `make repro` and `make test`. Both create .venv on first use and
# install the pinned dependencies (requirements.lock, then requirements-nodeps.txt) plus this package.
# The installer byte-compiles what it installs (uv with --compile-bytecode, as pip does by default): keep it.
# Where PYTHONDONTWRITEBYTECODE is set, nothing compiled later is ever cached, and with pip's `--no-compile`
# every stage recompiled torch, GX and DVC from source (measured: docs/benchmarks.md).
VENV   ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fersynth-installed
# uv installs the same pinned wheels as pip (the same 222 packages, byte-compiled), downloading and unpacking
# several at a time, several times faster than pip on a fresh clone (measured: docs/development.md).
# `make INSTALLER=pip venv`: pip only.
# Where uv fails (no wheel for the platform, an index only pip is configured for), pip installs instead.
UV_VERSION := 0.13.8
INSTALLER  ?= uv
PIP_INSTALL = $(BIN)/python -m pip install --quiet $(1)
UV_INSTALL  = $(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode $(1)
ifeq ($(INSTALLER),pip)
INSTALL = $(PIP_INSTALL)
else
INSTALL = $(UV_INSTALL) || { echo "uv could not install $(1): pip installs it"; $(PIP_INSTALL); }
endif
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: venv browser repro test test-fast test-slow test-all lint bench mlflow-server clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(filter uv,$(INSTALLER)),$(BIN)/python -m pip install --quiet uv==$(UV_VERSION) || echo "no uv: pip installs")
	$(call INSTALL,-r requirements.lock)
	$(call INSTALL,--no-deps -r requirements-nodeps.txt)
	$(call INSTALL,--no-deps -e .)
	touch $(STAMP)

# The report's test opens it in headless Chromium (Debian's package); installed here when missing and we are root.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "no chromium: the report's browser test will skip (apt-get install chromium)"

# `fersynth warm`: the stages run in forks of one process that imported PyTorch, MLflow and Great
# Expectations once (same outputs, faster: docs/warm.md). The first stage (demo) runs cold beside the
# server's imports instead of waiting for them.
repro: $(STAMP)
	$(BIN)/fersynth warm --cold-while-loading -- $(BIN)/dvc repro

# `make test` is the default suite (every test not marked slow: under 10 min on 2 cores). The slow ones (the
# end-to-end repro with push/clone/pull and a queued sweep, the fresh-clone reproducibility checks, the tracking
# server, torchrun) run with `make test-slow`; `make test-all` runs both side by side (the end-to-end one is mostly
# DVC and process start-up, about one core), prints the slow report after the fast one and fails if either
# fails. CI (.ci/run) runs `make test` and `make test-slow`.
PYTEST := $(BIN)/python -m pytest

test: $(STAMP) browser
	$(PYTEST) -m "not slow"

test-fast: test

test-slow: $(STAMP) browser
	$(PYTEST) -m slow -p no:cacheprovider

test-all: $(STAMP) browser
	@$(MAKE) --no-print-directory test-slow > .pytest-slow.log 2>&1 & slow=$$!; \
	$(MAKE) --no-print-directory test; fast=$$?; \
	wait $$slow; slow_rc=$$?; cat .pytest-slow.log; \
	echo "make test-all: make test exit $$fast, make test-slow exit $$slow_rc"; \
	[ $$fast -eq 0 ] && [ $$slow_rc -eq 0 ]

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
