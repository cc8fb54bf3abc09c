# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv and installs the package with its dev extras when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint benchmark

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m scripts.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest tests

benchmark: $(STAMP)
	$(PY) -m scripts.benchmark --suite quantizers --out artifacts/benchmark_quantizers.json
