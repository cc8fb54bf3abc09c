"""MaskGIT schedules and decoding: hand-computed counts and invariants over random models."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsq.maskgit import decode as decode_lib
from fsq.maskgit import schedule


def test_cosine_schedule_endpoints_and_monotonicity():
  r = np.linspace(0, 1, 101)
  ratio = np.asarray(schedule.mask_ratio(r))
  np.testing.assert_allclose(ratio, np.cos(np.pi / 2 * r), atol=1e-6)
  assert ratio[0] == 1.0 and abs(ratio[-1]) < 1e-6 and np.all(np.diff(ratio) <= 0)
  np.testing.assert_allclose(schedule.mask_ratio(r, "linear"), 1 - r, atol=1e-6)
  with pytest.raises(ValueError, match="method"):
    schedule.mask_ratio(r, "exp")


def test_training_masks_respect_the_lower_bound_and_its_probability():
  masks = np.asarray(schedule.training_mask(jax.random.key(0), 4000, 64, min_ratio=0.45))
  counts = masks.sum(-1)
  low = math.ceil(64 * 0.45)  # 29
  assert counts.min() == low and counts.max() <= 64
  # P(cos(pi/2 r) * 64 <= 29) = 1 - (2/pi) arccos(29/64) for r ~ U(0, 1).
  expected = 1 - 2 / np.pi * np.arccos(low / 64)
  assert abs((counts == low).mean() - expected) < 0.03


def test_tokens_to_remask_hand_computed():
  # 256 tokens, 12 steps: floor(256 cos(pi/24)) = 253 after the first step, 0 after the last.
  assert int(schedule.tokens_to_remask(jnp.asarray(256), 0, 12)) == 253
  assert int(schedule.tokens_to_remask(jnp.asarray(256), 11, 12)) == 0
  assert int(schedule.tokens_to_remask(jnp.asarray(256), 5, 12)) == math.floor(256 * math.cos(math.pi / 4))


def toy_logits_fn(table):
  """A 'model' whose logits ignore the tokens: a fixed (B, S, V) table shifted toward the class id."""

  def fn(tokens, class_ids):
    del tokens
    return table + 3.0 * jax.nn.one_hot(class_ids, table.shape[-1])[:, None, :]

  return fn


def _expected_unknown(seq_len, num_steps):
  remaining, out = seq_len, []
  for t in range(num_steps):
    n = math.floor(seq_len * math.cos(math.pi / 2 * (t + 1) / num_steps))
    n = 0 if t == num_steps - 1 else max(1, min(remaining - 1, n))
    out.append(n)
    remaining = n
  return out


@pytest.mark.parametrize("seq_len,num_steps", [(64, 12), (16, 8), (5, 3)])
def test_decoding_invariants(seq_len, num_steps):
  mask_id, codebook = 20, 16
  table = jax.random.normal(jax.random.key(1), (4, seq_len, 22))
  run = jax.jit(
    functools.partial(
      decode_lib.decode,
      logits_fn=toy_logits_fn(table),
      seq_len=seq_len,
      mask_id=mask_id,
      codebook_size=codebook,
      num_steps=num_steps,
    )
  )
  tokens, history = run(jax.random.key(2), class_ids=jnp.arange(4))
  history = np.asarray(history)
  assert history.shape == (num_steps, 4, seq_len)
  np.testing.assert_array_equal(history[-1], tokens)
  assert np.all((np.asarray(tokens) >= 0) & (np.asarray(tokens) < codebook))
  for t in range(1, num_steps):
    known = history[t - 1] != mask_id
    np.testing.assert_array_equal(history[t][known], history[t - 1][known])
  np.testing.assert_array_equal(
    (history == mask_id).sum(-1), np.asarray(_expected_unknown(seq_len, num_steps))[:, None].repeat(4, 1)
  )


def test_initial_known_tokens_never_change():
  table = jax.random.normal(jax.random.key(3), (2, 10, 8))
  start = jnp.asarray([[3, 7, 7, 7, 7, 7, 7, 7, 7, 1], [7] * 10])
  tokens, _ = decode_lib.decode(
    jax.random.key(4),
    toy_logits_fn(table),
    jnp.asarray([0, 1]),
    seq_len=10,
    mask_id=7,
    codebook_size=6,
    num_steps=4,
    initial_tokens=start,
  )
  assert int(tokens[0, 0]) == 3 and int(tokens[0, 9]) == 1
  assert np.all(np.asarray(tokens) < 6)


def test_guidance_formula_and_its_effect():
  table = jnp.zeros((2, 3, 5))
  fn = toy_logits_fn(table)
  tokens, classes = jnp.zeros((2, 3), jnp.int32), jnp.asarray([1, 2])
  guided = decode_lib.guided_logits(fn, tokens, classes, 2.0, null_class_id=4)
  l_c, l_u = fn(tokens, classes), fn(tokens, jnp.full((2,), 4))
  np.testing.assert_allclose(guided, l_c + 2.0 * (l_c - l_u))
  np.testing.assert_array_equal(decode_lib.guided_logits(fn, tokens, classes, 0.0, 4), l_c)
  # A flat model shifted toward the class: guidance concentrates the samples on the class token.
  table = jnp.zeros((64, 32, 8))
  classes = jnp.arange(64) % 4

  def share_of_class(alpha, num_steps):
    out, _ = decode_lib.decode(
      jax.random.key(5),
      toy_logits_fn(table),
      classes,
      seq_len=32,
      mask_id=7,
      codebook_size=6,
      num_steps=num_steps,
      guidance_scale=alpha,
      null_class_id=5,
    )
    return float(np.mean(np.asarray(out) == np.asarray(classes)[:, None]))

  # One step samples every token once: p(class) = e^3 / (e^3 + 5) unguided; alpha = 1 doubles the
  # shift to e^6 / (e^6 + 5) (the null class shifts nothing among the 6 image tokens).
  assert abs(share_of_class(0.0, 1) - math.e**3 / (math.e**3 + 5)) < 0.03
  assert abs(share_of_class(1.0, 1) - math.e**6 / (math.e**6 + 5)) < 0.03
  # With 4 steps the most confident samples are kept, which favours the class further.
  assert share_of_class(1.0, 4) >= share_of_class(0.0, 4)
  with pytest.raises(ValueError, match="null_class_id"):
    decode_lib.decode(
      jax.random.key(0), fn, classes, seq_len=3, mask_id=7, codebook_size=5, guidance_scale=1.0
    )


def test_full_size_transformer_has_the_paper_shape_without_allocating():
  from fsq.maskgit.vocab import Vocabulary
  from fsq.models.transformer import BidirectionalTransformer

  vocab = Vocabulary(codebook_size=1024, num_classes=1000)
  model = BidirectionalTransformer(vocab_size=vocab.size, seq_len=1 + 256)
  tokens = jax.ShapeDtypeStruct((2, 257), jnp.int32)
  params = jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens)["params"]
  count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
  # 24 blocks of 4*768^2 + 2*768*3072 weights (plus biases and norms), embeddings, head: about 170M.
  per_block = 4 * (768 * 768 + 768) + 768 * 3072 + 3072 + 3072 * 768 + 768 + 4 * 768
  expected = 24 * per_block + 2025 * 768 + 257 * 768 + 2 * 768 + 768 * 768 + 768 + 2 * 768 + 2025
  assert count == expected and 169e6 < count < 173e6
  assert params["block_0"]["MultiHeadDotProductAttention_0"]["query"]["kernel"].shape == (768, 16, 48)
  logits = jax.eval_shape(lambda p, t: model.apply({"params": p}, t), params, tokens)
  assert logits.shape == (2, 257, 2025)


def test_small_transformer_ties_output_to_embeddings_and_drops_out_only_in_training():
  from fsq.maskgit.vocab import Vocabulary
  from fsq.models.transformer import BidirectionalTransformer

  vocab = Vocabulary(codebook_size=16, num_classes=3)
  assert vocab.mask_id == 19 and vocab.size == 20
  np.testing.assert_array_equal(vocab.class_tokens(jnp.asarray([0, 2, -1])), [16, 18, 19])
  tokens = vocab.sequence(jnp.asarray([1, 2]), jnp.asarray([[0, 19, 5, 19], [3, 3, 19, 19]]))
  np.testing.assert_array_equal(tokens[:, 0], [17, 18])
  model = BidirectionalTransformer(vocab.size, 5, hidden=32, num_layers=2, num_heads=4, mlp_dim=64)
  variables = jax.jit(model.init)(jax.random.key(0), tokens)
  params = variables["params"]
  assert params["output_bias"].shape == (20,) and "head_dense" in params
  apply = jax.jit(model.apply, static_argnames="train")
  eval_a = apply(variables, tokens)
  np.testing.assert_array_equal(eval_a, apply(variables, tokens))
  train = apply(variables, tokens, train=True, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(train, eval_a)
  # The output layer is tied: the gradient of one logit reaches the embedding row of that token.
  grads = jax.jit(jax.grad(lambda p: model.apply({"params": p}, tokens)[0, 0, 7]))(params)
  assert float(jnp.abs(grads["token_embedding"]["embedding"][7]).sum()) > 0
  np.testing.assert_array_equal(grads["output_bias"], np.eye(20)[7])
  # MaskGIT's init: kernels and embeddings from a normal of std 0.02 truncated at +-2 std (std 0.0176).
  weights = [
    np.asarray(leaf).ravel()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    if path[-1].key in ("kernel", "embedding", "position_embedding")
  ]
  weights = np.concatenate(weights)
  assert weights.size > 15_000 and np.abs(weights).max() <= 0.04
  truncated_std = 0.02 * np.sqrt(1 - 4 * np.exp(-2) / np.sqrt(2 * np.pi) / (2 * 0.4772498680518208))
  assert abs(weights.std() / truncated_std - 1) < 0.03
