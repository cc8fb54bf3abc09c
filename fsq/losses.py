"""Adversarial losses of VQGAN training (as in MaskGIT): non-saturating GAN and the R1 penalty.

Pure functions of discriminator logits (B,) and, for R1, of a discriminator function.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def generator_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating generator loss ``mean(softplus(-D(fake)))`` = ``-mean(log sigmoid(D(fake)))``."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """``mean(softplus(-D(real))) + mean(softplus(D(fake)))``: the logistic loss of telling them apart."""
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def r1_penalty(discriminator: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """R1: ``mean over the batch of |d D(x) / d x|^2`` at real images x (B, H, W, C); MaskGIT weight: 10."""
  grads = jax.grad(lambda x: jnp.sum(discriminator(x)))(real)
  return jnp.mean(jnp.sum(jnp.square(grads), axis=tuple(range(1, real.ndim))))
