# The two Quick start commands: `make demo` and `make test`.
# Each creates its own virtual environment (.venv) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "isoplug needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m isoplug demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(PY) -m mypy

unit: $(STAMP)
	$(PY) -m pytest

test: lint typecheck unit

bench: $(STAMP)
	$(PY) benchmarks/rpc_roundtrip.py
	$(PY) benchmarks/runtime_startup_and_calls.py
	$(PY) benchmarks/logs_vs_peers.py
	$(PY) benchmarks/logs_cost_breakdown.py
	$(PY) benchmarks/host_log_latency.py
	$(PY) benchmarks/stdio_flood.py
	@if command -v valgrind >/dev/null; then $(PY) benchmarks/logs_instructions.py; \
	else echo "skipping benchmarks/logs_instructions.py: it needs valgrind"; fi

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
