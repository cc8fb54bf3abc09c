"""The MaskGIT tokenizer's encoder and decoder towers: shapes by level, shared fields, bad fields named."""

import jax
import jax.numpy as jnp
import pytest

from fsq.models.vqgan import Decoder, Encoder


@pytest.mark.parametrize("multipliers", [(1,), (1, 2), (1, 1, 2, 2, 4)])
def test_each_level_after_the_first_halves_the_encoder_side_and_the_decoder_doubles_it(multipliers):
  common = dict(filters=8, channel_multipliers=multipliers, num_res_blocks=1, norm_groups=4)
  images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  encoder = Encoder(latent_dim=5, **common)
  variables = jax.eval_shape(encoder.init, jax.random.key(0), images)
  latents = jax.eval_shape(encoder.apply, variables, images)
  side = 64 // 2 ** (len(multipliers) - 1)
  assert latents.shape == (2, side, side, 5)
  decoder = Decoder(out_channels=3, **common)
  variables = jax.eval_shape(decoder.init, jax.random.key(0), latents)
  assert jax.eval_shape(decoder.apply, variables, latents).shape == images.shape
  # The deepest level's width: filters x its multiplier, in both towers.
  assert variables["params"]["Conv_0"]["kernel"].shape == (3, 3, 5, 8 * multipliers[-1])


@pytest.mark.parametrize(
  ("fields", "message"),
  [
    (dict(channel_multipliers=()), r"channel_multipliers must be non-empty positive integers, got \(\)"),
    (dict(channel_multipliers=(1, 0)), r"channel_multipliers must be .* got \(1, 0\)"),
    (dict(num_res_blocks=0), "num_res_blocks must be >= 1, got 0"),
    (dict(norm_groups=3), "norm_groups = 3 must divide every width filters \\* multiplier, got 8"),
  ],
)
def test_bad_fields_are_named_with_their_values_in_both_towers(fields, message):
  common = {**dict(filters=8, channel_multipliers=(1, 2), num_res_blocks=1, norm_groups=4), **fields}
  x = jnp.zeros((1, 16, 16, 3))
  for tower in (Encoder(latent_dim=4, **common), Decoder(out_channels=3, **common)):
    with pytest.raises(ValueError, match=message):
      jax.eval_shape(tower.init, jax.random.key(0), x)
