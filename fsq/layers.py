"""Flax Linen layers on the pure quantizer functions: FSQ, ResidualFSQ and LFQ.

Each takes an explicit ``channel_axis`` (never guessed from the rank), optional Dense projections in
and out (``dim``), and returns ``(quantized, aux)`` with ``aux["indices"]``; only LFQ adds a loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fsq.quantizers import (
  Levels,
  check_eps,
  check_levels,
  codebook_size,
  compute_dtype,
  digits_to_indices,
  entropy_nats,
  indices_to_codes,
  quantize_with_indices,
)

_HIGHEST = jax.lax.Precision.HIGHEST


def _to_last(x: jax.Array, axis: int) -> jax.Array:
  return jnp.moveaxis(x, axis, -1)


def _from_last(x: jax.Array, axis: int) -> jax.Array:
  return jnp.moveaxis(x, -1, axis)


def _check_axis(x: jax.Array, axis: int, expected: int, what: str) -> None:
  if not -x.ndim <= axis < x.ndim:
    raise ValueError(f"channel_axis = {axis} is out of range for an input of shape {x.shape}")
  if x.shape[axis] != expected:
    raise ValueError(
      f"input of shape {tuple(x.shape)} has {x.shape[axis]} channels on channel_axis = {axis}, "
      f"but {what} = {expected}"
    )


def check_module_fields(levels: Levels, num_codebooks: int, dim: int | None) -> tuple[int, ...]:
  levels = check_levels(levels)
  if not isinstance(num_codebooks, int) or num_codebooks < 1:
    raise ValueError(f"num_codebooks must be an integer >= 1, got {num_codebooks!r}")
  if dim is not None and (not isinstance(dim, int) or dim < 1):
    raise ValueError(f"dim must be None or an integer >= 1, got {dim!r}")
  return levels


Projection = Callable[[jax.Array], jax.Array] | None  # a Dense layer's call, or None for no projection


class FSQSettings(NamedTuple):
  """The checked fields of an FSQ layer (``groups``: its codebooks) or a residual FSQ layer (``groups``:
  its stages), as the Linen and NNX modules pass them to the functions below."""

  levels: tuple[int, ...]
  groups: int
  dim: int | None
  channel_axis: int
  symmetric: bool
  eps: float


def fsq_forward(
  x: jax.Array, settings: FSQSettings, project_in: Projection, project_out: Projection
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The FSQ layer (Linen ``FSQ`` and ``fsq.nnx.FSQ``) on its settings and projections.

  Args:
    x: float array with ``dim`` (or the quantized width, num_codebooks * len(levels)) channels on
      ``channel_axis``.

  Returns:
    quantized: same shape and dtype as x.
    aux: ``indices`` int32, shaped like x without the channel axis when num_codebooks == 1, else
      with the codebook axis (size num_codebooks) in place of the channel axis; ``codes``, the
      grid values before the output projection, with the quantized width on the channel axis.
      No loss: see ``FSQ``.
  """
  levels, num_codebooks, dim, channel_axis, symmetric, eps = settings
  code_width = num_codebooks * len(levels)
  width = dim if dim is not None else code_width
  _check_axis(x, channel_axis, width, "dim" if dim is not None else "the quantized width")
  z = _to_last(x, channel_axis)
  if project_in is not None:
    z = project_in(z)
  z = z.reshape(*z.shape[:-1], num_codebooks, len(levels))
  codes, indices = quantize_with_indices(z, levels, eps, symmetric=symmetric)
  codes = codes.reshape(*codes.shape[:-2], code_width)
  out = project_out(codes) if project_out is not None else codes
  indices = indices[..., 0] if num_codebooks == 1 else _from_last(indices, channel_axis)
  return _from_last(out.astype(x.dtype), channel_axis), {
    "indices": indices,
    "codes": _from_last(codes, channel_axis),
  }


def fsq_decode(
  indices: jax.Array, settings: FSQSettings, project_out: Projection, dtype=jnp.float32
) -> jax.Array:
  """Quantized vectors of ``fsq_forward``'s indices, in ``dtype``."""
  levels, num_codebooks, _, channel_axis, symmetric, _ = settings
  indices = _to_last(indices, channel_axis) if num_codebooks > 1 else indices[..., None]
  codes = indices_to_codes(indices, levels, symmetric=symmetric, dtype=jnp.float32)
  codes = codes.reshape(*codes.shape[:-2], num_codebooks * len(levels))
  out = project_out(codes) if project_out is not None else codes
  return _from_last(out.astype(dtype), channel_axis)


def residual_scales(levels: tuple[int, ...], num: int) -> jax.Array:
  """(num, d) float32 stage scales (levels - 1) ** -k of residual FSQ."""
  L = np.asarray(levels, np.float64)
  return jnp.asarray((L - 1) ** -np.arange(num)[:, None], jnp.float32)


def residual_fsq_forward(
  x: jax.Array, settings: FSQSettings, project_in: Projection, project_out: Projection
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The residual FSQ layer (see ``ResidualFSQ``): (quantized like x, {"indices": int32}), indices shaped
  like x without the channel axis, plus a last axis of size num_stages (``settings.groups``)."""
  levels, num_stages, dim, channel_axis, symmetric, eps = settings
  width = dim if dim is not None else len(levels)
  _check_axis(x, channel_axis, width, "dim" if dim is not None else "len(levels)")
  z = _to_last(x, channel_axis)
  if project_in is not None:
    z = project_in(z)
  residual = z.astype(compute_dtype(z.dtype))
  total = jnp.zeros_like(residual)
  indices = []
  for scale in residual_scales(levels, num_stages):
    codes, stage_indices = quantize_with_indices(residual / scale, levels, eps, symmetric=symmetric)
    indices.append(stage_indices)
    stage = codes * scale
    residual = residual - jax.lax.stop_gradient(stage)
    total = total + stage
  out = project_out(total) if project_out is not None else total
  return _from_last(out.astype(x.dtype), channel_axis), {"indices": jnp.stack(indices, -1)}


def residual_fsq_decode(
  indices: jax.Array, settings: FSQSettings, project_out: Projection, dtype=jnp.float32
) -> jax.Array:
  """Quantized vectors from (..., k) stage indices, k <= num_stages (the first k stages)."""
  levels, num_stages, _, channel_axis, symmetric, _ = settings
  k = indices.shape[-1]
  if not 1 <= k <= num_stages:
    raise ValueError(f"indices of shape {indices.shape} must have 1 to num_stages = {num_stages} stages last")
  codes = indices_to_codes(indices, levels, symmetric=symmetric)
  total = jnp.sum(codes * residual_scales(levels, k), axis=-2)
  out = project_out(total) if project_out is not None else total
  return _from_last(out.astype(dtype), channel_axis)


class FSQ(nn.Module):
  """Finite scalar quantization layer.

  There is no auxiliary loss, by design: FSQ has no codebook to learn (the grid is fixed), so there
  is no codebook or commitment loss, and every code is reachable by construction, so no entropy
  penalty is needed against collapse. The only training signal is the task loss, whose gradient
  passes through the rounding unchanged (straight-through estimator).

  Attributes:
    levels: number of values per quantized channel; codebook size is their product.
    num_codebooks: independent FSQ groups; the quantized width is ``num_codebooks * len(levels)``.
    dim: width of inputs and outputs. When set and different from the quantized width, a Dense layer
      projects in before quantizing and another projects back out. None: no projection, the input
      must have exactly the quantized width.
    channel_axis: the axis holding channels (-1 for NHWC, 1 for NCHW); never guessed from the rank.
    symmetric: symmetric grid for even levels (see the module docstring).
    eps: see ``bound``.
  """

  levels: Sequence[int]
  num_codebooks: int = 1
  dim: int | None = None
  channel_axis: int = -1
  symmetric: bool = False
  eps: float = 1e-3

  def setup(self):
    self._levels = check_module_fields(self.levels, self.num_codebooks, self.dim)
    check_eps(self.eps)
    self.code_width = self.num_codebooks * len(self._levels)
    self.projected = self.dim is not None and self.dim != self.code_width
    if self.projected:
      self.project_in = nn.Dense(self.code_width, name="project_in")
      self.project_out = nn.Dense(self.dim, name="project_out")

  @property
  def codebook_size(self) -> int:
    return codebook_size(self.levels)

  @property
  def latent_width(self) -> int:
    """Channels of the input (and output): ``dim``, or the quantized width without a projection."""
    return self.dim if self.dim is not None else self.num_codebooks * len(self.levels)

  @property
  def codebook_shape(self) -> tuple[int, int]:
    """(codes per group, groups) of the indices: one index per codebook."""
    return codebook_size(self.levels), self.num_codebooks

  def _settings(self) -> FSQSettings:
    return FSQSettings(
      self._levels, self.num_codebooks, self.dim, self.channel_axis, self.symmetric, self.eps
    )

  def _projections(self):
    return (self.project_in, self.project_out) if self.projected else (None, None)

  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Quantizes x: ``fsq_forward`` (its docstring gives the shapes). ``train`` changes nothing (the
    grid is fixed); it is there so that every quantizer takes the same call."""
    del train
    return fsq_forward(x, self._settings(), *self._projections())

  def decode(self, indices: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Quantized vectors of indices (the inverse of ``__call__``'s indices), in ``dtype``."""
    return fsq_decode(indices, self._settings(), self._projections()[1], dtype)


class ResidualFSQ(nn.Module):
  """Residual FSQ: stage k quantizes the remaining residual, scaled up by (L - 1)^k.

  Stage k computes ``q_k = quantize(r_k / s_k) * s_k`` with ``s_k = (levels - 1) ** -k`` per channel and
  ``r_{k+1} = r_k - stop_gradient(q_k)``; the output is ``sum_k q_k``. Each stage passes gradients
  straight through. Decoding a truncated index stack (the first k stages) gives the coarser
  approximation those stages make. No auxiliary loss, for the reasons given in ``FSQ``.

  Attributes:
    levels: levels of every stage.
    num_stages: number of residual stages.
    dim: input/output width; Dense projections in and out when it differs from len(levels).
    channel_axis: the axis holding channels.
    symmetric: symmetric grid for even levels.
    eps: see ``bound``.
  """

  levels: Sequence[int]
  num_stages: int
  dim: int | None = None
  channel_axis: int = -1
  symmetric: bool = False
  eps: float = 1e-3

  def setup(self):
    self._levels = check_module_fields(self.levels, 1, self.dim)
    check_eps(self.eps)
    if not isinstance(self.num_stages, int) or self.num_stages < 1:
      raise ValueError(f"num_stages must be an integer >= 1, got {self.num_stages!r}")
    width = len(self._levels)
    self.projected = self.dim is not None and self.dim != width
    if self.projected:
      self.project_in = nn.Dense(width, name="project_in")
      self.project_out = nn.Dense(self.dim, name="project_out")

  @property
  def latent_width(self) -> int:
    """Channels of the input (and output): ``dim``, or ``len(levels)`` without a projection."""
    return self.dim if self.dim is not None else len(self.levels)

  @property
  def codebook_shape(self) -> tuple[int, int]:
    """(codes per stage, stages) of the indices: one index per stage."""
    return codebook_size(self.levels), self.num_stages

  def _settings(self) -> FSQSettings:
    return FSQSettings(self._levels, self.num_stages, self.dim, self.channel_axis, self.symmetric, self.eps)

  def _projections(self):
    return (self.project_in, self.project_out) if self.projected else (None, None)

  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Quantizes x: ``residual_fsq_forward``. ``train`` changes nothing (as in ``FSQ``)."""
    del train
    return residual_fsq_forward(x, self._settings(), *self._projections())

  def decode(self, indices: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Quantized vectors from (..., k) stage indices, k <= num_stages (the first k stages)."""
    return residual_fsq_decode(indices, self._settings(), self._projections()[1], dtype)


def lfq_entropy_terms(z: jax.Array, temperature: float, group_bits: int) -> tuple[jax.Array, jax.Array]:
  """Per-sample and codebook entropies (nats) of LFQ's soft code assignment.

  The soft assignment of a vector z to the binary codes c in {-1, 1}^d is
  ``softmax_c(-|z - c|^2 / temperature)``, which factorises over channels: channel i is +1 with
  probability ``sigmoid(4 z_i / temperature)``. The per-sample entropy is therefore exact for any d.
  The entropy of the batch-averaged assignment is computed exactly within groups of ``group_bits``
  consecutive channels and summed over groups (exact when d <= group_bits; otherwise an upper bound
  that treats groups as independent).

  Args:
    z: (n, d) float32 pre-quantization values.
    temperature: softmax temperature.
    group_bits: channels per group for the codebook entropy.

  Returns:
    per_sample_entropy: scalar, mean over the n vectors.
    codebook_entropy: scalar.
  """
  logits = 4.0 * z / temperature
  p = jax.nn.sigmoid(logits)
  log_on, log_off = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  per_sample = -jnp.mean(jnp.sum(p * log_on + (1 - p) * log_off, axis=-1))
  codebook = jnp.zeros((), p.dtype)
  d = z.shape[-1]
  for start in range(0, d, group_bits):
    g = min(group_bits, d - start)
    bits = ((np.arange(2**g)[None, :] >> np.arange(g)[:, None]) & 1).astype(np.float32)  # (g, 2^g)
    log_probs = jnp.matmul(log_on[:, start : start + g], bits, precision=_HIGHEST) + jnp.matmul(
      log_off[:, start : start + g], 1 - bits, precision=_HIGHEST
    )
    mean = jnp.mean(jnp.exp(log_probs), axis=0)
    codebook = codebook + entropy_nats(mean)
  return per_sample, codebook


class LFQLoss(NamedTuple):
  """LFQ's auxiliary-loss settings (see ``LFQ``)."""

  entropy_loss_weight: float = 0.1
  diversity_weight: float = 1.0
  commitment_loss_weight: float = 0.25
  temperature: float = 0.01
  entropy_group_bits: int = 10


def check_lfq_fields(num_bits: int, dim: int | None, loss: LFQLoss) -> None:
  if not isinstance(num_bits, int) or not 1 <= num_bits <= 30:
    raise ValueError(f"num_bits must be an integer in [1, 30], got {num_bits!r}")
  if not isinstance(loss.entropy_group_bits, int) or not 1 <= loss.entropy_group_bits <= 16:
    raise ValueError(f"entropy_group_bits must be an integer in [1, 16], got {loss.entropy_group_bits!r}")
  if not loss.temperature > 0:
    raise ValueError(f"temperature must be > 0, got {loss.temperature!r}")
  check_module_fields([2] * num_bits, 1, dim)


def lfq_forward(
  x: jax.Array,
  num_bits: int,
  dim: int | None,
  channel_axis: int,
  loss: LFQLoss,
  project_in: Projection,
  project_out: Projection,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The LFQ layer (see ``LFQ``).

  Returns:
    quantized: like x.
    aux: ``indices`` (int32, x's shape without the channel axis), ``loss`` (the weighted sum), and
      its parts ``entropy_loss``, ``per_sample_entropy``, ``codebook_entropy``, ``commitment_loss``.
  """
  width = dim if dim is not None else num_bits
  _check_axis(x, channel_axis, width, "dim" if dim is not None else "num_bits")
  z = _to_last(x, channel_axis)
  if project_in is not None:
    z = project_in(z)
  z = z.astype(compute_dtype(z.dtype))
  codes = jnp.where(z > 0, 1.0, -1.0).astype(z.dtype)
  quantized = z + jax.lax.stop_gradient(codes - z)
  indices = digits_to_indices((codes > 0).astype(jnp.int32), [2] * num_bits, check=False)
  flat = z.reshape(-1, num_bits)
  per_sample, codebook = lfq_entropy_terms(flat, loss.temperature, loss.entropy_group_bits)
  entropy_loss = per_sample - loss.diversity_weight * codebook
  commitment = jnp.mean(jnp.square(z - jax.lax.stop_gradient(codes)))
  total = loss.entropy_loss_weight * entropy_loss + loss.commitment_loss_weight * commitment
  out = project_out(quantized) if project_out is not None else quantized
  return _from_last(out.astype(x.dtype), channel_axis), {
    "indices": indices,
    "loss": total,
    "entropy_loss": entropy_loss,
    "per_sample_entropy": per_sample,
    "codebook_entropy": codebook,
    "commitment_loss": commitment,
  }


def lfq_decode(
  indices: jax.Array, num_bits: int, channel_axis: int, project_out: Projection, dtype=jnp.float32
) -> jax.Array:
  """Quantized vectors of LFQ indices: (...) int -> x-like ``dtype`` array."""
  codes = indices_to_codes(indices, [2] * num_bits, symmetric=True)
  out = project_out(codes) if project_out is not None else codes
  return _from_last(out.astype(dtype), channel_axis)


class LFQ(nn.Module):
  """Lookup-free quantization (MAGVIT-v2): each channel is quantized to {-1, +1} by its sign.

  The index of a code is the binary number whose bit i is (channel i > 0); it equals the FSQ index of
  ``levels = [2] * d`` with the symmetric grid. Unlike FSQ, LFQ needs an auxiliary loss: the entropy
  penalty ``per_sample_entropy - diversity_weight * codebook_entropy`` (confident assignments, all codes
  used), plus a commitment loss pulling z toward its code.

  Attributes:
    num_bits: quantized channels d; the codebook has 2^d codes.
    dim: input/output width; Dense projections in and out when it differs from num_bits.
    channel_axis: the axis holding channels.
    entropy_loss_weight: weight of the entropy penalty.
    diversity_weight: weight of the codebook-entropy term inside the penalty.
    commitment_loss_weight: weight of ``mean((z - stop_gradient(codes))^2)``.
    temperature: softmax temperature of the soft assignment.
    entropy_group_bits: channels per group for the codebook entropy (see ``lfq_entropy_terms``).
  """

  num_bits: int
  dim: int | None = None
  channel_axis: int = -1
  entropy_loss_weight: float = 0.1
  diversity_weight: float = 1.0
  commitment_loss_weight: float = 0.25
  temperature: float = 0.01
  entropy_group_bits: int = 10

  def setup(self):
    check_lfq_fields(self.num_bits, self.dim, self._loss_weights())
    self.projected = self.dim is not None and self.dim != self.num_bits
    if self.projected:
      self.project_in = nn.Dense(self.num_bits, name="project_in")
      self.project_out = nn.Dense(self.dim, name="project_out")

  @property
  def latent_width(self) -> int:
    """Channels of the input (and output): ``dim``, or ``num_bits`` without a projection."""
    return self.dim if self.dim is not None else self.num_bits

  @property
  def codebook_shape(self) -> tuple[int, int]:
    """(codes, groups) of the indices: 2^num_bits codes, one group."""
    return 2**self.num_bits, 1

  def _projections(self):
    return (self.project_in, self.project_out) if self.projected else (None, None)

  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Quantizes x: ``lfq_forward``. ``train`` changes nothing (its losses are returned either way)."""
    del train
    project_in, project_out = self._projections()
    return lfq_forward(
      x, self.num_bits, self.dim, self.channel_axis, self._loss_weights(), project_in, project_out
    )

  def _loss_weights(self) -> LFQLoss:
    return LFQLoss(
      self.entropy_loss_weight,
      self.diversity_weight,
      self.commitment_loss_weight,
      self.temperature,
      self.entropy_group_bits,
    )

  def decode(self, indices: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Quantized vectors of indices: (...) int -> x-like ``dtype`` array."""
    return lfq_decode(indices, self.num_bits, self.channel_axis, self._projections()[1], dtype)
