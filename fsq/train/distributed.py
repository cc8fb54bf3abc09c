"""Joining a multi-process job: when and how to call ``jax.distributed.initialize``.

Three ways a process learns its job: explicit flags or the ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` environment (GPU clusters, ``scripts.launch_local``); a Cloud
TPU VM, where jax reads the worker list and this worker's index from the TPU metadata, so
``initialize()`` is called without arguments on every TPU host (a Cloud TPU VM, unlike GKE, sets no
environment variable naming the workers); or neither, a single process. Orbax's multi-process
checkpoints need the distributed client, so a pod worker that skipped it would die at its first save.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
# Device files of TPU chips: /dev/accel* (v2-v4), /dev/vfio/* (v5e, v5p, v6e).
TPU_DEVICE_GLOBS = (("/dev", "accel*"), ("/dev/vfio", "[0-9]*"))


def on_tpu_host(environ: Mapping[str, str] = os.environ) -> bool:
  """True on a machine with TPU chips and libtpu: a Cloud TPU VM or a GKE TPU node."""
  if "TPU_WORKER_HOSTNAMES" in environ or "TPU_ACCELERATOR_TYPE" in environ:
    return True
  if importlib.util.find_spec("libtpu") is None:
    return False
  return any(any(Path(folder).glob(pattern)) for folder, pattern in TPU_DEVICE_GLOBS)


def initialize_arguments(
  mode: str,
  coordinator: str | None,
  num_processes: int | None,
  process_id: int | None,
  environ: Mapping[str, str] = os.environ,
  tpu: bool | None = None,
) -> dict | None:
  """The keyword arguments for ``jax.distributed.initialize``, or None to run as one process.

  mode: "on" always initialises, "off" never, "auto" with a coordinator (flag or environment) or on a
  TPU host (``tpu``; None: ``on_tpu_host``). A coordinator needs the process count and index."""
  if mode not in MODES:
    raise ValueError(f"distributed must be one of {MODES}, got {mode!r}")
  coordinator = coordinator or environ.get("JAX_COORDINATOR_ADDRESS")
  if mode == "off":
    return None
  if coordinator is None:
    if mode == "on" or (on_tpu_host(environ) if tpu is None else tpu):
      return {}
    return None
  num = num_processes or int(environ.get("JAX_NUM_PROCESSES", "0")) or None
  pid = process_id if process_id is not None else environ.get("JAX_PROCESS_ID")
  if num is None or pid is None:
    raise ValueError(
      f"coordinator_address={coordinator!r} needs num_processes and process_id (got {num!r} and {pid!r})"
    )
  return dict(coordinator_address=coordinator, num_processes=int(num), process_id=int(pid))


def initialize(
  mode: str = "auto",
  coordinator: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Calls ``jax.distributed.initialize`` as ``initialize_arguments`` says (before any other jax call),
  and logs which process of how many, with how many devices, this one is."""
  kwargs = initialize_arguments(mode, coordinator, num_processes, process_id)
  if kwargs is not None:
    import jax

    jax.distributed.initialize(**kwargs)
    log.info(
      "joined the job: process %d of %d processes, %d devices",
      jax.process_index(),
      jax.process_count(),
      jax.device_count(),
    )


def log_to_stdout() -> None:
  """A job's logs: INFO and above on stdout, one line each with the time and the logger; the per-file INFO
  chatter of absl, orbax and TFDS (some from their own threads) and jax's backend probing at WARNING."""
  import sys

  from absl import logging as absl_logging

  logging.basicConfig(
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    stream=sys.stdout,
    force=True,
  )
  absl_logging.set_verbosity(absl_logging.WARNING)
  for name in ("absl", "orbax", "jax._src.xla_bridge"):
    logging.getLogger(name).setLevel(logging.WARNING)
