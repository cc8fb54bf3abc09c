# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv, installs the package with its dev extras, and installs the offline dataset when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test lint benchmark data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Real Fashion-MNIST from the Debian package dataset-fashion-mnist (no download at run time).
data:
	@test -f $(FASHION_MNIST) || scripts/install_fashion_mnist.sh

demo: $(STAMP) data
	$(PY) -m scripts.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint data
	$(PY) -m pytest tests

benchmark: $(STAMP)
	$(PY) -m scripts.benchmark --suite quantizers --out artifacts/benchmark_quantizers.json
