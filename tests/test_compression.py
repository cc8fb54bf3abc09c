"""Compression cost of MaskGIT: the reveal schedule, the model's log2 probabilities and real range coding,
each against an independent reference."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsq.evals import compression
from fsq.maskgit.decode import decode
from fsq.models.transformer import BidirectionalTransformer

K = 1000  # codebook size
S = 64  # tokens per image
T = 12  # steps
NUM_CLASSES = 3
MASK = K + NUM_CLASSES
V = K + NUM_CLASSES + 1  # logits cover the whole vocabulary; only the first K are image tokens


def reference_counts(seq_len: int, num_steps: int) -> list[int]:
  """Tokens revealed per step by MaskGIT's decoding rule, in float64 from the cosine formula."""
  counts, masked = [], seq_len
  for t in range(num_steps):
    floor = math.floor(seq_len * max(math.cos(math.pi / 2 * (t + 1) / num_steps), 0.0))
    left = 0 if t == num_steps - 1 else max(1, min(masked - 1, floor))
    counts.append(masked - left)
    masked = left
  return counts


@pytest.mark.parametrize(("seq_len", "num_steps"), [(64, 12), (256, 12), (16, 8), (5, 12), (7, 1)])
def test_schedule_reveals_each_position_once_with_cosine_counts(seq_len, num_steps):
  table = compression.reveal_schedule(seq_len, num_steps, seed=3)
  assert table.shape == (num_steps, seq_len) and table.dtype == bool
  np.testing.assert_array_equal(table.sum(axis=0), np.ones(seq_len))
  np.testing.assert_array_equal(table.sum(axis=1), reference_counts(seq_len, num_steps))
  np.testing.assert_array_equal(
    compression.reveal_counts(seq_len, num_steps), reference_counts(seq_len, num_steps)
  )
  if seq_len == 64:  # the cosine counts themselves, where no clamp binds
    expected = [64 - math.floor(64 * math.cos(math.pi / 2 / 12))] + [
      math.floor(64 * math.cos(math.pi / 2 * t / 12)) - math.floor(64 * math.cos(math.pi / 2 * (t + 1) / 12))
      for t in range(1, 12)
    ]
    np.testing.assert_array_equal(table.sum(axis=1), expected)


def test_schedule_is_deterministic_from_the_seed():
  a = compression.reveal_schedule(S, T, seed=7)
  np.testing.assert_array_equal(a, compression.reveal_schedule(S, T, seed=7))
  assert not np.array_equal(a, compression.reveal_schedule(S, T, seed=8))
  perm = compression.reveal_permutation(S, seed=7)
  np.testing.assert_array_equal(np.sort(perm), np.arange(S))
  # A fixed, library-independent hash: these values must never change (stored data depends on them).
  np.testing.assert_array_equal(compression.reveal_permutation(10, seed=0), [5, 7, 1, 4, 2, 8, 0, 6, 3, 9])
  np.testing.assert_array_equal(compression.reveal_permutation(10, seed=1), [8, 6, 7, 9, 0, 5, 1, 3, 2, 4])


@pytest.mark.parametrize(("seq_len", "num_steps"), [(64, 12), (5, 12)])
def test_schedule_counts_match_decode(seq_len, num_steps):
  """MaskGIT's decode reveals the same number of tokens per step as the schedule."""

  def logits_fn(tokens, class_ids):
    del class_ids
    return jnp.zeros((*tokens.shape, V))

  _, history = decode(
    jax.random.key(0),
    logits_fn,
    jnp.zeros(1, jnp.int32),
    seq_len=seq_len,
    mask_id=MASK,
    codebook_size=K,
    num_steps=num_steps,
  )
  known = np.concatenate([[0], np.sum(np.asarray(history)[:, 0] != MASK, axis=-1)])
  np.testing.assert_array_equal(np.diff(known), compression.reveal_counts(seq_len, num_steps))


def _log2p(tokens, logits_fn, schedule, class_ids=None):
  class_ids = jnp.zeros(tokens.shape[0], jnp.int32) if class_ids is None else class_ids
  fn = jax.jit(
    functools.partial(
      compression.token_log2_probs, logits_fn, mask_id=MASK, codebook_size=K, schedule=schedule
    )
  )
  return np.asarray(fn(tokens, class_ids))


def test_uniform_model_costs_log2_k_per_token():
  def logits_fn(tokens, class_ids):
    del class_ids
    logits = jnp.zeros((*tokens.shape, V))
    return logits.at[..., K:].set(50.0)  # non-image entries must be ignored

  tokens = jax.random.randint(jax.random.key(1), (3, S), 0, K)
  log2p = _log2p(tokens, logits_fn, compression.reveal_schedule(S, T))
  np.testing.assert_allclose(log2p, -np.log2(K), rtol=1e-6)
  np.testing.assert_allclose(compression.bits_per_image(log2p), S * np.log2(K), rtol=1e-6)


def test_fixed_categorical_model():
  weights = np.random.default_rng(0).normal(size=V) * 2

  def logits_fn(tokens, class_ids):
    del class_ids
    return jnp.broadcast_to(jnp.asarray(weights, jnp.float32), (*tokens.shape, V))

  tokens = np.random.default_rng(1).integers(0, K, (2, S))
  log_probs = weights[:K] - np.log(np.sum(np.exp(weights[:K])))
  expected = log_probs[tokens] / np.log(2)
  log2p = _log2p(jnp.asarray(tokens), logits_fn, compression.reveal_schedule(S, T))
  np.testing.assert_allclose(log2p, expected, rtol=1e-5)


# A context-dependent toy model: logits depend on the class, the position, how many tokens are known, their
# sum, and (strongly) on the token to the left when it is known.
def toy_logits(tokens, class_ids):
  known = tokens != MASK
  count = jnp.sum(known, axis=-1)
  total = jnp.sum(jnp.where(known, tokens, 0), axis=-1) % 97
  k = jnp.arange(V)
  pos = jnp.arange(tokens.shape[1])
  phase = 0.1 * total + 0.5 * class_ids + 0.05 * count
  logits = 3.0 * jnp.sin(0.013 * k * (1 + pos[:, None] % 7) + phase[:, None, None])
  left = jnp.roll(tokens, 1, axis=1)
  left_known = jnp.roll(known, 1, axis=1)
  logits = logits + 8.0 * ((k == (left[..., None] + 1) % K) & left_known[..., None])
  return logits.at[..., K:].set(100.0)


def toy_log_probs_np(inputs: np.ndarray, class_id: int, position: int) -> np.ndarray:
  """float64 log p over the K image tokens at one position of one image, from the toy model's formula."""
  known = inputs != MASK
  phase = 0.1 * (int(np.sum(inputs[known])) % 97) + 0.5 * class_id + 0.05 * int(np.sum(known))
  k = np.arange(K)
  logits = 3.0 * np.sin(0.013 * k * (1 + position % 7) + phase)
  left = (position - 1) % len(inputs)
  if known[left]:
    logits[(inputs[left] + 1) % K] += 8.0
  logits -= logits.max()
  return logits - np.log(np.sum(np.exp(logits)))


def reference_log2p(tokens: np.ndarray, class_ids: np.ndarray, schedule: np.ndarray) -> np.ndarray:
  """A plain loop over images, steps and revealed positions."""
  out = np.zeros(tokens.shape)
  for b in range(tokens.shape[0]):
    inputs = np.full(tokens.shape[1], MASK)
    for row in schedule:
      revealed = [s for s in range(tokens.shape[1]) if row[s]]
      for s in revealed:
        out[b, s] = toy_log_probs_np(inputs, int(class_ids[b]), s)[tokens[b, s]] / np.log(2)
      for s in revealed:
        inputs[s] = tokens[b, s]
  return out


def sample_toy(rng: np.random.Generator, class_ids: np.ndarray, schedule: np.ndarray) -> np.ndarray:
  """Tokens drawn from the toy model's joint distribution, revealing in the schedule's order."""
  tokens = np.full((len(class_ids), schedule.shape[1]), MASK)
  for row in schedule:
    logits = np.asarray(toy_logits(jnp.asarray(tokens), jnp.asarray(class_ids)), np.float64)[..., :K]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for b, s in zip(*np.nonzero(np.broadcast_to(row, tokens.shape)), strict=True):
      tokens[b, s] = rng.choice(K, p=probs[b, s])
  return tokens


def test_context_dependent_model_matches_loop_reference():
  rng = np.random.default_rng(2)
  tokens = rng.integers(0, K, (3, S))
  tokens[0, 10:20] = np.arange(5, 15)  # runs where the left-neighbour term fires
  class_ids = np.array([0, 2, 1])
  schedule = compression.reveal_schedule(S, T, seed=5)
  log2p = _log2p(jnp.asarray(tokens), toy_logits, schedule, jnp.asarray(class_ids))
  np.testing.assert_allclose(log2p, reference_log2p(tokens, class_ids, schedule), rtol=1e-4, atol=1e-4)


def test_range_coding_round_trips_at_the_model_cost():
  schedule = compression.reveal_schedule(S, T, seed=11)
  class_ids = np.arange(12) % NUM_CLASSES
  tokens = sample_toy(np.random.default_rng(3), class_ids, schedule)
  kwargs = dict(mask_id=MASK, codebook_size=K, schedule=schedule)
  ideal = compression.bits_per_image(
    _log2p(jnp.asarray(tokens), toy_logits, schedule, jnp.asarray(class_ids))
  )

  bits, messages = compression.range_code(toy_logits, tokens, jnp.asarray(class_ids), **kwargs)
  np.testing.assert_array_equal(
    compression.range_decode(toy_logits, messages, jnp.asarray(class_ids), **kwargs), tokens
  )
  # One message per image: the ideal length plus the coder's last 32-bit word at most (and the 24-bit
  # probability quantisation, a fraction of a bit here).
  overhead = bits - ideal
  assert np.all(overhead > -1) and np.all(overhead < 40), overhead

  # The batch as one stream: within 1% of the model's bits.
  stream_bits, stream = compression.range_code(
    toy_logits, tokens, jnp.asarray(class_ids), one_stream=True, **kwargs
  )
  assert len(stream) == 1
  np.testing.assert_array_equal(
    compression.range_decode(toy_logits, stream, jnp.asarray(class_ids), **kwargs), tokens
  )
  assert 0 <= stream_bits[0] - ideal.sum() < 0.01 * ideal.sum(), (stream_bits, ideal.sum())


def test_tiny_transformer_both_paths_agree():
  model = BidirectionalTransformer(
    vocab_size=V, seq_len=S + 1, hidden=32, num_layers=2, num_heads=2, mlp_dim=64, dropout=0.0, init_std=0.3
  )
  params = model.init(jax.random.key(0), jnp.zeros((1, S + 1), jnp.int32))["params"]
  schedule = compression.reveal_schedule(S, T, seed=0)
  tokens = jax.random.randint(jax.random.key(1), (8, S), 0, K)
  class_tokens = K + jnp.arange(8) % NUM_CLASSES

  @jax.jit
  def log2p_fn(params, tokens, class_ids):
    logits_fn = compression.transformer_logits_fn(model, params)
    return compression.token_log2_probs(
      logits_fn, tokens, class_ids, mask_id=MASK, codebook_size=K, schedule=schedule
    )

  ideal = compression.bits_per_image(log2p_fn(params, tokens, class_tokens))
  assert np.all(np.abs(ideal / (S * np.log2(K)) - 1) > 0.05)  # the random model is far from uniform

  logits_fn = jax.jit(compression.transformer_logits_fn(model, params))
  kwargs = dict(mask_id=MASK, codebook_size=K, schedule=schedule)
  bits, messages = compression.range_code(logits_fn, tokens, class_tokens, **kwargs)
  np.testing.assert_array_equal(compression.range_decode(logits_fn, messages, class_tokens, **kwargs), tokens)
  assert np.all(bits - ideal > -1) and np.all(bits - ideal < 40), bits - ideal
  stream_bits, stream = compression.range_code(logits_fn, tokens, class_tokens, one_stream=True, **kwargs)
  np.testing.assert_array_equal(compression.range_decode(logits_fn, stream, class_tokens, **kwargs), tokens)
  assert 0 <= stream_bits[0] - ideal.sum() < 0.01 * ideal.sum(), (stream_bits, ideal.sum())
