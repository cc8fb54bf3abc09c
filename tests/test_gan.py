"""GAN losses on hand-computed cases and the discriminator's shapes and downsampling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.maskgit import get_config
from fsq import losses
from fsq.models.discriminator import Discriminator, blur_downsample, maskgit_widths


def test_gan_losses_hand_computed():
  real, fake = jnp.asarray([0.0, 2.0]), jnp.asarray([-1.0, 0.0])
  softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
  np.testing.assert_allclose(losses.generator_loss(fake), (softplus(1.0) + softplus(0.0)) / 2, rtol=1e-6)
  expected = (softplus(0.0) + softplus(-2.0)) / 2 + (softplus(-1.0) + softplus(0.0)) / 2
  np.testing.assert_allclose(losses.discriminator_loss(real, fake), expected, rtol=1e-6)


def test_r1_penalty_of_a_linear_discriminator():
  # D(x) = sum(w * x): its gradient is w everywhere, so R1 = |w|^2 for every image.
  w = jax.random.normal(jax.random.key(0), (4, 4, 1))
  x = jax.random.normal(jax.random.key(1), (3, 4, 4, 1))
  penalty = losses.r1_penalty(lambda images: jnp.sum(images * w, axis=(1, 2, 3)), x)
  np.testing.assert_allclose(penalty, float(jnp.sum(w**2)), rtol=1e-5)


def test_blur_downsample_halves_and_preserves_constants():
  x = jnp.ones((2, 8, 8, 3)) * 0.7
  y = blur_downsample(x)
  assert y.shape == (2, 4, 4, 3)
  # The normalised [1, 3, 3, 1] kernel keeps a constant image constant away from the zero-padded border.
  np.testing.assert_allclose(y[:, 1:-1, 1:-1], 0.7, rtol=1e-6)


def test_discriminator_outputs_one_logit_per_image_with_xavier_uniform_kernels():
  model = Discriminator(filters=8, channel_multipliers=(1, 2))
  x = jax.random.normal(jax.random.key(2), (5, 16, 16, 1))
  params = jax.jit(model.init)(jax.random.key(3), x)
  logits = jax.jit(model.apply)(params, x)
  assert logits.shape == (5,) and np.all(np.isfinite(logits))
  # MaskGIT's init: every kernel uniform in +-sqrt(6 / (fan_in + fan_out)), fans over the receptive field.
  for path, kernel in jax.tree_util.tree_leaves_with_path(params):
    if path[-1].key == "kernel":
      field = math.prod(kernel.shape[:-2])
      bound = math.sqrt(6 / (field * (kernel.shape[-2] + kernel.shape[-1])))
      assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.8 * bound, path


@pytest.mark.parametrize(
  ("size", "stem", "blocks"),
  [(128, 128, (256, 512, 512, 512, 512)), (256, 64, (128, 256, 512, 512, 512, 512))],
)
def test_paper_discriminators_have_maskgit_widths_and_end_at_4x4(size, stem, blocks):
  """MaskGIT's table (nets/discriminator.py): log2(S) - 2 blocks, widths read at each output size."""
  c = get_config(f"stage=tokenizer,run=imagenet{size}")
  model = Discriminator(c.gan.disc_filters, tuple(c.gan.disc_channel_multipliers))
  image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  params = jax.eval_shape(lambda v: model.init(jax.random.key(0), v), image)["params"]
  assert params["stem"]["kernel"].shape == (3, 3, 3, stem)
  widths = [params[f"DownBlock_{i}"]["shortcut"]["kernel"].shape[-1] for i in range(len(blocks))]
  assert tuple(widths) == blocks and f"DownBlock_{len(blocks)}" not in params
  assert params["Dense_0"]["kernel"].shape == (4 * 4 * 512, 512)
  with pytest.raises(ValueError, match="image_size must be a power of two from 8 to 1024, got 96"):
    maskgit_widths(96)
