"""Config checks of the task builders: the fields the models of each family are built from."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
  """The dtype of the models' activations (``config.compute_dtype``; parameters, optimizer state, losses
  and quantizer arithmetic stay float32)."""
  name = config.get("compute_dtype", "float32")
  if name not in ("float32", "bfloat16"):
    raise ValueError(f"config.compute_dtype must be 'float32' or 'bfloat16', got {name!r}")
  return jnp.dtype(name)


def positive_int(config: ml_collections.ConfigDict, name: str) -> int:
  value = config
  for part in name.split("."):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"config.{name} must be a positive integer, got {value!r}")
  return value


def check_conv(config: ml_collections.ConfigDict) -> None:
  """The conv encoder/decoder of the autoencoder and MaskGIT tokenizer."""
  for name in ("model.filters", "model.num_res_blocks", "model.norm_groups"):
    positive_int(config, name)
  multipliers = tuple(config.model.channel_multipliers)
  factor = 2 ** (len(multipliers) - 1)
  if config.data.image_size % factor:
    raise ValueError(
      f"config.data.image_size = {config.data.image_size} must be divisible by {factor} "
      f"(2^(len(model.channel_multipliers) - 1) for {multipliers})"
    )
  for m in multipliers:
    if (config.model.filters * m) % config.model.norm_groups:
      raise ValueError(
        f"config.model.norm_groups = {config.model.norm_groups} must divide filters x multiplier = "
        f"{config.model.filters * m}"
      )


def check_vit(config: ml_collections.ConfigDict) -> None:
  """UViM's ViTs: patches tile the image, and the code grid is no finer than the patch grid."""
  for name in ("model.patch_size", "model.code_grid", "model.width", "model.num_heads", "model.mlp_dim"):
    positive_int(config, name)
  m, size = config.model, config.data.image_size
  if size % m.patch_size:
    raise ValueError(
      f"config.data.image_size = {size} must be divisible by model.patch_size = {m.patch_size}"
    )
  if m.code_grid > size // m.patch_size:
    raise ValueError(
      f"config.model.code_grid = {m.code_grid} must be at most the patch grid {size // m.patch_size}"
    )
  if m.width % m.num_heads:
    raise ValueError(f"config.model.width = {m.width} must be divisible by model.num_heads = {m.num_heads}")
