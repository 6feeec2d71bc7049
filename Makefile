# Warden — `make demo` runs the demo, `make test` runs everything CI runs.
# Both install what they need on a fresh Debian machine with Python 3.11.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help install demo test test-fast lint format bench bench-quick services sandbox-deps node-tools browser clean cluster-demo

help:
	@echo "make demo    start Warden and run the demo agent live (no model key needed)"
	@echo "make test    lint, type-check and run every test (starts PostgreSQL if absent)"
	@echo "make bench   run the benchmarks (bench/results/*.json, docs/benchmarks.md)"
	@echo "make cluster-demo  2 API + 3 worker processes on PostgreSQL and Redis, tasks streaming"
	@echo "make lint    ruff and mypy only"

$(STAMP): pyproject.toml
	@scripts/bootstrap.sh "$(PYTHON)" "$(VENV)"
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

demo: install sandbox-deps
	$(BIN)/warden demo

services:
	@scripts/ensure-services.sh

cluster-demo: install
	@scripts/cluster-demo.sh

sandbox-deps:
	@scripts/ensure-sandbox.sh

node-tools:
	@scripts/ensure-node.sh >/dev/null

browser:
	@scripts/ensure-browser.sh

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# Two test processes: most tests wait on subprocesses, sandboxes and the network, so two halve
# the wall time on a 2-core machine (each has its own PostgreSQL database and ports).
PYTEST_WORKERS ?= 2

test: install services sandbox-deps node-tools browser lint
	$(BIN)/pytest -q -p no:cacheprovider --durations=15 -n $(PYTEST_WORKERS)

test-fast: install
	$(BIN)/pytest -q -x tests/unit

bench: install services sandbox-deps
	@for b in step_overhead submit_latency throughput sse_fanout checkpoint_bytes; do \
		echo "== bench.$$b"; $(BIN)/python -m bench.$$b || exit 1; done

bench-quick: install services
	@for b in step_overhead submit_latency throughput sse_fanout checkpoint_bytes; do \
		echo "== bench.$$b --quick"; $(BIN)/python -m bench.$$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .warden .mypy_cache .ruff_cache .pytest_cache
