"""The idx reader on hand-made bytes, and the real Fashion-MNIST files with their checksums."""

import gzip
import hashlib

import numpy as np
import pytest

from fsq.data import fashion_mnist


def test_parse_idx_on_hand_made_bytes():
  data = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
  np.testing.assert_array_equal(fashion_mnist.parse_idx(data), [[1, 2, 3], [4, 5, 6]])
  big_endian = bytes([0, 0, 0x0C, 1, 0, 0, 0, 2]) + (258).to_bytes(4, "big") + (7).to_bytes(4, "big")
  np.testing.assert_array_equal(fashion_mnist.parse_idx(big_endian), [258, 7])
  with pytest.raises(ValueError, match="needs 18"):
    fashion_mnist.parse_idx(data[:-1], "short")
  with pytest.raises(ValueError, match="not an idx file"):
    fashion_mnist.parse_idx(b"\x1f\x8b\x08\x00", "gz")


def test_checksum_mismatch_and_missing_files_are_clear_errors(tmp_path):
  path = tmp_path / "train-images-idx3-ubyte.gz"
  path.write_bytes(gzip.compress(b"not the data"))
  with pytest.raises(ValueError, match="sha256"):
    fashion_mnist.read_verified(path, hashlib.sha256(b"other").hexdigest())
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    fashion_mnist.load("test", tmp_path)
  with pytest.raises(ValueError, match="split"):
    fashion_mnist.load("validation", tmp_path)


def test_real_fashion_mnist_loads_with_the_published_sizes():
  images, labels = fashion_mnist.load("test")
  assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
  # Fashion-MNIST's test split has exactly 1000 images of each of the 10 classes.
  np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)
  assert images.max() == 255 and images.min() == 0
