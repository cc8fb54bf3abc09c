"""ViT and UViM's vision-to-text transformer: patch embedding against numpy, cached decoding against a
reference that re-runs the teacher-forced model on the growing prefix, causality, paper-scale shapes."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsq.models.vit import ViT, posemb_sincos_2d
from fsq.models.vtt import VisionToTextTransformer, generate

TINY = VisionToTextTransformer(
  codebook_size=11, seq_len=4, width=32, depth=2, num_heads=2, mlp_dim=64, patch_size=4
)

_apply = jax.jit(TINY.apply)


@pytest.fixture(scope="module")
def tiny():
  """(params, images) of TINY. The zero-initialised head gets a random kernel and the position embeddings
  a larger scale, so that greedy decoding does not settle on one code."""
  images = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
  params = jax.jit(TINY.init)(jax.random.key(1), images, jnp.zeros((3, TINY.seq_len), jnp.int32))["params"]
  decoder = params["decoder"]
  decoder["head"]["kernel"] = 0.3 * jax.random.normal(jax.random.key(2), decoder["head"]["kernel"].shape)
  decoder["pos_embedding"] = jax.random.normal(jax.random.key(3), decoder["pos_embedding"].shape)
  return params, images


def reference_generate(params, images, rng, temperature, top_k):
  """Decoding without a cache: at step t, run the full teacher-forced model on the t codes so far (plus
  one placeholder that the shifted input never sees) and draw code t from its logits at position t."""
  batch, k = images.shape[0], TINY.codebook_size
  codes = np.zeros((batch, 0), np.int32)
  for t in range(TINY.seq_len):
    prefix = np.concatenate([codes, np.zeros((batch, 1), np.int32)], axis=1)
    logits = np.asarray(_apply({"params": params}, images, prefix))[:, t, :k]
    if temperature == 0:
      nxt = logits.argmax(-1)
    else:
      if top_k:
        kth = np.sort(logits, axis=-1)[:, -top_k, None]
        logits = np.where(logits >= kth, logits, -np.inf)
      nxt = np.asarray(jax.random.categorical(jax.random.fold_in(rng, t), jnp.asarray(logits) / temperature))
    codes = np.concatenate([codes, nxt[:, None].astype(np.int32)], axis=1)
  return codes


@pytest.mark.parametrize(("temperature", "top_k"), [(0.0, 0), (1.0, 0), (0.7, 3)])
def test_cached_decoding_equals_the_uncached_reference(tiny, temperature, top_k):
  params, images = tiny
  rng = jax.random.key(7)
  codes = np.asarray(generate(TINY, params, images, rng, temperature=temperature, top_k=top_k))
  assert codes.shape == (3, TINY.seq_len) and codes.dtype == np.int32
  np.testing.assert_array_equal(codes, reference_generate(params, images, rng, temperature, top_k))
  assert len(np.unique(codes)) > 1, "degenerate test: every decoded code is the same"


def test_generate_never_emits_bos(tiny):
  params, images = tiny
  params = jax.tree.map(lambda x: x, params)
  params["decoder"]["head"]["bias"] = params["decoder"]["head"]["bias"].at[TINY.bos_id].set(1e3)
  for temperature in (0.0, 1.0):
    codes = np.asarray(generate(TINY, params, images, jax.random.key(0), temperature=temperature, top_k=0))
    assert codes.min() >= 0 and codes.max() < TINY.codebook_size


def test_later_codes_do_not_change_earlier_logits(tiny):
  params, images = tiny
  codes = jax.random.randint(jax.random.key(4), (3, TINY.seq_len), 0, TINY.codebook_size)
  changed = codes.at[:, 2].set((codes[:, 2] + 1) % TINY.codebook_size)
  logits = np.asarray(_apply({"params": params}, images, codes))
  logits_changed = np.asarray(_apply({"params": params}, images, changed))
  assert logits.shape == (3, TINY.seq_len, TINY.vocab_size)
  # Code 2 is the decoder input at position 3 (shifted right by BOS): positions 0..2 must not see it.
  np.testing.assert_allclose(logits_changed[:, :3], logits[:, :3], rtol=0, atol=1e-6)
  assert np.abs(logits_changed[:, 3] - logits[:, 3]).max() > 1e-3


def test_vit_patch_embedding_is_a_stride_p_convolution():
  p, width = 4, 8
  vit = ViT(width=width, depth=1, num_heads=2, mlp_dim=16, patch_size=p)
  images = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
  variables = jax.jit(vit.init)(jax.random.key(1), images)
  apply = functools.partial(vit.apply, capture_intermediates=True, mutable=["intermediates"])
  out, state = jax.jit(apply)(variables, images)
  assert out.shape == (2, (8 // p) * (12 // p), width)
  (embedded,) = state["intermediates"]["embedding"]["__call__"]
  conv = variables["params"]["embedding"]
  x = np.asarray(images, np.float64).reshape(2, 8 // p, p, 12 // p, p, 3).transpose(0, 1, 3, 2, 4, 5)
  kernel = np.asarray(conv["kernel"], np.float64).reshape(p * p * 3, width)
  expected = x.reshape(2, 2, 3, p * p * 3) @ kernel + np.asarray(conv["bias"], np.float64)
  np.testing.assert_allclose(np.asarray(embedded), expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="patch_size = 4"):
    vit.init(jax.random.key(1), images[:, :6])


def test_sincos_posemb_hand_computed():
  pe = np.asarray(posemb_sincos_2d(2, 3, 8))  # omega = (1, 1e-4); quarters sin x, cos x, sin y, cos y
  assert pe.shape == (1, 6, 8)
  s, c = np.sin([1.0, 1e-4]), np.cos([1.0, 1e-4])
  np.testing.assert_allclose(pe[0, 0], [0, 0, 1, 1, 0, 0, 1, 1], atol=1e-7)
  np.testing.assert_allclose(pe[0, 1], [*s, *c, 0, 0, 1, 1], atol=1e-7)  # row 0, column 1
  np.testing.assert_allclose(pe[0, 3], [0, 0, 1, 1, *s, *c], atol=1e-7)  # row 1, column 0


def test_paper_scale_vtt_builds_without_allocating():
  w, m, layers, k, s, p, res = 1024, 4096, 24, 4096, 256, 16, 512
  model = VisionToTextTransformer(codebook_size=k, seq_len=s)
  images = jax.ShapeDtypeStruct((2, res, res, 3), jnp.float32)
  codes = jax.ShapeDtypeStruct((2, s), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), images, codes)["params"]
  assert jax.eval_shape(model.apply, {"params": params}, images, codes).shape == (2, s, k + 1)
  sampled = jax.eval_shape(
    functools.partial(generate, model, temperature=1.0), params, images, jax.random.key(0)
  )
  assert sampled.shape == (2, s) and sampled.dtype == jnp.int32

  n = (res // p) ** 2
  encoder = p * p * 3 * w + w + n * w + layers * (4 * w + 4 * (w * w + w) + 2 * w * m + m + w) + 2 * w
  decoder = (
    (k + 1) * w + s * w + layers * (6 * w + 8 * w * w + 2 * w * m + m + w) + 2 * w + w * (k + 1) + k + 1
  )
  count = lambda tree: sum(math.prod(x.shape) for x in jax.tree.leaves(tree))  # noqa: E731
  assert count(params["encoder"]) == encoder == 304_147_456
  assert count(params["decoder"]) == decoder == 411_582_465
  assert 700e6 < count(params) < 730e6
