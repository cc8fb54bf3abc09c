"""The MaskGIT tokenizer's convolutional encoder and decoder (VQGAN without attention).

Shape of the network (maskgit ``vqgan_tokenizer``): a 3x3 stem, then per resolution level
``num_res_blocks`` ResBlocks at ``filters * channel_multipliers[i]`` channels followed by a 2x2 average
pool (except after the last level); GroupNorm, swish and a 1x1 convolution to the latent width.
The decoder mirrors it with nearest-neighbour upsampling followed by a 3x3 convolution (a transposed
convolution is ~6x slower to train on CPU and was not used upstream either).

MaskGIT's ResBlock applies its channel-changing shortcut to the block's transformed activations
instead of its input (an upstream quirk); here the shortcut takes the input, and
``maskgit_shortcut_quirk=True`` restores the upstream behaviour for weight compatibility.

Convolutions are ``fsq.models.conv.Conv`` (``flax.linen.Conv`` with a faster kernel gradient on CPU).
``dtype`` is the compute dtype (parameters stay float32; bfloat16 at paper scale halves the activations'
memory); ``remat`` recomputes each ResBlock's activations in the backward pass instead of keeping them.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsq.models.conv import Conv


class ResBlock(nn.Module):
  """GroupNorm -> swish -> 3x3 conv, twice, plus a shortcut: (B, H, W, C_in) -> (B, H, W, features)."""

  features: int
  norm_groups: int = 32
  maskgit_shortcut_quirk: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    residual = x
    h = nn.GroupNorm(num_groups=self.norm_groups, dtype=self.dtype)(x)
    h = nn.swish(h)
    h = Conv(self.features, (3, 3), use_bias=False, dtype=self.dtype)(h)
    h = nn.GroupNorm(num_groups=self.norm_groups, dtype=self.dtype)(h)
    h = nn.swish(h)
    h = Conv(self.features, (3, 3), use_bias=False, dtype=self.dtype)(h)
    if x.shape[-1] != self.features:
      shortcut_input = h if self.maskgit_shortcut_quirk else residual
      residual = Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype, name="shortcut")(
        shortcut_input
      )
    return h + residual


def _check_common(filters: int, channel_multipliers: Sequence[int], num_res_blocks: int, norm_groups: int):
  if not channel_multipliers or any(m < 1 for m in channel_multipliers):
    raise ValueError(f"channel_multipliers must be non-empty positive integers, got {channel_multipliers}")
  if num_res_blocks < 1:
    raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
  for m in channel_multipliers:
    if (filters * m) % norm_groups:
      raise ValueError(
        f"norm_groups = {norm_groups} must divide every width filters * multiplier, got {filters * m}"
      )


def _blocks(parent: nn.Module):
  """A maker of the parent's ResBlocks, named ResBlock_0, ResBlock_1, ... in order (the names Flax gives
  them), rematerialised in the backward pass when ``parent.remat`` (the same parameters either way)."""
  block_class = nn.remat(ResBlock) if parent.remat else ResBlock
  count = iter(range(1 << 30))
  settings = dict(
    norm_groups=parent.norm_groups, maskgit_shortcut_quirk=parent.maskgit_shortcut_quirk, dtype=parent.dtype
  )
  return lambda features: block_class(features, **settings, name=f"ResBlock_{next(count)}")


class Encoder(nn.Module):
  """Images (B, H, W, C) -> latents (B, H / 2^(levels-1), W / 2^(levels-1), latent_dim)."""

  filters: int
  channel_multipliers: Sequence[int]
  num_res_blocks: int
  latent_dim: int
  norm_groups: int = 32
  maskgit_shortcut_quirk: bool = False
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    _check_common(self.filters, self.channel_multipliers, self.num_res_blocks, self.norm_groups)
    assert x.ndim == 4, f"expected images (batch, height, width, channels), got {x.shape}"
    block = _blocks(self)
    x = Conv(self.filters, (3, 3), use_bias=False, dtype=self.dtype)(x)
    for level, multiplier in enumerate(self.channel_multipliers):
      for _ in range(self.num_res_blocks):
        x = block(self.filters * multiplier)(x)
      if level < len(self.channel_multipliers) - 1:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    for _ in range(self.num_res_blocks):
      x = block(self.filters * self.channel_multipliers[-1])(x)
    x = nn.GroupNorm(num_groups=self.norm_groups, dtype=self.dtype)(x)
    x = nn.swish(x)
    return Conv(self.latent_dim, (1, 1), dtype=self.dtype, name="to_latent")(x)


class Decoder(nn.Module):
  """Latents (B, h, w, D) -> images (B, h * 2^(levels-1), w * 2^(levels-1), out_channels)."""

  filters: int
  channel_multipliers: Sequence[int]
  num_res_blocks: int
  out_channels: int
  norm_groups: int = 32
  maskgit_shortcut_quirk: bool = False
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    _check_common(self.filters, self.channel_multipliers, self.num_res_blocks, self.norm_groups)
    assert z.ndim == 4, f"expected latents (batch, height, width, channels), got {z.shape}"
    block = _blocks(self)
    x = Conv(self.filters * self.channel_multipliers[-1], (3, 3), dtype=self.dtype)(z)
    for _ in range(self.num_res_blocks):
      x = block(self.filters * self.channel_multipliers[-1])(x)
    for level in reversed(range(len(self.channel_multipliers))):
      for _ in range(self.num_res_blocks):
        x = block(self.filters * self.channel_multipliers[level])(x)
      if level > 0:
        b, h, w, c = x.shape
        x = jax.image.resize(x, (b, 2 * h, 2 * w, c), method="nearest")
        x = Conv(c, (3, 3), dtype=self.dtype)(x)
    x = nn.GroupNorm(num_groups=self.norm_groups, dtype=self.dtype)(x)
    x = nn.swish(x)
    return Conv(self.out_channels, (3, 3), dtype=self.dtype, name="to_pixels")(x)
