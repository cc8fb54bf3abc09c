"""Vector quantization baselines, with all the machinery that FSQ removes.

One configurable Linen module, ``VectorQuantizer``, sets up as each baseline the paper compares
against (factories below):

* ``maskgit_vq``: MaskGIT's VQGAN quantizer. Codebook learned by gradient; codebook loss
  ``mean((e - sg(z))^2)``, commitment loss ``beta * mean((sg(e) - z)^2)`` with beta = 0.25, and the entropy
  penalty ``0.1 * (mean per-sample entropy - entropy of the mean)`` of ``softmax(-distance / 0.01)``.
* ``uvim_vq``: UViM's quantizer. Inputs standardised per vector; codewords are the L2-normalised
  ratio of discounted sums and counts (``counts <- 0.995 * counts + batch_counts``, same for sums,
  summed over the whole global batch); while any count is below ``min_count`` the most frequent code
  is split in two; no commitment loss. Random code dropout (``code_dropout``) acts on its decoder input.
* ``reseed_vq``: EMA codebook whose codes with a discounted count below a threshold are reseeded
  from random encodings of the current batch (the common alternative to splitting).

Distances are ``|z|^2 - 2 z.C + |C|^2`` with a matmul, in chunks of rows so that a 2^16 codebook never
materialises N x K floats at once. The EMA state lives in the ``vq_stats`` collection (pass
``mutable=["vq_stats"]`` and an rng named ``vq`` when training with splitting or reseeding). Under
``jax.jit`` with a batch sharded over a mesh, sums over the batch are global by construction; inside
``shard_map``/``pmap`` set ``axis_name`` and the statistics are ``psum``-ed over that axis. The entropy
penalty's average distribution is likewise over the global batch under jit (MaskGIT, under pmap,
averaged per device).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fsq.quantizers import check_in_range, entropy_nats

STATS = "vq_stats"
_HIGHEST = jax.lax.Precision.HIGHEST


def squared_distances(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """Pairwise squared Euclidean distances ``|z|^2 - 2 z.C + |C|^2``: (n, d), (k, d) -> (n, k) float32."""
  z = z.astype(jnp.float32)
  codebook = codebook.astype(jnp.float32)
  cross = jnp.matmul(z, codebook.T, precision=_HIGHEST)
  return jnp.sum(z * z, -1, keepdims=True) - 2 * cross + jnp.sum(codebook * codebook, -1)


def chunk_rows(n: int, k: int, max_elements: int) -> int:
  """Rows per chunk so that a (rows, k) distance block holds at most max_elements floats."""
  return max(1, min(n, max_elements // k))


def _map_row_chunks(fn, rows: int, *arrays: jax.Array):
  """Applies fn to chunks of ``rows`` rows and concatenates its per-row outputs.

  Rows are interleaved across chunks (chunk c holds rows c, c + num_chunks, ...), so that a batch
  sharded along its rows stays sharded inside every chunk. ``fn`` maps (rows, ...) arrays to a pytree
  of (rows, ...) arrays.
  """
  n = arrays[0].shape[0]
  num = math.ceil(n / rows)
  if num == 1:
    return fn(*arrays)
  padded = [jnp.pad(a, [(0, num * rows - n)] + [(0, 0)] * (a.ndim - 1)) for a in arrays]
  chunks = [jnp.swapaxes(a.reshape(rows, num, *a.shape[1:]), 0, 1) for a in padded]
  out = jax.lax.map(lambda xs: fn(*xs), chunks)
  return jax.tree.map(lambda o: jnp.swapaxes(o, 0, 1).reshape(num * rows, *o.shape[2:])[:n], out)


def nearest_codes(z: jax.Array, codebook: jax.Array, max_elements: int = 2**24) -> jax.Array:
  """Index of the nearest codeword of each row: (n, d), (k, d) -> (n,) int32 (ties: lowest index)."""
  rows = chunk_rows(z.shape[0], codebook.shape[0], max_elements)

  def fn(zc):
    return jnp.argmin(squared_distances(zc, codebook), axis=-1).astype(jnp.int32)

  return _map_row_chunks(fn, rows, z)


def entropy_penalty(
  z: jax.Array, codebook: jax.Array, temperature: float, max_elements: int = 2**24
) -> tuple[jax.Array, jax.Array]:
  """Entropies (nats) of the soft assignment ``softmax(-|z - c|^2 / temperature)`` over codes.

  Computed in row chunks, each recomputed in the backward pass, so the (n, k) probabilities never
  exist at once.

  Args:
    z: (n, d) vectors.
    codebook: (k, d) codewords.
    temperature: softmax temperature.
    max_elements: largest (rows, k) block.

  Returns:
    sample_entropy: mean over rows of the entropy of each row's assignment.
    avg_entropy: entropy of the assignment averaged over rows.
    MaskGIT's penalty is ``sample_entropy - avg_entropy``.
  """
  n = z.shape[0]
  rows = chunk_rows(n, codebook.shape[0], max_elements)

  @jax.checkpoint
  def fn(zc, valid):
    log_p = jax.nn.log_softmax(-squared_distances(zc, codebook) / temperature, axis=-1)
    p = jnp.exp(log_p) * valid[:, None]
    return {"probs": p, "entropy": -jnp.sum(p * log_p, axis=-1)}

  sum_probs, sum_entropy = _chunked_sums(fn, rows, z, codebook.shape[0])
  avg = sum_probs / n
  return sum_entropy / n, entropy_nats(avg)


def _chunked_sums(fn, rows: int, z: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """Sums fn's (rows, k) probabilities and (rows,) entropies over interleaved row chunks."""
  n = z.shape[0]
  num = math.ceil(n / rows)
  valid = (jnp.arange(num * rows) < n).astype(jnp.float32)
  zc = jnp.swapaxes(jnp.pad(z, [(0, num * rows - n), (0, 0)]).reshape(rows, num, -1), 0, 1)
  vc = jnp.swapaxes(valid.reshape(rows, num), 0, 1)

  def body(carry, xs):
    out = fn(*xs)
    return (carry[0] + jnp.sum(out["probs"], 0), carry[1] + jnp.sum(out["entropy"])), None

  init = (jnp.zeros((k,), jnp.float32), jnp.zeros((), jnp.float32))
  (sum_probs, sum_entropy), _ = jax.lax.scan(body, init, (zc, vc))
  return sum_probs, sum_entropy


def split_most_frequent(
  rng: jax.Array, sums: jax.Array, counts: jax.Array, min_count: float, perturbation: float = 1e-3
) -> tuple[jax.Array, jax.Array]:
  """UViM's splitting: while any count is below min_count, split the most frequent code in two.

  At most k splits happen per call: a split moves counts, it never adds any, so when the total count is
  below k * min_count no number of splits would lift every code above the threshold (big_vision's
  loop then never ends; with small batches and large codebooks that happens).

  Each split replaces the least frequent code by a copy of the most frequent codeword, multiplied by
  uniform noise in [1 - perturbation, 1 + perturbation] per channel, and halves both codes' counts and
  sums (the two codewords, sums / counts, keep their directions).

  Args:
    rng: PRNG key.
    sums: (k, d) discounted sums of assigned vectors.
    counts: (k,) discounted counts.
    min_count: threshold under which a code counts as unused.
    perturbation: relative noise of the copy.

  Returns:
    (sums, counts) after splitting.
  """

  max_splits = counts.shape[0]

  def cond(state):
    return jnp.any(state[2] < min_count) & (state[3] < max_splits)

  def body(state):
    rng, e, c, n = state
    rng, key = jax.random.split(rng)
    hi, lo = jnp.argmax(c), jnp.argmin(c)
    noise = jax.random.uniform(key, e.shape[1:], e.dtype, 1 - perturbation, 1 + perturbation)
    # Sequential updates, as in big_vision (they differ from simultaneous ones only when hi == lo).
    e = e.at[lo].set(e[hi] * noise)
    c = c.at[lo].set(c[hi] / 2)
    c = c.at[hi].set(c[hi] / 2)
    e = e.at[lo].set(e[lo] / 2)
    e = e.at[hi].set(e[hi] / 2)
    return rng, e, c, n + 1

  _, sums, counts, _ = jax.lax.while_loop(cond, body, (rng, sums, counts, jnp.zeros((), jnp.int32)))
  return sums, counts


def reseed_dead_codes(
  rng: jax.Array,
  sums: jax.Array,
  counts: jax.Array,
  z: jax.Array,
  min_count: float,
  axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Replaces every code whose discounted count is below min_count by a random row of z.

  A reseeded code gets ``sums = x`` and ``counts = 1`` (its codeword is exactly x). Under ``shard_map``
  with ``axis_name`` every device draws from its own rows and the draws of device 0 are broadcast, so
  the codebook stays identical everywhere.

  Args:
    rng: PRNG key, the same on every device.
    sums: (k, d); counts: (k,).
    z: (n, d) encodings of the current batch (this device's rows).
    min_count: threshold.
    axis_name: mesh axis to broadcast over, or None.

  Returns:
    (sums, counts).
  """
  dead = counts < min_count
  picks = jax.random.randint(rng, (counts.shape[0],), 0, z.shape[0])
  fresh = jax.lax.stop_gradient(z[picks]).astype(sums.dtype)
  if axis_name is not None:
    first = jax.lax.axis_index(axis_name) == 0
    fresh = jax.lax.psum(jnp.where(first, fresh, 0), axis_name)
  sums = jnp.where(dead[:, None], fresh, sums)
  counts = jnp.where(dead, jnp.ones_like(counts), counts)
  return sums, counts


def code_dropout(rng: jax.Array, x: jax.Array, mode: str = "random") -> jax.Array:
  """UViM's code dropout on a decoder input sequence.

  Position j of n has importance ``linspace(1, 0, n + 2)[1:-1][j]``; each example draws a threshold
  ``u ~ U(0, 1)`` and keeps the positions whose importance exceeds it (a prefix). ``"random"`` then
  permutes the kept positions independently per example; ``"prefix"`` keeps the prefix.

  Args:
    rng: PRNG key.
    x: (batch, n, d) quantized sequence.
    mode: "random" or "prefix".

  Returns:
    x with dropped positions zeroed, same shape and dtype.
  """
  if mode not in ("random", "prefix"):
    raise ValueError(f"mode must be 'random' or 'prefix', got {mode!r}")
  if x.ndim != 3:
    raise ValueError(f"x must be (batch, n, d), got shape {x.shape}")
  thr_key, perm_key = jax.random.split(rng)
  importance = jnp.linspace(1.0, 0.0, x.shape[1] + 2)[1:-1]
  thr = jax.random.uniform(thr_key, (x.shape[0],))
  keep = importance[None, :] > thr[:, None]
  if mode == "random":
    keep = jax.random.permutation(perm_key, keep, axis=-1, independent=True)
  return x * keep[:, :, None].astype(x.dtype)


def _positive(name: str, value, allow_none: bool = False) -> None:
  if value is None and allow_none:
    return
  if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
    raise ValueError(f"{name} must be a number > 0{' or None' if allow_none else ''}, got {value!r}")


class VectorQuantizer(nn.Module):
  """Nearest-codeword vector quantizer, configurable as each VQ baseline (see the module docstring).

  Attributes:
    codebook_size: number of codewords k.
    dim: codeword width d (the input's channel count).
    commitment_cost: weight of ``mean((sg(e) - z)^2)``.
    codebook_loss_weight: weight of ``mean((e - sg(z))^2)`` (gradient-learned codebooks only).
    entropy_loss_weight: weight of the entropy penalty (0 disables it).
    entropy_temperature: temperature of the entropy penalty's softmax.
    standardize_inputs: standardise each input vector over its channels (UViM).
    l2_normalize: L2-normalise codewords (UViM).
    ema_decay: None learns the codebook by gradient (a ``params`` entry); a float learns it as the
      ratio of discounted sums and counts in ``vq_stats`` (UViM: 0.995).
    split_min_count: EMA only: split the most frequent code while any count is below this (UViM: 0.1).
    reseed_min_count: EMA only: reseed codes whose count is below this from the current batch.
    split_perturbation: relative noise of a split copy.
    axis_name: psum statistics over this axis (inside shard_map/pmap); None under plain jit.
    channel_axis: the axis holding channels.
    max_distance_elements: largest distance block computed at once.
  """

  codebook_size: int
  dim: int
  commitment_cost: float = 0.25
  codebook_loss_weight: float = 1.0
  entropy_loss_weight: float = 0.0
  entropy_temperature: float = 0.01
  standardize_inputs: bool = False
  l2_normalize: bool = False
  ema_decay: float | None = None
  split_min_count: float | None = None
  reseed_min_count: float | None = None
  split_perturbation: float = 1e-3
  axis_name: str | None = None
  channel_axis: int = -1
  max_distance_elements: int = 2**24

  def setup(self):
    for name in ("codebook_size", "dim", "max_distance_elements"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if self.codebook_size > 2**31 - 1:
      raise ValueError(f"codebook_size must fit int32 indices, got {self.codebook_size}")
    _positive("entropy_temperature", self.entropy_temperature)
    _positive("split_min_count", self.split_min_count, allow_none=True)
    _positive("reseed_min_count", self.reseed_min_count, allow_none=True)
    for name in ("commitment_cost", "codebook_loss_weight", "entropy_loss_weight"):
      value = getattr(self, name)
      if not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if self.ema_decay is not None and not 0 < self.ema_decay < 1:
      raise ValueError(f"ema_decay must be None or in (0, 1), got {self.ema_decay!r}")
    if self.ema_decay is None and (self.split_min_count or self.reseed_min_count):
      raise ValueError(
        "split_min_count and reseed_min_count need an EMA codebook: set ema_decay "
        f"(got ema_decay=None, split_min_count={self.split_min_count}, "
        f"reseed_min_count={self.reseed_min_count})"
      )
    if self.split_min_count and self.reseed_min_count:
      raise ValueError("choose one of split_min_count and reseed_min_count, not both")
    shape = (self.codebook_size, self.dim)
    if self.ema_decay is None:
      init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
      self.embedding = self.param("codebook", init, shape, jnp.float32)
    else:
      std = 1.0 / np.sqrt(self.codebook_size)
      self.sums = self.variable(
        STATS, "sums", lambda: std * jax.random.normal(self.make_rng("params"), shape, jnp.float32)
      )
      self.counts = self.variable(STATS, "counts", jnp.ones, (self.codebook_size,), jnp.float32)

  def codebook(self) -> jax.Array:
    """(codebook_size, dim) float32 codewords in use."""
    e = self.embedding if self.ema_decay is None else self.sums.value / self.counts.value[:, None]
    if self.l2_normalize:
      e = e / jnp.linalg.norm(e, axis=-1, keepdims=True)
    return e

  @property
  def latent_width(self) -> int:
    """Channels of the input: the codeword width."""
    return self.dim

  @property
  def codebook_shape(self) -> tuple[int, int]:
    """(codes, groups) of the indices: ``codebook_size`` codes, one group."""
    return self.codebook_size, 1

  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Quantizes x to its nearest codewords.

    Args:
      x: float array with ``dim`` channels on ``channel_axis``.
      train: update the EMA statistics (EMA codebooks only; needs ``mutable=["vq_stats"]``).

    Returns:
      quantized: like x; straight-through gradient to (standardised) x.
      aux: ``indices`` (int32, x's shape without the channel axis), ``loss`` (weighted sum of the
        others), ``codebook_loss``, ``commitment_loss``, ``entropy_loss`` (each unweighted).
    """
    if not -x.ndim <= self.channel_axis < x.ndim or x.shape[self.channel_axis] != self.dim:
      raise ValueError(
        f"input of shape {tuple(x.shape)} must have dim = {self.dim} channels on "
        f"channel_axis = {self.channel_axis}"
      )
    z = jnp.moveaxis(x, self.channel_axis, -1).astype(jnp.float32)
    if self.standardize_inputs:
      z = jax.nn.standardize(z, axis=-1)
    flat = z.reshape(-1, self.dim)
    codebook = self.codebook()
    idx = nearest_codes(
      jax.lax.stop_gradient(flat), jax.lax.stop_gradient(codebook), self.max_distance_elements
    )
    e = codebook[idx]
    sg = jax.lax.stop_gradient
    codebook_loss = jnp.mean(jnp.square(e - sg(flat)))
    commitment_loss = jnp.mean(jnp.square(sg(e) - flat))
    entropy_loss = jnp.zeros((), jnp.float32)
    if self.entropy_loss_weight:
      sample, avg = entropy_penalty(flat, codebook, self.entropy_temperature, self.max_distance_elements)
      entropy_loss = sample - avg
    loss = self.commitment_cost * commitment_loss + self.entropy_loss_weight * entropy_loss
    if self.ema_decay is None:
      loss = loss + self.codebook_loss_weight * codebook_loss
    if train and self.ema_decay is not None and not self.is_initializing():
      self._update_stats(sg(flat), idx)
    quantized = flat + sg(e - flat)
    quantized = jnp.moveaxis(quantized.reshape(z.shape), -1, self.channel_axis).astype(x.dtype)
    indices = idx.reshape(z.shape[:-1])
    return quantized, {
      "indices": indices,
      "loss": loss,
      "codebook_loss": codebook_loss,
      "commitment_loss": commitment_loss,
      "entropy_loss": entropy_loss,
    }

  def _update_stats(self, flat: jax.Array, idx: jax.Array) -> None:
    """Discounted counts and sums of the global batch, then splitting or reseeding."""
    batch_counts = jnp.zeros((self.codebook_size,), jnp.float32).at[idx].add(1.0)
    batch_sums = jnp.zeros((self.codebook_size, self.dim), jnp.float32).at[idx].add(flat)
    if self.axis_name is not None:
      batch_counts = jax.lax.psum(batch_counts, self.axis_name)
      batch_sums = jax.lax.psum(batch_sums, self.axis_name)
    counts = self.counts.value * self.ema_decay + batch_counts
    sums = self.sums.value * self.ema_decay + batch_sums
    if self.split_min_count:
      sums, counts = split_most_frequent(
        self.make_rng("vq"), sums, counts, self.split_min_count, self.split_perturbation
      )
    if self.reseed_min_count:
      sums, counts = reseed_dead_codes(
        self.make_rng("vq"), sums, counts, flat, self.reseed_min_count, self.axis_name
      )
    self.sums.value, self.counts.value = sums, counts

  def decode(self, indices: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Codewords of indices: (...) int -> (..., dim) with channels moved to ``channel_axis``.

    Out-of-range indices raise ValueError (concrete input) or fail a checkify check and decode to NaN
    (under jit); they are never clamped to a valid codeword.
    """
    check_in_range(indices, self.codebook_size, "indices", f"in [0, {self.codebook_size})")
    indices = jnp.asarray(indices)
    valid = (indices >= 0) & (indices < self.codebook_size)
    e = jnp.where(valid[..., None], self.codebook()[jnp.clip(indices, 0, self.codebook_size - 1)], jnp.nan)
    return jnp.moveaxis(e, -1, self.channel_axis).astype(dtype)


def maskgit_vq(codebook_size: int = 1024, dim: int = 256, **overrides) -> VectorQuantizer:
  """MaskGIT's VQGAN quantizer: commitment 0.25, codebook loss, entropy penalty 0.1 at T = 0.01."""
  fields = dict(
    commitment_cost=0.25, codebook_loss_weight=1.0, entropy_loss_weight=0.1, entropy_temperature=0.01
  )
  return VectorQuantizer(codebook_size, dim, **{**fields, **overrides})


def uvim_vq(codebook_size: int = 4096, dim: int = 768, **overrides) -> VectorQuantizer:
  """UViM's quantizer: standardised inputs, L2-normalised EMA codewords (0.995), splitting < 0.1."""
  fields = dict(
    commitment_cost=0.0, standardize_inputs=True, l2_normalize=True, ema_decay=0.995, split_min_count=0.1
  )
  return VectorQuantizer(codebook_size, dim, **{**fields, **overrides})


def reseed_vq(codebook_size: int, dim: int, **overrides) -> VectorQuantizer:
  """EMA codebook (0.99) with dead codes (count < 0.1) reseeded from the batch; commitment 0.25."""
  fields = dict(commitment_cost=0.25, ema_decay=0.99, reseed_min_count=0.1)
  return VectorQuantizer(codebook_size, dim, **{**fields, **overrides})
