"""How many distinct inputs a dataset offers a tokenizer's quantizer: the distinct pixel blocks its tokens
cover.

A tokenizer that downsamples by ``patch`` gives each token a ``patch x patch`` block of the image (its
footprint). A token's code is a function of its receptive field, which contains the block, so a split
offers the quantizer at least as many distinct inputs as it has distinct blocks: a split with many more
distinct blocks than codes does not limit codebook usage, and a usage shortfall there is the model's,
not the data's (e.g. Fashion-MNIST's flat black background).
"""

from __future__ import annotations

import numpy as np


def blocks(images: np.ndarray, patch: int) -> np.ndarray:
  """The non-overlapping ``patch x patch`` blocks of each image, in token order (row-major).

  Args:
    images: uint8 [N, H, W, C] with H and W multiples of ``patch``.
    patch: the block side.

  Returns:
    uint8 [N * (H / patch) * (W / patch), patch * patch * C].
  """
  n, h, w, c = images.shape
  if h % patch or w % patch:
    raise ValueError(f"patch {patch} must divide the image size {h}x{w}")
  grid = images.reshape(n, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
  return grid.reshape(-1, patch * patch * c)


def count_distinct(rows: np.ndarray) -> int:
  """The number of distinct rows of a uint8 [M, D] array (each row viewed as one opaque value)."""
  rows = np.ascontiguousarray(rows)
  return len(np.unique(rows.view(np.dtype((np.void, rows.shape[1])))))


def footprint_stats(images: np.ndarray, patch: int, coarse_bits: int = 2) -> dict[str, float]:
  """Distinct token footprints of a set of images.

  Args:
    images: uint8 [N, H, W, C].
    patch: the tokenizer's downsampling factor (a token's footprint is ``patch x patch`` pixels).
    coarse_bits: the grey levels kept (the top bits of each 8-bit value) for the coarse count, which
      merges blocks that differ only by small intensity noise.

  Returns:
    ``tokens`` (blocks in all), ``distinct`` (distinct uint8 blocks), ``distinct_coarse`` (distinct
    blocks at ``coarse_bits`` bits per value) and ``constant_fraction`` (blocks whose pixels are all
    equal, e.g. background).
  """
  if images.dtype != np.uint8:
    raise ValueError(f"images must be uint8, got {images.dtype}")
  if not 1 <= coarse_bits <= 8:
    raise ValueError(f"coarse_bits must be in [1, 8], got {coarse_bits}")
  rows = blocks(images, patch)
  constant = (rows == rows[:, :1]).all(axis=1)
  return {
    "tokens": float(len(rows)),
    "distinct": float(count_distinct(rows)),
    "distinct_coarse": float(count_distinct(rows >> (8 - coarse_bits))),
    "constant_fraction": float(constant.mean()),
  }
