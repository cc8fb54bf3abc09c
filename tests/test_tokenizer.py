"""The VQGAN tokenizer's GAN step: what it updates and when, against the plain autoencoder step."""

import jax
import numpy as np
import optax
import pytest

from fsq.models.discriminator import Discriminator
from fsq.tasks import build_autoencoder, train_and_evaluate
from fsq.tasks.autoencoder import AutoencoderTask
from fsq.tasks.tokenizer import TokenizerTask
from tests.helpers import read_metrics, tiny_autoencoder_config


def make_task(config, **weights):
  return TokenizerTask(
    model=build_autoencoder(config),
    optimizer=optax.adam(1e-3),
    discriminator=Discriminator(filters=8, channel_multipliers=(1, 2)),
    disc_optimizer=optax.adam(1e-3, b1=0.0, b2=0.99),
    **weights,
  )


def _equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_gan_step_updates_only_what_it_should(tfds_data_dir):
  config = tiny_autoencoder_config(tfds_data_dir)
  images = jax.random.uniform(jax.random.key(0), (8, 32, 32, 1), minval=-1, maxval=1)
  task = make_task(config, perceptual_weight=0.0, disc_start_step=1, ema_decay=0.9)
  state = jax.jit(task.init)(jax.random.key(1), {"image": images})
  step = jax.jit(lambda s: task.train_step(s, {"image": images}, jax.random.key(2), {}))
  first, metrics = step(state)
  # Step 0 < disc_start_step: the discriminator and its optimizer are untouched, the generator moves.
  assert _equal(first.disc_params, state.disc_params) and _equal(first.disc_opt_state, state.disc_opt_state)
  assert not _equal(first.params, state.params)
  for ema, old, new in zip(
    *(jax.tree.leaves(t) for t in (first.ema_params, state.ema_params, first.params)), strict=True
  ):
    np.testing.assert_allclose(ema, 0.9 * np.asarray(old) + 0.1 * np.asarray(new), rtol=1e-6, atol=1e-7)
  assert np.isfinite(float(metrics["r1"])) and float(metrics["discriminator_loss"]) > 0
  second, _ = step(first)
  assert not _equal(second.disc_params, first.disc_params)


def test_without_perceptual_and_gan_terms_the_generator_step_is_the_autoencoder_step(tfds_data_dir):
  config = tiny_autoencoder_config(tfds_data_dir)
  images = jax.random.uniform(jax.random.key(3), (8, 32, 32, 1), minval=-1, maxval=1)
  task = make_task(config, l2_weight=1.0, perceptual_weight=0.0, adversarial_weight=0.0)
  plain = AutoencoderTask(task.model, task.optimizer)
  gan_state = jax.jit(task.init)(jax.random.key(4), {"image": images})
  plain_state = jax.jit(plain.init)(jax.random.key(4), {"image": images})
  plain_state = plain_state.replace(params=gan_state.params, opt_state=plain.optimizer.init(gan_state.params))
  gan_next, metrics = jax.jit(task.train_step)(gan_state, {"image": images}, jax.random.key(5), {})
  plain_next, _ = jax.jit(plain.train_step)(plain_state, {"image": images}, jax.random.key(5), {})
  for a, b in zip(jax.tree.leaves(gan_next.params), jax.tree.leaves(plain_next.params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # With no adversarial term the discriminator is never trained (nor run), even past disc_start_step.
  assert _equal(gan_next.disc_params, gan_state.disc_params) and float(metrics["discriminator_loss"]) == 0


@pytest.mark.slow
def test_tokenizer_trains_in_the_generic_loop_with_lpips(tfds_data_dir, tmp_path):
  config = tiny_autoencoder_config(tfds_data_dir, "steps=2")
  final = train_and_evaluate(config, tmp_path, task=make_task(config, perceptual_weight=0.1))
  train = read_metrics(tmp_path)
  assert [m["step"] for m in train] == [1, 2]
  assert all(m["perceptual"] > 0 and np.isfinite(m["loss"]) for m in train)
  assert np.isfinite(final["mse"]) and final["codebook/count"] == 2 * 8 * 16 * 16
