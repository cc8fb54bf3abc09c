"""A quantized autoencoder: VQGAN-shaped encoder, any quantizer of this package, decoder.

The quantizer sits exactly where VQ sat in the paper: only the width of the encoder's last layer and
the decoder's first layer change (len(levels) channels for FSQ, the codeword width for VQ).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from fsq.bottlenecks import Bottleneck
from fsq.models.vqgan import Decoder, Encoder


class Autoencoder(nn.Module):
  """Images (B, H, W, C) in [-1, 1] -> reconstructions of the same shape, through a quantizer.

  Attributes:
    encoder: maps images to latents of the quantizer's width.
    quantizer: any ``fsq.bottlenecks.Bottleneck`` (FSQ, ResidualFSQ, LFQ, VectorQuantizer).
    decoder: maps quantized latents back to images.
  """

  encoder: Encoder
  quantizer: Bottleneck
  decoder: Decoder

  def __call__(self, images: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns (reconstructions, aux); aux holds the quantizer's ``indices`` and any ``loss``."""
    quantized, aux = self.quantizer(self.encoder(images), train=train)
    return self.decoder(quantized), aux

  def encode(self, images: jax.Array) -> jax.Array:
    """Token indices of images: int32 (B, h, w) (plus a group axis for grouped quantizers)."""
    return self.quantizer(self.encoder(images))[1]["indices"]

  def decode(self, indices: jax.Array) -> jax.Array:
    """Images from token indices."""
    return self.decoder(self.quantizer.decode(indices))
