"""Helpers shared by the tests: each model family's tiny config, running the CLIs as processes, reading a
run's metrics and checkpoints, the reference Inception features."""

import functools
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import jax
import ml_collections
import numpy as np

from configs.autoencoder import get_config as get_autoencoder_config
from configs.maskgit import get_config as get_maskgit_config
from configs.uvim import get_config as get_uvim_config
from fsq.evals import inception
from fsq.evals.features import to_inception_input
from fsq.files import run_path
from fsq.tasks.validate import validate_config
from fsq.train import writers
from fsq.train.checkpoint import restore_to_host


def patched(config: ml_collections.ConfigDict, overrides: Mapping[str, object]) -> ml_collections.ConfigDict:
  """``config`` with each dotted FIELD of ``overrides`` (e.g. 'model.filters') set to its value, validated."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  validate_config(config)
  return config


@functools.cache
def _inception():
  """The pretrained Inception parameters on the default device and the jitted pool3 features."""
  params = jax.device_put(inception.inception_params(), jax.devices()[0])
  return params, jax.jit(lambda p, x: inception.features(p, to_inception_input(x))["pool"])


def inception_pool(images: np.ndarray) -> np.ndarray:
  """(B, H, W, C) images in [-1, 1] -> (B, 2048) float64 pool3 features of the pretrained network, applied
  directly on one device: the reference for the sharded, batched FeatureExtractor."""
  params, features = _inception()
  return np.asarray(features(params, np.asarray(images)), np.float64)


def flat_params(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
  """A parameter tree as big_vision saves it: one array per "/"-joined path."""
  out = {}
  for name, value in tree.items():
    if isinstance(value, dict):
      out.update(flat_params(value, f"{prefix}{name}/"))
    else:
      out[f"{prefix}{name}"] = np.asarray(value)
  return out


REPO = Path(__file__).resolve().parents[1]

# The tiny overrides of each family's config: narrow models, few steps, a log line and a metric every step.
AUTOENCODER_TINY = {
  "batch_size": 8,
  "log_every_steps": 1,
  "eval_every_steps": 1000,
  "checkpoint_every_steps": 2,
  "num_eval_batches": 2,
  "model.filters": 8,
  "model.channel_multipliers": (1, 2),
  "model.norm_groups": 4,
  "optimizer.warmup_steps": 1,
}

# The MaskGIT pair (configs/maskgit.py, run=cpu): the autoencoder's tokenizer widths, a 1-layer transformer.
MASKGIT_TINY = {
  **AUTOENCODER_TINY,
  "num_train_steps": 2,
  "num_eval_batches": 1,
  "gan.disc_filters": 8,
  "transformer.hidden": 32,
  "transformer.num_layers": 1,
  "transformer.num_heads": 2,
  "transformer.mlp_dim": 64,
  "sampling.num_steps": 4,
  "sampling.samples_per_class": 1,
}

# UViM (configs/uvim.py, run=cpu) on the tiny synthetic scenes.
UVIM_TINY = {
  "batch_size": 8,
  "num_train_steps": 2,
  "log_every_steps": 1,
  "eval_every_steps": 1000,
  "checkpoint_every_steps": 2,
  "num_eval_batches": -1,
  "data.name": "synthetic_scenes/tiny",
  "model.patch_size": 16,
  "model.code_grid": 4,
  "model.width": 32,
  "model.oracle_depth": 1,
  "model.base_depth": 1,
  "model.num_heads": 2,
  "model.mlp_dim": 64,
  "quantizer.codebook_size": 64,
  "quantizer.vq_dim": 8,
  "vtt.width": 32,
  "vtt.depth": 1,
  "vtt.num_heads": 2,
  "vtt.mlp_dim": 64,
  "vtt.patch_size": 16,
  "optimizer.warmup_steps": 1,
}


def tiny_autoencoder_config(data_dir, arg="", **overrides):
  """configs/autoencoder.py with ``arg``, AUTOENCODER_TINY, ``data_dir`` and ``overrides``, validated."""
  return patched(
    get_autoencoder_config(arg), {**AUTOENCODER_TINY, "data.data_dir": str(data_dir), **overrides}
  )


def tiny_maskgit_config(data_dir, stage, **overrides):
  """configs/maskgit.py's ``stage`` (tokenizer or transformer) with FSQ and MASKGIT_TINY, validated."""
  config = get_maskgit_config(f"stage={stage},run=cpu,quantizer=fsq")
  return patched(config, {**MASKGIT_TINY, "data.data_dir": str(data_dir), **overrides})


def tiny_uvim_config(data_dir, arg, **overrides):
  """configs/uvim.py (run=cpu) with ``arg`` and UVIM_TINY, validated."""
  return patched(
    get_uvim_config(f"run=cpu,{arg}"), {**UVIM_TINY, "data.data_dir": str(data_dir), **overrides}
  )


def read_metrics(workdir, split="train"):
  path = run_path(workdir, "workdir") / "metrics.jsonl"
  return [m for m in writers.read_metrics(path) if m["split"] == split]


def restore_state(workdir, step):
  return restore_to_host(run_path(workdir, "workdir") / "checkpoints" / str(step))


def restore_params(workdir, step):
  restored = restore_state(workdir, step)
  return jax.tree.leaves(restored["params"]), jax.tree.leaves(restored["opt_state"])


def run_cli(args, env=None, module="scripts.train", **kwargs):
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    **kwargs,
  )


def without_device_count(xla_flags: str) -> str:
  return " ".join(f for f in xla_flags.split() if "device_count" not in f)


def run_one_process(args, num_devices, module="scripts.train", **env):
  """``python -m module args`` as one process with ``num_devices`` CPU devices."""
  flags = without_device_count(os.environ["XLA_FLAGS"])
  devices = f"{flags} --xla_force_host_platform_device_count={num_devices}"
  done = run_cli(args, env=dict(os.environ, XLA_FLAGS=devices, **env), module=module)
  assert done.returncode == 0, done.stdout + done.stderr


def run_two_processes(args, log_dir, module="scripts.train", **env):
  """``python -m module args`` as 2 processes x 2 CPU devices (scripts.launch_local), logs in log_dir."""
  launcher = [
    "--num_processes=2",
    "--devices_per_process=2",
    f"--module={module}",
    f"--log_dir={log_dir}",
    "--",
    *args,
  ]
  flags = without_device_count(os.environ["XLA_FLAGS"])
  done = run_cli(launcher, env=dict(os.environ, XLA_FLAGS=flags, **env), module="scripts.launch_local")
  assert done.returncode == 0, "".join(p.read_text() for p in sorted(Path(log_dir).glob("process_*.log")))
  for process in (0, 1):
    log = (Path(log_dir) / f"process_{process}.log").read_text()
    assert f"process {process} of 2 processes, 4 devices" in log, log


def fid_scipy(a: np.ndarray, b: np.ndarray) -> float:
  """The Frechet distance of two feature sets (N, D), with scipy's matrix square root: the reference FID."""
  import scipy.linalg

  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy.linalg.sqrtm(cov_a @ cov_b).real
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))
