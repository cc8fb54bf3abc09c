"""Model families as tasks for the generic loop; ``build_task(config)`` picks one by ``config.task``."""

from __future__ import annotations

import ml_collections

from fsq.models.autoencoder import Autoencoder, latent_width, make_quantizer
from fsq.models.vqgan import Decoder, Encoder
from fsq.tasks.autoencoder import AutoencoderTask
from fsq.train.state import make_optimizer

TASKS = ("autoencoder",)


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


def build_task(config: ml_collections.ConfigDict):
  if config.task == "autoencoder":
    return AutoencoderTask(build_autoencoder(config), build_optimizer(config))
  raise ValueError(f"task must be one of {TASKS}, got {config.task!r}")
