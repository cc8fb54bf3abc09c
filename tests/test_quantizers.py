"""FSQ pure functions and modules against the float64 numpy reference in tests/reference.py."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.experimental import checkify
from jax.sharding import NamedSharding, PartitionSpec

from fsq import layers
from fsq import quantizers as q
from tests import reference as ref

TABLE_1 = {
  2**8: [8, 6, 5],
  2**10: [8, 5, 5, 5],
  2**12: [7, 5, 5, 5, 5],
  2**14: [8, 8, 8, 6, 5],
  2**16: [8, 8, 8, 5, 5, 5],
}
APPENDIX = {2**4: [5, 3], 2**6: [8, 8], 2**9: [8, 8, 8], 2**11: [8, 8, 6, 5]}

levels_st = st.lists(st.integers(2, 16), min_size=1, max_size=5)
settings.register_profile("ci", max_examples=60, deadline=None)
settings.load_profile("ci")


@st.composite
def levels_and_z(draw, max_rows=16):
  """Random levels and z of (rows, len(levels)) floats. Rows are 1 or ``max_rows``: the properties hold row
  by row, and few distinct shapes keep the eagerly dispatched operations from compiling per example."""
  levels = draw(levels_st)
  rows = draw(st.sampled_from((1, max_rows)))
  z = draw(
    hnp.arrays(np.float32, (rows, len(levels)), elements=st.floats(-8, 8, width=32, allow_subnormal=False))
  )
  return levels, z


def far_from_rounding_boundary(z, levels, symmetric):
  """Rows whose float64 bounded values are not within 1e-4 of a rounding boundary."""
  b = ref.bound(z, levels, symmetric=symmetric) + ref.grid_step_divisor(levels, symmetric)
  frac = b - np.floor(b)
  return np.all(np.abs(frac - 0.5) > 1e-4, axis=-1)


@given(levels_and_z(), st.booleans())
def test_codes_match_float64_reference_and_lie_on_grid(data, symmetric):
  levels, z = data
  codes = np.asarray(q.quantize(jnp.asarray(z), levels, symmetric=symmetric), np.float64)
  assert codes.shape == z.shape and np.all(np.abs(codes) <= 1.0)
  divisor = ref.grid_step_divisor(levels, symmetric)
  digits = codes * divisor + divisor
  np.testing.assert_allclose(digits, np.round(digits), atol=1e-6)
  assert np.all(np.round(digits) >= 0) and np.all(np.round(digits) <= np.asarray(levels) - 1)
  ok = far_from_rounding_boundary(z, levels, symmetric)
  np.testing.assert_allclose(codes[ok], ref.quantize(z, levels, symmetric=symmetric)[ok], atol=1e-6)


@pytest.mark.parametrize("levels", list(TABLE_1.values()))
def test_every_code_round_trips(levels):
  size = math.prod(levels)
  indices = jnp.arange(size, dtype=jnp.int32)
  codes = q.indices_to_codes(indices, levels)
  np.testing.assert_allclose(np.asarray(codes), ref.all_codes(levels), atol=1e-7)
  np.testing.assert_array_equal(q.codes_to_indices(codes, levels), np.arange(size))
  for dtype in (jnp.bfloat16, jnp.float16):
    low = codes.astype(dtype)
    np.testing.assert_array_equal(q.codes_to_indices(low, levels), np.arange(size))
  digits = q.indices_to_digits(indices, levels)
  np.testing.assert_array_equal(digits, np.stack(np.unravel_index(np.arange(size), levels, order="F"), -1))
  np.testing.assert_array_equal(q.digits_to_indices(digits, levels), np.arange(size))


@given(levels_and_z(max_rows=64), st.sampled_from([jnp.bfloat16, jnp.float16]))
def test_low_precision_inputs_give_float32_indices(data, dtype):
  levels, z = data
  low = jnp.asarray(z).astype(dtype)
  codes_low = q.quantize(low, levels)
  assert codes_low.dtype == dtype
  codes_f32 = q.quantize(low.astype(jnp.float32), levels)
  np.testing.assert_array_equal(q.codes_to_indices(codes_low, levels), q.codes_to_indices(codes_f32, levels))


def test_bfloat16_indices_do_not_collide():
  """Pitfall 1: summing digit * basis in bf16 collides about half the indices of [8, 5, 5, 5]."""
  levels = [8, 5, 5, 5]
  # Invert the float64 bound at every grid point, so that z hits each of the 1000 codes once.
  L = np.asarray(levels, np.float64)
  half_l, offset = (L - 1) * 1.001 / 2, np.where(L % 2 == 0, 0.5, 0.0)
  rounded = ref.all_codes(levels) * ref.grid_step_divisor(levels)
  z = np.arctanh((rounded + offset) / half_l) - np.arctanh(offset / half_l)
  indices = q.codes_to_indices(q.quantize(jnp.asarray(z, jnp.bfloat16), levels), levels)
  np.testing.assert_array_equal(indices, np.arange(1000))


@given(levels_and_z(), st.booleans())
def test_gradient_is_straight_through_the_bound(data, symmetric):
  levels, z = data
  weights = np.linspace(-1, 1, z.size).reshape(z.shape).astype(np.float32)
  grad = jax.grad(lambda x: jnp.sum(q.quantize(x, levels, symmetric=symmetric) * weights))(jnp.asarray(z))
  expected = weights * ref.bound_derivative(z, levels, symmetric=symmetric)
  expected /= ref.grid_step_divisor(levels, symmetric)
  np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-4, atol=1e-6)


def test_two_levels_are_finite_and_give_minus_one_and_zero():
  # The shift puts z = 0 at the top of the range for L = 2: the -1 | 0 threshold is where
  # tanh(z + arctanh(0.5 / 0.5005)) = 0, at z = -arctanh(0.999) = -3.8002.
  z = jnp.asarray([[-20.0], [-3.81], [-3.79], [0.0], [20.0]])
  codes = q.quantize(z, [2])
  np.testing.assert_array_equal(np.asarray(codes)[:, 0], [-1, -1, 0, 0, 0])
  z = jnp.asarray([[-20.0], [-0.3], [0.0], [0.3], [20.0]])
  assert np.all(np.isfinite(jax.grad(lambda x: q.quantize(x, [2]).sum())(z)))
  np.testing.assert_array_equal(np.asarray(q.quantize(z, [2], symmetric=True))[:, 0], [-1, -1, -1, 1, 1])


def test_large_levels_stay_in_range():
  z = jnp.asarray([[-30.0, -30.0, -30.0], [30.0, 30.0, 30.0], [0.0, 0.0, 0.0]])
  for eps in (1e-3, 0.5):
    codes = np.asarray(q.quantize(z, [2001, 1001, 16], eps=eps))
    assert np.all(np.abs(codes) <= 1.0)
    np.testing.assert_array_equal(codes[0], -1.0)
    np.testing.assert_array_equal(
      q.codes_to_indices(jnp.asarray(codes), [2001, 1001, 16])[:2], [0, 2001 * 1001 * 16 - 1]
    )


def test_zero_maps_to_code_zero_for_every_level():
  for L in range(2, 40):
    assert float(q.quantize(jnp.zeros((1, 1)), [L])[0, 0]) == 0.0


def test_symmetric_grid_is_symmetric_and_matches_default_for_odd_levels():
  for levels in ([4], [8], [2], [6, 3]):
    codes = np.asarray(q.implicit_codebook(levels, symmetric=True))
    for ch in range(len(levels)):
      values = np.unique(codes[:, ch])
      np.testing.assert_allclose(values, -values[::-1], atol=1e-7)
      assert values[0] == -1 and values[-1] == 1
  z = jax.random.normal(jax.random.key(0), (256, 3)) * 2
  np.testing.assert_array_equal(q.quantize(z, [7, 5, 3], symmetric=True), q.quantize(z, [7, 5, 3]))
  np.testing.assert_allclose(
    np.unique(q.implicit_codebook([4], symmetric=True)), [-1, -1 / 3, 1 / 3, 1], atol=1e-7
  )


def test_levels_for_codebook_size_reproduces_the_paper():
  for target, levels in {**TABLE_1, **APPENDIX}.items():
    assert list(q.levels_for_codebook_size(target)) == levels
  assert [q.codebook_size(v) for v in TABLE_1.values()] == [240, 1000, 4375, 15360, 64000]


def test_levels_for_codebook_size_rule_on_hand_computed_targets():
  # 3: one channel. 2000: [5, 8] tuples nearest 2000 are 8*7*6*6 = 2016 (0.8%) and 7*7*7*6 = 2058.
  # 100: [5, 8] tuples give 64 or 125 (over 10% off), so one small level: 5*5*4 = 100.
  assert q.levels_for_codebook_size(3) == (3,)
  assert q.levels_for_codebook_size(2000) == (8, 7, 6, 6)
  assert q.levels_for_codebook_size(100) == (5, 5, 4)


@given(st.integers(9, 2**24))
def test_levels_for_codebook_size_properties(target):
  levels = q.levels_for_codebook_size(target)
  assert list(levels) == sorted(levels, reverse=True) or target in {**TABLE_1, **APPENDIX}
  assert all(2 <= v <= 8 for v in levels)
  assert sum(v < 5 for v in levels) <= 1
  assert abs(math.log(q.codebook_size(levels) / target)) < math.log(1.25)


class VariantsTest(chex.TestCase):
  """Codes, indices and the straight-through gradient against the float64 reference, called eagerly,
  under jit and under pmap over the 8 CPU devices (chex variants)."""

  @chex.variants(with_jit=True, without_jit=True, with_pmap=True)
  def test_codes_indices_and_gradient_match_the_reference(self):
    levels = (8, 5, 5, 5)
    z = np.random.default_rng(3).normal(size=(256, 4)) * 3

    def codes_indices_gradient(z):
      codes, indices = q.quantize_with_indices(z, levels)
      chex.assert_shape(indices, z.shape[:-1])
      return codes, indices, jax.grad(lambda z: jnp.sum(q.quantize(z, levels)))(z)

    codes, indices, grad = self.variant(codes_indices_gradient)(jnp.asarray(z, jnp.float32))
    chex.assert_type([codes, indices, grad], [jnp.float32, jnp.int32, jnp.float32])
    ok = far_from_rounding_boundary(z, levels, False)
    assert ok.mean() > 0.9
    expected = ref.quantize(z, levels)
    np.testing.assert_allclose(np.asarray(codes)[ok], expected[ok], atol=1e-6)
    center = ref.grid_step_divisor(levels)
    digits = np.round(expected * center + center).astype(np.int64)
    np.testing.assert_array_equal(
      np.asarray(indices)[ok], np.ravel_multi_index(digits.T, levels, order="F")[ok]
    )
    expected_grad = ref.bound_derivative(z, levels) / center
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-4, atol=1e-6)


def test_vmap_and_sharded_inputs_agree():
  levels = [8, 5, 5, 5]
  z = jax.random.normal(jax.random.key(1), (64, 4)) * 3
  expected = q.quantize(z, levels)
  np.testing.assert_array_equal(jax.vmap(lambda r: q.quantize(r, levels))(z), expected)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharded = jax.device_put(z, NamedSharding(mesh, PartitionSpec("data")))
  fn = jax.jit(lambda x: q.codes_to_indices(q.quantize(x, levels), levels))
  out = fn(sharded)
  assert len(out.sharding.device_set) == 8
  np.testing.assert_array_equal(out, q.codes_to_indices(expected, levels))


def test_implicit_codebook_is_built_only_on_request():
  np.testing.assert_allclose(q.implicit_codebook([8, 6, 5]), ref.all_codes([8, 6, 5]), atol=1e-7)
  with pytest.raises(ValueError, match="max_codes"):
    q.implicit_codebook([4] * 13)
  module = layers.FSQ(levels=[4] * 16)
  with pytest.raises(ValueError, match="int32"):
    module.init(jax.random.key(0), jnp.zeros((1, 16)))
  module = layers.FSQ(levels=[4] * 15)
  variables = module.init(jax.random.key(0), jnp.zeros((1, 15)))
  assert jax.tree.leaves(variables) == []


@pytest.mark.parametrize("levels", [[8, 1, 5], [], [8.0, 5], "85", [True, 5], [2**16, 2**16], 7, [8, -3]])
def test_bad_levels_raise_value_error_naming_the_field(levels):
  with pytest.raises(ValueError, match="levels"):
    q.quantize(jnp.zeros((2, 2)), levels)


def test_wrong_width_names_both_shapes():
  with pytest.raises(ValueError, match=r"\(3, 5\).*len\(levels\) = 4"):
    q.quantize(jnp.zeros((3, 5)), [8, 5, 5, 5])
  with pytest.raises(ValueError, match="eps"):
    q.quantize(jnp.zeros((3, 4)), [8, 5, 5, 5], eps=0.0)
  with pytest.raises(ValueError, match="target"):
    q.levels_for_codebook_size(1)


def test_out_of_range_indices_and_codes_are_errors():
  levels = [8, 5, 5, 5]
  with pytest.raises(ValueError, match=r"indices must be in \[0, 1000\), got 1000"):
    q.indices_to_codes(jnp.asarray([3, 1000]), levels)
  with pytest.raises(ValueError, match="got -1"):
    q.indices_to_codes(np.asarray([-1]), levels)
  with pytest.raises(ValueError, match="codes"):
    q.codes_to_indices(jnp.asarray([[1.5, 0, 0, 0]]), levels)
  with pytest.raises(ValueError, match="integer"):
    q.indices_to_codes(jnp.asarray([1.0]), levels)
  fn = jax.jit(lambda i: q.indices_to_codes(i, levels))
  np.testing.assert_array_equal(fn(jnp.asarray([999])), ref.all_codes(levels)[999:])
  err, _ = checkify.checkify(fn)(jnp.asarray([5, 1200]))
  with pytest.raises(checkify.JaxRuntimeError, match="1200"):
    err.throw()
  err, _ = checkify.checkify(fn)(jnp.asarray([5, 999]))
  err.throw()


def test_fsq_module_channel_axis_codebooks_and_decode():
  x = jax.random.normal(jax.random.key(2), (2, 3, 3, 8)) * 2
  module = layers.FSQ(levels=[8, 5, 5, 5], num_codebooks=2)
  variables = module.init(jax.random.key(0), x)
  quantized, aux = module.apply(variables, x)
  assert set(aux) == {"indices", "codes"}  # no auxiliary loss, by design
  groups = x.reshape(2, 3, 3, 2, 4)
  np.testing.assert_allclose(quantized.reshape(groups.shape), ref.quantize(groups, [8, 5, 5, 5]), atol=1e-6)
  np.testing.assert_array_equal(
    aux["indices"], q.codes_to_indices(q.quantize(groups, [8, 5, 5, 5]), [8, 5, 5, 5])
  )
  np.testing.assert_array_equal(module.apply(variables, aux["indices"], method=module.decode), quantized)

  nchw = layers.FSQ(levels=[8, 5, 5, 5], num_codebooks=2, channel_axis=1)
  xt = jnp.moveaxis(x, -1, 1)
  qt, auxt = nchw.apply({}, xt)
  np.testing.assert_array_equal(jnp.moveaxis(qt, 1, -1), quantized)
  np.testing.assert_array_equal(jnp.moveaxis(auxt["indices"], 1, -1), aux["indices"])
  np.testing.assert_array_equal(nchw.apply({}, auxt["indices"], method=nchw.decode), qt)


def test_fsq_module_projection_and_width_errors():
  x = jax.random.normal(jax.random.key(3), (4, 5, 32))
  module = layers.FSQ(levels=[8, 6, 5], dim=32)
  variables = module.init(jax.random.key(0), x)
  assert variables["params"]["project_in"]["kernel"].shape == (32, 3)
  quantized, aux = module.apply(variables, x.astype(jnp.bfloat16))
  assert quantized.shape == x.shape and quantized.dtype == jnp.bfloat16
  assert aux["indices"].shape == (4, 5) and int(aux["indices"].max()) < 240
  decoded = module.apply(variables, aux["indices"], method=module.decode)
  np.testing.assert_allclose(decoded, quantized.astype(jnp.float32), rtol=2e-2, atol=2e-2)
  grads = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, x)[0] ** 2))(variables["params"])
  assert float(jnp.abs(grads["project_in"]["kernel"]).sum()) > 0
  with pytest.raises(ValueError, match=r"\(4, 5, 32\).*dim = 16"):
    layers.FSQ(levels=[8, 6, 5], dim=16).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="quantized width = 3"):
    layers.FSQ(levels=[8, 6, 5]).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="num_codebooks"):
    layers.FSQ(levels=[8, 6, 5], num_codebooks=0).init(jax.random.key(0), x)


def test_residual_fsq_stages_and_truncated_decoding():
  levels = [7, 5, 5]
  x = jax.random.uniform(jax.random.key(4), (512, 3), minval=-0.9, maxval=0.9)
  module = layers.ResidualFSQ(levels=levels, num_stages=3)
  quantized, aux = module.apply({}, x)
  assert aux["indices"].shape == (512, 3)
  # Float64 reference of the residual loop.
  residual, total, partial = np.asarray(x, np.float64), 0.0, []
  for k in range(3):
    scale = (np.asarray(levels, np.float64) - 1.0) ** -k
    stage = ref.quantize(residual / scale, levels) * scale
    residual, total = residual - stage, total + stage
    partial.append(total)
  np.testing.assert_allclose(quantized, partial[-1], atol=1e-5)
  errors = []
  for k in range(1, 4):
    decoded = module.apply({}, aux["indices"][:, :k], method=module.decode)
    np.testing.assert_allclose(decoded, partial[k - 1], atol=1e-5)
    errors.append(float(jnp.mean((decoded - x) ** 2)))
  assert errors[0] > errors[1] > errors[2]
  with pytest.raises(ValueError, match="num_stages"):
    module.apply({}, aux["indices"][:, :0], method=module.decode)


def test_lfq_indices_equal_binary_fsq_indices():
  z = jax.random.normal(jax.random.key(5), (300, 6))
  module = layers.LFQ(num_bits=6)
  quantized, aux = module.apply({}, z)
  np.testing.assert_array_equal(np.abs(quantized), 1.0)
  np.testing.assert_array_equal(
    aux["indices"], q.codes_to_indices(q.quantize(z, [2] * 6, symmetric=True), [2] * 6, symmetric=True)
  )
  bits = (np.asarray(z) > 0).astype(np.int64)
  np.testing.assert_array_equal(aux["indices"], (bits * 2 ** np.arange(6)).sum(-1))
  np.testing.assert_array_equal(module.apply({}, aux["indices"], method=module.decode), quantized)


def _brute_force_entropies(z, temperature):
  """Float64 softmax over all 2^d binary codes of -|z - c|^2 / T."""
  d = z.shape[-1]
  codes = np.stack(np.unravel_index(np.arange(2**d), [2] * d, order="F"), -1) * 2.0 - 1.0
  logits = -((z[:, None, :] - codes[None]) ** 2).sum(-1) / temperature
  logits -= logits.max(-1, keepdims=True)
  p = np.exp(logits)
  p /= p.sum(-1, keepdims=True)
  sample = -(p * np.log(np.where(p > 0, p, 1))).sum(-1).mean()
  avg = p.mean(0)
  return sample, -(avg * np.log(np.where(avg > 0, avg, 1))).sum()


def test_lfq_entropy_terms_against_brute_force():
  z = np.asarray(jax.random.normal(jax.random.key(6), (64, 6)), np.float64) * 0.05
  sample, codebook = layers.lfq_entropy_terms(jnp.asarray(z, jnp.float32), 0.1, group_bits=6)
  exp_sample, exp_codebook = _brute_force_entropies(z, 0.1)
  np.testing.assert_allclose([sample, codebook], [exp_sample, exp_codebook], rtol=1e-4)
  _, grouped = layers.lfq_entropy_terms(jnp.asarray(z, jnp.float32), 0.1, group_bits=4)
  expected = _brute_force_entropies(z[:, :4], 0.1)[1] + _brute_force_entropies(z[:, 4:], 0.1)[1]
  np.testing.assert_allclose(grouped, expected, rtol=1e-4)


def test_lfq_loss_is_the_weighted_sum_and_has_gradients():
  z = jax.random.normal(jax.random.key(7), (8, 4, 16))
  module = layers.LFQ(num_bits=5, dim=16, temperature=0.5)
  variables = module.init(jax.random.key(0), z)
  _, aux = module.apply(variables, z)
  expected = 0.1 * (aux["per_sample_entropy"] - aux["codebook_entropy"]) + 0.25 * aux["commitment_loss"]
  np.testing.assert_allclose(aux["loss"], expected, rtol=1e-6)
  grads = jax.grad(lambda p: module.apply({"params": p}, z)[1]["loss"])(variables["params"])
  assert float(jnp.abs(grads["project_in"]["kernel"]).sum()) > 0
  with pytest.raises(ValueError, match="num_bits"):
    layers.LFQ(num_bits=40).init(jax.random.key(0), z)


def test_non_finite_and_wrongly_typed_inputs_never_become_valid_indices():
  levels = [8, 5, 5, 5]
  nan_row = jnp.asarray([[np.nan, 0.0, 0.0, 0.0]])
  with pytest.raises(ValueError, match="finite"):
    q.codes_to_indices(nan_row, levels)
  _, indices = jax.jit(lambda z: q.quantize_with_indices(z, levels))(nan_row)
  np.testing.assert_array_equal(indices, [-1])
  _, aux = layers.FSQ(levels=levels).apply({}, nan_row)
  np.testing.assert_array_equal(aux["indices"], [-1])
  codes = jax.jit(lambda i: q.indices_to_codes(i, levels))(jnp.asarray([1000, -3, 7]))
  assert np.all(np.isnan(codes[:2])) and not np.any(np.isnan(codes[2]))
  with pytest.raises(ValueError, match="4294967301"):
    q.indices_to_codes(np.asarray([2**32 + 5], np.int64), levels)
  with pytest.raises(ValueError, match="integer"):
    q.digits_to_indices(jnp.asarray([[2.7, 0.0, 0.0, 0.0]]), levels)
  with pytest.raises(ValueError, match="floating-point"):
    q.quantize(jnp.asarray([[3, -3, 0, 0]]), levels)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_module_indices_in_low_precision_match_float64_reference_for_large_levels(dtype):
  """Codes like k / 500 do not survive a cast to bf16; the module's indices come from f32 digits."""
  levels = [1001, 600]
  z = jnp.asarray(jax.random.normal(jax.random.key(8), (4096, 2)), dtype)
  _, aux = layers.FSQ(levels=levels).apply({}, z)
  z64 = np.asarray(z.astype(jnp.float32), np.float64)
  ok = far_from_rounding_boundary(z64, levels, symmetric=False)
  digits = np.round(ref.bound(z64, levels) + ref.grid_step_divisor(levels)).astype(np.int64)
  expected = digits[:, 0] + 1001 * digits[:, 1]
  np.testing.assert_array_equal(np.asarray(aux["indices"])[ok], expected[ok])
  assert ok.mean() > 0.95
