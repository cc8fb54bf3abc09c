"""MaskGIT's token vocabulary: image tokens, then one token per class, then the mask token.

Ids ``[0, codebook_size)`` are image tokens (for FSQ, the FSQ index), ``codebook_size + c`` is class c,
and ``codebook_size + num_classes`` is the mask token, which also stands for the null class of
classifier-free guidance at position 0.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  codebook_size: int
  num_classes: int

  def __post_init__(self):
    for name in ("codebook_size", "num_classes"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

  @property
  def mask_id(self) -> int:
    return self.codebook_size + self.num_classes

  @property
  def size(self) -> int:
    return self.codebook_size + self.num_classes + 1

  def class_tokens(self, labels: jax.Array) -> jax.Array:
    """(B,) labels in [0, num_classes) -> (B,) class token ids; label -1 gives the null class (mask id)."""
    labels = jnp.asarray(labels, jnp.int32)
    return jnp.where(labels < 0, self.mask_id, self.codebook_size + labels)

  def sequence(self, labels: jax.Array, image_tokens: jax.Array) -> jax.Array:
    """(B,) labels and (B, S) image tokens -> (B, 1 + S) model input, class token first."""
    return jnp.concatenate([self.class_tokens(labels)[:, None], image_tokens.astype(jnp.int32)], axis=1)
