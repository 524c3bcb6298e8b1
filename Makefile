# The two Quick start commands: `make demo` and `make test`.
# Each creates its own virtual environment (.venv) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The other Pythons `make test-all` runs the test suite on, where they are installed.
OTHER_PYTHONS ?= 3.12 3.13

.PHONY: demo test test-all lint typecheck docs docs-serve unit bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "isoplug needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m isoplug demo

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks docs
	$(PY) -m ruff format --check src tests benchmarks docs

typecheck: $(STAMP)
	$(PY) -m mypy

# The tests run two at a time (pytest-xdist: on 2 cores the suite took 9.7 minutes one at a
# time, 5.5 two at a time), except those marked slow, which load the machine themselves and
# run alone afterwards (pytest's exit code 5: none of them among those PYTEST_ARGS picked).
# QUICK=1, for test-all's other Pythons: neither the slow tests nor the wheel's.
TEST_WORKERS ?= 2
unit: $(STAMP)
ifeq ($(QUICK),1)
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not slow and not wheel" $(PYTEST_ARGS)
else
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)
	$(PY) -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]
endif

# The documentation site (mkdocs.yml), into site/: guides, and the API reference from the
# docstrings. --strict fails on a broken link, reference or snippet. (Its examples run in
# tests/test_docs_code.py.) NO_MKDOCS_2_WARNING: Material's banner about MkDocs 2.0.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

test: lint typecheck docs unit

# `make test`, then the suite on each of OTHER_PYTHONS found (on the PATH, or installed by
# pyenv), in a .venv-<version> of its own; one that is missing is said and skipped. There the
# tests marked slow or wheel (heavy, and about isoplug rather than the interpreter: floods,
# the wheel's install) are left out, so that CI stays well under 15 minutes.
test-all: test
	@for version in $(OTHER_PYTHONS); do \
	  python=""; \
	  for candidate in python$$version $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$version.*/bin/python$$version; do \
	    if "$$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$$version'.split('.'))))" 2>/dev/null; then \
	      python=$$candidate; break; \
	    fi; \
	  done; \
	  if [ -z "$$python" ]; then echo "test-all: no Python $$version here; skipped"; continue; fi; \
	  echo "test-all: the suite on $$($$python --version)"; \
	  $(MAKE) --no-print-directory unit PYTHON="$$python" VENV=.venv-$$version QUICK=1 \
	    || exit 1; \
	done
	@# The tests that need two interpreters at once (their venvs exist only now): a plugin on
	@# a newer Python reloaded with syntax the first one cannot compile, and a 3.13 plugin's
	@# child printing its traceback in colour.
	@newer=$$(ls -d $(CURDIR)/.venv-3.1[2-9]*/bin/python 2>/dev/null | tail -1); \
	newest=$$(ls -d $(CURDIR)/.venv-3.1[3-9]*/bin/python 2>/dev/null | tail -1); \
	if [ -n "$$newer" ]; then \
	  ISOPLUG_TEST_NEWER_PYTHON="$$newer" ISOPLUG_TEST_PYTHON_313="$$newest" \
	    $(PY) -m pytest -q -p no:cacheprovider -rs \
	    tests/test_reload_compile.py tests/test_logs_coloured_tracebacks.py \
	    -k "newer_python or 313" || exit 1; \
	fi

bench: $(STAMP)
	$(PY) benchmarks/rpc_roundtrip.py
	$(PY) benchmarks/runtime_startup_and_calls.py
	$(PY) benchmarks/session_hosts.py
	$(PY) benchmarks/call_speed.py
	$(PY) benchmarks/logs_vs_peers.py
	$(PY) benchmarks/logs_cost_breakdown.py
	$(PY) benchmarks/host_log_latency.py
	$(PY) benchmarks/stdio_flood.py
	$(PY) benchmarks/stdio_flood_many.py
	$(PY) benchmarks/stdio_host_cpu.py
	$(PY) benchmarks/fd_writer_wait.py
	$(PY) benchmarks/otel_export.py
	@if command -v valgrind >/dev/null; then $(PY) benchmarks/logs_instructions.py; \
	else echo "skipping benchmarks/logs_instructions.py: it needs valgrind"; fi

clean:
	rm -rf $(VENV) .venv-* .mypy_cache .pytest_cache .ruff_cache site
