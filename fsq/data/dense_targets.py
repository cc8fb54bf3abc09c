"""Per-pixel targets of the paper-scale UViM datasets, made from their TFDS features for the pipeline.

The pipeline reads dense maps by name (``depth``; ``semantic`` and ``instance``). The synthetic scenes
store them under those names. The real datasets store something else, and an adapter here turns one
raw example into the maps. Facts from big_vision's ``pp/proj/uvim/pp_ops.py``:

* COCO 2017 panoptic (TFDS ``coco/2017_panoptic``). ``panoptic_image`` is a PNG whose pixels hold
  segment ids as R + 256 G + 256^2 B. ``panoptic_objects`` lists each segment's ``id`` and ``label``
  (133 classes, things first: labels 0-79 are the 80 thing classes). big_vision's ``coco_panoptic``
  gives a pixel of the n-th listed segment the semantic class label + 1 and the instance n + 1, and a
  pixel of no segment 0 and 0: class 0 is void. ``make_canonical`` then renumbers the instances 1..K
  in the order of their centres of mass, row-major ("y" main axis: x + H * y), so the same layout gets
  the same ids. Here canonicalisation runs on the full-size map and again after the pipeline's crop,
  resize and flip. Crowd segments are kept in the maps, as big_vision keeps them; the "crowd" map marks
  them for panoptic quality at the original resolution (``fsq.evals.dense_native``).
* NYU Depth v2 (TFDS ``nyu_depth_v2``): ``depth`` (480, 640) float16 metres becomes float32. Outside
  the train split, image and depth are cut to big_vision's evaluation crop (``nyu_eval_crop``: rows
  54 to 480, columns 41 to 601, 426 x 560; its comment names rows 45 to 471, its code uses 54) before
  the pipeline resizes them (``resize_mode="squash"``, as big_vision's ``resize(512)``).

An adapter is called as ``fn(example, split)`` and returns the dense maps, and ``image`` when it
changes the image (decoded, uint8).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image


def panoptic_segment_ids(rgb: np.ndarray) -> np.ndarray:
  """COCO's segment id of each pixel: uint8 (H, W, 3) -> int64 (H, W) R + 256 G + 256^2 B."""
  rgb = np.asarray(rgb)
  if rgb.ndim != 3 or rgb.shape[-1] != 3:
    raise ValueError(f"panoptic_image must be (H, W, 3), got {rgb.shape}")
  return rgb.astype(np.int64) @ np.array([1, 256, 256**2], np.int64)


def canonical_instances(instance: np.ndarray) -> np.ndarray:
  """Instance ids > 0 renumbered 1..K in the order of their centres of mass (x + H * y, i.e. by
  row, then column; ties by the old id); 0 stays 0. int (H, W) -> int32 (H, W). big_vision's
  ``make_canonical``: the same layout always gets the same ids, whatever order its objects were drawn in."""
  instance = np.asarray(instance)
  ids, index = np.unique(instance, return_inverse=True)
  index = index.reshape(-1)
  rows, cols = np.indices(instance.shape)
  counts = np.bincount(index)
  centres = np.bincount(index, cols.reshape(-1)) + instance.shape[0] * np.bincount(index, rows.reshape(-1))
  centres = centres / counts
  objects = np.flatnonzero(ids > 0)
  new_ids = np.zeros(ids.size, np.int32)
  new_ids[objects[np.argsort(centres[objects], kind="stable")]] = np.arange(1, objects.size + 1)
  return new_ids[index].reshape(instance.shape)


def coco_semantic_instance(
  panoptic_rgb: np.ndarray, object_ids: np.ndarray, object_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """(semantic, instance) int32 (H, W) of a COCO panoptic annotation: the label + 1 of the pixel's
  segment (0: no segment, void) and its canonical instance id (1..K; 0: no segment)."""
  ids = np.asarray(object_ids, np.int64).reshape(-1)
  labels = np.asarray(object_labels, np.int64).reshape(-1)
  if ids.shape != labels.shape:
    raise ValueError(
      f"panoptic_objects id and label must have the same length, got {ids.size} and {labels.size}"
    )
  segment = panoptic_segment_ids(panoptic_rgb)
  semantic = np.zeros(segment.shape, np.int32)
  instance = np.zeros(segment.shape, np.int32)
  for n, (segment_id, label) in enumerate(zip(ids, labels, strict=True)):
    where = segment == segment_id
    semantic[where] = label + 1
    instance[where] = n + 1
  return semantic, canonical_instances(instance)


def _decode_png(value: bytes | np.ndarray) -> np.ndarray:
  """uint8 (H, W, 3) from encoded bytes (PNG or JPEG) or an array."""
  if isinstance(value, bytes):
    with Image.open(io.BytesIO(value)) as pil:
      return np.asarray(pil.convert("RGB"))
  return np.asarray(value)


def coco_crowd(panoptic_rgb: np.ndarray, object_ids: np.ndarray, is_crowd: np.ndarray) -> np.ndarray:
  """bool (H, W): True on the pixels of the segments COCO marks ``iscrowd`` (for panoptic quality, which
  neither matches nor misses them)."""
  ids = np.asarray(object_ids, np.int64).reshape(-1)
  crowd_ids = ids[np.asarray(is_crowd, bool).reshape(-1)]
  return np.isin(panoptic_segment_ids(panoptic_rgb), crowd_ids)


def coco_panoptic_maps(example: dict[str, Any], split: str) -> dict[str, np.ndarray]:
  """A ``coco/2017_panoptic`` example -> {"semantic", "instance"} (H, W) int32 and "crowd" (H, W) bool
  (any split)."""
  del split
  objects = example["panoptic_objects"]
  rgb = _decode_png(example["panoptic_image"])
  semantic, instance = coco_semantic_instance(rgb, objects["id"], objects["label"])
  crowd = coco_crowd(rgb, objects["id"], objects.get("is_crowd", np.zeros(len(objects["id"]), bool)))
  return {"semantic": semantic, "instance": instance, "crowd": crowd}


NYU_EVAL_CROP = (slice(54, 480), slice(41, 601))  # big_vision's nyu_eval_crop, on 480 x 640 frames


def nyu_depth_maps(example: dict[str, Any], split: str) -> dict[str, np.ndarray]:
  """An ``nyu_depth_v2`` example -> {"depth"} (480, 640) float32 metres; outside the train split
  {"image", "depth"} cut to NYU_EVAL_CROP (426, 560)."""
  depth = np.asarray(example["depth"], np.float32)
  if split == "train":
    return {"depth": depth}
  if depth.shape != (480, 640):
    raise ValueError(f"NYU depth maps must be (480, 640) for the evaluation crop, got {depth.shape}")
  image = _decode_png(example["image"])
  return {"image": image[NYU_EVAL_CROP], "depth": depth[NYU_EVAL_CROP]}


@dataclasses.dataclass(frozen=True)
class Adapter:
  """How a dataset's raw features become dense maps: the features it reads, those left encoded (the
  adapter decodes them), the maps it makes, and the function."""

  reads: tuple[str, ...]
  encoded: tuple[str, ...]
  makes: tuple[str, ...]
  fn: Callable[[dict[str, Any], str], dict[str, np.ndarray]]


ADAPTERS = {
  "coco/2017_panoptic": Adapter(
    ("panoptic_image", "panoptic_objects"),
    ("panoptic_image",),
    ("semantic", "instance", "crowd"),
    coco_panoptic_maps,
  ),
  "nyu_depth_v2": Adapter(("depth",), (), ("depth",), nyu_depth_maps),
}
