"""Vision Transformer encoder for UViM: big_vision's ViT without a classification head.

``ViT``: images (B, H, W, C) are cut into non-overlapping p x p patches by a convolution with kernel p and
stride p ("VALID"), flattened row-major to (B, H/p * W/p, width), given position embeddings, dropout, and
passed through ``Encoder``: ``depth`` pre-LN blocks (x += Dropout(Attention(LN(x))); x += Dropout(MLP(LN(x))),
MLP = Dense, GELU, Dropout, Dense) and a final LayerNorm. UViM's stage II image encoder is a ``ViT``; its
stage I base model runs ``Encoder`` over its own (Dense) patch embeddings.

As in big_vision (``big_vision/models/vit.py``): attention kernels xavier-uniform, no attention-weight
dropout; MLP kernels xavier-uniform, MLP biases normal(1e-6); learned position embeddings
normal(1/sqrt(width)) or fixed 2-D sin-cos (MoCo v3); LayerNorm epsilon 1e-6. Parameter names follow
big_vision (``embedding``, ``pos_embedding``, ``Transformer/encoderblock_{i}/...``,
``Transformer/encoder_norm``), so that ``fsq.models.vit_checkpoint`` reads big_vision's ViT checkpoints
into it (UViM's stage II encoder starts from the ImageNet-21k ViT-L/16: ``vtt.encoder_init``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

POSEMB_TYPES = ("learn", "sincos2d")


def posemb_sincos_2d(height: int, width: int, dim: int, temperature: float = 10_000.0) -> jax.Array:
  """Fixed 2-D sin-cos position embeddings (MoCo v3, as big_vision) for a row-major (height, width) grid.

  Channel quarters are [sin(x w), cos(x w), sin(y w), cos(y w)] with x the column, y the row and
  w_k = temperature^(-k / (dim/4 - 1)), k = 0 .. dim/4 - 1.

  Returns:
    (1, height * width, dim) float32.
  """
  if dim % 4 or dim < 8:
    raise ValueError(f"sincos2d position embeddings need a width divisible by 4 and >= 8, got {dim}")
  y, x = np.mgrid[:height, :width]
  omega = 1.0 / temperature ** (np.arange(dim // 4) / (dim // 4 - 1))
  x = x.reshape(-1, 1) * omega
  y = y.reshape(-1, 1) * omega
  pe = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
  return jnp.asarray(pe[None], jnp.float32)


class MlpBlock(nn.Module):
  """(..., width) -> (..., width): Dense(mlp_dim), GELU, Dropout, Dense(width)."""

  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    inits = {"kernel_init": nn.initializers.xavier_uniform(), "bias_init": nn.initializers.normal(1e-6)}
    h = nn.gelu(nn.Dense(self.mlp_dim, dtype=self.dtype, **inits)(x))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    return nn.Dense(x.shape[-1], dtype=self.dtype, **inits)(h)


class EncoderBlock(nn.Module):
  """Pre-LN block, (B, N, width) -> (B, N, width): self-attention then MLP, each a dropped-out residual."""

  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(), dtype=self.dtype
    )(y, y)
    x = x + nn.Dropout(self.dropout)(y, deterministic=not train)
    y = MlpBlock(self.mlp_dim, self.dropout, self.dtype)(nn.LayerNorm(dtype=self.dtype)(x), train=train)
    return x + nn.Dropout(self.dropout)(y, deterministic=not train)


class Encoder(nn.Module):
  """Token sequence (B, N, width) -> (B, N, width): ``depth`` pre-LN blocks and a final LayerNorm."""

  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  remat: bool = False  # recompute each block's activations in the backward pass

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    assert x.ndim == 3, f"expected (batch, seq, width), got {x.shape}"
    if x.shape[-1] % self.num_heads:
      raise ValueError(f"width = {x.shape[-1]} must be divisible by num_heads = {self.num_heads}")
    block = nn.remat(EncoderBlock, static_argnums=(2,)) if self.remat else EncoderBlock
    for i in range(self.depth):
      x = block(self.num_heads, self.mlp_dim, self.dropout, self.dtype, name=f"encoderblock_{i}")(x, train)
    return nn.LayerNorm(dtype=self.dtype, name="encoder_norm")(x)


def patch_grid(images: jax.Array, patch_size: int) -> tuple[int, int]:
  """(rows, cols) of the p x p patch grid of images (B, H, W, C); a ValueError unless p divides H and W."""
  assert images.ndim == 4, f"expected images (batch, height, width, channels), got {images.shape}"
  p = patch_size
  if images.shape[1] % p or images.shape[2] % p:
    raise ValueError(f"patch_size = {p} must divide the image height and width, got images {images.shape}")
  return images.shape[1] // p, images.shape[2] // p


def add_position_embedding(module: nn.Module, x: jax.Array, rows: int, cols: int, posemb: str) -> jax.Array:
  """Tokens x (B, rows * cols, width) plus ``module``'s learned ``pos_embedding`` parameter ("learn") or
  the fixed 2-D sin-cos table ("sincos2d"). Call from inside ``module``'s compact ``__call__``."""
  if posemb not in POSEMB_TYPES:
    raise ValueError(f"posemb must be one of {POSEMB_TYPES}, got {posemb!r}")
  width = x.shape[-1]
  if posemb == "learn":
    init = nn.initializers.normal(1.0 / np.sqrt(width))
    return x + module.param("pos_embedding", init, (1, rows * cols, width))
  return x + posemb_sincos_2d(rows, cols, width)


class ViT(nn.Module):
  """Images (B, H, W, C) -> patch features (B, H/p * W/p, width), patches in row-major order.

  Attributes:
    width: token width; depth: number of blocks; num_heads: attention heads (divide width);
    mlp_dim: hidden width of the MLPs; patch_size: p, the side of a square patch (divides H and W);
    dropout: rate on the embeddings, the residual branches and the MLP hidden layer in training;
    posemb: "learn" (a parameter per patch position) or "sincos2d" (fixed).
  """

  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  patch_size: int
  dropout: float = 0.0
  posemb: str = "learn"
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    rows, cols = patch_grid(images, self.patch_size)
    p = self.patch_size
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="embedding")(
      images
    )
    x = add_position_embedding(self, x.reshape(x.shape[0], rows * cols, self.width), rows, cols, self.posemb)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    encoder = Encoder(
      self.depth, self.num_heads, self.mlp_dim, self.dropout, self.dtype, self.remat, name="Transformer"
    )
    return encoder(x, train=train)
