"""VQ baselines: losses on hand-computed cases, EMA and splitting against numpy, sharded = unsharded."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from fsq import vq


def _np_entropy(p):
  p = np.asarray(p, np.float64)
  return -(p * np.log(np.where(p > 0, p, 1))).sum(-1)


def test_distances_and_chunked_nearest_codes_match_numpy():
  rng = np.random.default_rng(0)
  z, c = rng.normal(size=(300, 7)), rng.normal(size=(50, 7))
  expected = ((z[:, None] - c[None]) ** 2).sum(-1)
  np.testing.assert_allclose(
    vq.squared_distances(jnp.asarray(z), jnp.asarray(c)), expected, rtol=1e-4, atol=1e-4
  )
  for max_elements in (10**6, 64 * 50, 51, 1):
    np.testing.assert_array_equal(
      vq.nearest_codes(jnp.asarray(z), jnp.asarray(c), max_elements), expected.argmin(-1)
    )


def test_maskgit_losses_on_a_hand_computed_case():
  codebook = jnp.asarray([[0.0, 0.0], [1.0, 1.0]])
  x = jnp.asarray([[[0.2, 0.1], [0.9, 1.2]]])
  module = vq.maskgit_vq(codebook_size=2, dim=2)
  quantized, aux = module.apply({"params": {"codebook": codebook}}, x)
  np.testing.assert_array_equal(aux["indices"], [[0, 1]])
  np.testing.assert_allclose(quantized, [[[0.0, 0.0], [1.0, 1.0]]])
  # Squared errors: (0.04 + 0.01 + 0.01 + 0.04) / 4 = 0.025, for both losses.
  np.testing.assert_allclose(aux["codebook_loss"], 0.025, rtol=1e-6)
  np.testing.assert_allclose(aux["commitment_loss"], 0.025, rtol=1e-6)
  # Distances: row 0 to codes (0.05, 1.45); row 1 to (2.25, 0.05). Softmax of -d / 0.01.
  d = np.asarray([[0.05, 1.45], [2.25, 0.05]])
  p = np.exp(-d / 0.01 - np.max(-d / 0.01, -1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  entropy = _np_entropy(p).mean() - _np_entropy(p.mean(0))
  np.testing.assert_allclose(aux["entropy_loss"], entropy, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(aux["loss"], 0.25 * 0.025 + 0.025 + 0.1 * entropy, rtol=1e-5)


def test_maskgit_gradients_straight_through_and_to_the_codebook():
  codebook = jnp.asarray([[0.0, 0.0], [1.0, 1.0]])
  x = jnp.asarray([[0.2, 0.1], [0.9, 1.2]])
  module = vq.VectorQuantizer(codebook_size=2, dim=2, commitment_cost=0.25)
  params = {"codebook": codebook}
  grad_x = jax.grad(lambda v: jnp.sum(module.apply({"params": params}, v)[0] * jnp.asarray([1.0, 2.0])))(x)
  np.testing.assert_allclose(grad_x, [[1.0, 2.0], [1.0, 2.0]])
  grads = jax.grad(lambda p: module.apply({"params": p}, x)[1]["loss"])(params)
  # d/de mean((e - sg(x))^2) over 4 elements = 2 (e - x) / 4.
  expected = np.asarray([[2 * (0 - 0.2) / 4, 2 * (0 - 0.1) / 4], [2 * (1 - 0.9) / 4, 2 * (1 - 1.2) / 4]])
  np.testing.assert_allclose(grads["codebook"], expected, rtol=1e-5)
  commitment_grad = jax.grad(lambda v: module.apply({"params": params}, v)[1]["loss"])(x)
  np.testing.assert_allclose(commitment_grad, 0.25 * 2 * (np.asarray(x) - [[0, 0], [1, 1]]) / 4, rtol=1e-5)


def test_chunked_entropy_penalty_equals_unchunked_with_gradients():
  rng = np.random.default_rng(1)
  z, c = jnp.asarray(rng.normal(size=(37, 4))), jnp.asarray(rng.normal(size=(16, 4)))

  def penalty(z, c, max_elements):
    sample, avg = vq.entropy_penalty(z, c, 0.5, max_elements)
    return sample - avg

  full = penalty(z, c, 10**6)
  d = ((np.asarray(z)[:, None] - np.asarray(c)[None]) ** 2).sum(-1)
  p = np.exp(-d / 0.5 - (-d / 0.5).max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  np.testing.assert_allclose(full, _np_entropy(p).mean() - _np_entropy(p.mean(0)), rtol=1e-4)
  np.testing.assert_allclose(penalty(z, c, 16 * 5), full, rtol=1e-5)
  g_full = jax.grad(penalty, argnums=(0, 1))(z, c, 10**6)
  g_chunk = jax.grad(penalty, argnums=(0, 1))(z, c, 16 * 5)
  for a, b in zip(g_full, g_chunk, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _np_split(sums, counts, min_count, max_splits=None):
  """Numpy reference of splitting with zero perturbation."""
  sums, counts = sums.copy(), counts.copy()
  splits = 0
  while (counts < min_count).any() and (max_splits is None or splits < max_splits):
    splits += 1
    hi, lo = counts.argmax(), counts.argmin()
    sums[lo] = sums[hi]
    counts[lo] = counts[hi] / 2
    counts[hi] = counts[hi] / 2
    sums[lo] = sums[lo] / 2
    sums[hi] = sums[hi] / 2
  return sums, counts


def test_uvim_ema_update_and_splitting_against_numpy():
  k, d = 8, 3
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 5, d)).astype(np.float32)
  module = vq.uvim_vq(codebook_size=k, dim=d, split_perturbation=0.0)
  sums0 = rng.normal(size=(k, d)).astype(np.float32)
  counts0 = np.asarray([5.0, 0.2, 0.05, 3.0, 0.3, 0.01, 1.0, 2.0], np.float32)
  variables = {"vq_stats": {"sums": jnp.asarray(sums0), "counts": jnp.asarray(counts0)}}
  (quantized, aux), state = module.apply(
    variables, jnp.asarray(x), train=True, mutable=["vq_stats"], rngs={"vq": jax.random.key(0)}
  )
  # Reference: standardise, L2-normalised codewords, nearest code, discounted statistics, split.
  z = x.reshape(-1, d).astype(np.float64)
  z = (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + 1e-5)
  e = sums0 / counts0[:, None]
  e = e / np.linalg.norm(e, axis=-1, keepdims=True)
  idx = ((z[:, None] - e[None]) ** 2).sum(-1).argmin(-1)
  np.testing.assert_array_equal(aux["indices"].reshape(-1), idx)
  np.testing.assert_allclose(quantized.reshape(-1, d), e[idx], rtol=1e-5, atol=1e-6)
  counts = 0.995 * counts0 + np.bincount(idx, minlength=k)
  sums = 0.995 * sums0.astype(np.float64)
  np.add.at(sums, idx, z)
  sums, counts = _np_split(sums, counts, 0.1)
  np.testing.assert_allclose(state["vq_stats"]["counts"], counts, rtol=1e-5)
  np.testing.assert_allclose(state["vq_stats"]["sums"], sums, rtol=1e-5, atol=1e-6)
  assert float(aux["loss"]) == 0.0  # UViM: commitment weight 0, no codebook loss with EMA


def test_split_perturbation_stays_within_bounds():
  sums = jnp.asarray([[2.0, 4.0], [1.0, 1.0]])
  counts = jnp.asarray([4.0, 0.01])
  new_sums, new_counts = vq.split_most_frequent(jax.random.key(0), sums, counts, 0.1, 0.01)
  np.testing.assert_allclose(new_counts, [2.0, 2.0])
  np.testing.assert_allclose(new_sums[0], [1.0, 2.0])
  ratio = np.asarray(new_sums[1]) / np.asarray([1.0, 2.0])
  assert np.all(np.abs(ratio - 1) <= 0.01) and not np.allclose(ratio, 1)


def test_reseeding_replaces_only_dead_codes_with_batch_rows():
  z = jnp.asarray(np.random.default_rng(3).normal(size=(10, 4)), jnp.float32)
  sums = jnp.ones((6, 4))
  counts = jnp.asarray([1.0, 0.05, 2.0, 0.0, 0.5, 0.01])
  new_sums, new_counts = vq.reseed_dead_codes(jax.random.key(1), sums, counts, z, 0.1)
  dead = np.asarray(counts) < 0.1
  np.testing.assert_array_equal(np.asarray(new_sums)[~dead], 1.0)
  np.testing.assert_array_equal(np.asarray(new_counts), np.where(dead, 1.0, counts))
  for row in np.asarray(new_sums)[dead]:
    assert np.any(np.all(row == np.asarray(z), axis=-1))


def test_code_dropout_keeps_a_prefix_or_a_permutation_of_it():
  x = jnp.ones((64, 10, 2))
  prefix = np.asarray(vq.code_dropout(jax.random.key(0), x, "prefix"))[..., 0]
  random = np.asarray(vq.code_dropout(jax.random.key(0), x, "random"))[..., 0]
  np.testing.assert_array_equal(prefix.sum(-1), random.sum(-1))
  for row in prefix:
    kept = int(row.sum())
    np.testing.assert_array_equal(row, np.r_[np.ones(kept), np.zeros(10 - kept)])
  assert not np.array_equal(prefix, random)
  assert 0.3 < prefix.mean() < 0.7  # E[kept fraction] = 1/2 for a uniform threshold
  with pytest.raises(ValueError, match="mode"):
    vq.code_dropout(jax.random.key(0), x, "all")


def _train_step(module, variables, x):
  (_, aux), state = module.apply(
    variables, x, train=True, mutable=["vq_stats"], rngs={"vq": jax.random.key(5)}
  )
  return aux["indices"], state["vq_stats"]


@pytest.mark.parametrize("factory", [vq.uvim_vq, functools.partial(vq.reseed_vq, reseed_min_count=0.9)])
def test_ema_update_sharded_over_8_devices_equals_one_device(factory):
  assert jax.device_count() == 8
  module = factory(codebook_size=32, dim=8)
  x = jax.random.normal(jax.random.key(4), (16, 6, 8))
  variables = module.init(jax.random.key(0), x)
  # Make some counts small so that splitting / reseeding happens.
  counts = variables["vq_stats"]["counts"].at[:4].set(0.001)
  variables = {"vq_stats": {**variables["vq_stats"], "counts": counts}}
  idx1, stats1 = jax.jit(functools.partial(_train_step, module))(variables, x)

  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  xs = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
  rep = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))
  idx8, stats8 = jax.jit(functools.partial(_train_step, module))(rep, xs)
  np.testing.assert_array_equal(idx8, idx1)
  np.testing.assert_allclose(stats8["counts"], stats1["counts"], rtol=1e-6)
  np.testing.assert_allclose(stats8["sums"], stats1["sums"], rtol=1e-5, atol=1e-6)

  # The same update inside shard_map, with the statistics psum-ed over the data axis.
  mapped = factory(codebook_size=32, dim=8, axis_name="data")
  if mapped.reseed_min_count:
    return  # reseeding draws rows per device: equal in distribution, not bit for bit
  step = jax.shard_map(
    functools.partial(_train_step, mapped),
    mesh=mesh,
    in_specs=(PartitionSpec(), PartitionSpec("data")),
    out_specs=(PartitionSpec("data"), PartitionSpec()),
  )
  idx_sm, stats_sm = jax.jit(step)(rep, xs)
  np.testing.assert_array_equal(idx_sm, idx1)
  np.testing.assert_allclose(stats_sm["counts"], stats1["counts"], rtol=1e-6)
  np.testing.assert_allclose(stats_sm["sums"], stats1["sums"], rtol=1e-5, atol=1e-6)


def test_reseeding_inside_shard_map_keeps_devices_identical():
  module = vq.reseed_vq(codebook_size=16, dim=4, reseed_min_count=0.9, axis_name="data")
  x = jax.random.normal(jax.random.key(6), (8, 5, 4))
  variables = module.init(jax.random.key(0), x)
  counts = variables["vq_stats"]["counts"].at[:8].set(0.0)
  variables = {"vq_stats": {**variables["vq_stats"], "counts": counts}}
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))

  def step(v, xb):
    idx, stats = _train_step(module, v, xb)
    return idx, stats["sums"][None]

  step = jax.shard_map(
    step,
    mesh=mesh,
    in_specs=(PartitionSpec(), PartitionSpec("data")),
    out_specs=(PartitionSpec("data"), PartitionSpec("data")),
  )
  idx, per_device = jax.jit(step)(variables, x)
  per_device = np.asarray(per_device)
  assert per_device.shape[0] == 8
  np.testing.assert_array_equal(per_device, np.broadcast_to(per_device[:1], per_device.shape))
  # Codes 0..7 had count 0; those the batch did not use are dead and take rows of device 0's data.
  device0_rows = np.asarray(x)[0]
  unused = [i for i in range(8) if i not in set(np.asarray(idx).ravel())]
  assert unused
  for i in unused:
    assert np.any(np.all(per_device[0][i] == device0_rows, axis=-1)), i


def test_bad_vq_configuration_raises_value_error_naming_the_field():
  x = jnp.zeros((2, 4))
  with pytest.raises(ValueError, match="ema_decay"):
    vq.VectorQuantizer(8, 4, split_min_count=0.1).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="codebook_size"):
    vq.VectorQuantizer(0, 4).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match=r"\(2, 4\).*dim = 5"):
    vq.VectorQuantizer(8, 5).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="entropy_temperature"):
    vq.VectorQuantizer(8, 4, entropy_temperature=0.0).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="ema_decay"):
    vq.VectorQuantizer(8, 4, ema_decay=1.5).init(jax.random.key(0), x)


def test_large_codebook_does_not_materialise_all_distances():
  """2^16 codes on 2^12 vectors: the compiled program's largest buffer stays near the chunk budget."""
  z = jax.ShapeDtypeStruct((2**12, 8), jnp.float32)
  c = jax.ShapeDtypeStruct((2**16, 8), jnp.float32)
  compiled = jax.jit(functools.partial(vq.nearest_codes, max_elements=2**20)).lower(z, c).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < 2**28, temp  # the full 2^28-float distance matrix would need 2^30 bytes


def test_splitting_stops_after_k_splits_when_counts_cannot_all_reach_the_threshold():
  counts = jnp.full((16,), 1e-3).at[0].set(1.0)  # total 1.015 < 16 * 0.1: the loop could never finish
  sums = jnp.ones((16, 2))
  split = jax.jit(lambda s, c: vq.split_most_frequent(jax.random.key(0), s, c, 0.1, 0.0))
  new_sums, new_counts = split(sums, counts)
  exp_sums, exp_counts = _np_split(np.asarray(sums, np.float64), np.asarray(counts, np.float64), 0.1, 16)
  np.testing.assert_allclose(new_counts, exp_counts, rtol=1e-6)
  np.testing.assert_allclose(new_sums, exp_sums, rtol=1e-6)


def test_vq_decode_rejects_out_of_range_indices():
  module = vq.VectorQuantizer(4, 2)
  variables = module.init(jax.random.key(0), jnp.zeros((1, 2)))
  with pytest.raises(ValueError, match=r"\[0, 4\), got 4"):
    module.apply(variables, jnp.asarray([0, 4]), method=module.decode)
  decoded = jax.jit(lambda i: module.apply(variables, i, method=module.decode))(jnp.asarray([-1, 3, 99]))
  assert np.all(np.isnan(decoded[0])) and np.all(np.isnan(decoded[2]))
  np.testing.assert_array_equal(decoded[1], variables["params"]["codebook"][3])
