"""Device mesh, sharding rules for the training state, and host-local to global batches.

The mesh has three named axes: ``data`` (batch), ``fsdp`` (batch, and parameters sharded over it),
``model`` (tensor parallelism by explicit rules). The batch is split over ``("data", "fsdp")``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(data: int, fsdp: int, model: int, num_devices: int) -> tuple[int, int, int]:
  """Resolves one -1 ("the rest of the devices") and checks the product equals num_devices."""
  sizes = {"data": data, "fsdp": fsdp, "model": model}
  for name, size in sizes.items():
    if not isinstance(size, int) or (size < 1 and size != -1):
      raise ValueError(f"mesh.{name} must be a positive integer or -1, got {size!r}")
  rest = [name for name, size in sizes.items() if size == -1]
  if len(rest) > 1:
    raise ValueError(f"only one mesh axis may be -1, got {sizes}")
  known = math.prod(size for size in sizes.values() if size != -1)
  if rest:
    if num_devices % known:
      raise ValueError(f"mesh {sizes}: {num_devices} devices are not divisible by {known}")
    sizes[rest[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, there are {num_devices}")
  return sizes["data"], sizes["fsdp"], sizes["model"]


def make_mesh(
  data: int = -1, fsdp: int = 1, model: int = 1, devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """A (data, fsdp, model) mesh over all devices (of all processes), with Auto axis types."""
  devices = list(devices) if devices is not None else jax.devices()
  shape = mesh_shape(data, fsdp, model, len(devices))
  if devices == jax.devices():
    return jax.make_mesh(shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  return Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over data and fsdp; other axes replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def batch_shards(mesh: Mesh) -> int:
  """How many ways a batch is split (the data and fsdp axes)."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def _fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> PartitionSpec:
  """Shards the largest axis divisible by fsdp, for arrays of at least min_size elements."""
  if fsdp == 1 or math.prod(shape) < min_size:
    return PartitionSpec()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return PartitionSpec(*spec)
  return PartitionSpec()


def state_shardings(
  abstract_state,
  mesh: Mesh,
  rules: Sequence[tuple[str, PartitionSpec]] = (),
  fsdp_min_size: int = 2**18,
):
  """NamedShardings for every leaf of a (possibly abstract) pytree.

  A leaf takes the PartitionSpec of the first rule whose regex matches its path (``jax.tree_util.keystr``,
  e.g. ``.params['decoder']['Conv_0']['kernel']``; optimizer moments carry the parameter path too);
  otherwise large leaves are sharded over ``fsdp`` along their largest divisible axis, and the rest
  is replicated.
  """
  compiled = [(re.compile(pattern), spec) for pattern, spec in rules]
  fsdp = mesh.shape["fsdp"]

  def one(path, leaf):
    name = jax.tree_util.keystr(path)
    shape = tuple(getattr(leaf, "shape", ()))
    for pattern, spec in compiled:
      if pattern.search(name):
        if len(spec) > len(shape):
          raise ValueError(f"sharding rule {pattern.pattern!r} gives {spec} to {name} of shape {shape}")
        return NamedSharding(mesh, spec)
    return NamedSharding(mesh, _fsdp_spec(shape, fsdp, fsdp_min_size))

  return jax.tree_util.tree_map_with_path(one, abstract_state)


def global_batch(local_batch, mesh: Mesh):
  """Host-local numpy batch (per-process rows) -> global jax.Arrays sharded by batch_sharding."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def global_rows(local: np.ndarray) -> np.ndarray:
  """A per-row host array of this process's rows, (B, ...), as the whole global batch's, (P * B, ...):
  process p's rows are rows p * B .. (p + 1) * B - 1, as ``global_batch`` lays them out."""
  local = np.asarray(local)
  if jax.process_count() == 1:
    return local
  return np.asarray(multihost_utils.process_allgather(local, tiled=True))


def local_rows(global_arrays, mesh: Mesh):
  """The inverse of ``global_batch``: this process's rows of batch-sharded global arrays, as numpy (in a
  multi-process job the global array is not addressable here as a whole)."""
  spec = batch_sharding(mesh).spec
  return jax.tree.map(
    lambda x: np.asarray(multihost_utils.global_array_to_host_local_array(x, mesh, spec)), global_arrays
  )
