"""Model families as tasks for the generic loop; ``build_task(config)`` picks one by ``config.task``."""

from __future__ import annotations

from pathlib import Path

import ml_collections

from fsq.maskgit.vocab import Vocabulary
from fsq.models.autoencoder import Autoencoder, codebook_shape, latent_width, make_quantizer
from fsq.models.discriminator import Discriminator
from fsq.models.transformer import BidirectionalTransformer
from fsq.models.vqgan import Decoder, Encoder
from fsq.tasks.autoencoder import AutoencoderTask
from fsq.tasks.maskgit import MaskGITTask
from fsq.tasks.tokenizer import TokenizerTask
from fsq.train.checkpoint import restore_latest_on_one_device
from fsq.train.state import make_optimizer

TASKS = ("autoencoder", "tokenizer", "transformer")


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
  )


def build_autoencoder(config: ml_collections.ConfigDict) -> Autoencoder:
  m, q = config.model, config.quantizer
  quantizer = make_quantizer(
    q.kind,
    levels=tuple(q.levels),
    num_codebooks=q.num_codebooks,
    num_stages=q.num_stages,
    num_bits=q.num_bits,
    codebook_size=q.codebook_size,
    vq_dim=q.vq_dim,
  )
  common = dict(
    filters=m.filters,
    channel_multipliers=tuple(m.channel_multipliers),
    num_res_blocks=m.num_res_blocks,
    norm_groups=m.norm_groups,
    maskgit_shortcut_quirk=m.maskgit_shortcut_quirk,
  )
  return Autoencoder(
    encoder=Encoder(latent_dim=latent_width(quantizer), **common),
    quantizer=quantizer,
    decoder=Decoder(out_channels=config.data.channels, **common),
  )


def build_tokenizer_task(config: ml_collections.ConfigDict) -> TokenizerTask:
  g = config.gan
  return TokenizerTask(
    model=build_autoencoder(config),
    optimizer=build_optimizer(config),
    discriminator=Discriminator(g.disc_filters, tuple(g.disc_channel_multipliers)),
    disc_optimizer=build_optimizer(config),
    perceptual_weight=g.perceptual_weight,
    adversarial_weight=g.adversarial_weight,
    r1_weight=g.r1_weight,
    disc_start_step=g.disc_start_step,
    ema_decay=g.ema_decay,
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
  )


def build_maskgit_task(
  config: ml_collections.ConfigDict, tokenizer_variables: dict | None = None
) -> MaskGITTask:
  """Stage II; the frozen tokenizer comes from ``config.tokenizer_workdir`` (its EMA parameters)."""
  tokenizer = build_autoencoder(config)
  if tokenizer_variables is None:
    if not config.tokenizer_workdir:
      raise ValueError("config.tokenizer_workdir must name the stage I workdir, got ''")
    _, state = restore_latest_on_one_device(Path(config.tokenizer_workdir) / "checkpoints")
    tokenizer_variables = {"params": state["ema_params"], **state["model_state"]}
  size, groups = codebook_shape(tokenizer.quantizer)
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
  )


def build_task(config: ml_collections.ConfigDict):
  if config.task == "autoencoder":
    return AutoencoderTask(build_autoencoder(config), build_optimizer(config))
  if config.task == "tokenizer":
    return build_tokenizer_task(config)
  if config.task == "transformer":
    return build_maskgit_task(config)
  raise ValueError(f"task must be one of {TASKS}, got {config.task!r}")
