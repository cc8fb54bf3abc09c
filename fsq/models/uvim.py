"""UViM's stage I model: a restricted oracle compresses the task output into a grid of codes, and a base
model predicts the output from the image and those codes.

Follows big_vision's ``big_vision/models/proj/uvim/vit.py`` (``Model``) as configured by
``big_vision/configs/proj/uvim/vqvae_{nyu_depth,coco_panoptic,imagenet2012_colorization}.py``:

* Restricted oracle: the task output y (B, H, W, C_y), as the task encodes it (depth as one-hot bins,
  panoptic as one-hot semantics and instances, colour as channels), cut into p x p patches and linearly
  embedded; with context (big_vision ``with_encoder_ctx``) the image x gets its own p x p patch
  embedding, added to y's. Here both are one ``ViT`` patch embedding over ``concat([y, x], -1)``, which
  is the same function (a sum of two linear maps; one bias instead of two). Then a learned position
  embedding and ``oracle_depth`` pre-LN blocks.
* Bottleneck (big_vision ``bottleneck_resize=True``): the (H/p, W/p) token grid is resized
  (``jax.image.resize``, "linear") to a ``code_grid`` x ``code_grid`` grid, a Dense layer maps it to the
  quantizer's width, and the quantizer (FSQ, or UViM's VQ ``fsq.vq.uvim_vq``, which standardises its
  inputs as big_vision does before its nearest-codeword search) gives codes and indices (B, h, w).
* Code dropout (big_vision ``code_dropout="random"``, ``fsq.vq.code_dropout``): in training each example
  draws u ~ U(0, 1) and keeps the codes whose importance ``linspace(1, 0, n + 2)[1:-1]`` exceeds u (on
  average half), at random positions; dropped codes are zeroed. Off when not training. With FSQ and odd
  levels the zero vector is also the centre code, so a dropped code looks like that code (big_vision's
  VQ codewords are L2-normalised, never zero).
* Base model: a Dense "decoder stem" to the model width, the code grid resized back to the token grid,
  with context (``with_decoder_ctx``) plus the image's own p x p patch embedding (added, not
  concatenated), a learned position embedding, ``base_depth`` pre-LN blocks, and a zero-initialised
  per-token head to p * p * output_channels values, put back in place to (B, H, W, output_channels).

Paper scale (all three big_vision stage I configs; FSQ paper, UViM section): 512 x 512 inputs, patch 16
(a 32 x 32 token grid), code grid 16 x 16 = 256 codes, width 768, 12 heads, MLP 3072, oracle 6 blocks,
base 12 blocks; VQ dictionary 4096 of width 768; FSQ levels [7, 5, 5, 5, 5]. big_vision's configs set
both context switches on; the "without context" ablation turns both off (``oracle_context=False,
base_context=False``): the stage I model is then an autoencoder of y alone, and only stage II sees the
image. The two switches are separate fields, as in big_vision.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsq import vq
from fsq.bottlenecks import Bottleneck
from fsq.models.vit import POSEMB_TYPES, Encoder, ViT, add_position_embedding, patch_grid

CODE_DROPOUT_MODES = ("none", "random", "prefix")


def _resize_grid(x: jax.Array, rows: int, cols: int) -> jax.Array:
  """(B, r, c, d) -> (B, rows, cols, d) by linear resizing (antialiased when shrinking), as big_vision."""
  return jax.image.resize(x, (x.shape[0], rows, cols, x.shape[-1]), method="linear")


class BaseModel(nn.Module):
  """UViM's base model: (code grid, image) -> task output at full resolution.

  Attributes:
    output_channels: C_out, channels of the prediction (e.g. logits per depth bin).
    width, depth, num_heads, mlp_dim, patch_size, dropout, posemb: as ``fsq.models.vit.ViT``.
    context: add the image's patch embedding to the code tokens (big_vision ``with_decoder_ctx``).
    head_zeroinit: zero kernel for the output head (big_vision's default).
  """

  output_channels: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  patch_size: int
  dropout: float = 0.0
  posemb: str = "learn"
  context: bool = True
  head_zeroinit: bool = True
  dtype: jnp.dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, codes: jax.Array, images: jax.Array, *, train: bool = False) -> jax.Array:
    """Predicts the task output.

    Args:
      codes: (B, h, w, d) quantized codes (possibly with dropped codes zeroed).
      images: (B, H, W, C); only the shape (H, W) is used without context.
      train: dropout in the transformer.

    Returns:
      (B, H, W, output_channels) float32.
    """
    assert codes.ndim == 4, f"expected codes (batch, h, w, dim), got {codes.shape}"
    rows, cols = patch_grid(images, self.patch_size)
    p = self.patch_size
    batch, height, width_px, _ = images.shape
    x = nn.Dense(self.width, dtype=self.dtype, name="decoder_stem")(codes)
    x = _resize_grid(x, rows, cols)
    if self.context:
      x = x + nn.Conv(
        self.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype, name="ctx_embedding"
      )(images)
    x = add_position_embedding(self, x.reshape(batch, rows * cols, self.width), rows, cols, self.posemb)
    encoder = Encoder(
      self.depth, self.num_heads, self.mlp_dim, self.dropout, self.dtype, self.remat, name="Transformer"
    )
    x = encoder(x, train=train)
    kernel_init = nn.initializers.zeros if self.head_zeroinit else nn.initializers.lecun_normal()
    x = nn.Dense(p * p * self.output_channels, kernel_init=kernel_init, dtype=self.dtype, name="head")(x)
    x = x.reshape(batch, rows, cols, p, p, self.output_channels)
    out = x.transpose(0, 1, 3, 2, 4, 5).reshape(batch, height, width_px, self.output_channels)
    return out.astype(jnp.float32)  # losses and metrics in float32 whatever the compute dtype


class UViM(nn.Module):
  """UViM stage I: restricted oracle over y (and optionally x), quantizer, base model over x and codes.

  Defaults are paper scale (see the module docstring). Training with UViM's VQ needs
  ``mutable=["vq_stats"]`` and an rng named ``vq``; code dropout and transformer dropout use ``dropout``.

  Attributes:
    quantizer: any ``fsq.bottlenecks.Bottleneck``: FSQ, or UViM's VQ (``make_quantizer("vq_uvim")``).
    output_channels: C_out of the prediction.
    patch_size: p, side of the square patches of both ViTs.
    code_grid: side of the square code grid (16: 256 codes).
    width, num_heads, mlp_dim, dropout, posemb: shared by the oracle and the base model (``ViT``).
    oracle_depth, base_depth: blocks of the oracle (big_vision ``enc_depth``) and base model (``dec_depth``).
    oracle_context: the oracle also sees the image (big_vision ``with_encoder_ctx``).
    base_context: the base model sees the image (big_vision ``with_decoder_ctx``).
    code_dropout: "random" (big_vision's setting), "prefix" or "none"; see ``fsq.vq.code_dropout``.
    head_zeroinit: zero kernel for the output head.
  """

  quantizer: Bottleneck
  output_channels: int
  patch_size: int = 16
  code_grid: int = 16
  width: int = 768
  oracle_depth: int = 6
  base_depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  dropout: float = 0.0
  posemb: str = "learn"
  oracle_context: bool = True
  base_context: bool = True
  code_dropout: str = "random"
  head_zeroinit: bool = True
  dtype: jnp.dtype = jnp.float32
  remat: bool = False  # recompute each transformer block's activations in the backward pass

  def setup(self):
    if self.code_dropout not in CODE_DROPOUT_MODES:
      raise ValueError(f"code_dropout must be one of {CODE_DROPOUT_MODES}, got {self.code_dropout!r}")
    if self.posemb not in POSEMB_TYPES:
      raise ValueError(f"posemb must be one of {POSEMB_TYPES}, got {self.posemb!r}")
    if not isinstance(self.code_grid, int) or self.code_grid < 1:
      raise ValueError(f"code_grid must be an integer >= 1, got {self.code_grid!r}")
    vit = dict(width=self.width, num_heads=self.num_heads, mlp_dim=self.mlp_dim, patch_size=self.patch_size)
    self.oracle = ViT(
      depth=self.oracle_depth,
      dropout=self.dropout,
      posemb=self.posemb,
      dtype=self.dtype,
      remat=self.remat,
      **vit,
      name="oracle",
    )
    self.encoder_head = nn.Dense(self.quantizer.latent_width, dtype=self.dtype, name="encoder_head")
    self.base = BaseModel(
      self.output_channels,
      depth=self.base_depth,
      dropout=self.dropout,
      posemb=self.posemb,
      context=self.base_context,
      head_zeroinit=self.head_zeroinit,
      dtype=self.dtype,
      remat=self.remat,
      **vit,
      name="base",
    )

  def _latents(self, x: jax.Array, y: jax.Array, train: bool) -> jax.Array:
    """(B, H, W, C_x), (B, H, W, C_y) -> (B, code_grid, code_grid, quantizer width) pre-quantization."""
    assert x.ndim == 4 and y.ndim == 4, (
      f"expected x and y (batch, height, width, channels), got {x.shape}, {y.shape}"
    )
    if x.shape[:3] != y.shape[:3]:
      raise ValueError(f"x and y must agree in (batch, height, width), got {x.shape} and {y.shape}")
    inputs = jnp.concatenate([y, x.astype(y.dtype)], axis=-1) if self.oracle_context else y
    tokens = self.oracle(inputs, train=train)
    rows, cols = x.shape[1] // self.patch_size, x.shape[2] // self.patch_size
    grid = tokens.reshape(tokens.shape[0], rows, cols, self.width)
    return self.encoder_head(_resize_grid(grid, self.code_grid, self.code_grid))

  def __call__(
    self, x: jax.Array, y: jax.Array, *, train: bool = False
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Stage I forward pass.

    Args:
      x: (B, H, W, C_x) images (big_vision: in [-1, 1]).
      y: (B, H, W, C_y) task output as the task encodes it for the oracle.
      train: code dropout, transformer dropout, VQ statistics updates.

    Returns:
      prediction: (B, H, W, output_channels) float.
      aux: the quantizer's aux: ``indices`` int32 (B, code_grid, code_grid) and, for VQ, ``loss`` and
        its parts (FSQ has no loss, by design).
    """
    codes, aux = self.quantizer(self._latents(x, y, train), train=train)
    if train and self.code_dropout != "none":
      batch, rows, cols, dim = codes.shape
      flat = vq.code_dropout(
        self.make_rng("dropout"), codes.reshape(batch, rows * cols, dim), self.code_dropout
      )
      codes = flat.reshape(codes.shape)
    return self.base(codes, x, train=train), aux

  def encode(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """Code indices of y (and x with oracle context): int32 (B, code_grid, code_grid)."""
    return self.quantizer(self._latents(x, y, False))[1]["indices"]

  def decode(self, x: jax.Array, indices: jax.Array) -> jax.Array:
    """Prediction (B, H, W, output_channels) from images x (B, H, W, C_x) and indices (B, h, w) (stage II)."""
    return self.base(self.quantizer.decode(indices), x, train=False)
