"""fsq.nnx: the NNX quantizers equal the Linen ones (fsq.layers) for the same weights, under nnx.jit:
outputs, indices, auxiliary losses, decodes and gradients."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fsq import layers
from fsq import nnx as fsq_nnx

CASES = {
  "fsq": (
    layers.FSQ(levels=(8, 5, 5), num_codebooks=2, dim=10),
    fsq_nnx.FSQ,
    dict(levels=(8, 5, 5), num_codebooks=2),
  ),
  "fsq_nchw": (layers.FSQ(levels=(4, 3), channel_axis=1), fsq_nnx.FSQ, dict(levels=(4, 3), channel_axis=1)),
  "residual": (
    layers.ResidualFSQ(levels=(5, 5, 3), num_stages=3, dim=10),
    fsq_nnx.ResidualFSQ,
    dict(levels=(5, 5, 3), num_stages=3),
  ),
  "lfq": (layers.LFQ(num_bits=6, dim=10), fsq_nnx.LFQ, dict(num_bits=6)),
}


def build(name):
  """The Linen module and its parameters, and the NNX module holding the same weights; the input x."""
  linen, nnx_class, fields = CASES[name]
  rng = np.random.default_rng(0)
  shape = (3, 2, 4) if name == "fsq_nchw" else (2, 3, 10)
  x = jnp.asarray(rng.normal(size=shape) * 2, jnp.float32)
  variables = linen.init(jax.random.key(0), x)
  dim = None if name == "fsq_nchw" else 10
  module = nnx_class(**fields, dim=dim, rngs=nnx.Rngs(1) if dim else None)
  for layer in ("project_in", "project_out"):
    if dim:
      for param in ("kernel", "bias"):
        getattr(getattr(module, layer), param)[...] = variables["params"][layer][param]
  return linen, variables, module, x


@pytest.mark.parametrize("name", sorted(CASES))
def test_nnx_modules_match_linen_outputs_decodes_and_gradients(name):
  linen, variables, module, x = build(name)
  expected, expected_aux = linen.apply(variables, x)
  out, aux = nnx.jit(lambda m, x: m(x))(module, x)
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
  assert sorted(aux) == sorted(expected_aux)
  for key in aux:
    np.testing.assert_allclose(aux[key], expected_aux[key], rtol=1e-6, atol=1e-6, err_msg=key)
  assert aux["indices"].dtype == jnp.int32
  decoded = nnx.jit(lambda m, i: m.decode(i))(module, aux["indices"])
  np.testing.assert_allclose(
    decoded, linen.apply(variables, expected_aux["indices"], method="decode"), atol=1e-6
  )

  def loss(quantized, aux):
    return jnp.sum(quantized**2) + aux.get("loss", 0.0)

  # float32 sums in another order: differences of a few 1e-6 on gradients of order 10
  grad_x = jax.jit(jax.grad(lambda x: loss(*linen.apply(variables, x))))(x)
  np.testing.assert_allclose(
    nnx.jit(nnx.grad(lambda x, m: loss(*m(x))))(x, module), grad_x, rtol=1e-5, atol=2e-5
  )
  if name != "fsq_nchw":
    linen_grads = jax.jit(jax.grad(lambda v: loss(*linen.apply(v, x))))(variables)["params"]
    nnx_grads = nnx.jit(nnx.grad(lambda m, x: loss(*m(x))))(module, x)
    ours = {
      layer: {p: getattr(nnx_grads, layer)[p][...] for p in ("kernel", "bias")} for layer in linen_grads
    }
    chex.assert_trees_all_close(ours, linen_grads, rtol=1e-5, atol=2e-5)


def test_projections_need_rngs_and_fields_are_checked():
  assert nnx.state(fsq_nnx.FSQ(levels=(8, 5, 5, 5)), nnx.Param) == nnx.State({})  # no projection, no rngs
  assert fsq_nnx.FSQ(levels=(8, 5, 5, 5)).codebook_size == 1000
  with pytest.raises(
    ValueError, match="FSQ with dim = 16 \\(quantized width 4\\) projects in and out: pass rngs"
  ):
    fsq_nnx.FSQ(levels=(8, 5, 5, 5), dim=16)
  with pytest.raises(ValueError, match="num_stages must be an integer >= 1, got 0"):
    fsq_nnx.ResidualFSQ(levels=(5, 5), num_stages=0)
  with pytest.raises(ValueError, match="num_bits must be an integer in \\[1, 30\\], got 31"):
    fsq_nnx.LFQ(num_bits=31)
  with pytest.raises(ValueError, match="has 3 channels on channel_axis = -1, but the quantized width = 4"):
    fsq_nnx.FSQ(levels=(8, 5, 5, 5))(jnp.zeros((2, 3)))
