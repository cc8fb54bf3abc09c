"""Masking schedules: what fraction of the tokens is masked, in training and in decoding.

MaskGIT's cosine schedule masks ``cos(pi / 2 * r)`` of the tokens at progress r in [0, 1]: all of them
at r = 0, none at r = 1. In training r is uniform; the FSQ paper bounds the ratio from below so that at
least ``min_ratio`` (0.45) of the S tokens are masked (any bound above 0.2 stabilised training).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

METHODS = ("cosine", "linear", "square")


def _ratio(xp, r, method: str):
  """The schedule with array module xp (jnp on device, np for host-side float64 tables)."""
  if method == "cosine":
    return xp.maximum(xp.cos(xp.pi / 2 * r), 0.0)  # cos(pi/2) is -4e-8 in float32
  if method == "linear":
    return 1.0 - r
  if method == "square":
    return 1.0 - r**2
  raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def mask_ratio(progress: jax.Array, method: str = "cosine") -> jax.Array:
  """Fraction of tokens masked at ``progress`` in [0, 1]: 1 at 0, 0 at 1, decreasing.

  cosine: cos(pi/2 r); linear: 1 - r; square: 1 - r^2. Same shape as progress, float32.
  """
  return _ratio(jnp, jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0), method)


def training_mask(
  rng: jax.Array, batch: int, seq_len: int, min_ratio: float = 0.45, method: str = "cosine"
) -> jax.Array:
  """Random training masks: (batch, seq_len) bool, True where a token is masked.

  Each example draws r ~ U(0, 1) and masks ``n = clip(ceil(seq_len * mask_ratio(r)), ceil(seq_len *
  min_ratio), seq_len)`` positions chosen uniformly at random, so at least one token is always masked.
  """
  if not 0.0 <= min_ratio <= 1.0:
    raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
  if seq_len < 1:
    raise ValueError(f"seq_len must be >= 1, got {seq_len}")
  ratio_key, order_key = jax.random.split(rng)
  ratio = mask_ratio(jax.random.uniform(ratio_key, (batch,)), method)
  low = max(1, int(-(-seq_len * min_ratio // 1)))  # ceil, and at least one token
  num = jnp.clip(jnp.ceil(seq_len * ratio), low, seq_len).astype(jnp.int32)
  # Rank positions by uniform noise; the num lowest-ranked are masked.
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(order_key, (batch, seq_len)), axis=-1), axis=-1)
  return ranks < num[:, None]


def tokens_to_remask(
  num_unknown_at_start: jax.Array, step: int | jax.Array, num_steps: int, method: str = "cosine"
):
  """How many of the still-unknown tokens decoding step ``step`` (0-based) leaves masked.

  ``floor(N * mask_ratio((step + 1) / num_steps))`` for N tokens unknown at the start: 0 after the last
  step. The ratios are computed in float64 on the host (so that N * cos(pi / 3) is exactly N / 2), then
  used in float32.
  """
  table = _ratio(np, np.arange(1, num_steps + 1, dtype=np.float64) / num_steps, method)
  ratio = jnp.asarray(table, jnp.float32)[step]
  return jnp.floor(jnp.asarray(num_unknown_at_start, jnp.float32) * ratio).astype(jnp.int32)
