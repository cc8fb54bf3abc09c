"""UViM's output representations of the three dense tasks: targets, losses, predictions, metric statistics.

They follow big_vision's ``big_vision/trainers/proj/uvim/{depth,panoptic,colorization}_task.py``:

* Depth: y = one-hot of ``floor((d - min_depth) / (max_depth - min_depth) * num_bins)`` clipped to
  [0, num_bins - 1] (256 bins); the base model outputs num_bins logits per pixel; loss = per-pixel
  softmax cross-entropy, zero on pixels of bin 0 (big_vision: "do not train on the closest class", where
  NYU stores missing depth as 0), averaged over all pixels. Prediction = the centre of the argmax bin
  (big_vision: ``argmax + 0.5``, not the expectation). Metric: ``DepthMetrics``' per-image RMSE, abs-rel,
  delta_k over ``min_depth < gt < max_depth``, without crop (``depth_metric_sums``, inside jit).
  big_vision (NYU): [1e-3, 10] m. The synthetic scenes' z-depths lie in about [1.5, 10.8] m (camera
  1.2-2 m high, wall 7-10 m away, pitch up to 25 degrees), so their configs use [1e-3, 12] m: 4.7 cm bins.
* Panoptic: y = concat(one-hot semantic (num_classes), one-hot instance (max_instances)); void pixels
  (a label outside [0, num_classes)) have an all-zero semantic one-hot. The model outputs both logit
  sets; loss = the sum of the two per-pixel cross-entropies, averaged over pixels. Prediction
  (``prediction``): "instance_vote" is big_vision's rule (the argmax instance per pixel, then one class
  per instance, the argmax of its summed semantic logits), right where every segment, stuff included, has
  its own instance id, as in big_vision's COCO; "per_pixel" takes the two argmaxes independently, for the
  synthetic scenes, whose stuff all has instance 0 (one vote would give all stuff one class).
  Metric: PQ, its statistics computed inside the evaluation step by ``panoptic_stats`` (the loop's steps
  are jitted and sharded; a host callback there deadlocked the 8-device CPU test mesh), reported by
  ``PanopticQuality``.
* Colorization: x = the grey image (luma 0.299 R + 0.587 G + 0.114 B, as ``tf.image.rgb_to_grayscale``,
  repeated to 3 channels), y = the colour image in [-1, 1]; output 3 channels; loss = squared error
  averaged over pixels and channels (big_vision); prediction = output clipped to [-1, 1]. Metric here:
  MSE and the mean per-image PSNR (big_vision); the paper's FID-5k needs the samples and ``fsq.evals``
  (``predict`` is the hook).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fsq.evals.dense_metrics import PanopticQuality

LUMA = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------------------------- depth


def depth_to_bins(depth: jax.Array, num_bins: int, min_depth: float, max_depth: float) -> jax.Array:
  """Depth (...) float metres -> int32 bins ``floor((d - min) / (max - min) * num_bins)`` in [0, num_bins)."""
  scaled = (depth - min_depth) / (max_depth - min_depth) * num_bins
  return jnp.clip(jnp.floor(scaled), 0, num_bins - 1).astype(jnp.int32)


def bins_to_depth(bins: jax.Array, num_bins: int, min_depth: float, max_depth: float) -> jax.Array:
  """Int bins (...) -> float32 bin centres ``(b + 0.5) / num_bins * (max - min) + min`` in metres."""
  return (bins.astype(jnp.float32) + 0.5) / num_bins * (max_depth - min_depth) + min_depth


def depth_loss(logits: jax.Array, bins: jax.Array) -> jax.Array:
  """Per-example loss (B,): cross-entropy of logits (B, H, W, K) against bins (B, H, W), zero where the
  bin is 0 (big_vision), averaged over all H * W pixels."""
  per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), bins)
  return jnp.mean(per_pixel * (bins != 0), axis=(1, 2))


def jet(values: jax.Array) -> jax.Array:
  """The jet colour map: values (...) in [0, 1] -> RGB (..., 3) in [-1, 1] (blue near 0, red near 1)."""
  t = jnp.clip(values, 0.0, 1.0)[..., None]
  centres = jnp.array([0.75, 0.5, 0.25])  # red, green, blue peaks
  return jnp.clip(1.5 - jnp.abs(4.0 * (t - centres)), 0.0, 1.0) * 2.0 - 1.0


def depth_metric_sums(
  pred: jax.Array, gt: jax.Array, mask: jax.Array, min_depth: float, max_depth: float
) -> jax.Array:
  """``DepthMetrics(min_depth, max_depth, crop=None)``'s statistics inside jit, (7,) float32: sums over the
  masked-in images with a valid pixel of per-image [RMSE, abs-rel, delta_1..3], then the number of such
  images and of masked-in images without a valid pixel. pred, gt (B, H, W) metres; mask (B,)."""
  valid = (gt > min_depth) & (gt < max_depth)
  n = jnp.sum(valid, axis=(1, 2))
  safe_gt, safe_pred = jnp.where(valid, gt, 1.0), jnp.where(pred > 0, pred, 1.0)
  ratio = jnp.maximum(pred / safe_gt, safe_gt / safe_pred)
  per_pixel = [jnp.square(pred - gt), jnp.abs(pred - gt) / safe_gt]
  per_pixel += [(pred > 0) & (ratio < 1.25**k) for k in (1, 2, 3)]
  means = jnp.stack([jnp.sum(v * valid, axis=(1, 2)) for v in per_pixel], -1) / jnp.maximum(n, 1)[:, None]
  means = means.at[:, 0].set(jnp.sqrt(means[:, 0]))
  counted = mask * (n > 0)
  skipped = jnp.sum(mask * (n == 0))
  return jnp.concatenate([jnp.sum(means * counted[:, None], 0), jnp.stack([jnp.sum(counted), skipped])])


@dataclasses.dataclass(frozen=True)
class DepthRepresentation:
  """Depth as ``num_bins`` classes over [min_depth, max_depth] (see the module docstring)."""

  num_bins: int = 256
  min_depth: float = 1e-3
  max_depth: float = 10.0

  @property
  def input_channels(self) -> int:
    return self.num_bins

  @property
  def output_channels(self) -> int:
    return self.num_bins

  def context(self, images: jax.Array) -> jax.Array:
    """The model's image input x: the image itself, (B, H, W, 3)."""
    return images

  def target(self, batch: dict) -> jax.Array:
    """y for the oracle: (B, H, W, num_bins) float32 one-hot bins of ``batch["depth"]`` (B, H, W)."""
    return jax.nn.one_hot(self._bins(batch), self.num_bins)

  def _bins(self, batch: dict) -> jax.Array:
    return depth_to_bins(batch["depth"], self.num_bins, self.min_depth, self.max_depth)

  def loss(self, outputs: jax.Array, batch: dict) -> jax.Array:
    """Per-example loss (B,) of outputs (B, H, W, num_bins)."""
    return depth_loss(outputs, self._bins(batch))

  def predict(self, outputs: jax.Array) -> jax.Array:
    """Depth (B, H, W) float32 metres: the centre of the argmax bin."""
    return bins_to_depth(jnp.argmax(outputs, -1), self.num_bins, self.min_depth, self.max_depth)

  def eval_sums(self, outputs: jax.Array, batch: dict, mask: jax.Array) -> dict[str, jax.Array]:
    """``depth_sums`` (7,): ``depth_metric_sums`` of the argmax-bin prediction."""
    sums = depth_metric_sums(self.predict(outputs), batch["depth"], mask, self.min_depth, self.max_depth)
    return {"depth_sums": sums}

  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    s = np.asarray(sums["depth_sums"], np.float64)
    n = max(s[5], 1.0)
    names = ("rmse", "abs_rel", "delta1", "delta2", "delta3")
    return {
      **{f"depth/{k}": float(v / n) for k, v in zip(names, s[:5], strict=True)},
      "depth/skipped": float(s[6]),
    }

  def visualize(self, values: jax.Array) -> jax.Array:
    """Depth (B, H, W) metres -> (B, H, W, 3) jet colours in [-1, 1] over [min_depth, max_depth]."""
    return jet((values - self.min_depth) / (self.max_depth - self.min_depth))

  def ground_truth(self, batch: dict) -> jax.Array:
    return batch["depth"]


# -------------------------------------------------------------------------------------------- panoptic


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


def _segment_ids(semantic, instance, num_classes, max_instances, is_thing, void_label):
  """(B, H, W) maps -> (B, H * W) segment ids ``class * max_instances + instance`` in [0, K), K =
  num_classes * max_instances, and K on void pixels (the class ``void_label``, which may lie inside
  [0, num_classes) as COCO's 0 does, or any class outside that range); stuff uses instance 0."""
  void = (semantic == void_label) | (semantic < 0) | (semantic >= num_classes)
  cls = jnp.clip(semantic, 0, num_classes - 1)
  inst = jnp.where(is_thing[cls], jnp.clip(instance, 0, max_instances - 1), 0)
  key = jnp.where(void, num_classes * max_instances, cls * max_instances + inst)
  return key.reshape(key.shape[0], -1)


def _image_panoptic_stats(gt, pred, num_classes, max_instances):
  """One image's (4, num_classes, max_instances) TP, FP, FN, matched-IoU sums from segment ids (P,).

  Only segments of the same class can match, so overlaps are counted per class: a histogram over
  (class, gt instance, predicted instance) of the pixels whose two segments share a class, size
  num_classes * max_instances^2 (1.3M bins for COCO), never a K x K matrix."""
  c, i = num_classes, max_instances
  k = c * i
  gt_area = jnp.zeros(k + 1).at[gt].add(1.0)[:k].reshape(c, i)
  pred_area = jnp.zeros(k + 1).at[pred].add(1.0)[:k].reshape(c, i)
  on_void = jnp.zeros(k + 1).at[jnp.where(gt == k, pred, k)].add(1.0)[:k].reshape(c, i)
  same = (gt < k) & (pred < k) & (gt // i == pred // i)
  pair = jnp.where(same, gt * i + pred % i, k * i)  # (class, gt instance, predicted instance)
  intersection = jnp.zeros(k * i + 1).at[pair].add(1.0)[: k * i].reshape(c, i, i)
  union = gt_area[:, :, None] + pred_area[:, None, :] - intersection - on_void[:, None, :]
  iou = intersection / jnp.maximum(union, 1.0)
  matched = iou > 0.5
  tp = jnp.sum(matched, 2)
  iou_sum = jnp.sum(matched * iou, 2)
  fn = (gt_area > 0) & ~jnp.any(matched, 2)
  fp = (pred_area > 0) & ~jnp.any(matched, 1) & (on_void <= 0.5 * pred_area)
  return jnp.stack([tp, fp, fn, iou_sum]).astype(jnp.float32)


def panoptic_stats(
  pred_semantic: jax.Array,
  pred_instance: jax.Array,
  gt_semantic: jax.Array,
  gt_instance: jax.Array,
  mask: jax.Array,
  num_classes: int,
  max_instances: int,
  thing_classes: tuple[int, ...],
  void_label: int,
) -> jax.Array:
  """``PanopticQuality``'s statistics inside jit, (4, num_classes) float32: TP, FP, FN and the sum of
  matched IoUs per class over the masked-in images (the void class's entry stays 0). Maps (B, H, W) int;
  mask (B,). Void is the semantic label ``void_label`` (in the ground truth: removed from unions, and
  excuses predictions lying mostly on it; in the prediction: no segment) and any label outside
  [0, num_classes); instance ids must lie in [0, max_instances). Memory per image is
  num_classes * max_instances^2 histogram bins (5 MB at COCO's 134 x 100), so the statistics stay in the
  jitted, sharded evaluation step at paper scale too.
  """
  is_thing = jnp.zeros(num_classes, bool).at[jnp.asarray(thing_classes, jnp.int32)].set(True)
  args = (num_classes, max_instances, is_thing, void_label)
  pred = _segment_ids(pred_semantic, pred_instance, *args)
  gt = _segment_ids(gt_semantic, gt_instance, *args)
  per_image = jax.vmap(lambda g, p: _image_panoptic_stats(g, p, num_classes, max_instances))(gt, pred)
  return jnp.einsum("bsci,b->sc", per_image, mask.astype(jnp.float32))


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
    stats = np.asarray(sums["pq_stats"], np.float64)
    m = self._accumulator()
    m.tp, m.fp, m.fn = (np.rint(s).astype(np.int64) for s in stats[:3])
    m.iou_sum = stats[3]
    result = m.result()
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


# ---------------------------------------------------------------------------------------- colorization


def to_grey(images: jax.Array) -> jax.Array:
  """(B, H, W, 3) RGB in [-1, 1] -> (B, H, W, 3) luma repeated in the 3 channels."""
  luma = images @ jnp.asarray(LUMA, images.dtype)
  return jnp.repeat(luma[..., None], 3, axis=-1)


@dataclasses.dataclass(frozen=True)
class ColorizationRepresentation:
  """Colour from grey: x = grey image, y = colour image, L2 loss."""

  input_channels: ClassVar[int] = 3
  output_channels: ClassVar[int] = 3

  def context(self, images: jax.Array) -> jax.Array:
    return to_grey(images)

  def target(self, batch: dict) -> jax.Array:
    return batch["image"]

  def loss(self, outputs: jax.Array, batch: dict) -> jax.Array:
    return jnp.mean(jnp.square(outputs.astype(jnp.float32) - batch["image"]), axis=(1, 2, 3))

  def predict(self, outputs: jax.Array) -> jax.Array:
    """(B, H, W, 3) colours in [-1, 1]: the hook for FID on the predictions."""
    return jnp.clip(outputs, -1.0, 1.0)

  def eval_sums(self, outputs: jax.Array, batch: dict, mask: jax.Array) -> dict[str, jax.Array]:
    """Sums over the valid images of each image's squared error and PSNR (peak-to-peak 2 in [-1, 1])."""
    per_example = jnp.mean(jnp.square(self.predict(outputs) - batch["image"]), axis=(1, 2, 3))
    psnr = 10 * jnp.log10(4.0 / jnp.maximum(per_example, 1e-12))
    return {"color_squared_error": jnp.sum(per_example * mask), "color_psnr": jnp.sum(psnr * mask)}

  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    """``color/mse``: the mean squared error; ``color/psnr``: the mean of the images' PSNRs (big_vision's
    PSNR evaluator), not the PSNR of the mean error."""
    count = max(float(sums["count"]), 1.0)
    return {
      "color/mse": float(sums["color_squared_error"]) / count,
      "color/psnr": float(sums["color_psnr"]) / count,
    }

  def visualize(self, values: jax.Array) -> jax.Array:
    return values

  def ground_truth(self, batch: dict) -> jax.Array:
    return batch["image"]


class Representation(Protocol):
  """What the UViM tasks need of a dense task (see the three representations above)."""

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
