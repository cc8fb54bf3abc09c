"""UViM's dense metrics as the paper reports them: predictions made at the model's resolution, resized
(nearest neighbour) to each image's original size and scored there against the original ground truth.

big_vision's evaluators do this for COCO panoptic (``evaluators/proj/uvim/coco_panoptic.py``: predictions
resized to the original image, scored by panopticapi with crowd regions, one segment per (class,
instance) pair) and NYU depth (``nyu_depth.py``: predictions resized to the 426 x 560 evaluation crop).
The training loop's in-step statistics score the resized ground truth at the model's resolution instead:
cheaper, and the same on data already at that resolution (the synthetic scenes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from fsq.data.pipeline import ImageSource, decode_image, resize_image, resize_nearest
from fsq.evals.dense_metrics import DepthMetrics, PanopticQuality


def native_batches(
  source: ImageSource,
  image_size: int,
  resize_mode: str,
  channels: int,
  batch_size: int,
  num_images: int,
  shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
  """The first ``num_images`` examples of ``source`` in batches: (images (batch_size, S, S, C) float32 in
  [-1, 1], resized as the model saw them, zero rows padding the last batch; the examples' original dense
  maps, one dict per real row). ``shard`` (index, count): only the index-th of ``count`` contiguous
  shards of those examples, in as many batches as the largest shard needs (a shard that runs out yields
  batches of padding), so that every process of a job runs the same number of batches."""
  count = min(num_images, len(source))
  index, shards = shard
  first, stop = index * count // shards, (index + 1) * count // shards
  largest = -(-count // shards)
  for start in range(first, first + largest, batch_size) if largest else ():
    items = [source[i] for i in range(start, min(start + batch_size, stop))]
    images = np.zeros((batch_size, image_size, image_size, channels), np.float32)
    for row, item in enumerate(items):
      pixels = resize_image(decode_image(item["image"], channels), image_size, resize_mode)
      images[row] = (pixels.astype(np.float32) - 127.5) / 127.5
    yield images, [{name: np.asarray(item[name]) for name in source.dense} for item in items]


def panoptic_native(
  predict: Callable[[np.ndarray], np.ndarray],
  batches: Iterator[tuple[np.ndarray, list[dict[str, Any]]]],
  metric: PanopticQuality,
  merge: Callable[[PanopticQuality], PanopticQuality] = lambda m: m,
) -> dict[str, float]:
  """PQ, SQ, RQ (all, things, stuff) of ``predict``'s (B, S, S, 2) semantic and instance maps, each
  resized to its ground truth's size; ``crowd`` maps, where the examples have them, mark crowd regions.
  ``merge`` combines the accumulated statistics with other processes' before the result."""
  for images, examples in batches:
    predictions = np.asarray(predict(images))
    for prediction, truth in zip(predictions, examples, strict=False):
      height, width = truth["semantic"].shape
      p = resize_nearest(prediction, height, width)
      metric.update(p[..., 0], p[..., 1], truth["semantic"], truth["instance"], truth.get("crowd"))
  result = merge(metric).result()
  return {
    f"native/pq/{g.lower()}_{k}": result[g][k] for g in ("All", "Things", "Stuff") for k in ("pq", "sq", "rq")
  }


def depth_native(
  predict: Callable[[np.ndarray], np.ndarray],
  batches: Iterator[tuple[np.ndarray, list[dict[str, Any]]]],
  metric: DepthMetrics,
  merge: Callable[[DepthMetrics], DepthMetrics] = lambda m: m,
) -> dict[str, float]:
  """RMSE, abs-rel, delta_1..3 (per image, then averaged) of ``predict``'s (B, S, S) depths in metres,
  each resized to its ground truth's size (NYU: the 426 x 560 evaluation crop); ``merge`` as above."""
  for images, examples in batches:
    predictions = np.asarray(predict(images))
    for prediction, truth in zip(predictions, examples, strict=False):
      metric.update(resize_nearest(prediction, *truth["depth"].shape), truth["depth"])
  result = merge(metric).result()
  return {f"native/depth/{k}": float(result[k]) for k in ("rmse", "abs_rel", "delta1", "delta2", "delta3")}
