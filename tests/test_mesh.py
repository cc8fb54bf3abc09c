"""Mesh shapes and sharding rules against hand-worked cases."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from fsq.train import mesh as mesh_lib


def test_mesh_shape_resolves_the_rest_and_rejects_bad_sizes():
  assert mesh_lib.mesh_shape(-1, 2, 1, 8) == (4, 2, 1)
  assert mesh_lib.mesh_shape(2, -1, 2, 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="only one mesh axis"):
    mesh_lib.mesh_shape(-1, -1, 1, 8)
  with pytest.raises(ValueError, match="not divisible by 3"):
    mesh_lib.mesh_shape(-1, 3, 1, 8)
  with pytest.raises(ValueError, match=r"mesh\.fsdp"):
    mesh_lib.mesh_shape(-1, 0, 1, 8)


def test_state_shardings_follow_rules_then_fsdp_then_replicate():
  mesh = mesh_lib.make_mesh(2, 2, 2)
  state = {
    "dense": {"kernel": jax.ShapeDtypeStruct((64, 1024), np.float32)},  # 65536 elements: fsdp on axis 1
    "odd": jax.ShapeDtypeStruct((63, 1025), np.float32),  # no axis divisible by 2: replicated
    "small": jax.ShapeDtypeStruct((8,), np.float32),  # below the size threshold: replicated
    "attention": {"query": jax.ShapeDtypeStruct((16, 16), np.float32)},
  }
  rules = [(r"attention.*query", PartitionSpec(None, "model"))]
  shardings = mesh_lib.state_shardings(state, mesh, rules, fsdp_min_size=1000)
  assert shardings["dense"]["kernel"].spec == PartitionSpec(None, "fsdp")
  assert shardings["odd"].spec == PartitionSpec()
  assert shardings["small"].spec == PartitionSpec()
  assert shardings["attention"]["query"].spec == PartitionSpec(None, "model")
  with pytest.raises(ValueError, match="rule"):
    mesh_lib.state_shardings(state, mesh, [("small", PartitionSpec("data", "model"))])
