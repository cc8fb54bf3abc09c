"""Tests for UViM's stage I model (fsq/models/uvim.py) on tiny shapes, and its paper-scale parameter count."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsq import layers, vq
from fsq.bottlenecks import make_quantizer
from fsq.models import uvim

SIZE, PATCH, CODE_GRID, OUT = 16, 4, 2, 3
TINY = dict(
  patch_size=PATCH, code_grid=CODE_GRID, width=16, oracle_depth=1, base_depth=1, num_heads=2, mlp_dim=32
)


def tiny(quantizer, **overrides):
  return uvim.UViM(quantizer, OUT, **{**TINY, "head_zeroinit": False, **overrides})


def inputs(seed=0, batch=2, y_channels=2):
  kx, ky = jax.random.split(jax.random.key(seed))
  x = jax.random.uniform(kx, (batch, SIZE, SIZE, 3), minval=-1, maxval=1)
  y = jax.random.normal(ky, (batch, SIZE, SIZE, y_channels))
  return x, y


def init(model, x, y):
  return jax.jit(model.init)({"params": jax.random.key(1)}, x, y)


def apply(model, variables, *args, rngs=None, **kwargs):
  """``model.apply`` compiled as one program (not dispatched operation by operation)."""
  return jax.jit(functools.partial(model.apply, **kwargs))(variables, *args, rngs=rngs)


def quantizers():
  return {"fsq": layers.FSQ(levels=(5, 3)), "vq": vq.uvim_vq(8, 8)}


@pytest.mark.parametrize("kind", ["fsq", "vq"])
def test_shapes_and_index_range(kind):
  quantizer = quantizers()[kind]
  model = tiny(quantizer)
  x, y = inputs()
  variables = init(model, x, y)
  rngs = {"dropout": jax.random.key(2), "vq": jax.random.key(3)}
  (pred, aux), _ = apply(model, variables, x, y, train=True, rngs=rngs, mutable=["vq_stats"])
  assert pred.shape == (2, SIZE, SIZE, OUT)
  assert aux["indices"].shape == (2, CODE_GRID, CODE_GRID)
  assert aux["indices"].dtype == jnp.int32
  size = 15 if kind == "fsq" else 8
  assert int(aux["indices"].min()) >= 0 and int(aux["indices"].max()) < size
  assert ("loss" in aux) == (kind == "vq")
  indices = apply(model, variables, x, y, method="encode")
  np.testing.assert_array_equal(indices, apply(model, variables, x, y, train=False)[1]["indices"])


def test_fsq_indices_stay_in_range_for_large_latents():
  model = tiny(layers.FSQ(levels=(3, 2)), code_grid=4)
  x, y = inputs(batch=8)
  variables = init(model, x, y)
  indices = np.asarray(apply(model, variables, x, 10.0 * y, method="encode"))
  assert indices.min() >= 0 and indices.max() < 6


@pytest.mark.parametrize("kind", ["fsq", "vq"])
def test_decode_of_encode_equals_the_quantizer_path(kind):
  model = tiny(quantizers()[kind])
  x, y = inputs()
  variables = init(model, x, y)
  pred, _ = apply(model, variables, x, y, train=False)
  indices = apply(model, variables, x, y, method="encode")
  decoded = apply(model, variables, x, indices, method="decode")
  assert float(jnp.std(pred)) > 1e-3
  np.testing.assert_allclose(decoded, pred, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("context", [False, True])
def test_oracle_context_switch(context):
  model = tiny(layers.FSQ(levels=(8, 8, 8)), code_grid=4, oracle_context=context)
  x, y = inputs()
  variables = init(model, x, y)
  x2 = x + jax.random.normal(jax.random.key(9), x.shape)
  a = apply(model, variables, x, y, method="encode")
  b = apply(model, variables, x2, y, method="encode")
  assert np.array_equal(a, b) != context


@pytest.mark.parametrize("context", [False, True])
def test_base_context_switch(context):
  model = tiny(layers.FSQ(levels=(5, 3)), base_context=context)
  x, y = inputs()
  variables = init(model, x, y)
  indices = apply(model, variables, x, y, method="encode")
  x2 = x + jax.random.normal(jax.random.key(9), x.shape)
  a = apply(model, variables, x, indices, method="decode")
  b = apply(model, variables, x2, indices, method="decode")
  assert np.allclose(a, b) != context
  assert ("ctx_embedding" in variables["params"]["base"]) == context


def test_without_context_neither_part_sees_the_image():
  model = tiny(layers.FSQ(levels=(5, 3)), oracle_context=False, base_context=False)
  x, y = inputs()
  variables = init(model, x, y)
  pred, _ = apply(model, variables, x, y)
  pred2, _ = apply(model, variables, -x, y)
  np.testing.assert_array_equal(pred, pred2)


def test_code_dropout_acts_only_through_zeroed_codes(monkeypatch):
  model = tiny(layers.FSQ(levels=(5, 3)), code_grid=4)
  x, y = inputs(batch=4)
  variables = init(model, x, y)
  seen = {}
  original = vq.code_dropout

  def recording(rng, codes, mode="random"):
    seen["in"], seen["out"] = codes, original(rng, codes, mode)
    return seen["out"]

  monkeypatch.setattr(uvim.vq, "code_dropout", recording)
  # Eager, so that the recorded codes are arrays, not tracers.
  pred, _ = model.apply(variables, x, y, train=True, rngs={"dropout": jax.random.key(5)})
  codes_in, codes_out = np.asarray(seen["in"]), np.asarray(seen["out"])
  kept = np.all(codes_in == codes_out, axis=-1)
  dropped = np.all(codes_out == 0, axis=-1)
  assert np.all(kept | dropped)
  assert np.any(dropped & ~kept), "some codes must be dropped for this seed"
  grid = codes_out.reshape(4, 4, 4, -1)
  expected = apply(model, variables, grid, x, method=lambda m, c, i: m.base(c, i))
  np.testing.assert_allclose(pred, expected, rtol=1e-5, atol=1e-5)
  eval_pred, _ = apply(model, variables, x, y, train=False)
  assert not np.allclose(pred, eval_pred)


def test_no_code_dropout_at_eval_or_when_disabled():
  x, y = inputs()
  for mode, train in (("random", False), ("none", True)):
    model = tiny(layers.FSQ(levels=(5, 3)), code_dropout=mode)
    variables = init(model, x, y)
    pred, _ = apply(model, variables, x, y, train=train, rngs={"dropout": jax.random.key(5)})
    indices = apply(model, variables, x, y, method="encode")
    np.testing.assert_allclose(
      pred, apply(model, variables, x, indices, method="decode"), rtol=1e-5, atol=1e-5
    )


def test_invalid_fields_raise():
  x, y = inputs()
  with pytest.raises(ValueError, match="code_dropout"):
    init(tiny(layers.FSQ(levels=(5, 3)), code_dropout="half"), x, y)
  with pytest.raises(ValueError, match="patch_size"):
    init(tiny(layers.FSQ(levels=(5, 3)), patch_size=5), x, y)


def _paper_param_count(y_channels, image_channels, out_channels, latent):
  """Hand count for the paper-scale model: width 768, MLP 3072, 6 + 12 blocks, patch 16, 32 x 32 tokens."""
  w, m, p, tokens = 768, 3072, 16, 32 * 32
  block = 2 * w + 4 * (w * w + w) + 2 * w + (w * m + m) + (m * w + w)
  oracle = p * p * (y_channels + image_channels) * w + w + tokens * w + 6 * block + 2 * w
  encoder_head = w * latent + latent
  base = (latent * w + w) + (p * p * image_channels * w + w) + tokens * w + 12 * block + 2 * w
  head = w * p * p * out_channels + p * p * out_channels
  return oracle + encoder_head + base + head


@pytest.mark.parametrize("kind, latent", [("fsq", 5), ("vq_uvim", 768)])
def test_paper_scale_builds(kind, latent):
  quantizer = make_quantizer(kind, levels=(7, 5, 5, 5, 5), codebook_size=4096, vq_dim=768)
  model = uvim.UViM(quantizer, output_channels=256)
  x = jax.ShapeDtypeStruct((1, 512, 512, 3), jnp.float32)
  y = jax.ShapeDtypeStruct((1, 512, 512, 256), jnp.float32)
  variables = jax.eval_shape(lambda a, b: model.init({"params": jax.random.key(0)}, a, b), x, y)
  count = sum(math.prod(a.shape) for a in jax.tree.leaves(variables["params"]))
  assert count == _paper_param_count(256, 3, 256, latent)
  if kind == "vq_uvim":
    assert variables["vq_stats"]["quantizer"]["sums"].shape == (4096, 768)
  out = jax.eval_shape(model.apply, variables, x, y)
  assert out[0].shape == (1, 512, 512, 256)
  assert out[1]["indices"].shape == (1, 16, 16)
