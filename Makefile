# Two commands set everything up on a fresh machine:
#   make demo   -> virtual environment, install, then every capability end to end on simulated data
#   make test   -> virtual environment, install, then the test suite (real data from ../shared/data when present)
# Also: make lint (ruff, mypy, pre-commit), make docs (Sphinx, warnings are errors), make bench (benchmarks).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
EXTRAS ?= test
STAMP := $(VENV)/.chromtools-$(EXTRAS)
DEMO_OUT ?= chromtools_demo
PYTEST_ARGS ?=

.PHONY: install demo test docs bench lint clean

install: $(STAMP)

# torch goes in first, pinned to the CPU build when none is present, so that nothing pulls CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/chromtools demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

docs:
	$(MAKE) install EXTRAS=doc
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

bench:
	$(MAKE) install EXTRAS=test,bench
	$(PY) benchmarks/io.py
	$(PY) benchmarks/denoise.py
	$(PY) benchmarks/vrnn.py
	$(PY) benchmarks/mapping.py
	$(PY) benchmarks/scale.py

# ruff (lint and format check), mypy (configured in pyproject.toml), then every pre-commit hook on all files.
# Every step runs, and the target fails if any of them did.
LINT_PATHS := src tests benchmarks docs/conf.py
lint:
	$(MAKE) install EXTRAS=dev
	@status=0; \
	$(VENV)/bin/ruff check $(LINT_PATHS) || status=1; \
	$(VENV)/bin/ruff format --check $(LINT_PATHS) || status=1; \
	$(VENV)/bin/mypy || status=1; \
	$(VENV)/bin/pre-commit run --all-files --show-diff-on-failure || status=1; \
	exit $$status

clean:
	rm -rf docs/_build docs/generated $(DEMO_OUT) .pytest_cache .mypy_cache
