"""MaskGIT's iterative parallel decoding with classifier-free guidance, as one jittable function.

Each of the T steps samples every unknown token from the model, scores the samples by
``log p + tau * (1 - (t + 1) / T) * Gumbel`` (choice temperature tau = 4.5 annealed to 0), keeps the most
confident and masks the others again: ``floor(N * cos(pi/2 * (t + 1) / T))`` of them for N tokens
unknown at the start, at least 1 and at most one fewer than are unknown. Known tokens never change,
and after step T every token is known. With guidance scale alpha the logits are
``l_c + alpha * (l_c - l_null)``, where l_null conditions on the null class.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from fsq.maskgit.schedule import tokens_to_remask

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]


def guided_logits(
  logits_fn: LogitsFn, tokens: jax.Array, class_ids: jax.Array, guidance_scale: float, null_class_id: int
) -> jax.Array:
  """``l_c + alpha (l_c - l_null)`` for (B, S) tokens and (B,) classes; just l_c when alpha = 0."""
  conditional = logits_fn(tokens, class_ids)
  if guidance_scale == 0:
    return conditional
  unconditional = logits_fn(tokens, jnp.full_like(class_ids, null_class_id))
  return conditional + guidance_scale * (conditional - unconditional)


def decode(
  rng: jax.Array,
  logits_fn: LogitsFn,
  class_ids: jax.Array,
  *,
  seq_len: int,
  mask_id: int,
  codebook_size: int,
  num_steps: int = 12,
  choice_temperature: float = 4.5,
  guidance_scale: float = 0.0,
  null_class_id: int | None = None,
  method: str = "cosine",
  initial_tokens: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Generates tokens.

  Args:
    rng: PRNG key.
    logits_fn: (tokens (B, S) int32 with ``mask_id`` at unknown positions, class_ids (B,)) -> logits
      (B, S, V) with V >= codebook_size; only the first codebook_size entries are sampled.
    class_ids: (B,) int32 conditioning classes.
    seq_len: S.
    mask_id: the mask token.
    codebook_size: number of image tokens (for FSQ, the FSQ index is the token).
    num_steps: T.
    choice_temperature: tau.
    guidance_scale: alpha; 0 disables guidance.
    null_class_id: the class meaning "no class" (needed when alpha != 0).
    method: masking schedule (see fsq.maskgit.schedule).
    initial_tokens: optional (B, S) start, with known tokens and mask_id elsewhere (all masked if None).

  Returns:
    tokens: (B, S) int32, all in [0, codebook_size) where they were unknown.
    history: (T, B, S) int32, the tokens after each step (mask_id where still unknown).
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  if guidance_scale != 0 and null_class_id is None:
    raise ValueError(f"guidance_scale = {guidance_scale} needs null_class_id")
  batch = class_ids.shape[0]
  tokens = jnp.full((batch, seq_len), mask_id, jnp.int32) if initial_tokens is None else initial_tokens
  unknown_at_start = jnp.sum(tokens == mask_id, axis=-1)

  def step(tokens, inputs):
    t, key = inputs
    sample_key, gumbel_key = jax.random.split(key)
    unknown = tokens == mask_id
    logits = guided_logits(logits_fn, tokens, class_ids, guidance_scale, null_class_id)[..., :codebook_size]
    logits = logits.astype(jnp.float32)
    sampled = jnp.where(unknown, jax.random.categorical(sample_key, logits), tokens).astype(jnp.int32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    chosen = jnp.take_along_axis(log_probs, jnp.clip(sampled, 0, codebook_size - 1)[..., None], -1)[..., 0]
    temperature = choice_temperature * (1.0 - (t + 1) / num_steps)
    confidence = chosen + temperature * jax.random.gumbel(gumbel_key, chosen.shape)
    confidence = jnp.where(unknown, confidence, jnp.inf)
    remaining = jnp.sum(unknown, axis=-1)
    num_masked = jnp.maximum(
      1, jnp.minimum(remaining - 1, tokens_to_remask(unknown_at_start, t, num_steps, method))
    )
    cutoff = jnp.take_along_axis(jnp.sort(confidence, axis=-1), num_masked[:, None], axis=-1)
    remask = (confidence < cutoff) & (t < num_steps - 1)
    tokens = jnp.where(remask, mask_id, sampled)
    return tokens, tokens

  keys = jax.random.split(rng, num_steps)
  tokens, history = jax.lax.scan(step, tokens, (jnp.arange(num_steps), keys))
  return tokens, history
