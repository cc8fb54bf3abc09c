"""Model families as tasks for the generic loop, registered as task families (``fsq.tasks.base``);
``build_task(config)`` builds the one ``config.task`` names."""

# ruff: noqa: E402 (the [train] extra is checked before the imports that need it)
from __future__ import annotations

from fsq.extras import require

require("train", "fsq.tasks")

import copy
from pathlib import Path

import jax
import ml_collections

from fsq import bottlenecks
from fsq.data import tokens as tokens_lib
from fsq.files import run_path
from fsq.maskgit.vocab import Vocabulary
from fsq.models.autoencoder import Autoencoder
from fsq.models.discriminator import Discriminator
from fsq.models.transformer import BidirectionalTransformer
from fsq.models.uvim import UViM
from fsq.models.vqgan import Decoder, Encoder
from fsq.models.vtt import VisionToTextTransformer
from fsq.tasks.autoencoder import AutoencoderTask
from fsq.tasks.base import FAMILIES, TaskFamily, family_of, register
from fsq.tasks.checks import check_conv, check_vit, compute_dtype
from fsq.tasks.dense import ColorizationRepresentation, DepthRepresentation, PanopticRepresentation
from fsq.tasks.maskgit import MaskGITTask
from fsq.tasks.tokenizer import TokenizerTask
from fsq.tasks.uvim import UViMStageOneTask, UViMStageTwoTask
from fsq.train import loop, stages
from fsq.train.checkpoint import restore_step_to_host
from fsq.train.data import batch_spec
from fsq.train.state import make_optimizer


def build_optimizer(config: ml_collections.ConfigDict):
  o = config.optimizer
  return make_optimizer(
    o.learning_rate,
    o.warmup_steps,
    config.num_train_steps,
    o.b1,
    o.b2,
    o.weight_decay,
    o.grad_clip_norm,
    o.schedule,
    tuple(tuple(m) for m in o.lr_multipliers),
  )


def restore_stage_one(config: ml_collections.ConfigDict) -> dict:
  """The variables a stage II run freezes, of the stage I run in ``config.tokenizer_workdir``: its
  checkpoint of step ``config.tokenizer_step``, or its newest when that is 0 (or absent, in configs
  written before it); the parameters its family names (``TaskFamily.frozen_params``) and model state."""
  stage_one = family_of(config).stage_one
  if stage_one is None:
    raise ValueError(f"config.task = {config.task!r} trains on no stage I run")
  if not config.tokenizer_workdir:
    raise ValueError("config.tokenizer_workdir must name the stage I workdir, got ''")
  step = config.get("tokenizer_step", 0)
  key = FAMILIES[stage_one].frozen_params
  try:
    workdir = run_path(config.tokenizer_workdir, "config.tokenizer_workdir")
    state = restore_step_to_host(workdir / "checkpoints", step, (key, "model_state"))
  except ValueError as e:
    raise ValueError(f"config.tokenizer_step = {step}: {e}") from None
  return {"params": state[key], **state["model_state"]}


def memory_settings(config: ml_collections.ConfigDict) -> dict:
  """``dtype`` and ``remat`` (``config.remat``: recompute each block's activations in the backward pass)."""
  return dict(dtype=compute_dtype(config), remat=bool(config.get("remat", False)))


def accumulation_steps(config: ml_collections.ConfigDict) -> int:
  """``config.accumulation_steps``: micro-batches per optimizer step (1: none)."""
  return int(config.get("accumulation_steps", 1))


def build_autoencoder(config: ml_collections.ConfigDict) -> Autoencoder:
  m = config.model
  quantizer = bottlenecks.from_config(config.quantizer)
  common = dict(
    filters=m.filters,
    channel_multipliers=tuple(m.channel_multipliers),
    num_res_blocks=m.num_res_blocks,
    norm_groups=m.norm_groups,
    maskgit_shortcut_quirk=m.maskgit_shortcut_quirk,
    **memory_settings(config),
  )
  return Autoencoder(
    encoder=Encoder(latent_dim=quantizer.latent_width, **common),
    quantizer=quantizer,
    decoder=Decoder(out_channels=config.data.channels, **common),
  )


def build_tokenizer_task(config: ml_collections.ConfigDict) -> TokenizerTask:
  g = config.gan
  return TokenizerTask(
    model=build_autoencoder(config),
    optimizer=build_optimizer(config),
    discriminator=Discriminator(g.disc_filters, tuple(g.disc_channel_multipliers), compute_dtype(config)),
    disc_optimizer=build_optimizer(config),
    l2_weight=g.l2_weight,
    perceptual_weight=g.perceptual_weight,
    perceptual=g.perceptual,
    adversarial_weight=g.adversarial_weight,
    r1_weight=g.r1_weight,
    disc_start_step=g.disc_start_step,
    ema_decay=g.ema_decay,
    perceptual_dtype=g.get("perceptual_dtype", "float32"),
    accumulation_steps=accumulation_steps(config),
  )


def build_transformer(config: ml_collections.ConfigDict, vocab: Vocabulary) -> BidirectionalTransformer:
  t = config.transformer
  factor = 2 ** (len(config.model.channel_multipliers) - 1)
  seq_len = 1 + (config.data.image_size // factor) ** 2
  return BidirectionalTransformer(
    vocab.size,
    seq_len,
    hidden=t.hidden,
    num_layers=t.num_layers,
    num_heads=t.num_heads,
    mlp_dim=t.mlp_dim,
    dropout=t.dropout,
    **memory_settings(config),
  )


def build_maskgit_task(
  config: ml_collections.ConfigDict, tokenizer_variables: dict | None = None
) -> MaskGITTask:
  """Stage II; the frozen tokenizer comes from ``config.tokenizer_workdir`` (its EMA parameters). A tokens
  folder (``config.data.tokens_dir``) must have been made by that tokenizer from this data."""
  tokenizer = build_autoencoder(config)
  if tokenizer_variables is None:
    tokenizer_variables = restore_stage_one(config)
    if config.data.get("tokens_dir", ""):
      check_tokens_dir(config)
  size, groups = tokenizer.quantizer.codebook_shape
  if groups != 1:
    raise ValueError(f"stage II needs a single-group quantizer, got {groups} groups")
  vocab = Vocabulary(size, config.transformer.num_classes)
  t = config.transformer
  return MaskGITTask(
    tokenizer,
    tokenizer_variables,
    build_transformer(config, vocab),
    vocab,
    build_optimizer(config),
    min_mask_ratio=t.min_mask_ratio,
    label_drop_rate=t.label_drop_rate,
    label_smoothing=t.label_smoothing,
    num_sampling_steps=config.sampling.num_steps,
    choice_temperature=config.sampling.choice_temperature,
    guidance_scale=config.sampling.guidance_scale,
    samples_per_class=config.sampling.samples_per_class,
    accumulation_steps=accumulation_steps(config),
  )


def check_tokens_dir(config: ml_collections.ConfigDict) -> None:
  """A ValueError unless ``config.data.tokens_dir`` holds tokens of this run's tokenizer (workdir, pinned
  step, config.json's sha256) and images (dataset, training split, size, resize mode)."""
  folder = config.data.tokens_dir
  expected = {
    "tokenizer_workdir": str(config.tokenizer_workdir),
    "tokenizer_step": int(config.tokenizer_step),
    "tokenizer_config_sha256": tokens_lib.config_sha256(config.tokenizer_workdir),
    "dataset": config.data.name,
    "split": config.data.train_split,
    "image_size": int(config.data.image_size),
    "resize_mode": config.data.resize_mode,
  }
  tokens_lib.check_manifest(tokens_lib.read_manifest(folder), expected, folder)


def build_dense_representation(config: ml_collections.ConfigDict):
  """The UViM task representation named by ``config.uvim.task`` (depth | panoptic | colorization)."""
  u = config.uvim
  if u.task == "depth":
    return DepthRepresentation(u.depth_bins, u.min_depth, u.max_depth)
  if u.task == "panoptic":
    return PanopticRepresentation(
      u.num_classes, u.max_instances, tuple(u.thing_classes), u.void_label, u.panoptic_prediction
    )
  if u.task == "colorization":
    return ColorizationRepresentation()
  raise ValueError(f"config.uvim.task must be depth, panoptic or colorization, got {u.task!r}")


def build_uvim(config: ml_collections.ConfigDict, output_channels: int) -> UViM:
  """Stage I: the restricted oracle and base model around ``config.quantizer``."""
  m = config.model
  return UViM(
    bottlenecks.from_config(config.quantizer),
    output_channels,
    patch_size=m.patch_size,
    code_grid=m.code_grid,
    width=m.width,
    oracle_depth=m.oracle_depth,
    base_depth=m.base_depth,
    num_heads=m.num_heads,
    mlp_dim=m.mlp_dim,
    dropout=m.dropout,
    oracle_context=m.context,
    base_context=m.context,
    code_dropout=m.code_dropout,
    **memory_settings(config),
  )


def build_uvim_stage_two_task(
  config: ml_collections.ConfigDict, stage_one_variables: dict | None = None
) -> UViMStageTwoTask:
  """Stage II; the frozen stage I comes from ``config.tokenizer_workdir`` (its parameters and model state)."""
  representation = build_dense_representation(config)
  stage_one = build_uvim(config, representation.output_channels)
  if stage_one_variables is None:
    stage_one_variables = restore_stage_one(config)
  size, _ = stage_one.quantizer.codebook_shape
  v = config.vtt
  vtt = VisionToTextTransformer(
    size,
    config.model.code_grid**2,
    width=v.width,
    depth=v.depth,
    num_heads=v.num_heads,
    mlp_dim=v.mlp_dim,
    patch_size=v.patch_size,
    dropout=v.dropout,
    **memory_settings(config),
  )
  return UViMStageTwoTask(
    stage_one,
    stage_one_variables,
    representation,
    vtt,
    build_optimizer(config),
    v.encoder_init,
    accumulation_steps=accumulation_steps(config),
  )


def build_autoencoder_task(config: ml_collections.ConfigDict) -> AutoencoderTask:
  return AutoencoderTask(
    build_autoencoder(config), build_optimizer(config), accumulation_steps=accumulation_steps(config)
  )


def build_uvim_stage_one_task(config: ml_collections.ConfigDict) -> UViMStageOneTask:
  representation = build_dense_representation(config)
  model = build_uvim(config, representation.output_channels)
  return UViMStageOneTask(
    model, representation, build_optimizer(config), accumulation_steps=accumulation_steps(config)
  )


def _reconstruction_metrics(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  return ("rfid", "train_usage")


def _sampling_metrics(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  return ("fid", "compression")


def _dense_metrics(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  return ("color_fid",) if config.uvim.task == "colorization" else ("dense_native",)


register(TaskFamily("autoencoder", build_autoencoder_task, check_conv, _reconstruction_metrics))
register(
  TaskFamily(
    "tokenizer", build_tokenizer_task, check_conv, _reconstruction_metrics, frozen_params="ema_params"
  )
)
register(TaskFamily("transformer", build_maskgit_task, check_conv, _sampling_metrics, stage_one="tokenizer"))
register(TaskFamily("uvim_oracle", build_uvim_stage_one_task, check_vit, frozen_params="params"))
register(TaskFamily("uvim_lm", build_uvim_stage_two_task, check_vit, _dense_metrics, stage_one="uvim_oracle"))


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str | Path, task=None, sources=None
) -> dict[str, float]:
  """Trains the run in ``workdir`` with the generic loop: ``config`` resolved (``fsq.train.stages``; the
  caller's copy is left as it is) and, unless ``task`` is given, the task of ``config.task`` built from
  it. Returns the final evaluation metrics; ``sources`` as the loop's."""
  config = stages.resolve(config, workdir)
  task = task if task is not None else build_task(config)
  return loop.train_and_evaluate(config, workdir, task, sources)


def build_task(config: ml_collections.ConfigDict):
  """The task of the family ``config.task`` names (a stage II task restores its frozen stage I)."""
  return family_of(config).build(config)


def build_abstract_task(config: ml_collections.ConfigDict):
  """``build_task(config)`` without a stage I checkpoint: a stage II task's frozen stage I is shapes only
  (``jax.eval_shape`` of the stage I task's init on the same config), for plans and ahead-of-time
  compiles; other tasks are built as ``build_task`` builds them."""
  family = family_of(config)
  if family.stage_one is None:
    return family.build(config)
  stage_one = copy.deepcopy(config)
  with stage_one.unlocked():
    stage_one.task = family.stage_one
    stage_one.data.tokens_dir = ""  # stage I trains on images
    if stage_one.get("gan"):  # the tokenizer's perceptual network is no part of the frozen variables
      stage_one.gan.perceptual_weight = 0.0
  batch = batch_spec(stage_one.data, stage_one.batch_size, eval_batch=True)  # float images, as the loop's
  state = jax.eval_shape(build_task(stage_one).init, jax.random.key(0), batch)
  key = FAMILIES[family.stage_one].frozen_params
  return family.build(config, {"params": getattr(state, key), **state.model_state})
