"""Memory settings: bfloat16 compute (float32 parameters, losses and FSQ arithmetic) and per-block
rematerialisation, on tiny versions of every model family."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.maskgit import get_config as maskgit_config
from configs.uvim import get_config as uvim_config
from fsq import quantizers
from fsq.maskgit.vocab import Vocabulary
from fsq.tasks import build_autoencoder, build_task, build_transformer, build_uvim
from fsq.train.validate import validate_config
from tests.helpers import patched
from tests.test_evals import MASKGIT_TINY
from tests.test_uvim_tasks import TINY as UVIM_TINY


def _tokenizer_config(**extra):
  return patched(maskgit_config("stage=tokenizer,run=cpu,quantizer=fsq"), {**MASKGIT_TINY, **extra})


def _grads_with_and_without_remat(build, config, inputs, loss):
  """Parameters and gradients of ``loss(model, params)`` with remat off and on, from the same init."""
  out = []
  for remat in (False, True):
    model = build(patched(config, {"remat": remat}))
    params = jax.jit(model.init)(jax.random.key(0), *inputs)["params"]
    grad_fn = jax.grad(lambda p, m=model: loss(m, p))
    grads = jax.jit(grad_fn)(params)
    # Rematerialised blocks appear as remat regions in the program.
    assert ("remat2[" in str(jax.make_jaxpr(grad_fn)(params))) is remat
    out.append((params, grads))
  return out


def _assert_same_trees(a, b, rtol):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("family", ["vqgan", "transformer", "uvim"])
def test_remat_keeps_the_parameters_and_gives_equal_gradients(family):
  rng = np.random.default_rng(0)
  if family == "vqgan":
    config = _tokenizer_config()
    images = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 1)), jnp.float32)
    build = build_autoencoder

    def loss(model, params):
      return jnp.mean(jnp.square(model.apply({"params": params}, images)[0] - images))

    inputs = (images,)
  elif family == "transformer":
    config = patched(maskgit_config("stage=transformer,run=cpu,quantizer=fsq"), MASKGIT_TINY)
    vocab = Vocabulary(1000, 10)
    tokens = jnp.asarray(rng.integers(0, vocab.size, (2, 257)), jnp.int32)

    def build(c):
      return build_transformer(c, vocab)

    def loss(model, params):
      return jnp.mean(model.apply({"params": params}, tokens) ** 2)

    inputs = (tokens,)
  else:
    config = patched(uvim_config("run=cpu,stage=oracle,task=depth,quantizer=fsq"), UVIM_TINY)
    images = jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 3)), jnp.float32)
    depth = jnp.asarray(rng.uniform(-1, 1, (2, 64, 64, 1)), jnp.float32)

    def build(c):
      return build_uvim(c, output_channels=4)

    def loss(model, params):
      return jnp.mean(model.apply({"params": params}, images, depth, train=False)[0] ** 2)

    inputs = (images, depth)
  (params, grads), (params_remat, grads_remat) = _grads_with_and_without_remat(build, config, inputs, loss)
  _assert_same_trees(params, params_remat, rtol=0)  # same names, shapes and values: checkpoints carry over
  _assert_same_trees(grads, grads_remat, rtol=1e-5)


def test_bfloat16_tokenizer_step_matches_float32_with_float32_state_and_exact_fsq_indices():
  """One tokenizer (GAN) step from the same state on the same batch: bfloat16 activations give the
  float32 losses within 2% and leave every parameter, optimizer moment and metric in float32; the FSQ
  indices are exactly FSQ of the bfloat16 latents computed in float64."""
  images = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (4, 32, 32, 1)), jnp.float32)
  metrics, states = {}, {}
  for dtype in ("float32", "bfloat16"):
    task = build_task(_tokenizer_config(compute_dtype=dtype, **{"gan.disc_start_step": 0}))
    state = jax.jit(task.init)(jax.random.key(0), {"image": images})
    step = jax.jit(task.train_step)
    states[dtype], metrics[dtype] = step(state, {"image": images}, jax.random.key(1), task.constants())
  for name in ("loss", "mse", "generator_adversarial", "discriminator_loss"):
    np.testing.assert_allclose(metrics["bfloat16"][name], metrics["float32"][name], rtol=2e-2, err_msg=name)
  for leaf in jax.tree.leaves(states["bfloat16"]):
    assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
  for value in metrics["bfloat16"].values():
    assert value.dtype == jnp.float32

  model = build_autoencoder(_tokenizer_config(compute_dtype="bfloat16"))
  variables = {"params": states["bfloat16"].params}
  latents = model.apply(variables, images, method=lambda m, x: m.encoder(x))
  assert latents.dtype == jnp.bfloat16
  indices = model.apply(variables, images, method=model.encode)
  levels = np.asarray(model.quantizer.levels)
  z = np.asarray(latents, np.float64)
  # Reference FSQ in float64 (the paper's bound, eps = 1e-3): tanh bound with the even-level offset,
  # rounding to the digit grid centred at L // 2, then the mixed-radix index (first channel lowest).
  half = (levels - 1) * (1 + 1e-3) / 2
  offset = np.where(levels % 2 == 0, 0.5, 0.0)
  shift = np.arctanh(offset / half)
  digits = np.round(np.tanh(z + shift) * half - offset + levels // 2)
  basis = np.concatenate([[1], np.cumprod(levels[:-1])])
  np.testing.assert_array_equal(indices, (digits * basis).sum(-1).astype(np.int64))
  assert quantizers.codebook_size(tuple(levels)) == 1000


def test_paper_configs_compute_in_bfloat16_and_remat_where_memory_binds():
  for stage, remat in (("tokenizer", True), ("transformer", False)):
    config = maskgit_config(f"stage={stage},run=imagenet256,quantizer=fsq")
    assert (config.compute_dtype, config.remat) == ("bfloat16", remat)
  for stage in ("oracle", "lm"):
    config = uvim_config(f"stage={stage},task=depth,quantizer=fsq,run=paper")
    assert (config.compute_dtype, config.remat) == ("bfloat16", True)
  cpu = maskgit_config("stage=tokenizer,run=cpu")
  assert (cpu.compute_dtype, cpu.remat) == ("float32", False)
  cpu.compute_dtype = "float16"
  with pytest.raises(
    ValueError, match=r"config.compute_dtype must be 'float32' or 'bfloat16', got 'float16'"
  ):
    validate_config(cpu)
