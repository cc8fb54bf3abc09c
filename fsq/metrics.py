"""Codebook statistics that merge: count codes over any number of batches and processes, then report.

Counting a single batch, or a fixed-size buffer, misjudges how much of a codebook is used. A
``CodebookUsage`` counts every index it is given, exactly (int64 on the host), and two accumulators
(from other evaluation shards or other processes) merge by adding their counts, so the statistics of
the whole evaluation set do not depend on how it was split.

It works for any quantizer that outputs integer indices: FSQ (codebook_size = prod(levels)), VQ,
LFQ (2^bits), and grouped quantizers (several FSQ codebooks, residual stages), whose indices carry a
trailing group axis and are counted per group.

Limit: counts are dense, ``num_groups * codebook_size`` int64s. Codebooks up to ``MAX_DENSE_CODES`` =
2^24 codes (128 MiB per group) are accepted; a larger one raises ValueError, and should be measured per
channel (FSQ digits) or per stage instead.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

MAX_DENSE_CODES = 2**24


def usage_statistics(counts: np.ndarray) -> dict[str, float]:
  """Statistics of one codebook's counts.

  Args:
    counts: (codebook_size,) non-negative counts.

  Returns:
    usage: fraction of codes used at least once.
    perplexity: exp of the entropy of the empirical code distribution (codes in effective use).
    entropy_bits: that entropy in bits (at most log2(codebook_size)).
    max_ratio: the most frequent code's share of all assignments.
    zeros_ratio: fraction of codes never used (1 - usage).
    count: total number of assignments.
  """
  counts = np.asarray(counts, np.float64)
  total = counts.sum()
  p = counts / total if total > 0 else np.zeros_like(counts)
  nz = p[p > 0]
  entropy_nats = float(-(nz * np.log(nz)).sum())
  return {
    "usage": float((counts > 0).mean()),
    "perplexity": float(np.exp(entropy_nats)),
    "entropy_bits": entropy_nats / np.log(2.0),
    "max_ratio": float(p.max()),
    "zeros_ratio": float((counts == 0).mean()),
    "count": float(total),
  }


def code_counts(
  indices: jax.Array, codebook_size: int, num_groups: int = 1, weights: jax.Array | None = None
) -> jax.Array:
  """Counts of each code, per group, inside jit: the device-side half of ``CodebookUsage``.

  Args:
    indices: int array; with one group any shape (B, ...), with G groups (B, ..., G).
    codebook_size: K.
    num_groups: G.
    weights: optional (B,) per-example weights (0 for padding examples).

  Returns:
    (G, K) int32 counts; under jit with a sharded batch they are global.
  """
  idx = indices.reshape(indices.shape[0], -1, num_groups)
  w = jnp.ones(idx.shape[0], jnp.int32) if weights is None else weights.astype(jnp.int32)
  w = jnp.broadcast_to(w[:, None, None], idx.shape)
  flat = (idx + jnp.arange(num_groups, dtype=idx.dtype) * codebook_size).reshape(-1)
  counts = jnp.zeros((num_groups * codebook_size,), jnp.int32).at[flat].add(w.reshape(-1))
  return counts.reshape(num_groups, codebook_size)


def _check_size(name: str, value: int, low: int, high: int) -> int:
  if not isinstance(value, int | np.integer) or isinstance(value, bool) or not low <= value <= high:
    raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
  return int(value)


@dataclasses.dataclass
class CodebookUsage:
  """Exact code counts, per group: ``counts`` is (num_groups, codebook_size) int64.

  Build with ``CodebookUsage.create(codebook_size, num_groups)``; ``add`` counts a batch of indices,
  ``merge`` adds another accumulator, ``merge_across_processes`` sums over JAX processes, and
  ``summary`` reports ``usage_statistics`` averaged over groups (with the per-group values too).
  """

  counts: np.ndarray

  @classmethod
  def create(cls, codebook_size: int, num_groups: int = 1) -> CodebookUsage:
    codebook_size = _check_size("codebook_size", codebook_size, 1, MAX_DENSE_CODES)
    num_groups = _check_size("num_groups", num_groups, 1, 2**16)
    if codebook_size * num_groups > MAX_DENSE_CODES * 4:
      raise ValueError(
        f"codebook_size * num_groups = {codebook_size * num_groups} dense counts exceed "
        f"{MAX_DENSE_CODES * 4}; count fewer groups at a time"
      )
    return cls(np.zeros((num_groups, codebook_size), np.int64))

  @property
  def codebook_size(self) -> int:
    return self.counts.shape[1]

  @property
  def num_groups(self) -> int:
    return self.counts.shape[0]

  def add(self, indices) -> CodebookUsage:
    """Counts indices in place and returns self.

    Args:
      indices: integer array (numpy or a fully addressable jax.Array). With one group any shape;
        with G groups the last axis must have size G. Values must lie in [0, codebook_size).
    """
    idx = np.asarray(jax.device_get(indices))
    if not np.issubdtype(idx.dtype, np.integer):
      raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    if self.num_groups == 1:
      idx = idx.reshape(-1, 1)
    elif idx.ndim == 0 or idx.shape[-1] != self.num_groups:
      raise ValueError(
        f"indices of shape {idx.shape} must have num_groups = {self.num_groups} entries on the last axis"
      )
    idx = idx.reshape(-1, self.num_groups).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= self.codebook_size):
      bad = idx[(idx < 0) | (idx >= self.codebook_size)][0]
      raise ValueError(f"indices must lie in [0, {self.codebook_size}), got {bad}")
    offsets = np.arange(self.num_groups, dtype=np.int64) * self.codebook_size
    flat = (idx + offsets).reshape(-1)
    self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)
    return self

  def add_counts(self, counts) -> CodebookUsage:
    """Adds (num_groups, codebook_size) counts (for example from ``code_counts``) in place."""
    counts = np.asarray(jax.device_get(counts))
    if counts.shape != self.counts.shape or (counts < 0).any():
      raise ValueError(f"counts must be non-negative of shape {self.counts.shape}, got {counts.shape}")
    self.counts += counts.astype(np.int64)
    return self

  def merge(self, other: CodebookUsage) -> CodebookUsage:
    """A new accumulator holding both counts; shapes must agree."""
    if other.counts.shape != self.counts.shape:
      raise ValueError(f"cannot merge counts of shape {other.counts.shape} into {self.counts.shape}")
    return CodebookUsage(self.counts + other.counts)

  def merge_across_processes(self) -> CodebookUsage:
    """Counts summed over all JAX processes (every process must call it); a no-op with one."""
    if jax.process_count() == 1:
      return CodebookUsage(self.counts.copy())
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(self.counts)
    return CodebookUsage(np.asarray(gathered, np.int64).sum(axis=0))

  def summary(self) -> dict[str, float | list[float]]:
    """``usage_statistics`` averaged over groups; with several groups also ``<name>_per_group`` lists."""
    per_group = [usage_statistics(c) for c in self.counts]
    out: dict[str, float | list[float]] = {k: float(np.mean([g[k] for g in per_group])) for k in per_group[0]}
    if self.num_groups > 1:
      out.update({f"{k}_per_group": [g[k] for g in per_group] for k in per_group[0]})
    return out
