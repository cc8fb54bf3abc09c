"""Checkpoints with orbax: the training state and the data iterator, saved atomically and asynchronously.

orbax writes each step into a temporary directory and renames it when complete (on Cloud Storage, which
cannot rename, it marks a finished step with a commit file instead), so a run killed in the
middle of a save leaves the previous checkpoint as the latest readable one; temporary directories are
ignored on restore. Restoring takes the target shardings, so a run can resume on a different mesh.

A replicated array is written in slices, one per replica, so that the replicas share the upload
(orbax's replica-parallel saving), but only where each slice holds at least ``MIN_REPLICA_SLICE_BYTES``:
cutting an array takes one compiled slice program per shape and replica (on a state of tiny arrays
replicated over 8 devices, 128 programs: a two-step run of the tiny tokenizer took 27 s with them and
18 s without), and a slice under 1 MiB uploads no faster than the whole array from one replica.
"""

from __future__ import annotations

from pathlib import Path

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint._src.metadata import array_metadata_store  # orbax's default; no public name

from fsq.files import is_cloud, run_path


def _directory(path: str | Path) -> epath.Path:
  """A checkpoint directory as orbax wants it: absolute when local, a ``gs://`` URL as it is."""
  path = run_path(path, "checkpoint directory")
  return path if is_cloud(path) else path.absolute()


MIN_REPLICA_SLICE_BYTES = 1 << 20


def _state_handler() -> ocp.PyTreeCheckpointHandler:
  """The handler of the training state: orbax's default handlers, its jax.Array handler with the same
  per-host array metadata store but replica-parallel saving of slices of MIN_REPLICA_SLICE_BYTES or more."""
  handlers = ocp.type_handlers
  arrays = handlers.ArrayHandler(
    min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
    array_metadata_store=array_metadata_store.Store(),
  )
  defaults = [(t, handlers.get_type_handler(t)) for t in (int, float, bytes, np.number, np.ndarray, str)]
  registry = handlers.create_type_handler_registry(*defaults, (jax.Array, arrays))
  return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def _restore_args(target):
  """Orbax's restore arguments for a tree of ShapeDtypeStructs: each array placed with its sharding."""
  return jax.tree.map(lambda t: ocp.ArrayRestoreArgs(sharding=t.sharding), target)


def abstract_with_shardings(abstract_state, shardings):
  """ShapeDtypeStructs carrying the target shardings, for restoring onto a (possibly new) mesh."""
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, shardings
  )


class Checkpointer:
  """Saves and restores ``state`` (a pytree of global arrays) and a Grain data iterator per step.

  Args:
    directory: where the step directories go (created if missing).
    max_to_keep: keep the newest max_to_keep checkpoints.
    async_save: write in a background thread (the device-to-host copy happens before save returns,
      so the caller may donate or overwrite the state right after).
  """

  def __init__(self, directory: str | Path, max_to_keep: int = 3, async_save: bool = True):
    if max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
    )
    self.directory = _directory(directory)
    handlers, state = ocp.handlers.DefaultCheckpointHandlerRegistry(), _state_handler()
    for args in (ocp.args.PyTreeSave, ocp.args.PyTreeRestore):
      handlers.add("state", args, state)
    self.manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=handlers)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, data_iterator=None) -> None:
    items = {"state": ocp.args.PyTreeSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self.manager.save(int(step), args=ocp.args.Composite(**items), force=True)

  def restore(self, step: int, abstract_state, data_iterator=None):
    """The state at ``step`` placed as ``abstract_state`` says (ShapeDtypeStructs with shardings);
    ``data_iterator`` is moved to the position saved with it."""
    items = {"state": ocp.args.PyTreeRestore(item=abstract_state, restore_args=_restore_args(abstract_state))}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(int(step), args=ocp.args.Composite(**items))
    return restored["state"]

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_to_host(step_dir: str | Path, keys: tuple[str, ...] | None = None) -> dict:
  """The state saved in a step directory as host numpy arrays, whatever mesh and process count wrote it
  (for reading another run's state, e.g. a frozen tokenizer in stage II). Every process reads it; arrays
  on the host, unlike arrays committed to one device, can then be placed on a mesh that spans several
  processes. ``keys``: only these top-level entries of the state (a frozen stage I needs its parameters,
  not its optimizer moments or discriminator); None: all of it."""
  path = _directory(step_dir) / "state"
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  metadata = ocp.StandardCheckpointer().metadata(path).item_metadata
  if keys is not None:
    missing = sorted(set(keys) - set(metadata.keys()))
    if missing:
      raise ValueError(f"the state in {path} has no {missing}; it has {sorted(metadata.keys())}")
    metadata = {k: metadata[k] for k in keys}
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
  partial = keys is not None
  args = ocp.args.PyTreeRestore(item=target, restore_args=_restore_args(target), partial_restore=partial)
  with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
    return jax.device_get(checkpointer.restore(path, args=args))


def saved_steps(directory: str | Path) -> list[int]:
  """The steps of the finished checkpoints in ``directory``, ascending (read only: nothing is created)."""
  manager = ocp.CheckpointManager(_directory(directory), options=ocp.CheckpointManagerOptions(read_only=True))
  return sorted(manager.all_steps())


def saved_step(directory: str | Path, step: int) -> int:
  """``step`` when ``directory`` holds its finished checkpoint, its newest step when ``step`` is 0; a
  ValueError naming the directory otherwise."""
  steps = saved_steps(directory)
  if not steps:
    raise ValueError(f"no checkpoint in {directory}")
  if step and step not in steps:
    raise ValueError(f"no checkpoint of step {step} in {directory}; it has steps {steps}")
  return step or steps[-1]


def restore_step_to_host(directory: str | Path, step: int, keys: tuple[str, ...] | None = None) -> dict:
  """``restore_to_host`` of checkpoint ``step`` in ``directory`` (0: the newest one)."""
  return restore_to_host(_directory(directory) / str(saved_step(directory, step)), keys)
