"""StyleGAN-style discriminator (as in MaskGIT's VQGAN training): residual blocks that blur and halve.

Images (B, H, W, C) in [-1, 1] -> logits (B,). A 3x3 stem, then per entry of ``channel_multipliers`` a
residual block (two 3x3 convolutions with leaky ReLU, the second after a [1, 3, 3, 1] blur and a 2x
downsample; the shortcut blurs, downsamples and projects; the sum is scaled by 1/sqrt(2)), a final
3x3 convolution, and two dense layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_BLUR = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0]) / 64.0


def blur_downsample(x: jax.Array) -> jax.Array:
  """[1, 3, 3, 1] blur then stride-2 subsampling, per channel: (B, H, W, C) -> (B, H/2, W/2, C)."""
  c = x.shape[-1]
  kernel = jnp.asarray(np.tile(_BLUR[:, :, None, None], (1, 1, 1, c)), x.dtype)
  return jax.lax.conv_general_dilated(
    x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c
  )


class DownBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.leaky_relu(nn.Conv(x.shape[-1], (3, 3))(x), 0.2)
    h = nn.leaky_relu(nn.Conv(self.features, (3, 3))(blur_downsample(h)), 0.2)
    skip = nn.Conv(self.features, (1, 1), use_bias=False, name="shortcut")(blur_downsample(x))
    return (h + skip) / np.sqrt(2.0)


class Discriminator(nn.Module):
  """Real/fake logits (B,) for images (B, H, W, C); H and W divisible by 2^len(channel_multipliers)."""

  filters: int = 128
  channel_multipliers: Sequence[int] = (1, 2, 4, 4, 4, 4)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    factor = 2 ** len(self.channel_multipliers)
    assert x.ndim == 4 and x.shape[1] % factor == 0 and x.shape[2] % factor == 0, (
      f"expected (B, H, W, C) with H, W divisible by {factor}, got {x.shape}"
    )
    h = nn.leaky_relu(nn.Conv(self.filters, (3, 3), name="stem")(x), 0.2)
    for multiplier in self.channel_multipliers:
      h = DownBlock(self.filters * multiplier)(h)
    h = nn.leaky_relu(nn.Conv(self.filters * self.channel_multipliers[-1], (3, 3))(h), 0.2)
    h = nn.leaky_relu(nn.Dense(self.filters * self.channel_multipliers[-1])(h.reshape(h.shape[0], -1)), 0.2)
    return nn.Dense(1)(h)[:, 0]
