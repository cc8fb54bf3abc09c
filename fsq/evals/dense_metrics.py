"""Metrics for UViM's dense tasks: panoptic quality (COCO panoptic) and NYU Depth v2 depth errors, as numpy
accumulators, and the jitted kernels that compute their statistics inside a sharded evaluation step
(``panoptic_stats``, ``depth_metric_sums``; tested equal to the accumulators).

Both are streaming accumulators: ``update`` adds images (in place, returns self), ``merge`` returns a new
accumulator holding two accumulators' statistics (from other evaluation shards or JAX processes, whose
public arrays can be gathered and summed the same way), and ``result`` reports. The statistics are sums
and counts, so the result does not depend on how the images were split.

Panoptic quality (Kirillov et al., 2019), as ``panopticapi.evaluation.pq_compute`` (the COCO panoptic API
that big_vision's UViM evaluator calls) computes it, from UViM's two-channel output:

* A panoptic map is a pair (semantic, instance) of (H, W) int maps. Pixels whose semantic label is
  ``void_label`` belong to no segment. A segment is the set of pixels sharing one (class, instance id)
  identity, connected or not; for stuff classes the instance id is ignored (one segment per class per
  image; ``stuff_by_instance`` below changes that). For thing classes every instance id, 0 included,
  names a segment.
* A predicted and a ground-truth (GT) segment of the same class match when IoU > 0.5 (so a match is
  unique). The union excludes the predicted segment's pixels on GT void:
  ``IoU = |P & G| / (|P| + |G| - |P & G| - |P & void_gt|)``.
  Predicted void pixels inside a GT segment count in |G| only.
* Unmatched GT segments are false negatives. An unmatched predicted segment is a false positive unless
  more than half of its area lies on GT void or on GT crowd regions of its own class.
* Crowd (``gt_crowd``, COCO's ``iscrowd`` segments): a GT crowd segment is never matched and never a false
  negative; predictions on it are excused as above. (Mapping crowd to void is not the same: void is also
  removed from the union of matched segments, crowd is not.)
* ``stuff_by_instance``: stuff segments are split by instance id too, as panopticapi's two-channel
  converter that big_vision uses does (its COCO gives every segment, stuff included, an instance id).
* Per class: PQ = sum IoU(TP) / (TP + FP/2 + FN/2), SQ = sum IoU(TP) / TP (0 when TP = 0), RQ =
  TP / (TP + FP/2 + FN/2). Classes with TP + FP + FN = 0 are left out of the means. PQ, SQ and RQ of
  "All", "Things" and "Stuff" are the means over the classes of each group (NaN for a group with no
  class left, where the COCO API would divide by zero). Values are fractions, not percentages.

Depth (NYU Depth v2), as big_vision's UViM evaluator (``evaluators/proj/uvim/nyu_depth.py``) computes it:
a pixel is valid when it lies in the evaluation crop and ``min_depth < gt < max_depth`` (strict;
missing depth is stored as 0); per image RMSE = sqrt(mean (pred - gt)^2), abs-rel = mean |pred - gt| / gt
and delta_k = fraction with max(pred / gt, gt / pred) < 1.25^k, over valid pixels, in metres; the
reported numbers are means over images of these per-image values. ``per_image=False`` pools all valid
pixels of all images instead (one RMSE over every pixel).
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np

# The crop the paper's numbers use: big_vision's ``nyu_eval_crop`` of NYU Depth v2's 480x640 images, rows
# 54:480, columns 41:601 (426x560), as ``fsq.data.dense_targets.NYU_EVAL_CROP`` cuts the evaluation splits.
NYU_EVAL_CROP = (54, 480, 41, 601)
# Eigen et al.'s crop, common elsewhere in the depth literature: rows 45:471, the same columns and size.
NYU_EIGEN_CROP = (45, 471, 41, 601)

_DELTA_ORDERS = (1, 2, 3)
_NAMES = ("rmse", "abs_rel", *[f"delta{k}" for k in _DELTA_ORDERS])


def _images(name: str, array) -> np.ndarray:
  """``array`` of shape (..., H, W) as (N, H, W): every leading index is one image."""
  array = np.asarray(array)
  if array.ndim < 2 or array.shape[-1] * array.shape[-2] == 0:
    raise ValueError(f"{name} must have shape (..., H, W) with H, W > 0, got {array.shape}")
  return array.reshape((-1, *array.shape[-2:]))


class PanopticQuality:
  """Panoptic quality accumulator: per-class TP, FP and FN counts and sums of matched IoUs.

  Args:
    num_classes: class ids are the integers in [0, num_classes) other than ``void_label``.
    thing_classes: the ids of the thing (countable) classes; every other class is stuff.
    void_label: the semantic label of unlabelled pixels (0 in big_vision's COCO panoptic data, whose
      classes are 1..133); it may lie inside or outside [0, num_classes).

  Attributes (all of shape (num_classes,), indexed by class id; the void entry stays 0):
    tp, fp, fn: int64 counts; iou_sum: float64 sum of the IoUs of matched pairs.
  """

  def __init__(
    self,
    num_classes: int,
    thing_classes: Iterable[int],
    void_label: int = 0,
    stuff_by_instance: bool = False,
  ):
    if num_classes < 1:
      raise ValueError(f"num_classes must be positive, got {num_classes}")
    self.num_classes = int(num_classes)
    self.void_label = int(void_label)
    self.stuff_by_instance = bool(stuff_by_instance)
    self.is_class = np.ones(self.num_classes, bool)
    if 0 <= self.void_label < self.num_classes:
      self.is_class[self.void_label] = False
    self.is_thing = np.zeros(self.num_classes, bool)
    for c in thing_classes:
      if not (0 <= c < self.num_classes and self.is_class[c]):
        raise ValueError(f"thing class {c} is not a class id in [0, {self.num_classes}) other than void")
      self.is_thing[c] = True
    self.tp = np.zeros(self.num_classes, np.int64)
    self.fp = np.zeros(self.num_classes, np.int64)
    self.fn = np.zeros(self.num_classes, np.int64)
    self.iou_sum = np.zeros(self.num_classes, np.float64)

  def _segments(self, name: str, semantic: np.ndarray, instance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment index per pixel (0 = void, 1..S) as a flat (H*W,) array, and each segment's (S,) class."""
    semantic = semantic.reshape(-1).astype(np.int64)
    instance = instance.reshape(-1).astype(np.int64)
    void = semantic == self.void_label
    bad = ~void & ((semantic < 0) | (semantic >= self.num_classes))
    if bad.any():
      raise ValueError(f"{name} semantic label {semantic[bad][0]} is neither a class nor void")
    cls = np.where(void, 0, semantic)
    inst = np.where(void | ~(self.is_thing[cls] | self.stuff_by_instance), 0, instance)
    inst = inst - inst.min()
    width = inst.max() + 1
    key = np.where(void, -1, cls * width + inst)
    keys, index = np.unique(key, return_inverse=True)
    if keys[0] != -1:  # No void pixel: shift so that segment indices start at 1.
      keys = np.concatenate([[-1], keys])
      index = index + 1
    return index.reshape(-1), keys[1:] // width

  def update(self, pred_semantic, pred_instance, gt_semantic, gt_instance, gt_crowd=None) -> PanopticQuality:
    """Adds images in place and returns self.

    Args:
      pred_semantic, pred_instance, gt_semantic, gt_instance: int arrays of one shape, (H, W) for one
        image or (..., H, W) for several (every leading index one image). Semantic labels are class ids
        or ``void_label``; instance ids are any integers (ignored on void pixels, and on stuff pixels
        unless ``stuff_by_instance``). Predictions must already be at the ground truth's resolution.
      gt_crowd: optional bool maps of the same shape, True on the pixels of GT crowd segments.
    """
    arrays = [pred_semantic, pred_instance, gt_semantic, gt_instance]
    names = ["pred_semantic", "pred_instance", "gt_semantic", "gt_instance"]
    arrays = [_images(n, a) for n, a in zip(names, arrays, strict=True)]
    if any(a.shape != arrays[0].shape for a in arrays):
      raise ValueError(f"panoptic maps must share one shape, got {[a.shape for a in arrays]}")
    if any(not np.issubdtype(a.dtype, np.integer) for a in arrays):
      raise ValueError(f"panoptic maps must be integer arrays, got {[a.dtype for a in arrays]}")
    crowd = np.zeros(arrays[0].shape, bool) if gt_crowd is None else _images("gt_crowd", gt_crowd)
    if crowd.shape != arrays[0].shape:
      raise ValueError(f"gt_crowd must have the maps' shape {arrays[0].shape}, got {crowd.shape}")
    for ps, pi, gs, gi, gc in zip(*arrays, crowd.astype(bool), strict=True):
      self._update_image(ps, pi, gs, gi, gc)
    return self

  def _update_image(
    self, ps: np.ndarray, pi: np.ndarray, gs: np.ndarray, gi: np.ndarray, gc: np.ndarray
  ) -> None:
    pred_index, pred_class = self._segments("predicted", ps, pi)
    gt_index, gt_class = self._segments("ground-truth", gs, gi)
    # A GT segment is crowd when its pixels are (crowd marks whole segments).
    gt_crowd = np.bincount(gt_index, gc.reshape(-1), minlength=len(gt_class) + 1)[1:] > 0
    n_pred, n_gt = len(pred_class), len(gt_class)
    # counts[g, p]: pixels in GT segment g and predicted segment p (index 0 = void on either side).
    counts = np.bincount(gt_index * (n_pred + 1) + pred_index, minlength=(n_gt + 1) * (n_pred + 1))
    counts = counts.reshape(n_gt + 1, n_pred + 1)
    intersection = counts[1:, 1:]
    pred_on_void = counts[0, 1:]
    pred_area = counts[:, 1:].sum(axis=0)
    gt_area = counts[1:, :].sum(axis=1)
    union = pred_area[None, :] + gt_area[:, None] - intersection - pred_on_void[None, :]
    iou = intersection / union
    same_class = gt_class[:, None] == pred_class[None, :]
    matched = same_class & (iou > 0.5) & ~gt_crowd[:, None]
    g, p = np.nonzero(matched)
    np.add.at(self.tp, gt_class[g], 1)
    np.add.at(self.iou_sum, gt_class[g], iou[g, p])
    np.add.at(self.fn, gt_class[~matched.any(axis=1) & ~gt_crowd], 1)
    on_crowd = np.sum(intersection * (same_class & gt_crowd[:, None]), axis=0)
    false_positive = ~matched.any(axis=0) & ((pred_on_void + on_crowd) / pred_area <= 0.5)
    np.add.at(self.fp, pred_class[false_positive], 1)

  SUMS = ("tp", "fp", "fn", "iou_sum")  # what merging adds up

  def merge(self, other: PanopticQuality) -> PanopticQuality:
    """A new accumulator holding the statistics of both; the class definitions must agree."""
    same = (
      self.void_label == other.void_label
      and self.stuff_by_instance == other.stuff_by_instance
      and np.array_equal(self.is_class, other.is_class)
      and np.array_equal(self.is_thing, other.is_thing)
    )
    if not same:
      raise ValueError("cannot merge panoptic accumulators with different classes, things or void label")
    merged = PanopticQuality(
      self.num_classes, np.flatnonzero(self.is_thing).tolist(), self.void_label, self.stuff_by_instance
    )
    merged.tp = self.tp + other.tp
    merged.fp = self.fp + other.fp
    merged.fn = self.fn + other.fn
    merged.iou_sum = self.iou_sum + other.iou_sum
    return merged

  def with_stats(self, stats) -> PanopticQuality:
    """A new accumulator with this one's classes holding ``stats`` (4, num_classes), the TP, FP, FN and
    matched-IoU sums that ``panoptic_stats`` computes (counts rounded to integers)."""
    stats = np.asarray(stats, np.float64)
    if stats.shape != (4, self.num_classes):
      raise ValueError(f"stats must have shape (4, {self.num_classes}), got {stats.shape}")
    made = PanopticQuality(
      self.num_classes, np.flatnonzero(self.is_thing).tolist(), self.void_label, self.stuff_by_instance
    )
    made.tp, made.fp, made.fn = (np.rint(s).astype(np.int64) for s in stats[:3])
    made.iou_sum = stats[3]
    return made

  def result(self) -> dict:
    """PQ, SQ and RQ of all classes and of the thing and stuff classes, and per class.

    Returns:
      {"All" | "Things" | "Stuff": {"pq", "sq", "rq": means over the group's classes with
      TP + FP + FN > 0 (NaN if none), "n": how many such classes}, "per_class": {class id: {"pq", "sq",
      "rq" (NaN for a class with TP + FP + FN = 0), "tp", "fp", "fn", "iou_sum"}}}.
    """
    denominator = self.tp + 0.5 * self.fp + 0.5 * self.fn
    counted = self.is_class & (self.tp + self.fp + self.fn > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
      pq = np.where(counted, self.iou_sum / denominator, np.nan)
      sq = np.where(counted, np.where(self.tp > 0, self.iou_sum / self.tp, 0.0), np.nan)
      rq = np.where(counted, self.tp / denominator, np.nan)
    out: dict = {}
    for group, member in [
      ("All", self.is_class),
      ("Things", self.is_thing),
      ("Stuff", self.is_class & ~self.is_thing),
    ]:
      keep = member & counted
      n = int(keep.sum())
      means = {
        k: float(v[keep].mean()) if n else float("nan") for k, v in [("pq", pq), ("sq", sq), ("rq", rq)]
      }
      out[group] = {**means, "n": n}
    out["per_class"] = {
      int(c): {
        "pq": float(pq[c]),
        "sq": float(sq[c]),
        "rq": float(rq[c]),
        "tp": int(self.tp[c]),
        "fp": int(self.fp[c]),
        "fn": int(self.fn[c]),
        "iou_sum": float(self.iou_sum[c]),
      }
      for c in np.flatnonzero(self.is_class)
    }
    return out


class DepthMetrics:
  """Depth error accumulator (metres): RMSE, abs-rel and delta_1..3, per image or over all pixels.

  Args:
    min_depth, max_depth: a pixel is valid when ``min_depth < gt < max_depth`` (NYU: 1e-3 and 10).
    crop: (top, bottom, left, right): only rows top:bottom and columns left:right are evaluated;
      ``NYU_EVAL_CROP`` (big_vision's, the default) for full 480x640 NYU images, None to evaluate the
      whole image, as the training loop does on maps the data adapter has already cut to that crop.
    per_image: True (big_vision's UViM evaluator): each metric is computed per image over its valid
      pixels, then averaged over images (images without a valid pixel are skipped, where big_vision
      would report NaN). False: computed once over the valid pixels of all images together.

  delta_k counts a pixel as accurate when max(pred / gt, gt / pred) < 1.25^k and pred > 0
  (big_vision's formula alone would count a negative prediction as accurate).

  Attributes (float64 sums, so that accumulators merge by adding):
    image_sums: (5,) sums over images of per-image [RMSE, abs-rel, delta_1, delta_2, delta_3].
    pixel_sums: (5,) sums over valid pixels of [squared error, relative error, 3 delta indicators].
    num_images: images with at least one valid pixel; num_pixels: valid pixels; num_skipped: images
      without a valid pixel.
  """

  def __init__(
    self,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    crop: tuple[int, int, int, int] | None = NYU_EVAL_CROP,
    per_image: bool = True,
  ):
    if not min_depth < max_depth:
      raise ValueError(f"min_depth {min_depth} must be below max_depth {max_depth}")
    if crop is not None and not (0 <= crop[0] < crop[1] and 0 <= crop[2] < crop[3]):
      raise ValueError(f"crop must be (top, bottom, left, right) with top < bottom, left < right; got {crop}")
    self.min_depth = float(min_depth)
    self.max_depth = float(max_depth)
    self.crop = None if crop is None else tuple(int(c) for c in crop)
    self.per_image = bool(per_image)
    self.image_sums = np.zeros(len(_NAMES), np.float64)
    self.pixel_sums = np.zeros(len(_NAMES), np.float64)
    self.num_images = 0
    self.num_pixels = 0
    self.num_skipped = 0

  def update(self, pred, gt) -> DepthMetrics:
    """Adds images in place and returns self.

    Args:
      pred: predicted depth in metres, (H, W) for one image or (..., H, W) for several, at the
        ground truth's resolution (big_vision resizes it with nearest-neighbour interpolation).
      gt: ground-truth depth in metres, same shape; 0 (or anything outside the range) where missing.
    """
    pred = _images("pred", pred).astype(np.float64)
    gt = _images("gt", gt).astype(np.float64)
    if pred.shape != gt.shape:
      raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same shape")
    if self.crop is not None:
      top, bottom, left, right = self.crop
      if bottom > gt.shape[1] or right > gt.shape[2]:
        raise ValueError(f"crop {self.crop} does not fit images of shape {gt.shape[1:]}")
      pred = pred[:, top:bottom, left:right]
      gt = gt[:, top:bottom, left:right]
    for p, g in zip(pred, gt, strict=True):
      valid = (g > self.min_depth) & (g < self.max_depth)
      n = int(valid.sum())
      if n == 0:
        self.num_skipped += 1
        continue
      p, g = p[valid], g[valid]
      positive = p > 0
      ratio = np.maximum(p / g, g / np.where(positive, p, 1.0))  # Only read where p > 0.
      accurate = [positive & (ratio < 1.25**k) for k in _DELTA_ORDERS]
      sums = np.array([np.sum((p - g) ** 2), np.sum(np.abs(p - g) / g), *[a.sum() for a in accurate]])
      self.pixel_sums += sums
      self.image_sums += np.concatenate([[np.sqrt(sums[0] / n)], sums[1:] / n])
      self.num_pixels += n
      self.num_images += 1
    return self

  SUMS = ("image_sums", "pixel_sums", "num_images", "num_pixels", "num_skipped")  # what merging adds up

  def merge(self, other: DepthMetrics) -> DepthMetrics:
    """A new accumulator holding the statistics of both; the settings must agree."""
    settings = (self.min_depth, self.max_depth, self.crop, self.per_image)
    if settings != (other.min_depth, other.max_depth, other.crop, other.per_image):
      raise ValueError("cannot merge depth accumulators with different depth range, crop or averaging")
    merged = DepthMetrics(self.min_depth, self.max_depth, self.crop, self.per_image)
    merged.image_sums = self.image_sums + other.image_sums
    merged.pixel_sums = self.pixel_sums + other.pixel_sums
    merged.num_images = self.num_images + other.num_images
    merged.num_pixels = self.num_pixels + other.num_pixels
    merged.num_skipped = self.num_skipped + other.num_skipped
    return merged

  def result(self) -> dict[str, float | int]:
    """{"rmse", "abs_rel", "delta1", "delta2", "delta3"} (NaN before any valid pixel), and the counts
    "num_images", "num_pixels", "num_skipped"."""
    if self.per_image:
      values = self.image_sums / self.num_images if self.num_images else np.full(len(_NAMES), np.nan)
    else:
      values = self.pixel_sums / self.num_pixels if self.num_pixels else np.full(len(_NAMES), np.nan)
      values[0] = np.sqrt(values[0])
    out: dict[str, float | int] = {k: float(v) for k, v in zip(_NAMES, values, strict=True)}
    out.update(num_images=self.num_images, num_pixels=self.num_pixels, num_skipped=self.num_skipped)
    return out


# ------------------------------------------------------------------- the statistics inside jit


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
