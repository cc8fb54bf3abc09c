"""Checks a training config before anything is traced or compiled; errors name the field and value."""

from __future__ import annotations

import jax
import ml_collections

from fsq import bottlenecks
from fsq.data.pipeline import RANDOM_CROPS, RESIZE_MODES
from fsq.files import local_path, run_path
from fsq.quantizers import check_levels
from fsq.tasks.base import family_of
from fsq.tasks.checks import compute_dtype, positive_int
from fsq.train.mesh import mesh_shape


def _validate_tokens_dir(config: ml_collections.ConfigDict) -> None:
  """Pre-tokenised training data: MaskGIT stage II only, a local folder, fixed crops (the tokens were
  made of centre crops; the flip is the tokens folder's mirror images)."""
  folder = config.data.get("tokens_dir", "")
  if not folder:
    return
  if config.task != "transformer":
    raise ValueError(
      f"config.data.tokens_dir is for MaskGIT stage II (task transformer), got task {config.task!r}"
    )
  local_path(folder, "config.data.tokens_dir")
  if config.data.get("random_crop", ""):
    raise ValueError(
      f"config.data.random_crop = {config.data.random_crop!r} cannot apply to pre-tokenised data "
      f"(config.data.tokens_dir = {folder!r}); set it to '' or train on images"
    )
  if config.get("debug_nan_at_step", -1) != -1:
    raise ValueError("config.debug_nan_at_step puts NaN into images; a tokens_dir run has integer tokens")


def _validate_resident(config: ml_collections.ConfigDict) -> None:
  """A training set resident on the devices: fixed crops (each image is stored once, resized), images."""
  resident = config.data.get("resident", False)
  if not isinstance(resident, bool):
    raise ValueError(f"config.data.resident must be True or False, got {resident!r}")
  if not resident:
    return
  for name, value, off in (
    ("data.dense", tuple(config.data.get("dense", ())), ()),
    ("data.random_crop", config.data.get("random_crop", ""), ""),
    ("data.tokens_dir", config.data.get("tokens_dir", ""), ""),
    ("debug_nan_at_step", config.get("debug_nan_at_step", -1), -1),
  ):
    if value != off:
      raise ValueError(f"config.{name} = {value!r} cannot be used with config.data.resident = True")


def validate_config(config: ml_collections.ConfigDict, devices: bool = True) -> None:
  """Raises ValueError for a config the loop cannot run. ``devices``: also check the mesh and the batch
  against this process's jax devices and processes; False where the config will run elsewhere (a sweep's
  controller, which must not start a jax backend: on a TPU VM that would hold the chips its runs need)."""
  family = family_of(config)
  for name in (
    "num_train_steps",
    "batch_size",
    "log_every_steps",
    "eval_every_steps",
    "checkpoint_every_steps",
    "max_to_keep",
    "preemption_check_every_steps",
    "data.image_size",
    "data.channels",
  ):
    positive_int(config, name)
  # TFDS's array_record files are read by a C++ reader that opens local files only.
  local_path(config.data.data_dir, "config.data.data_dir")
  for name, value in (
    ("config.tokenizer_workdir", config.get("tokenizer_workdir", "")),
    ("config.vtt.encoder_init", config.get("vtt", {}).get("encoder_init", "")),
  ):
    run_path(value, name)
  profile = tuple(config.get("profile_steps", ()))
  if profile and (
    len(profile) != 2 or not all(isinstance(s, int) for s in profile) or not 1 <= profile[0] <= profile[1]
  ):
    raise ValueError(
      f"config.profile_steps must be () or (first, last) with 1 <= first <= last, got {profile}"
    )
  compute_dtype(config)
  perceptual = config.get("gan", {}).get("perceptual_dtype", "float32")
  if perceptual not in ("float32", "bfloat16"):
    raise ValueError(f"config.gan.perceptual_dtype must be 'float32' or 'bfloat16', got {perceptual!r}")
  peak = config.get("peak_flops_per_device", 0.0)
  if isinstance(peak, bool) or not isinstance(peak, int | float) or not peak >= 0:
    raise ValueError(f"config.peak_flops_per_device must be a number >= 0 (0: the chip's own), got {peak!r}")
  if not isinstance(config.get("remat", False), bool):
    raise ValueError(f"config.remat must be True or False, got {config.remat!r}")
  if config.num_eval_batches != -1 and config.num_eval_batches < 1:
    raise ValueError(f"config.num_eval_batches must be -1 (all) or >= 1, got {config.num_eval_batches}")
  data = fsdp = 1
  if devices:
    data, fsdp, _ = mesh_shape(config.mesh.data, config.mesh.fsdp, config.mesh.model, jax.device_count())
    if config.batch_size % (data * fsdp) or config.batch_size % jax.process_count():
      raise ValueError(
        f"config.batch_size = {config.batch_size} must be divisible by the data x fsdp devices "
        f"({data * fsdp}) and by the number of processes ({jax.process_count()})"
      )
  steps = config.get("accumulation_steps", 1)
  if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
    raise ValueError(f"config.accumulation_steps must be a positive integer, got {steps!r}")
  if config.batch_size % (steps * data * fsdp):
    raise ValueError(
      f"config.batch_size = {config.batch_size} must split into config.accumulation_steps = {steps} "
      f"micro-batches that divide over the data x fsdp devices ({data * fsdp})"
    )
  if config.data.resize_mode not in RESIZE_MODES:
    raise ValueError(
      f"config.data.resize_mode must be one of {RESIZE_MODES}, got {config.data.resize_mode!r}"
    )
  if config.data.get("random_crop", "") not in RANDOM_CROPS:
    raise ValueError(
      f"config.data.random_crop must be one of {RANDOM_CROPS}, got {config.data.random_crop!r}"
    )
  _validate_tokens_dir(config)
  _validate_resident(config)
  q = config.quantizer
  if q.kind not in bottlenecks.KINDS:
    raise ValueError(f"config.quantizer.kind must be one of {tuple(bottlenecks.KINDS)}, got {q.kind!r}")
  check_levels(tuple(q.levels), "config.quantizer.levels")
  for name in (
    "quantizer.num_codebooks",
    "quantizer.num_stages",
    "quantizer.num_bits",
    "quantizer.codebook_size",
    "quantizer.vq_dim",
  ):
    positive_int(config, name)
  family.check_model(config)
  o = config.optimizer
  if not o.learning_rate > 0:
    raise ValueError(f"config.optimizer.learning_rate must be > 0, got {o.learning_rate}")
  if not 0 <= o.warmup_steps <= config.num_train_steps:
    raise ValueError(
      f"config.optimizer.warmup_steps = {o.warmup_steps} must be in "
      f"[0, num_train_steps = {config.num_train_steps}]"
    )
  if o.schedule not in ("cosine", "constant"):
    raise ValueError(f"config.optimizer.schedule must be 'cosine' or 'constant', got {o.schedule!r}")
  step = config.get("tokenizer_step", 0)
  if not isinstance(step, int) or isinstance(step, bool) or step < 0:
    raise ValueError(f"config.tokenizer_step must be 0 (the newest) or a checkpoint step, got {step!r}")
