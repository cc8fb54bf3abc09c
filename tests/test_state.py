"""The optimizer: the learning-rate schedule step by step and weight decay on kernels only."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsq.train.state import kernels_only, learning_rate_schedule, make_optimizer


class _Small(nn.Module):
  """A tree with each kind of leaf: dense and conv kernels and biases, a LayerNorm scale, an embedding,
  a position embedding."""

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(7, 4)(tokens) + self.param("pos_embedding", nn.initializers.normal(1.0), (3, 4))
    x = nn.LayerNorm()(nn.Dense(4)(x))
    return nn.Conv(2, (1,))(x)


def _params():
  return _Small().init(jax.random.key(0), jnp.zeros((2, 3), jnp.int32))["params"]


def test_the_decay_mask_selects_kernels_only():
  flat = {
    "/".join(k.key for k in path): v
    for path, v in jax.tree_util.tree_leaves_with_path(kernels_only(_params()))
  }
  assert {name for name, decayed in flat.items() if decayed} == {"Dense_0/kernel", "Conv_0/kernel"}
  assert len(flat) == 8  # embedding, pos_embedding, 2 kernels, 2 biases, LayerNorm scale and bias


def _reference_rate(t, lr, warmup, total, schedule):
  """The documented schedule in float64, written out."""
  rate = lr * min(1.0, (t + 1) / max(warmup, 1))
  if schedule == "cosine":
    rate *= 0.5 * (1 + np.cos(np.pi * np.clip((t - warmup) / (total - warmup), 0, 1)))
  return rate


@pytest.mark.parametrize(
  ("warmup", "schedule"), [(0, "constant"), (3, "constant"), (3, "cosine"), (0, "cosine")]
)
def test_each_update_decays_kernels_by_the_scheduled_rate_and_nothing_else(warmup, schedule):
  """With zero gradients Adam's own update is 0, so an AdamW step moves exactly the decayed leaves, by
  -rate(t) * weight_decay * p: this reads the rate the optimizer applied at every step."""
  lr, wd, total = 0.1, 0.5, 8
  tx = make_optimizer(lr, warmup, total, weight_decay=wd, grad_clip_norm=1.0, schedule=schedule)
  params = _params()
  state = tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  mask = kernels_only(params)
  for t in range(total):
    updates, state = tx.update(zeros, state, params)
    rate = _reference_rate(t, lr, warmup, total, schedule)
    assert rate > 0
    for u, p, decayed in zip(
      jax.tree.leaves(updates), jax.tree.leaves(params), jax.tree.leaves(mask), strict=True
    ):
      expected = -rate * wd * np.asarray(p, np.float64) if decayed else np.zeros(p.shape)
      np.testing.assert_allclose(u, expected, rtol=1e-5, atol=1e-12)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  assert float(learning_rate_schedule(lr, warmup, total, schedule)(0)) == pytest.approx(lr / max(warmup, 1))


def test_bad_schedules_are_named():
  with pytest.raises(ValueError, match="learning_rate must be > 0, got 0"):
    learning_rate_schedule(0.0, 0, 10)
  with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, total_steps = 10\], got 11"):
    learning_rate_schedule(1.0, 11, 10)
  with pytest.raises(ValueError, match="schedule must be 'cosine' or 'constant', got 'linear'"):
    learning_rate_schedule(1.0, 0, 10, "linear")


def test_learning_rate_multipliers_scale_adams_step_of_the_matching_parameters_but_not_the_decay():
  """big_vision's lr_mults: the Dense layer's Adam step at 0.1 (the first matching pattern wins), its
  weight decay and everything else as without multipliers."""
  params = _params()
  mults = (("Dense_0/.*", 0.1), ("Dense_.*", 5.0))
  # Without decay: the Dense layer's update is 0.1 x the plain one.
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.3, params)
  plain, scaled = make_optimizer(0.1, 0, 8), make_optimizer(0.1, 0, 8, lr_multipliers=mults)
  reference, _ = plain.update(grads, plain.init(params), params)
  updates, _ = scaled.update(grads, scaled.init(params), params)
  for (path, u), r in zip(
    jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(reference), strict=True
  ):
    factor = 0.1 if path[0].key == "Dense_0" else 1.0
    np.testing.assert_allclose(u, factor * np.asarray(r), rtol=1e-6)
  # With zero gradients only the decay moves the kernels: the multipliers leave it alone.
  zeros = jax.tree.map(jnp.zeros_like, params)
  plain = make_optimizer(0.1, 0, 8, weight_decay=0.5)
  scaled = make_optimizer(0.1, 0, 8, weight_decay=0.5, lr_multipliers=mults)
  reference, _ = plain.update(zeros, plain.init(params), params)
  updates, _ = scaled.update(zeros, scaled.init(params), params)
  for u, r in zip(jax.tree.leaves(updates), jax.tree.leaves(reference), strict=True):
    np.testing.assert_array_equal(u, r)
  assert float(jnp.abs(updates["Dense_0"]["kernel"]).max()) > 0
