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


class _Tower(nn.Module):
  """What Encoder and Decoder share: width ``filters`` times each level's multiplier (a level halves or
  doubles the resolution), ``num_res_blocks`` per level, GroupNorm groups, the reference code's shortcut
  quirk, the compute dtype and rematerialisation of each block."""

  filters: int
  channel_multipliers: Sequence[int]
  num_res_blocks: int
  norm_groups: int = 32
  maskgit_shortcut_quirk: bool = False
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  def check_fields(self) -> None:
    """A ValueError naming the field whose value the tower cannot be built with."""
    multipliers = self.channel_multipliers
    if not multipliers or any(m < 1 for m in multipliers):
      raise ValueError(f"channel_multipliers must be non-empty positive integers, got {multipliers}")
    if self.num_res_blocks < 1:
      raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
    for width in (self.filters * m for m in multipliers):
      if width % self.norm_groups:
        raise ValueError(
          f"norm_groups = {self.norm_groups} must divide every width filters * multiplier, got {width}"
        )

  def blocks(self):
    """A maker of this tower's ResBlocks, named ResBlock_0, ResBlock_1, ... in order (the names Flax gives
    them), rematerialised in the backward pass when ``remat`` (the same parameters either way)."""
    block_class = nn.remat(ResBlock) if self.remat else ResBlock
    count = iter(range(1 << 30))
    settings = dict(
      norm_groups=self.norm_groups, maskgit_shortcut_quirk=self.maskgit_shortcut_quirk, dtype=self.dtype
    )
    return lambda features: block_class(features, **settings, name=f"ResBlock_{next(count)}")


class Encoder(_Tower, kw_only=True):
  """Images (B, H, W, C) -> latents (B, H / 2^(levels-1), W / 2^(levels-1), latent_dim)."""

  latent_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    self.check_fields()
    assert x.ndim == 4, f"expected images (batch, height, width, channels), got {x.shape}"
    block = self.blocks()
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


class Decoder(_Tower, kw_only=True):
  """Latents (B, h, w, D) -> images (B, h * 2^(levels-1), w * 2^(levels-1), out_channels)."""

  out_channels: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    self.check_fields()
    assert z.ndim == 4, f"expected latents (batch, height, width, channels), got {z.shape}"
    block = self.blocks()
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
