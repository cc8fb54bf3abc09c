"""StyleGAN-style discriminator (as in MaskGIT's VQGAN training): residual blocks that blur and halve.

Images (B, H, W, C) in [-1, 1] -> logits (B,). A 3x3 stem, then per entry of ``channel_multipliers`` a
residual block (two 3x3 convolutions with leaky ReLU, the second after a [1, 3, 3, 1] blur and a 2x
downsample; the shortcut blurs, downsamples and projects; the sum is scaled by 1/sqrt(2)), a final
3x3 convolution, and two dense layers. Every kernel starts xavier-uniform, as MaskGIT's (biases zero).
``maskgit_widths`` gives MaskGIT's widths and depth for an image size.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fsq.models.conv import Conv

_INIT = nn.initializers.xavier_uniform()
_BLUR = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0]) / 64.0


def maskgit_widths(image_size: int) -> tuple[int, tuple[int, ...]]:
  """MaskGIT's discriminator for ``image_size`` (a power of two, 8 to 1024) as (filters,
  channel_multipliers): StyleGAN2's width table (512 down to 32 px, then 256, 128, 64, 32, 16 at 64 ... 1024
  px) read at the input size for the stem and at each block's output size, with log2(image_size) - 2
  blocks, so that the last one ends at 4 x 4. 128 px: stem 128, blocks 256, 512, 512, 512, 512; 256 px:
  stem 64, blocks 128, 256, 512, 512, 512, 512."""
  table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
  if image_size not in table or image_size < 8:
    raise ValueError(f"image_size must be a power of two from 8 to 1024, got {image_size}")
  stem = table[image_size]
  blocks = [table[image_size >> k] for k in range(1, int(np.log2(image_size)) - 1)]
  return stem, tuple(width // stem for width in blocks)


def blur_downsample(x: jax.Array) -> jax.Array:
  """[1, 3, 3, 1] blur then stride-2 subsampling, per channel: (B, H, W, C) -> (B, H/2, W/2, C)."""
  c = x.shape[-1]
  kernel = jnp.asarray(np.tile(_BLUR[:, :, None, None], (1, 1, 1, c)), x.dtype)
  return jax.lax.conv_general_dilated(
    x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c
  )


class DownBlock(nn.Module):
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = functools.partial(Conv, kernel_init=_INIT, dtype=self.dtype)
    h = nn.leaky_relu(conv(x.shape[-1], (3, 3))(x), 0.2)
    h = nn.leaky_relu(conv(self.features, (3, 3))(blur_downsample(h)), 0.2)
    skip = conv(self.features, (1, 1), use_bias=False, name="shortcut")(blur_downsample(x))
    return (h + skip) / np.sqrt(2.0).astype(h.dtype)


class Discriminator(nn.Module):
  """Real/fake logits (B,) for images (B, H, W, C); H and W divisible by 2^len(channel_multipliers)."""

  filters: int = 128
  channel_multipliers: Sequence[int] = (1, 2, 4, 4, 4, 4)
  dtype: jnp.dtype = jnp.float32  # compute dtype; parameters and the returned logits are float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    factor = 2 ** len(self.channel_multipliers)
    assert x.ndim == 4 and x.shape[1] % factor == 0 and x.shape[2] % factor == 0, (
      f"expected (B, H, W, C) with H, W divisible by {factor}, got {x.shape}"
    )
    conv = functools.partial(Conv, kernel_init=_INIT, dtype=self.dtype)
    h = nn.leaky_relu(conv(self.filters, (3, 3), name="stem")(x), 0.2)
    for multiplier in self.channel_multipliers:
      h = DownBlock(self.filters * multiplier, self.dtype)(h)
    last = self.filters * self.channel_multipliers[-1]
    h = nn.leaky_relu(conv(last, (3, 3))(h), 0.2)
    h = nn.leaky_relu(nn.Dense(last, kernel_init=_INIT, dtype=self.dtype)(h.reshape(h.shape[0], -1)), 0.2)
    return nn.Dense(1, kernel_init=_INIT, dtype=self.dtype)(h)[:, 0].astype(jnp.float32)
