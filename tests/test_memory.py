"""Memory settings: bfloat16 compute (float32 parameters, losses and FSQ arithmetic) and per-block
rematerialisation, on tiny versions of every model family."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.autoencoder import get_config as autoencoder_config
from configs.maskgit import get_config as maskgit_config
from configs.uvim import get_config as uvim_config
from fsq import quantizers
from fsq.maskgit.vocab import Vocabulary
from fsq.tasks import build_autoencoder, build_maskgit_task, build_task, build_transformer, build_uvim
from fsq.tasks.validate import validate_config
from tests.helpers import MASKGIT_TINY, UVIM_TINY, patched


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


def _assert_same_trees(a, b, rtol, atol=1e-7):
  """Equal leaves; equal structure too, unless the trees carry optimizers (a state's static ``tx``)."""
  if not hasattr(a, "tx"):
    assert jax.tree.structure(a) == jax.tree.structure(b)
  chex.assert_trees_all_close(jax.tree.leaves(a), jax.tree.leaves(b), rtol=rtol, atol=atol)


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


def _step_twice(config, batch, constants=None, **states):
  """The task's train step from the same initial state with accumulation_steps 1 and 2."""
  out = []
  for steps in (1, 2):
    task = build_task(patched(config, {"accumulation_steps": steps}))
    state = jax.jit(task.init)(jax.random.key(0), batch)
    constants = task.constants() if constants is None else constants
    out.append(jax.jit(task.train_step)(state, batch, jax.random.key(1), constants))
  return out


@pytest.mark.parametrize("family", ["autoencoder", "tokenizer"])
def test_accumulating_two_micro_batches_is_the_step_on_the_whole_batch(family):
  """FSQ's losses are means over examples with no randomness, so the mean of the two half-batch gradients
  is the whole batch's: the same parameters (both players' for the GAN), optimizer state and metrics."""
  images = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (8, 32, 32, 1)), jnp.float32)
  if family == "autoencoder":
    config = patched(autoencoder_config("quantizer=fsq"), {"model.filters": 8, "model.norm_groups": 4})
  else:
    config = _tokenizer_config(**{"gan.disc_start_step": 0, "batch_size": 16})
  (whole, m1), (accumulated, m2) = _step_twice(config, {"image": images})
  _assert_same_trees(whole, accumulated, rtol=2e-5, atol=1e-5)  # Adam's first update is ~1e-3 (lr)
  for name in m1:
    np.testing.assert_allclose(m2[name], m1[name], rtol=2e-5, atol=1e-7, err_msg=name)
  with pytest.raises(ValueError, match=r"batch_size = 64 must split into config.accumulation_steps = 3"):
    validate_config(patched(config, {"accumulation_steps": 3, "batch_size": 64}))


def test_accumulated_maskgit_step_averages_its_micro_batches():
  """MaskGIT's masks are random: micro-batch i (rows i, i + 2, ...) draws them from fold_in(rng, i). The
  accumulated step's loss is the mean of the two micro-batch losses computed directly."""
  config = patched(maskgit_config("stage=transformer,run=cpu,quantizer=fsq"), MASKGIT_TINY)
  tokenizer = build_autoencoder(config)
  variables = jax.jit(tokenizer.init)(jax.random.key(3), jnp.zeros((1, 32, 32, 1)))
  rng = np.random.default_rng(4)
  batch = {
    "image": jnp.asarray(rng.uniform(-1, 1, (8, 32, 32, 1)), jnp.float32),
    "label": jnp.asarray(rng.integers(0, 10, 8), jnp.int32),
  }
  config = patched(config, {"accumulation_steps": 2, "batch_size": 16})
  task = build_maskgit_task(config, tokenizer_variables=variables)
  state = jax.jit(task.init)(jax.random.key(0), batch)
  _, metrics = jax.jit(task.train_step)(state, batch, jax.random.key(1), task.constants())
  tokens = jax.jit(task.tokens)(task.constants(), batch["image"])
  masked = jax.jit(task.masked_loss, static_argnames="train")
  direct = [
    masked(
      state.params, tokens[i::2], batch["label"][i::2], jax.random.fold_in(jax.random.key(1), i), train=True
    )
    for i in range(2)
  ]
  np.testing.assert_allclose(metrics["loss"], np.mean([np.mean(loss) for loss, _ in direct]), rtol=1e-5)
