"""A quantized autoencoder: VQGAN-shaped encoder, any quantizer of this package, decoder.

The quantizer sits exactly where VQ sat in the paper: only the width of the encoder's last layer and
the decoder's first layer change (len(levels) channels for FSQ, the codeword width for VQ).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from fsq import layers, quantizers, vq
from fsq.models.vqgan import Decoder, Encoder

QUANTIZER_KINDS = ("fsq", "residual_fsq", "lfq", "vq_maskgit", "vq_plain", "vq_uvim", "vq_reseed")


def make_quantizer(
  kind: str,
  *,
  levels: Sequence[int] = (8, 5, 5, 5),
  num_codebooks: int = 1,
  num_stages: int = 2,
  num_bits: int = 10,
  codebook_size: int = 1024,
  vq_dim: int = 32,
) -> nn.Module:
  """The bottleneck named ``kind`` (one of QUANTIZER_KINDS), from the fields that kind uses.

  fsq: ``levels`` x ``num_codebooks``; residual_fsq: ``levels`` x ``num_stages``; lfq: ``num_bits``;
  vq_*: ``codebook_size`` codewords of width ``vq_dim`` set up as MaskGIT's, UViM's or the
  reseeding baseline (see fsq.vq).
  """
  if kind == "fsq":
    return layers.FSQ(levels=tuple(levels), num_codebooks=num_codebooks)
  if kind == "residual_fsq":
    return layers.ResidualFSQ(levels=tuple(levels), num_stages=num_stages)
  if kind == "lfq":
    return layers.LFQ(num_bits=num_bits)
  if kind == "vq_maskgit":
    return vq.maskgit_vq(codebook_size, vq_dim)
  if kind == "vq_plain":
    return vq.maskgit_vq(codebook_size, vq_dim, entropy_loss_weight=0.0)
  if kind == "vq_uvim":
    return vq.uvim_vq(codebook_size, vq_dim)
  if kind == "vq_reseed":
    return vq.reseed_vq(codebook_size, vq_dim)
  raise ValueError(f"quantizer kind must be one of {QUANTIZER_KINDS}, got {kind!r}")


def apply_quantizer(
  quantizer: nn.Module, latents: jax.Array, train: bool
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(codes, aux) of any bottleneck: VQ modules take ``train`` (EMA updates, splitting), FSQ and LFQ don't."""
  if isinstance(quantizer, vq.VectorQuantizer):
    return quantizer(latents, train=train)
  return quantizer(latents)


def latent_width(quantizer: nn.Module) -> int:
  """Channels the encoder must output for ``quantizer``."""
  if isinstance(quantizer, layers.FSQ):
    return quantizer.num_codebooks * len(quantizer.levels)
  if isinstance(quantizer, layers.ResidualFSQ):
    return len(quantizer.levels)
  if isinstance(quantizer, layers.LFQ):
    return quantizer.num_bits
  if isinstance(quantizer, vq.VectorQuantizer):
    return quantizer.dim
  raise ValueError(f"unknown quantizer {type(quantizer).__name__}")


def codebook_shape(quantizer: nn.Module) -> tuple[int, int]:
  """(codebook_size, num_groups) of the indices ``quantizer`` emits, for usage accounting."""
  if isinstance(quantizer, layers.FSQ):
    return quantizers.codebook_size(quantizer.levels), quantizer.num_codebooks
  if isinstance(quantizer, layers.ResidualFSQ):
    return quantizers.codebook_size(quantizer.levels), quantizer.num_stages
  if isinstance(quantizer, layers.LFQ):
    return 2**quantizer.num_bits, 1
  if isinstance(quantizer, vq.VectorQuantizer):
    return quantizer.codebook_size, 1
  raise ValueError(f"unknown quantizer {type(quantizer).__name__}")


class Autoencoder(nn.Module):
  """Images (B, H, W, C) in [-1, 1] -> reconstructions of the same shape, through a quantizer.

  Attributes:
    encoder: maps images to latents of the quantizer's width.
    quantizer: FSQ, ResidualFSQ, LFQ or VectorQuantizer.
    decoder: maps quantized latents back to images.
  """

  encoder: Encoder
  quantizer: nn.Module
  decoder: Decoder

  def __call__(self, images: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns (reconstructions, aux); aux holds the quantizer's ``indices`` and any ``loss``."""
    quantized, aux = self._quantize(self.encoder(images), train)
    return self.decoder(quantized), aux

  def _quantize(self, latents: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    return apply_quantizer(self.quantizer, latents, train)

  def encode(self, images: jax.Array) -> jax.Array:
    """Token indices of images: int32 (B, h, w) (plus a group axis for grouped quantizers)."""
    return self._quantize(self.encoder(images), False)[1]["indices"]

  def decode(self, indices: jax.Array) -> jax.Array:
    """Images from token indices."""
    return self.decoder(self.quantizer.decode(indices))
