# The commands people type. `make test` and `make demo` work on a fresh clone (they create .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo
PYTEST_ARGS ?=
LINT_PATHS := phenoprint tests $(wildcard scripts/*.py)

.PHONY: install test test-fast lint format demo readme bench clean

install: $(VENV)/.installed

# Re-install whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,profiles]"  # profiles: pycytominer, which tests compare against
	@touch $@

test: install
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy

format: install
	$(PY) -m ruff format $(LINT_PATHS)
	$(PY) -m ruff check --fix $(LINT_PATHS)

# generate -> train -> export -> onboard the held-out batches -> evaluate -> serve; DEMO_SERVE=0 stops after the query.
demo: install
	$(PY) scripts/demo.py --workdir "$(DEMO_DIR)"

# after `make demo`: the README's generated blocks (demo table, answer, timings) and docs/centering.png from it
readme: install
	$(PY) scripts/update_readme.py --demo "$(DEMO_DIR)"

# every scripts/bench_*.py -> benchmarks/results/<name>.json, then BENCHMARKS.md from them
bench: install
	@set -e; for s in scripts/bench_*.py; do \
		echo "== $$s"; $(PY) "$$s" --out "benchmarks/results/$$(basename $$s .py).json"; \
	done
	$(PY) scripts/write_benchmarks.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache .mypy_cache
