"""Compression cost of a MaskGIT stage-II model: the bits needed to store an image's tokens under the model.

The tokens are revealed in ``T`` steps (12 by default, as in decoding) by a deterministic schedule: step t
reveals as many tokens as MaskGIT's decoding does at step t (``decode``'s cosine rule), and *which*
positions is fixed by a seeded pseudo-random permutation of the S positions, the same for every image, so
that a decoder can reproduce it. Every token is then coded with the model's distribution given the class
and the tokens revealed at earlier steps: ``p(x_s | x_known, c) = softmax(logits[..., :K])[x_s]``, K the
codebook size. Two measurements of the cost:

* ``token_log2_probs``: the ideal code length, ``-sum_s log2 p(x_s | ...)`` bits per image, from T forward
  passes in one jittable ``lax.scan``, batched over images (the measurement to use at scale);
* ``range_code`` / ``range_decode``: real entropy coding of the token stream with ``constriction``'s range
  coder, and decoding it again by running the model step by step on the decoded tokens. The coded size
  is the ideal length plus at most about one 32-bit word per message (sizes are whole words). The coder
  quantises probabilities to 24 bits, which costs a fraction of a bit per image for tokens the model
  finds plausible, but caps a token's cost at about 24 bits, so tokens with p < 2^-24 can make the coded
  size slightly *smaller* than the ideal. Per image (S = 64, K = 1000: ~450-800 bits) the two agree to
  within ~35 bits; coded as one stream over a batch, within 1% (0.3-0.5% measured on 8-12 such images).

Encoder and decoder must see bit-identical probabilities: both call ``logits_fn`` on the same inputs with
the same batch size, convert the float32 logits to float64 and normalise them on the host the same way.
Decode with the same ``logits_fn`` (pass a jitted one for speed), the same class ids and the same batch.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fsq.maskgit.schedule import tokens_to_remask

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64's output function on a uint64 array (wrapping arithmetic): a fixed, version-independent
  hash, so that the reveal order never depends on a library's random number generator."""
  x = x + np.uint64(0x9E3779B97F4A7C15)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def reveal_permutation(seq_len: int, seed: int = 0) -> np.ndarray:
  """(S,) int64: the positions in the order they are revealed, a pseudo-random permutation fixed by seed.

  Position i gets the key ``h(h(seed) + i)`` with h SplitMix64's mixer on uint64; positions are sorted by
  key (stably), which depends on nothing but the seed and S.
  """
  if not 0 <= seed <= _MASK64:
    raise ValueError(f"seed must be in [0, 2**64), got {seed}")
  seed_hash = _splitmix64(np.array([seed], np.uint64))
  keys = _splitmix64(seed_hash + np.arange(seq_len, dtype=np.uint64))
  return np.argsort(keys, kind="stable")


def reveal_counts(seq_len: int, num_steps: int = 12, method: str = "cosine") -> np.ndarray:
  """(T,) int64: how many tokens each step reveals, as MaskGIT's ``decode`` does from S unknown tokens.

  After step t < T - 1, ``max(1, min(m - 1, floor(S * mask_ratio((t + 1) / T))))`` tokens stay masked, m
  the number masked before it (``tokens_to_remask``), and step T - 1 reveals the rest; the counts sum to
  S. (When S < T, some middle steps reveal nothing, as in decoding.)
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  if seq_len < 1:
    raise ValueError(f"seq_len must be >= 1, got {seq_len}")
  counts = []
  masked = seq_len
  for t in range(num_steps):
    if t == num_steps - 1:
      left = 0
    else:
      left = max(1, min(masked - 1, int(tokens_to_remask(seq_len, t, num_steps, method))))
    counts.append(masked - left)
    masked = left
  return np.asarray(counts, np.int64)


def reveal_schedule(seq_len: int, num_steps: int = 12, seed: int = 0, method: str = "cosine") -> np.ndarray:
  """(T, S) bool: row t is True at the positions revealed at step t; every column has exactly one True.

  Step t reveals the next ``reveal_counts(...)[t]`` positions of ``reveal_permutation(S, seed)``.
  """
  counts = reveal_counts(seq_len, num_steps, method)
  steps = np.repeat(np.arange(num_steps), counts)  # step of the k-th revealed position
  table = np.zeros((num_steps, seq_len), bool)
  table[steps, reveal_permutation(seq_len, seed)] = True
  return table


def token_log2_probs(
  logits_fn: LogitsFn,
  tokens: jax.Array,
  class_ids: jax.Array,
  *,
  mask_id: int,
  codebook_size: int,
  schedule: jax.Array | np.ndarray,
) -> jax.Array:
  """log2 p of every token under the model, given the tokens revealed before it. Jittable (T model calls
  in a ``lax.scan``); batched over images.

  Args:
    logits_fn: (tokens (B, S) int32 with ``mask_id`` at unknown positions, class_ids (B,)) -> logits
      (B, S, V), V >= codebook_size; only the first codebook_size entries are image tokens.
    tokens: (B, S) int32 image tokens in [0, codebook_size).
    class_ids: (B,) int32, passed to logits_fn as is (for ``MaskGITTask``: ``vocab.class_tokens``).
    mask_id: the mask token.
    codebook_size: K.
    schedule: (T, S) bool from ``reveal_schedule`` (its shape fixes T, so it may be traced).

  Returns:
    (B, S) float32: at a position revealed at step t, ``log2 softmax(logits[..., :K])[token]`` with the
    model given the tokens revealed at steps < t (mask_id elsewhere). ``-sum(axis=-1)`` is the cost in bits
    per image (``bits_per_image``).
  """
  tokens = jnp.asarray(tokens, jnp.int32)
  schedule = jnp.asarray(schedule, bool)
  if schedule.ndim != 2 or schedule.shape[1] != tokens.shape[1]:
    raise ValueError(f"schedule must be (T, {tokens.shape[1]}), got {schedule.shape}")

  def step(carry, revealed):
    known, total = carry  # (S,) bool, (B, S) float32
    inputs = jnp.where(known[None], tokens, mask_id)
    logits = logits_fn(inputs, class_ids)[..., :codebook_size].astype(jnp.float32)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    chosen = jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
    total = jnp.where(revealed[None], chosen * np.float32(1 / np.log(2)), total)
    return (known | revealed, total), None

  init = (jnp.zeros(tokens.shape[1], bool), jnp.zeros(tokens.shape, jnp.float32))
  (_, total), _ = jax.lax.scan(step, init, schedule)
  return total


def bits_per_image(log2_probs: jax.Array | np.ndarray) -> np.ndarray:
  """(B, S) log2 probabilities -> (B,) float64 bits per image, ``-sum_s log2 p``. Divide by S for bits per
  token."""
  return -np.sum(np.asarray(log2_probs, np.float64), axis=-1)


def transformer_logits_fn(transformer, params) -> LogitsFn:
  """The logits_fn of a ``BidirectionalTransformer`` with ``params``, as ``MaskGITTask.sample`` builds it:
  class_ids are class *tokens* (``vocab.class_tokens(labels)``), put in front of the image tokens."""

  def logits_fn(tokens, class_ids):
    inputs = jnp.concatenate([jnp.asarray(class_ids, jnp.int32)[:, None], tokens], axis=1)
    return transformer.apply({"params": params}, inputs)[:, 1:]

  return logits_fn


def _step_probs(logits_fn, inputs, class_ids, positions, codebook_size) -> np.ndarray:
  """(B, n, K) float64 probabilities at ``positions`` (n,) for model inputs (B, S), on the host.

  The one place where the coder's probabilities come from, for encoder and decoder alike."""
  logits = logits_fn(jnp.asarray(inputs, jnp.int32), class_ids)[:, positions, :codebook_size]
  logits = np.asarray(logits.astype(jnp.float32), np.float64)
  logits -= logits.max(axis=-1, keepdims=True)
  probs = np.exp(logits)
  return probs / probs.sum(axis=-1, keepdims=True)


def _constriction():
  try:
    import constriction
  except ImportError as e:  # pragma: no cover
    raise ImportError("range coding needs the `constriction` package (pip install constriction)") from e
  return constriction


def _step_positions(schedule: np.ndarray) -> list[np.ndarray]:
  """Positions revealed at each step, ascending: the coding order within a step."""
  schedule = np.asarray(schedule, bool)
  if schedule.ndim != 2 or not np.all(schedule.sum(axis=0) == 1):
    raise ValueError("schedule must be (T, S) bool revealing every position exactly once")
  return [np.flatnonzero(row) for row in schedule]


def range_code(
  logits_fn: LogitsFn,
  tokens: jax.Array | np.ndarray,
  class_ids: jax.Array,
  *,
  mask_id: int,
  codebook_size: int,
  schedule: np.ndarray,
  one_stream: bool = False,
) -> tuple[np.ndarray, list[np.ndarray]]:
  """Entropy-codes tokens with a range coder driven by the model, in the schedule's order.

  Step t calls ``logits_fn`` once on the batch with the tokens revealed at steps < t (mask_id elsewhere)
  and codes the tokens revealed at step t, by ascending position, each with its float64 categorical
  distribution (``constriction.stream.model.Categorical(perfect=False)``; 32-bit words, probabilities
  quantised to 24 bits).

  Args:
    logits_fn, class_ids, mask_id, codebook_size: as in ``token_log2_probs``.
    tokens: (B, S) int tokens in [0, codebook_size).
    schedule: (T, S) bool from ``reveal_schedule`` (a host array).
    one_stream: False: one message per image (its size is the cost of storing that image); True: the
      whole batch as one message (step by step, images in batch order), which shares the coder's final
      word over the batch.

  Returns:
    bits: (B,) (or (1,) with one_stream) int64 compressed sizes in bits, 32 * words.
    compressed: B (or 1) uint32 arrays, the messages, for ``range_decode``.
  """
  constriction = _constriction()
  tokens = np.asarray(tokens, np.int32)
  batch, seq_len = tokens.shape
  if tokens.min(initial=0) < 0 or tokens.max(initial=0) >= codebook_size:
    raise ValueError(f"tokens must be in [0, {codebook_size})")
  family = constriction.stream.model.Categorical(perfect=False)
  encoders = [constriction.stream.queue.RangeEncoder() for _ in range(1 if one_stream else batch)]
  inputs = np.full((batch, seq_len), mask_id, np.int32)
  for positions in _step_positions(schedule):
    if positions.size:
      probs = _step_probs(logits_fn, inputs, class_ids, positions, codebook_size)
      for b in range(batch):
        encoders[0 if one_stream else b].encode(tokens[b, positions], family, probs[b])
      inputs[:, positions] = tokens[:, positions]
  compressed = [encoder.get_compressed() for encoder in encoders]
  return np.array([32 * c.size for c in compressed], np.int64), compressed


def range_decode(
  logits_fn: LogitsFn,
  compressed: list[np.ndarray],
  class_ids: jax.Array,
  *,
  mask_id: int,
  codebook_size: int,
  schedule: np.ndarray,
) -> np.ndarray:
  """Inverse of ``range_code``: (B, S) int32 tokens from the messages, by running the model step by step on
  the tokens decoded so far (the same calls as the encoder's, so the same probabilities).

  ``compressed`` holds B messages (one per image) or one (a one-stream batch); B is ``len(class_ids)``.
  """
  constriction = _constriction()
  batch = int(np.shape(class_ids)[0])
  if len(compressed) not in (1, batch):
    raise ValueError(f"expected 1 or {batch} messages, got {len(compressed)}")
  schedule = np.asarray(schedule, bool)
  family = constriction.stream.model.Categorical(perfect=False)
  decoders = [constriction.stream.queue.RangeDecoder(np.asarray(c, np.uint32)) for c in compressed]
  inputs = np.full((batch, schedule.shape[1]), mask_id, np.int32)
  for positions in _step_positions(schedule):
    if positions.size:
      probs = _step_probs(logits_fn, inputs, class_ids, positions, codebook_size)
      for b in range(batch):
        inputs[b, positions] = decoders[b if len(decoders) > 1 else 0].decode(family, probs[b])
  return inputs
