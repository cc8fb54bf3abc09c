"""MaskGIT's class-conditional bidirectional transformer: post-LN BERT with a tied output layer.

Input: (B, 1 + S) token ids, the class token at position 0 and S image tokens (mask id where masked).
Token and position embeddings are summed, layer-normalised and passed through
``num_layers`` post-LN blocks (x = LN(x + Attention(x)), x = LN(x + MLP(x)), GELU MLP); the output head is
Dense + GELU + LN followed by a product with the token embedding matrix plus a bias (weights tied to the
input embeddings). Paper size: 24 layers, hidden 768, 16 heads, MLP 3072, dropout 0.1. Embeddings, position
embeddings, attention and dense kernels start as MaskGIT's: a normal of std 0.02 truncated at 2 std
(actual std about 0.0176).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class PostLNBlock(nn.Module):
  """Self-attention then MLP, each followed by dropout, a residual sum and LayerNorm."""

  num_heads: int
  mlp_dim: int
  dropout: float
  init_std: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    init = nn.initializers.truncated_normal(self.init_std)
    attention = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      kernel_init=init,
      dropout_rate=self.dropout,
      deterministic=not train,
      dtype=self.dtype,
    )(x, x)
    x = nn.LayerNorm(epsilon=1e-12, dtype=self.dtype)(
      x + nn.Dropout(self.dropout)(attention, deterministic=not train)
    )
    h = nn.Dense(self.mlp_dim, kernel_init=init, dtype=self.dtype)(x)
    h = nn.Dense(x.shape[-1], kernel_init=init, dtype=self.dtype)(nn.gelu(h))
    return nn.LayerNorm(epsilon=1e-12, dtype=self.dtype)(
      x + nn.Dropout(self.dropout)(h, deterministic=not train)
    )


class BidirectionalTransformer(nn.Module):
  """Token ids (B, L) int32 -> logits (B, L, vocab_size).

  Attributes:
    vocab_size: codebook size + number of classes + 1 (the mask token).
    seq_len: L, the class token plus the image tokens.
    hidden: width; num_layers, num_heads, mlp_dim: the blocks; dropout: rate in training;
    init_std: the untruncated standard deviation of every initial weight (truncated at +-2 of it).
  """

  vocab_size: int
  seq_len: int
  hidden: int = 768
  num_layers: int = 24
  num_heads: int = 16
  mlp_dim: int = 3072
  dropout: float = 0.1
  init_std: float = 0.02
  dtype: jnp.dtype = jnp.float32
  remat: bool = False  # recompute each block's activations in the backward pass

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
    assert tokens.ndim == 2 and tokens.shape[1] == self.seq_len, (
      f"expected tokens (batch, {self.seq_len}), got {tokens.shape}"
    )
    if self.hidden % self.num_heads:
      raise ValueError(f"hidden = {self.hidden} must be divisible by num_heads = {self.num_heads}")
    init = nn.initializers.truncated_normal(self.init_std)
    embed = nn.Embed(self.vocab_size, self.hidden, embedding_init=init, name="token_embedding")
    positions = self.param("position_embedding", init, (1, self.seq_len, self.hidden))
    x = embed(tokens) + positions
    x = nn.LayerNorm(epsilon=1e-12, dtype=self.dtype)(x)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    block = nn.remat(PostLNBlock, static_argnums=(2,)) if self.remat else PostLNBlock
    for i in range(self.num_layers):
      x = block(self.num_heads, self.mlp_dim, self.dropout, self.init_std, self.dtype, name=f"block_{i}")(
        x, train
      )
    x = nn.Dense(self.hidden, kernel_init=init, dtype=self.dtype, name="head_dense")(x)
    x = nn.LayerNorm(epsilon=1e-12, dtype=self.dtype, name="head_norm")(nn.gelu(x))
    bias = self.param("output_bias", nn.initializers.zeros, (self.vocab_size,))
    return embed.attend(x.astype(jnp.float32)) + bias
