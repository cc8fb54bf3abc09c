"""Flax NNX modules of the quantizers: ``FSQ``, ``ResidualFSQ`` and ``LFQ``.

The same layers as the Linen modules of ``fsq.layers`` (the same pure functions, fields and outputs;
``(quantized, aux)`` with ``aux["indices"]``), as NNX modules: the optional input and output projections
are ``nnx.Linear`` layers named ``project_in`` and ``project_out``, made from ``rngs`` when ``dim`` differs
from the quantized width. Without projections the modules hold no parameters and need no ``rngs``.

  quantizer = fsq.nnx.FSQ(levels=(8, 5, 5, 5), dim=64, rngs=nnx.Rngs(0))
  quantized, aux = quantizer(x)          # x: (..., 64); aux["indices"]: (...) int32 in [0, 1000)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from fsq import layers
from fsq.quantizers import Levels, check_eps, codebook_size


def _projections(width: int, dim: int | None, rngs: nnx.Rngs | None, module: str):
  """(project_in, project_out) Linear layers between ``dim`` and ``width``, or (None, None) when the
  input already has the quantized width."""
  if dim is None or dim == width:
    return None, None
  if rngs is None:
    raise ValueError(f"{module} with dim = {dim} (quantized width {width}) projects in and out: pass rngs")
  return nnx.Linear(dim, width, rngs=rngs), nnx.Linear(width, dim, rngs=rngs)


class FSQ(nnx.Module):
  """Finite scalar quantization (``fsq.layers.FSQ``'s fields and outputs; no auxiliary loss)."""

  def __init__(
    self,
    levels: Levels,
    num_codebooks: int = 1,
    dim: int | None = None,
    channel_axis: int = -1,
    symmetric: bool = False,
    eps: float = 1e-3,
    *,
    rngs: nnx.Rngs | None = None,
  ):
    self.levels = layers.check_module_fields(levels, num_codebooks, dim)
    check_eps(eps)
    self.settings = layers.FSQSettings(self.levels, num_codebooks, dim, channel_axis, symmetric, eps)
    self.project_in, self.project_out = _projections(num_codebooks * len(self.levels), dim, rngs, "FSQ")

  @property
  def codebook_size(self) -> int:
    return codebook_size(self.levels)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Quantizes x: ``fsq.layers.fsq_forward`` (its docstring gives the shapes)."""
    return layers.fsq_forward(x, self.settings, self.project_in, self.project_out)

  def decode(self, indices: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Quantized vectors of indices (the inverse of ``__call__``'s indices), in ``dtype``."""
    return layers.fsq_decode(indices, self.settings, self.project_out, dtype)


class ResidualFSQ(nnx.Module):
  """Residual FSQ (``fsq.layers.ResidualFSQ``'s fields and outputs): stage k quantizes the residual left
  by the stages before it, scaled up by (L - 1)^k."""

  def __init__(
    self,
    levels: Levels,
    num_stages: int,
    dim: int | None = None,
    channel_axis: int = -1,
    symmetric: bool = False,
    eps: float = 1e-3,
    *,
    rngs: nnx.Rngs | None = None,
  ):
    self.levels = layers.check_module_fields(levels, 1, dim)
    check_eps(eps)
    if not isinstance(num_stages, int) or num_stages < 1:
      raise ValueError(f"num_stages must be an integer >= 1, got {num_stages!r}")
    self.settings = layers.FSQSettings(self.levels, num_stages, dim, channel_axis, symmetric, eps)
    self.project_in, self.project_out = _projections(len(self.levels), dim, rngs, "ResidualFSQ")

  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Quantizes x: ``fsq.layers.residual_fsq_forward``."""
    return layers.residual_fsq_forward(x, self.settings, self.project_in, self.project_out)

  def decode(self, indices: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Quantized vectors from (..., k) stage indices, k <= num_stages (the first k stages)."""
    return layers.residual_fsq_decode(indices, self.settings, self.project_out, dtype)


class LFQ(nnx.Module):
  """Lookup-free quantization (``fsq.layers.LFQ``'s fields, outputs and auxiliary loss)."""

  def __init__(
    self,
    num_bits: int,
    dim: int | None = None,
    channel_axis: int = -1,
    entropy_loss_weight: float = 0.1,
    diversity_weight: float = 1.0,
    commitment_loss_weight: float = 0.25,
    temperature: float = 0.01,
    entropy_group_bits: int = 10,
    *,
    rngs: nnx.Rngs | None = None,
  ):
    self.loss = layers.LFQLoss(
      entropy_loss_weight, diversity_weight, commitment_loss_weight, temperature, entropy_group_bits
    )
    layers.check_lfq_fields(num_bits, dim, self.loss)
    self.num_bits, self.dim, self.channel_axis = num_bits, dim, channel_axis
    self.project_in, self.project_out = _projections(num_bits, dim, rngs, "LFQ")

  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Quantizes x: ``fsq.layers.lfq_forward``."""
    return layers.lfq_forward(
      x, self.num_bits, self.dim, self.channel_axis, self.loss, self.project_in, self.project_out
    )

  def decode(self, indices: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Quantized vectors of indices: (...) int -> x-like ``dtype`` array."""
    return layers.lfq_decode(indices, self.num_bits, self.channel_axis, self.project_out, dtype)
