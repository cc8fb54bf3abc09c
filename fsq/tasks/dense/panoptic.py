"""UViM's panoptic task, as big_vision's ``panoptic_task.py``.

y = concat(one-hot semantic (num_classes), one-hot instance (max_instances)); void pixels (a label
outside [0, num_classes)) have an all-zero semantic one-hot. The model outputs both logit sets; loss =
the sum of the two per-pixel cross-entropies, averaged over pixels. Prediction (``prediction``):
"instance_vote" is big_vision's rule (the argmax instance per pixel, then one class per instance, the
argmax of its summed semantic logits), right where every segment, stuff included, has its own instance
id, as in big_vision's COCO; "per_pixel" takes the two argmaxes independently, for the synthetic scenes,
whose stuff all has instance 0 (one vote would give all stuff one class). Metric: PQ, its statistics
computed inside the evaluation step by ``fsq.evals.dense_metrics.panoptic_stats`` (the loop's steps are
jitted and sharded; a host callback there deadlocked the 8-device CPU test mesh), reported by
``PanopticQuality``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fsq.evals.dense_metrics import PanopticQuality, panoptic_stats


def panoptic_loss(
  semantic_logits: jax.Array, instance_logits: jax.Array, semantic: jax.Array, instance: jax.Array
) -> jax.Array:
  """Per-example loss (B,): semantic plus instance cross-entropy per pixel, averaged over H * W.

  Logits (B, H, W, C) and (B, H, W, I); labels int (B, H, W). A label outside the logits' range (void)
  has an all-zero target and contributes 0, as big_vision's one-hot targets do.
  """
  total = 0.0
  for logits, labels in ((semantic_logits, semantic), (instance_logits, instance)):
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    total = total + optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
  return jnp.mean(total, axis=(1, 2))


PANOPTIC_PREDICTIONS = ("per_pixel", "instance_vote")


def instance_vote(semantic_logits: jax.Array, instance_logits: jax.Array) -> jax.Array:
  """big_vision's panoptic prediction: (B, H, W, 2) int32 semantic class and instance id.

  Each pixel takes its argmax instance; each predicted instance then takes one class, the argmax of the
  semantic logits (B, H, W, C) summed over its pixels, so that no instance is split into segments of
  several classes. Instance logits (B, H, W, I).
  """
  instance = jnp.argmax(instance_logits, -1)
  masks = jax.nn.one_hot(instance, instance_logits.shape[-1], dtype=semantic_logits.dtype)
  votes = jnp.einsum("bhwc,bhwi->bic", semantic_logits, masks)
  semantic = jnp.take_along_axis(jnp.argmax(votes, -1), instance.reshape(instance.shape[0], -1), 1)
  return jnp.stack([semantic.reshape(instance.shape), instance], -1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class PanopticRepresentation:
  """Panoptic maps as one-hot semantics (num_classes) and instances (max_instances)."""

  num_classes: int
  max_instances: int
  thing_classes: tuple[int, ...]
  void_label: int = -1
  prediction: str = "per_pixel"

  def __post_init__(self):
    if self.prediction not in PANOPTIC_PREDICTIONS:
      raise ValueError(f"panoptic prediction must be one of {PANOPTIC_PREDICTIONS}, got {self.prediction!r}")

  @property
  def input_channels(self) -> int:
    return self.num_classes + self.max_instances

  @property
  def output_channels(self) -> int:
    return self.num_classes + self.max_instances

  def context(self, images: jax.Array) -> jax.Array:
    return images

  def target(self, batch: dict) -> jax.Array:
    """y: (B, H, W, num_classes + max_instances) float32, one-hot semantic then one-hot instance."""
    semantic = jax.nn.one_hot(batch["semantic"], self.num_classes)
    return jnp.concatenate([semantic, jax.nn.one_hot(batch["instance"], self.max_instances)], -1)

  def loss(self, outputs: jax.Array, batch: dict) -> jax.Array:
    c = self.num_classes
    return panoptic_loss(outputs[..., :c], outputs[..., c:], batch["semantic"], batch["instance"])

  def predict(self, outputs: jax.Array) -> jax.Array:
    """(B, H, W, 2) int32 semantic class and instance id, by ``panoptic_prediction``."""
    c = self.num_classes
    if self.prediction == "instance_vote":
      return instance_vote(outputs[..., :c], outputs[..., c:])
    return jnp.stack([jnp.argmax(outputs[..., :c], -1), jnp.argmax(outputs[..., c:], -1)], -1).astype(
      jnp.int32
    )

  def _accumulator(self) -> PanopticQuality:
    return PanopticQuality(self.num_classes, self.thing_classes, self.void_label)

  def eval_sums(self, outputs: jax.Array, batch: dict, mask: jax.Array) -> dict[str, jax.Array]:
    """``pq_stats`` (4, num_classes): ``panoptic_stats`` of the argmax prediction."""
    pred = self.predict(outputs)
    stats = panoptic_stats(
      pred[..., 0],
      pred[..., 1],
      batch["semantic"],
      batch["instance"],
      mask,
      self.num_classes,
      self.max_instances,
      self.thing_classes,
      self.void_label,
    )
    return {"pq_stats": stats}

  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    result = self._accumulator().with_stats(sums["pq_stats"]).result()
    return {
      f"pq/{group.lower()}_{k}": result[group][k]
      for group in ("All", "Things", "Stuff")
      for k in ("pq", "sq", "rq")
    }

  def visualize(self, values: jax.Array) -> jax.Array:
    """(B, H, W, 2) semantic and instance ids -> (B, H, W, 3) in [-1, 1]: a colour per class, darker for
    higher instance ids; void is black."""
    palette = jnp.asarray(np.random.default_rng(0).uniform(-0.2, 1.0, (self.num_classes, 3)), jnp.float32)
    semantic, instance = values[..., 0], values[..., 1]
    valid = (semantic >= 0) & (semantic < self.num_classes)
    colour = palette[jnp.clip(semantic, 0, self.num_classes - 1)]
    shade = 1.0 - 0.6 * (instance % 4)[..., None] / 4
    return jnp.where(valid[..., None], colour * shade, -1.0)

  def ground_truth(self, batch: dict) -> jax.Array:
    return jnp.stack([batch["semantic"], batch["instance"]], -1)
