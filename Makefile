# Siesta: `make run` serves the demo app, `make test` runs every test. `make help` lists all.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.deps-stamp
CARGO_TEST_ENV := LD_LIBRARY_PATH=$$($(PY) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))'):$$LD_LIBRARY_PATH PYO3_PYTHON=$(abspath $(PY))

.PHONY: help run dev test test-rust test-py lint fmt bench bench-quick clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): requirements-test.txt | $(PY)
	$(PIP) install --quiet -r requirements-test.txt
	touch $(STAMP)

dev: | $(PY) ## Build Siesta (release) into .venv
	$(PIP) install --quiet 'maturin==1.16.0'
	$(VENV)/bin/maturin develop --release --extras gevent
	@# Byte-compiled as a wheel install would be (even under PYTHONDONTWRITEBYTECODE):
	@# a master compiling its modules at every start keeps the compiler's memory.
	$(PY) -m compileall -q python/siesta
	$(PY) -c 'import siesta._siesta'

run: dev ## Serve the demo app on http://127.0.0.1:8000, its status page on :9000 (Ctrl-C stops)
	$(VENV)/bin/siesta -b 127.0.0.1:8000 --access-logfile - --metrics-bind 127.0.0.1:9000 siesta.demo:app

test: $(STAMP) dev test-rust test-py ## Build, then run cargo test and pytest

test-rust: | $(PY) ## Rust unit tests
	$(CARGO_TEST_ENV) cargo test --quiet

test-py: $(STAMP) ## pytest against a real siesta process
	$(PY) -m pytest -q tests

lint: | $(PY) ## cargo fmt --check, clippy -D warnings, ruff
	cargo fmt --all -- --check
	$(CARGO_TEST_ENV) cargo clippy --all-targets --quiet -- -D warnings
	$(PIP) install --quiet ruff && $(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/ruff format --check python tests bench

fmt: ## Format Rust and Python sources
	cargo fmt --all
	$(PIP) install --quiet ruff && $(VENV)/bin/ruff format python tests bench

bench: dev ## Siesta against peer servers (long; see bench/README.md)
	bash bench/run.sh

bench-quick: dev ## A short benchmark run
	bash bench/run.sh --quick

clean: ## Remove build outputs and the virtualenv
	cargo clean
	rm -rf $(VENV)
