"""Train from a config: the one entry point, on a laptop CPU, a GPU or every worker of a TPU pod.

  python -m scripts.train --config configs/autoencoder.py:quantizer=fsq --workdir runs/fsq \\
      --config.num_train_steps=2000 --config.quantizer.levels='(8, 6, 5)'

Multi-process: pass --coordinator_address, --num_processes and --process_id (or set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID); on Cloud TPU pods jax finds them itself (--distributed=auto).
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file, optionally with :ARG.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and images.")
_DISTRIBUTED = flags.DEFINE_enum(
  "distributed",
  "auto",
  ["auto", "on", "off"],
  "Call jax.distributed.initialize: 'on' always, 'off' never, 'auto' with a coordinator or on a TPU pod.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0 (multi-process runs)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed() -> None:
  """jax.distributed.initialize from flags, or the JAX_* environment, or the TPU pod metadata."""
  import jax

  coordinator = _COORDINATOR.value or os.environ.get("JAX_COORDINATOR_ADDRESS")
  mode = _DISTRIBUTED.value
  on_tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ and "," in os.environ["TPU_WORKER_HOSTNAMES"]
  if mode == "off" or (mode == "auto" and coordinator is None and not on_tpu_pod):
    return
  kwargs = {}
  if coordinator is not None:
    num = _NUM_PROCESSES.value or int(os.environ.get("JAX_NUM_PROCESSES", "0")) or None
    pid = _PROCESS_ID.value if _PROCESS_ID.value is not None else os.environ.get("JAX_PROCESS_ID")
    if num is None or pid is None:
      raise ValueError(
        f"coordinator_address={coordinator!r} needs num_processes and process_id (got {num!r} and {pid!r})"
      )
    kwargs = dict(coordinator_address=coordinator, num_processes=int(num), process_id=int(pid))
  jax.distributed.initialize(**kwargs)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.basicConfig(
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    stream=sys.stdout,
    force=True,
  )
  # orbax and tfds log every file operation at INFO, some of it from their own threads.
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("absl").setLevel(logging.WARNING)
  initialize_distributed()
  from fsq.train.loop import train_and_evaluate
  from fsq.train.validate import validate_config

  config = _CONFIG.value
  validate_config(config)
  train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
