"""The quantizer interface and registry (fsq/bottlenecks.py): every kind keeps the contract, and a new kind
is one registry entry away from training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsq import bottlenecks, layers, quantizers
from fsq.bottlenecks import KINDS, Bottleneck, from_config, make_quantizer

SMALL = dict(levels=(5, 3), num_codebooks=2, num_stages=3, num_bits=4, codebook_size=16, vq_dim=6)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_takes_latent_width_and_emits_indices_of_its_codebook_shape(kind):
  quantizer = make_quantizer(kind, **SMALL)
  assert isinstance(quantizer, Bottleneck)
  width, (size, groups) = quantizer.latent_width, quantizer.codebook_shape
  expected = {  # from the fields, by hand
    "fsq": (4, 15, 2),
    "residual_fsq": (2, 15, 3),
    "lfq": (4, 16, 1),
  }.get(kind, (6, 16, 1))
  assert (width, size, groups) == expected
  x = jax.random.normal(jax.random.key(0), (2, 3, 3, width)) * 2
  variables = quantizer.init(jax.random.key(1), x)
  for train in (True, False):
    (out, aux), _ = quantizer.apply(variables, x, train=train, mutable=True, rngs={"vq": jax.random.key(2)})
    assert out.shape == x.shape
    indices = np.asarray(aux["indices"])
    assert indices.shape == ((2, 3, 3) if groups == 1 else (2, 3, 3, groups))
    assert indices.min() >= 0 and indices.max() < size
  decoded = quantizer.apply(variables, aux["indices"], method="decode")  # the last call's: train=False
  np.testing.assert_allclose(decoded, out, rtol=1e-5, atol=1e-5)  # decode inverts the indices


def test_fsq_width_follows_its_projection_and_train_changes_nothing():
  projected = layers.FSQ(levels=(8, 5, 5, 5), dim=16)
  assert projected.latent_width == 16 and projected.codebook_shape == (1000, 1)
  x = jax.random.normal(jax.random.key(0), (4, 16))
  variables = projected.init(jax.random.key(1), x)
  np.testing.assert_array_equal(
    projected.apply(variables, x, train=True)[1]["indices"], projected.apply(variables, x)[1]["indices"]
  )
  assert layers.ResidualFSQ(levels=(4, 4), num_stages=2, dim=8).latent_width == 8
  assert layers.LFQ(num_bits=6, dim=3).latent_width == 3


def test_from_config_reads_the_section_and_the_uvim_split_ablation():
  section = {"kind": "vq_uvim", "codebook_size": 32, "vq_dim": 8, "split": False, "levels": (8, 5)}
  vq = from_config(section)
  assert (vq.codebook_size, vq.dim, vq.split_min_count) == (32, 8, None)
  assert from_config({**section, "split": True}).split_min_count == 0.1  # UViM's splitting
  fsq = from_config({"kind": "fsq", "levels": [7, 5, 5, 5, 5]})
  assert fsq.codebook_shape == (quantizers.codebook_size((7, 5, 5, 5, 5)), 1) == (4375, 1)


def test_bad_kinds_and_fields_are_named():
  with pytest.raises(ValueError, match=r"quantizer kind must be one of \('fsq', .*got 'fsqq'"):
    make_quantizer("fsqq")
  with pytest.raises(ValueError, match=r"quantizer fields must be among .*got \['level'\]"):
    make_quantizer("fsq", level=(8, 5))
  with pytest.raises(ValueError, match="quantizer kind 'fsq' is registered already"):
    bottlenecks.register("fsq")(lambda f: None)


def test_a_new_kind_is_one_registry_entry_away_from_a_trained_step(monkeypatch):
  """A kind registered outside the package (FSQ on the symmetric grid) passes the config check and builds
  into the tokenizer, whose encoder outputs the width it asks for: nothing else lists kinds."""
  from configs.maskgit import get_config
  from fsq.tasks import build_task
  from fsq.tasks.validate import validate_config

  monkeypatch.setattr(bottlenecks, "KINDS", dict(KINDS))
  bottlenecks.register("fsq_symmetric")(lambda f: layers.FSQ(levels=tuple(f.levels), symmetric=True))
  config = get_config("stage=tokenizer,run=cpu,quantizer=fsq")
  config.quantizer.kind, config.quantizer.levels = "fsq_symmetric", (4, 4, 3)
  validate_config(config, devices=False)
  model = build_task(config).model
  assert model.quantizer.symmetric and model.quantizer.codebook_shape == (48, 1)
  images = jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  latents = jax.eval_shape(
    lambda v, x: model.apply(v, x, method=lambda m, x: m.encoder(x)), variables, images
  )
  assert latents.shape == (2, 8, 8, 3)
  (recon, aux) = jax.eval_shape(model.apply, variables, images)
  assert recon.shape == (2, 32, 32, 1) and aux["indices"].shape == (2, 8, 8)
