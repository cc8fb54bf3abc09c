"""Train from a config: the one entry point, on a laptop CPU, a GPU or every worker of a TPU pod.

  python -m scripts.train --config configs/autoencoder.py:quantizer=fsq --workdir runs/fsq \\
      --config.num_train_steps=2000 --config.quantizer.levels='(8, 6, 5)'

Multi-process: pass --coordinator_address, --num_processes and --process_id (or set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID); on TPU hosts jax finds them itself (--distributed=auto; see
fsq/train/distributed.py).
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from fsq.train import distributed

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file, optionally with :ARG.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and images.")
_DISTRIBUTED = flags.DEFINE_enum(
  "distributed",
  "auto",
  list(distributed.MODES),
  "Call jax.distributed.initialize: 'on' always, 'off' never, 'auto' with a coordinator or on a TPU host.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0 (multi-process runs)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.log_to_stdout()
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from fsq.tasks import train_and_evaluate
  from fsq.tasks.validate import validate_config

  config = _CONFIG.value
  validate_config(config)
  train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
