"""UViM stage II: the vision-to-text transformer (VTT) that predicts the stage I codes of an image.

An encoder-decoder. The encoder is a ``ViT`` over the image, (B, H, W, 3) -> (B, N, width). The decoder is
autoregressive over the S codes: token embedding (vocabulary V = codebook_size + 1, the extra id
``bos_id = codebook_size`` starts every sequence) plus learned position embeddings, ``depth`` pre-LN blocks
(x += Dropout(causal self-attention(LN(x))); x += Dropout(cross-attention(LN(x), encoded)); x += MLP(LN(x))),
a final LayerNorm and an untied Dense head to V logits.

Facts from big_vision (``big_vision/models/proj/uvim/vtt.py`` and ``train_*_pretrained.py`` configs):
- encoder and decoder share width, depth, heads and MLP width; "large" = width 1024, 24 layers, 16 heads,
  MLP 4096 (both halves), patch 16 at 512 px, seq_len 256 = stage I code length, vocabulary dict_size + 1
  (4097), learned position embeddings, dropout 0 (never set);
- decoder attention (self and cross) has no biases and default (lecun-normal) kernels, and dropout on the
  attention weights; no dropout after the MLP residual (the MLP keeps its inner dropout);
- token embedding init normal(1.0), decoder position embedding normal(1/sqrt(width));
- the output head is untied: Dense(V) with zero-initialised kernel, plus a bias;
- big_vision's BOS is id 0 and it trains on codes + 1; here codes keep their ids 0 .. K-1 and BOS is the
  last id K (a permutation of the same model). The head still has V outputs; ``generate`` never emits BOS.
- big_vision predicts with temperature 1e-7 ("near-greedy"); ``temperature=0`` here is exact argmax.

Decoding keeps an explicit cache pytree (a list over blocks of dicts): the self-attention keys and values
of the positions decoded so far, (B, S, heads, head_dim) zero-filled ahead, and the cross-attention keys and
values of the encoded image, (B, N, heads, head_dim), projected once. (big_vision uses Flax's ``decode=True``
cache, which caches only self-attention and re-projects the N encoder tokens in every layer at every step:
at paper scale that projection costs over 100x the FLOPs of the rest of a decoding step.)
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fsq.models.vit import POSEMB_TYPES, MlpBlock, ViT

Cache = list[dict[str, jax.Array]]


def shift_right(codes: jax.Array, bos_id: int) -> jax.Array:
  """Teacher-forcing decoder inputs: (B, L) codes -> (B, L) [bos_id, codes[:, 0], ..., codes[:, L-2]]."""
  bos = jnp.full((codes.shape[0], 1), bos_id, codes.dtype)
  return jnp.concatenate([bos, codes[:, :-1]], axis=1)


class Attention(nn.Module):
  """Multi-head dot-product attention with the key/value projection apart, so that decoding can cache it.

  Parameters ``query``, ``key``, ``value`` (width, heads, head_dim) and ``out`` (heads, head_dim, width) have
  the layout of Flax's ``MultiHeadDotProductAttention``; no biases, default (lecun-normal) kernels.
  """

  width: int
  num_heads: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    if self.width % self.num_heads:
      raise ValueError(f"width = {self.width} must be divisible by num_heads = {self.num_heads}")
    heads = (self.num_heads, self.width // self.num_heads)
    dense = functools.partial(nn.DenseGeneral, use_bias=False, dtype=self.dtype)
    self.query = dense(heads)
    self.key = dense(heads)
    self.value = dense(heads)
    self.out = dense(self.width, axis=(-2, -1))
    self.weights_dropout = nn.Dropout(self.dropout)

  def project_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(B, L, width) -> keys, values, each (B, L, heads, head_dim)."""
    return self.key(x), self.value(x)

  def attend(
    self, x: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array | None, *, train: bool = False
  ) -> jax.Array:
    """Queries from x (B, Q, width) over keys/values (B, L, heads, head_dim) -> (B, Q, width).

    mask: None or bool broadcastable to (B, heads, Q, L), True where attention is allowed.
    """
    q = self.query(x)
    q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, keys).astype(jnp.float32)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = self.weights_dropout(weights, deterministic=not train)
    return self.out(jnp.einsum("bhqk,bkhd->bqhd", weights, values))


class DecoderBlock(nn.Module):
  """Pre-LN decoder block, (B, L, width) -> (B, L, width): causal self-attention, cross-attention, MLP."""

  width: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    attention = functools.partial(Attention, self.width, self.num_heads, self.dropout, self.dtype)
    self.self_attention_norm = nn.LayerNorm(dtype=self.dtype)
    self.self_attention = attention()
    self.cross_attention_norm = nn.LayerNorm(dtype=self.dtype)
    self.cross_attention = attention()
    self.mlp_norm = nn.LayerNorm(dtype=self.dtype)
    self.mlp = MlpBlock(self.mlp_dim, self.dropout, self.dtype)
    self.residual_dropout = nn.Dropout(self.dropout)

  def _residuals(self, x, y, self_kv, cross_kv, mask, train):
    """The block given y = LN(x) and the keys/values of both attentions."""
    x = x + self.residual_dropout(
      self.self_attention.attend(y, *self_kv, mask, train=train), deterministic=not train
    )
    y = self.cross_attention_norm(x)
    x = x + self.residual_dropout(
      self.cross_attention.attend(y, *cross_kv, None, train=train), deterministic=not train
    )
    return x + self.mlp(self.mlp_norm(x), train=train)

  def __call__(self, x: jax.Array, encoded: jax.Array, *, train: bool = False) -> jax.Array:
    """Teacher forcing: x (B, L, width), encoded (B, N, width) -> (B, L, width), causal in L."""
    y = self.self_attention_norm(x)
    causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
    self_kv = self.self_attention.project_kv(y)
    cross_kv = self.cross_attention.project_kv(encoded)
    return self._residuals(x, y, self_kv, cross_kv, causal, train)

  def init_cache(self, encoded: jax.Array, seq_len: int) -> dict[str, jax.Array]:
    """Cross-attention keys/values of encoded (B, N, width); zero self-attention keys/values for seq_len."""
    cross_key, cross_value = self.cross_attention.project_kv(encoded)
    shape = (encoded.shape[0], seq_len, *cross_key.shape[2:])
    zeros = jnp.zeros(shape, cross_key.dtype)
    return {"self_key": zeros, "self_value": zeros, "cross_key": cross_key, "cross_value": cross_value}

  def step(
    self, x: jax.Array, position: jax.Array, cache: dict[str, jax.Array]
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One position: x (B, 1, width) at ``position`` (int scalar) -> (B, 1, width) and the updated cache."""
    y = self.self_attention_norm(x)
    key, value = self.self_attention.project_kv(y)
    keys = jax.lax.dynamic_update_slice_in_dim(cache["self_key"], key, position, axis=1)
    values = jax.lax.dynamic_update_slice_in_dim(cache["self_value"], value, position, axis=1)
    visible = jnp.arange(keys.shape[1]) <= position
    x = self._residuals(x, y, (keys, values), (cache["cross_key"], cache["cross_value"]), visible, False)
    return x, {**cache, "self_key": keys, "self_value": values}


class Decoder(nn.Module):
  """Autoregressive code decoder over ``seq_len`` positions, vocabulary ``vocab_size``; see the module doc."""

  vocab_size: int
  seq_len: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.token_embedding = nn.Embed(
      self.vocab_size, self.width, embedding_init=nn.initializers.normal(1.0), dtype=self.dtype
    )
    init = nn.initializers.normal(1.0 / np.sqrt(self.width))
    self.pos_embedding = self.param("pos_embedding", init, (1, self.seq_len, self.width))
    self.embedding_dropout = nn.Dropout(self.dropout)
    self.blocks = [
      DecoderBlock(self.width, self.num_heads, self.mlp_dim, self.dropout, self.dtype)
      for _ in range(self.depth)
    ]
    self.final_norm = nn.LayerNorm(dtype=self.dtype)
    self.head = nn.Dense(self.vocab_size, kernel_init=nn.initializers.zeros, dtype=self.dtype)

  def __call__(self, inputs: jax.Array, encoded: jax.Array, *, train: bool = False) -> jax.Array:
    """Teacher forcing: inputs (B, L) int ids (L <= seq_len), encoded (B, N, width) -> (B, L, V) f32."""
    assert inputs.ndim == 2 and inputs.shape[1] <= self.seq_len, (
      f"expected inputs (batch, <= {self.seq_len}), got {inputs.shape}"
    )
    x = self.token_embedding(inputs) + self.pos_embedding[:, : inputs.shape[1]]
    x = self.embedding_dropout(x, deterministic=not train)
    for block in self.blocks:
      x = block(x, encoded, train=train)
    return self.head(self.final_norm(x)).astype(jnp.float32)

  def init_cache(self, encoded: jax.Array) -> Cache:
    """The decoding cache for encoded (B, N, width), before any position is decoded."""
    return [block.init_cache(encoded, self.seq_len) for block in self.blocks]

  def step(self, tokens: jax.Array, position: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
    """tokens (B,) int, the inputs at ``position`` -> logits (B, V) f32 for that position, updated cache."""
    pe = jax.lax.dynamic_slice_in_dim(self.pos_embedding, position, 1, axis=1)
    x = self.token_embedding(tokens[:, None]) + pe
    new_cache = []
    for block, block_cache in zip(self.blocks, cache, strict=True):
      x, block_cache = block.step(x, position, block_cache)
      new_cache.append(block_cache)
    return self.head(self.final_norm(x))[:, 0].astype(jnp.float32), new_cache


class VisionToTextTransformer(nn.Module):
  """UViM stage II: images (B, H, W, C) and codes (B, S) -> next-code logits (B, S, V), V = codebook_size + 1.

  Attributes:
    codebook_size: K, the number of stage I codes; ids 0 .. K-1 are codes, id K is BOS.
    seq_len: S, codes per image. width, depth, num_heads, mlp_dim: shared by encoder and decoder.
    patch_size: encoder patch side. dropout: rate in training. posemb: encoder position embeddings,
    "learn" or "sincos2d" (the decoder's are always learned). Defaults: big_vision's VTT "large".
  """

  codebook_size: int
  seq_len: int
  width: int = 1024
  depth: int = 24
  num_heads: int = 16
  mlp_dim: int = 4096
  patch_size: int = 16
  dropout: float = 0.0
  posemb: str = "learn"
  dtype: jnp.dtype = jnp.float32
  remat: bool = False  # recompute each encoder block's activations in the backward pass

  @property
  def vocab_size(self) -> int:
    """V = codebook_size + 1: the codes and BOS."""
    return self.codebook_size + 1

  @property
  def bos_id(self) -> int:
    """The id that starts every decoder input sequence, the last one."""
    return self.codebook_size

  def setup(self):
    if self.codebook_size < 1 or self.seq_len < 1:
      raise ValueError(f"codebook_size and seq_len must be >= 1, got {self.codebook_size}, {self.seq_len}")
    if self.posemb not in POSEMB_TYPES:
      raise ValueError(f"posemb must be one of {POSEMB_TYPES}, got {self.posemb!r}")
    self.encoder = ViT(
      self.width,
      self.depth,
      self.num_heads,
      self.mlp_dim,
      self.patch_size,
      self.dropout,
      self.posemb,
      self.dtype,
      self.remat,
    )
    self.decoder = Decoder(
      self.vocab_size,
      self.seq_len,
      self.width,
      self.depth,
      self.num_heads,
      self.mlp_dim,
      self.dropout,
      self.dtype,
    )

  def encode(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    """images (B, H, W, C) -> encoded patches (B, H/p * W/p, width)."""
    return self.encoder(images, train=train)

  def decode(self, encoded: jax.Array, inputs: jax.Array, *, train: bool = False) -> jax.Array:
    """Teacher forcing: encoded (B, N, width), inputs (B, L) BOS-led ids -> logits (B, L, V) f32."""
    return self.decoder(inputs, encoded, train=train)

  def __call__(self, images: jax.Array, codes: jax.Array, *, train: bool = False) -> jax.Array:
    """images (B, H, W, C), codes (B, L) int in [0, K), L <= S -> logits (B, L, V) f32.

    Logits at position t predict codes[:, t] from the image and codes[:, :t] (inputs shifted right by BOS).
    """
    return self.decode(self.encode(images, train=train), shift_right(codes, self.bos_id), train=train)

  def init_cache(self, encoded: jax.Array) -> Cache:
    """The decoding cache for encoded (B, N, width): per block, self-attention keys/values (zeros)
    (B, S, heads, head_dim) and cross-attention keys/values (B, N, heads, head_dim)."""
    return self.decoder.init_cache(encoded)

  def decode_step(self, tokens: jax.Array, position: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
    """tokens (B,) int, the decoder inputs at ``position`` (BOS at 0, else the code at position - 1)
    -> logits (B, V) f32 for the code at ``position``, and the cache with this position added."""
    return self.decoder.step(tokens, position, cache)


def sample_codes(logits: jax.Array, rng: jax.Array, *, temperature: float, top_k: int = 0) -> jax.Array:
  """Draws one id per row of logits (B, K) -> (B,) int32.

  temperature = 0: argmax. Otherwise ``jax.random.categorical(rng, logits / temperature)``, restricted to
  the ids whose logit is at least the top_k-th largest when top_k > 0 (ties may keep more than top_k).
  """
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
  return jax.random.categorical(rng, logits / temperature, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "temperature", "top_k"))
def generate(
  model: VisionToTextTransformer,
  params: dict,
  images: jax.Array,
  rng: jax.Array,
  *,
  temperature: float = 0.0,
  top_k: int = 0,
) -> jax.Array:
  """Autoregressive codes for images (B, H, W, C) -> (B, S) int32 in [0, codebook_size), never BOS.

  The image is encoded once; a ``lax.scan`` over the S positions decodes one code per step with the cache
  (``init_cache`` / ``decode_step``). Step t samples ``sample_codes`` on the code logits (BOS excluded) with
  key ``jax.random.fold_in(rng, t)``; temperature 0 is greedy (rng unused).
  """
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  if not 0 <= top_k <= model.codebook_size:
    raise ValueError(f"top_k must be in [0, codebook_size = {model.codebook_size}], got {top_k}")
  variables = {"params": params}
  encoded = model.apply(variables, images, method=model.encode)
  cache = model.apply(variables, encoded, method=model.init_cache)

  def step(carry, position):
    tokens, cache = carry
    logits, cache = model.apply(variables, tokens, position, cache, method=model.decode_step)
    codes = sample_codes(
      logits[:, : model.codebook_size],
      jax.random.fold_in(rng, position),
      temperature=temperature,
      top_k=top_k,
    )
    return (codes, cache), codes

  bos = jnp.full((images.shape[0],), model.bos_id, jnp.int32)
  _, codes = jax.lax.scan(step, (bos, cache), jnp.arange(model.seq_len))
  return codes.T
