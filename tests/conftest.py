"""Test setup: 8 host CPU devices, so that sharded code paths run on one machine."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
  """A TFDS data_dir with the real Fashion-MNIST prepared once for the whole session."""
  from fsq.data import builders

  data_dir = tmp_path_factory.mktemp("tfds")
  builders.prepare("fashion_mnist_local", data_dir)
  return data_dir
