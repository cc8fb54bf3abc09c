"""The paper's MaskGIT configs: hyperparameters against PAPER.md, full-size shapes by eval_shape."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.maskgit import get_config
from fsq.data.pipeline import _Scale
from fsq.tasks import build_maskgit_task, build_task
from fsq.tasks.validate import validate_config

TABLE_1 = {8: (8, 6, 5), 10: (8, 5, 5, 5), 12: (7, 5, 5, 5, 5), 14: (8, 8, 8, 6, 5), 16: (8, 8, 8, 5, 5, 5)}


@pytest.mark.parametrize("quantizer", ["fsq", "vq"])
def test_imagenet256_stage_one_matches_the_paper(quantizer):
  c = get_config(f"stage=tokenizer,run=imagenet256,quantizer={quantizer}")
  validate_config(c)
  assert (c.batch_size, c.num_train_steps, c.data.image_size) == (512, 1_000_000, 256)
  assert (c.model.filters, tuple(c.model.channel_multipliers), c.model.num_res_blocks) == (
    128,
    (1, 1, 2, 2, 4),
    2,
  )
  assert c.model.norm_groups == 32 and not c.model.maskgit_shortcut_quirk
  g = c.gan
  assert (g.perceptual_weight, g.adversarial_weight, g.ema_decay) == (0.1, 0.1, 0.999)
  assert g.perceptual == "resnet50" and build_task(c).perceptual == "resnet50"  # MaskGIT's feature loss
  assert (c.optimizer.b1, c.optimizer.b2, c.optimizer.learning_rate) == (0.0, 0.99, 1e-4)
  quantizer_module = build_task(c).model.quantizer
  if quantizer == "fsq":
    assert tuple(quantizer_module.levels) == (8, 5, 5, 5)
  else:
    assert (quantizer_module.codebook_size, quantizer_module.dim) == (1024, 256)
    assert (quantizer_module.commitment_cost, quantizer_module.entropy_loss_weight) == (0.25, 0.1)
    assert quantizer_module.entropy_temperature == 0.01 and quantizer_module.ema_decay is None


@pytest.mark.parametrize("run", ["imagenet256", "imagenet128", "cpu"])
def test_tokenizer_losses_keep_maskgit_balance_at_our_pixel_range(run):
  """MaskGIT's tokenizer sees [0, 1] with L2 weight 1 and R1 weight 10. Read our pixel range off the
  input pipeline: for pixels s times as wide, the squared error grows by s^2 and R1 (squared input
  gradients of an equivalent discriminator) shrinks by s^2, so the weights must be 1 / s^2 and 10 s^2.
  The perceptual and GAN terms do not depend on the scale: 0.1 each (perceptual off on CPU)."""
  scaled = _Scale().map({"image": np.array([0, 255], np.uint8), "label": 0})["image"]
  s = float(scaled[1] - scaled[0])
  g = get_config(f"stage=tokenizer,run={run}").gan
  assert g.l2_weight == pytest.approx(1 / s**2) and g.r1_weight == pytest.approx(10 * s**2)
  assert (g.adversarial_weight, g.perceptual_weight) == (0.1, 0.1 if run != "cpu" else 0.0)
  task = build_task(get_config(f"stage=tokenizer,run={run}"))
  assert (task.l2_weight, task.r1_weight) == (g.l2_weight, g.r1_weight)
  bad = get_config(f"stage=tokenizer,run={run}")
  bad.gan.perceptual = "vgg"
  with pytest.raises(ValueError, match="perceptual must be one of \\('lpips', 'resnet50'\\), got 'vgg'"):
    build_task(bad)


@pytest.mark.parametrize("quantizer,guidance", [("fsq", 0.2), ("vq", 0.1)])
def test_imagenet256_stage_two_matches_the_paper(quantizer, guidance):
  c = get_config(f"stage=transformer,run=imagenet256,quantizer={quantizer}")
  validate_config(c)
  t = c.transformer
  assert (t.num_layers, t.hidden, t.num_heads, t.mlp_dim, t.dropout) == (24, 768, 16, 3072, 0.1)
  assert (t.label_smoothing, t.min_mask_ratio, t.label_drop_rate, t.num_classes) == (0.1, 0.45, 0.1, 1000)
  o = c.optimizer
  assert (o.b1, o.b2, o.learning_rate, o.warmup_steps, o.weight_decay) == (0.9, 0.96, 1e-4, 5000, 0.045)
  assert (o.schedule, o.grad_clip_norm) == ("cosine", 1.0)  # magvit's trainer (MaskGIT's config: constant)
  assert (c.batch_size, c.num_train_steps) == (256, 2_500_000)
  assert (c.sampling.num_steps, c.sampling.choice_temperature, c.sampling.guidance_scale) == (
    12,
    4.5,
    guidance,
  )


@pytest.mark.parametrize("bits", sorted(TABLE_1))
def test_codebook_study_uses_table_1_levels_and_vq_sizes(bits):
  fsq = get_config(f"stage=tokenizer,run=imagenet128,quantizer=fsq,codebook={bits}")
  vq = get_config(f"stage=tokenizer,run=imagenet128,quantizer=vq,codebook={bits}")
  assert tuple(fsq.quantizer.levels) == TABLE_1[bits] and vq.quantizer.codebook_size == 2**bits
  assert (fsq.batch_size, fsq.num_train_steps, fsq.data.image_size) == (256, 500_000, 128)
  stage_two = get_config(f"stage=transformer,run=imagenet128,quantizer=fsq,codebook={bits}")
  assert (stage_two.batch_size, stage_two.num_train_steps) == (256, 1_000_000)
  with pytest.raises(ValueError, match="codebook"):
    get_config(f"stage=tokenizer,run=imagenet256,codebook={bits + 1}")


def test_full_size_models_build_without_allocating():
  c = get_config("stage=tokenizer,run=imagenet256,quantizer=fsq")
  task = build_task(c)
  images = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
  state = jax.eval_shape(task.init, jax.random.key(0), {"image": images})
  latents = jax.eval_shape(
    lambda p, x: task.model.apply({"params": p}, x, method=lambda m, v: m.encoder(v)), state.params, images
  )
  assert latents.shape == (2, 16, 16, 4)  # 16x downsampling, len([8, 5, 5, 5]) channels
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(state.disc_params)) > 10**7
  c2 = get_config("stage=transformer,run=imagenet256,quantizer=vq")
  tokenizer_task = build_task(get_config("stage=tokenizer,run=imagenet256,quantizer=vq"))
  tokenizer = jax.eval_shape(tokenizer_task.model.init, jax.random.key(0), images)
  stage_two = build_maskgit_task(c2, tokenizer_variables=tokenizer)
  params = jax.eval_shape(stage_two.init, jax.random.key(0), {"image": images}).params
  count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
  assert stage_two.vocab.size == 1024 + 1000 + 1 and stage_two.transformer.seq_len == 257
  assert 169e6 < count < 173e6  # "about 170M parameters with a 1024-code vocabulary"


def test_cpu_runs_take_levels_and_codebook_sizes_from_the_command_line():
  fsq = get_config("stage=tokenizer,run=cpu,quantizer=fsq,levels=8-8-8")
  assert tuple(fsq.quantizer.levels) == (8, 8, 8) and build_task(fsq).model.quantizer.codebook_size == 512
  small = get_config("stage=transformer,run=cpu,quantizer=fsq,codebook=8")
  assert tuple(small.quantizer.levels) == (8, 6, 5)
  vq = get_config("stage=tokenizer,run=cpu,quantizer=vq,codebook=12")
  assert build_task(vq).model.quantizer.codebook_size == 4096
  with pytest.raises(ValueError, match="levels is an argument of quantizer=fsq"):
    get_config("stage=tokenizer,run=cpu,quantizer=vq,levels=8-8-8")
  with pytest.raises(
    ValueError, match=re.escape("levels must be integers joined by '-', e.g. 8-5-5-5, got '8_5'")
  ):
    get_config("stage=tokenizer,run=cpu,levels=8_5")


def test_plain_vq_is_maskgit_vq_without_the_entropy_loss():
  plain = build_task(
    get_config("stage=tokenizer,run=imagenet128,quantizer=vq_plain,codebook=14")
  ).model.quantizer
  assert (plain.codebook_size, plain.commitment_cost, plain.codebook_loss_weight) == (2**14, 0.25, 1.0)
  assert plain.entropy_loss_weight == 0.0
  with pytest.raises(ValueError, match=r"quantizer must be one of \['fsq', 'vq', 'vq_plain'\], got 'vqq'"):
    get_config("quantizer=vqq")


def test_config_arguments_parse_typed_like_their_defaults_and_name_bad_ones():
  from configs.common import given, parse_arg

  defaults = dict(stage="oracle", steps=1000, levels=(8, 5, 5, 5), remat=False, note=None, lr=1e-3)
  assert parse_arg(None, defaults) == defaults
  assert parse_arg("steps=20, levels=7-5-5-5-5,remat=true,note=x,lr=3e-4", defaults) == {
    "stage": "oracle",
    "steps": 20,
    "levels": (7, 5, 5, 5, 5),
    "remat": True,
    "note": "x",
    "lr": 3e-4,
  }
  assert given("steps=20,levels=8-8") == {"steps", "levels"}
  for arg, message in (
    ("steps=2k", "steps must be an integer, got '2k'"),
    ("remat=yes", "remat must be true or false, got 'yes'"),
    ("lr=fast", "lr must be a number, got 'fast'"),
    ("levels=8,5", "config argument items must be key=value, got '5' in 'levels=8,5'"),
    (
      "stages=lm",
      "unknown config arguments ['stages'] in 'stages=lm'; known: ['levels', 'lr', 'note', 'remat', "
      "'stage', 'steps']",
    ),
    ("stage=lm", "stage must be one of ['oracle', 'base'], got 'lm'"),
  ):
    with pytest.raises(ValueError, match=re.escape(message)):
      parse_arg(arg, defaults, dict(stage=("oracle", "base")))
  with pytest.raises(TypeError, match="config argument size: no parser for defaults of type list"):
    parse_arg("size=3", dict(size=[1]))
  with pytest.raises(ValueError, match=re.escape("unknown config arguments ['quantiser']")):
    get_config("quantiser=fsq")  # every config declares its arguments
