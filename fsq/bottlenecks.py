"""One interface for every quantizer of this package, and the registry that builds one by its kind.

Every quantizer (``fsq.layers.FSQ``, ``ResidualFSQ``, ``LFQ``, ``fsq.vq.VectorQuantizer``) is a
``Bottleneck``: models size their layers from ``latent_width``, count usage from ``codebook_shape`` and
call it one way, so no model or task needs to know which one it holds. ``KINDS`` maps each
``config.quantizer.kind`` to its constructor; adding a kind is one ``register`` call next to its module.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from fsq import layers, vq


@runtime_checkable
class Bottleneck(Protocol):
  """What models need of a quantizer.

  ``latent_width``: channels its input must have. ``codebook_shape``: (codes per group, groups) of its
  indices (groups: FSQ's codebooks, residual stages). Calling it on x (..., latent_width) with
  ``train`` (EMA updates and splitting for VQ; ignored by the others) gives (quantized x, aux) with
  ``aux["indices"]`` int32 (...) or (..., groups) and any ``aux["loss"]``; ``decode`` inverts the indices.
  """

  @property
  def latent_width(self) -> int: ...

  @property
  def codebook_shape(self) -> tuple[int, int]: ...

  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]: ...

  def decode(self, indices: jax.Array, dtype=jnp.float32) -> jax.Array: ...


# The fields a kind may read, with the values a kind gets for the fields a caller leaves out.
FIELDS = dict(
  levels=(8, 5, 5, 5),  # fsq, residual_fsq
  num_codebooks=1,  # fsq
  num_stages=2,  # residual_fsq
  num_bits=10,  # lfq
  codebook_size=1024,  # vq_*
  vq_dim=32,  # vq_*
  split=True,  # vq_uvim: False is UViM's no-splitting ablation
)
Builder = Callable[[types.SimpleNamespace], Bottleneck]
KINDS: dict[str, Builder] = {}


def register(kind: str) -> Callable[[Builder], Builder]:
  """Adds the constructor of ``kind`` (taking the FIELDS as attributes) to KINDS."""

  def add(build: Builder) -> Builder:
    if kind in KINDS:
      raise ValueError(f"quantizer kind {kind!r} is registered already")
    KINDS[kind] = build
    return build

  return add


def make_quantizer(kind: str, **fields: Any) -> Bottleneck:
  """The quantizer ``kind`` (one of KINDS) from the FIELDS it uses; the others keep their defaults."""
  if kind not in KINDS:
    raise ValueError(f"quantizer kind must be one of {tuple(KINDS)}, got {kind!r}")
  unknown = sorted(set(fields) - set(FIELDS))
  if unknown:
    raise ValueError(f"quantizer fields must be among {sorted(FIELDS)}, got {unknown}")
  return KINDS[kind](types.SimpleNamespace(**{**FIELDS, **fields}))


def from_config(quantizer: Mapping[str, Any]) -> Bottleneck:
  """The quantizer of a config's ``quantizer`` section (its ``kind`` and whichever FIELDS it has)."""
  return make_quantizer(quantizer["kind"], **{k: quantizer[k] for k in FIELDS if k in quantizer})


@register("fsq")
def _fsq(f: types.SimpleNamespace) -> Bottleneck:
  return layers.FSQ(levels=tuple(f.levels), num_codebooks=f.num_codebooks)


@register("residual_fsq")
def _residual_fsq(f: types.SimpleNamespace) -> Bottleneck:
  return layers.ResidualFSQ(levels=tuple(f.levels), num_stages=f.num_stages)


@register("lfq")
def _lfq(f: types.SimpleNamespace) -> Bottleneck:
  return layers.LFQ(num_bits=f.num_bits)


@register("vq_maskgit")
def _vq_maskgit(f: types.SimpleNamespace) -> Bottleneck:
  return vq.maskgit_vq(f.codebook_size, f.vq_dim)


@register("vq_plain")
def _vq_plain(f: types.SimpleNamespace) -> Bottleneck:
  return vq.maskgit_vq(f.codebook_size, f.vq_dim, entropy_loss_weight=0.0)


@register("vq_uvim")
def _vq_uvim(f: types.SimpleNamespace) -> Bottleneck:
  return vq.uvim_vq(f.codebook_size, f.vq_dim, **({} if f.split else {"split_min_count": None}))


@register("vq_reseed")
def _vq_reseed(f: types.SimpleNamespace) -> Bottleneck:
  return vq.reseed_vq(f.codebook_size, f.vq_dim)
