"""UViM's output representations of the dense tasks: targets, losses, predictions, metric statistics.

One module per task (``depth``, ``panoptic``, ``colorization``), each following big_vision's
``big_vision/trainers/proj/uvim/<task>_task.py``; their metric kernels, which must match the numpy
accumulators, live with those in ``fsq.evals.dense_metrics``. A new dense task is a new module with a
class that has the ``Representation`` methods.
"""

from __future__ import annotations

from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from fsq.tasks.dense.colorization import ColorizationRepresentation
from fsq.tasks.dense.depth import DepthRepresentation
from fsq.tasks.dense.panoptic import PanopticRepresentation

__all__ = [
  "ColorizationRepresentation",
  "DepthRepresentation",
  "PanopticRepresentation",
  "Representation",
  "side_by_side",
]


class Representation(Protocol):
  """What the UViM tasks need of a dense task (as the depth, panoptic and colorization modules define it)."""

  input_channels: int
  output_channels: int

  def context(self, images: jax.Array) -> jax.Array: ...
  def target(self, batch: dict) -> jax.Array: ...
  def loss(self, outputs: jax.Array, batch: dict) -> jax.Array: ...
  def predict(self, outputs: jax.Array) -> jax.Array: ...
  def eval_sums(self, outputs: jax.Array, batch: dict, mask: jax.Array) -> dict[str, jax.Array]: ...
  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]: ...
  def visualize(self, values: jax.Array) -> jax.Array: ...
  def ground_truth(self, batch: dict) -> jax.Array: ...


def side_by_side(representation: Representation, batch: dict, outputs: jax.Array, x: jax.Array) -> jax.Array:
  """(N, H, 3 W, 3) in [-1, 1]: model input x | target | prediction, per example."""
  target = representation.visualize(representation.ground_truth(batch))
  prediction = representation.visualize(representation.predict(outputs))
  return jnp.clip(jnp.concatenate([x, target, prediction], axis=2), -1.0, 1.0)
