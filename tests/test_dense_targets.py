"""COCO panoptic and NYU depth examples into the pipeline's dense maps, on hand-built annotations."""

import functools
import io

import numpy as np
import pytest
from PIL import Image

from fsq.data.dense_targets import (
  ADAPTERS,
  canonical_instances,
  coco_crowd,
  coco_semantic_instance,
  nyu_depth_maps,
  panoptic_segment_ids,
)
from fsq.data.pipeline import ImageSource, resize_image, resize_map


def _rgb(ids: np.ndarray) -> np.ndarray:
  """Segment ids (H, W) -> COCO's RGB encoding (R + 256 G + 256^2 B)."""
  return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], -1).astype(np.uint8)


# A 4 x 6 annotation: segment 70000 (a thing, label 3) on the right, segment 2 (stuff, label 90) at
# the top left, segment 1000 (a thing, label 0) at the bottom left, and two unlabelled pixels (id 0).
IDS = np.array(
  [
    [2, 2, 2, 70000, 70000, 70000],
    [2, 2, 0, 70000, 70000, 70000],
    [1000, 1000, 0, 70000, 70000, 70000],
    [1000, 1000, 1000, 70000, 70000, 70000],
  ]
)
OBJECTS = {"id": np.array([70000, 2, 1000]), "label": np.array([3, 90, 0])}


def test_segment_ids_decode_the_three_channels():
  ids = np.array([[0, 1, 255], [256, 65536, 16777215]])
  np.testing.assert_array_equal(panoptic_segment_ids(_rgb(ids)), ids)
  with pytest.raises(ValueError, match=r"panoptic_image must be \(H, W, 3\), got \(2, 3\)"):
    panoptic_segment_ids(ids)


def test_coco_semantics_are_label_plus_one_and_instances_follow_the_centres():
  semantic, instance = coco_semantic_instance(_rgb(IDS), OBJECTS["id"], OBJECTS["label"])
  np.testing.assert_array_equal(
    semantic, [[91, 91, 91, 4, 4, 4], [91, 91, 0, 4, 4, 4], [1, 1, 0, 4, 4, 4], [1, 1, 1, 4, 4, 4]]
  )
  # Centres (x + H * y, H = 4): segment 2 at 0.8 + 4 * 0.4 = 2.4, segment 70000 at 4 + 4 * 1.5 = 10,
  # segment 1000 at 0.8 + 4 * 2.6 = 11.2: so 2 -> 1, 70000 -> 2, 1000 -> 3.
  np.testing.assert_array_equal(
    instance, [[1, 1, 1, 2, 2, 2], [1, 1, 0, 2, 2, 2], [3, 3, 0, 2, 2, 2], [3, 3, 3, 2, 2, 2]]
  )
  with pytest.raises(ValueError, match="same length, got 2 and 3"):
    coco_semantic_instance(_rgb(IDS), OBJECTS["id"][:2], OBJECTS["label"])
  # Segment 1000 marked iscrowd: its five pixels, bottom left.
  crowd = coco_crowd(_rgb(IDS), OBJECTS["id"], np.array([False, False, True]))
  np.testing.assert_array_equal(crowd, IDS == 1000)


def test_canonical_instances_ignore_the_given_numbering():
  rng = np.random.default_rng(0)
  blocks = np.kron(rng.permutation(9).reshape(3, 3) + 1, np.ones((2, 2), int))  # ids 1..9 in 2x2 blocks
  blocks[0, 0] = 0
  out = canonical_instances(blocks)
  expected = np.kron(np.arange(1, 10).reshape(3, 3), np.ones((2, 2), int))  # row-major block order
  expected[0, 0] = 0
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_array_equal(canonical_instances(np.zeros((2, 2), int)), np.zeros((2, 2)))


def test_adapters_feed_the_image_source():
  buffer = io.BytesIO()
  Image.fromarray(_rgb(IDS)).save(buffer, format="PNG")
  coco = {"image": b"jpeg", "panoptic_image": buffer.getvalue(), "panoptic_objects": OBJECTS}
  adapter = functools.partial(ADAPTERS["coco/2017_panoptic"].fn, split="validation")
  source = ImageSource([coco], (None, None, 3), ("semantic", "instance"), adapter=adapter)
  item = source[0]
  expected = coco_semantic_instance(_rgb(IDS), OBJECTS["id"], OBJECTS["label"])
  np.testing.assert_array_equal(item["semantic"], expected[0])
  np.testing.assert_array_equal(item["instance"], expected[1])
  assert item["image"] == b"jpeg" and item["label"] == -1
  assert source.shard(0, 1).adapter is adapter

  assert source.shard(0, 1)[0]["image"] == b"jpeg"


def test_nyu_depth_is_float32_and_evaluation_splits_get_big_vision_crop():
  rng = np.random.default_rng(2)
  depth = rng.uniform(0.5, 9.0, (480, 640)).astype(np.float16)
  rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(rgb).save(buffer, format="PNG")
  example = {"image": buffer.getvalue(), "depth": depth}
  train = nyu_depth_maps(example, "train")
  assert list(train) == ["depth"] and train["depth"].dtype == np.float32
  np.testing.assert_array_equal(train["depth"], depth.astype(np.float32))
  evaluation = nyu_depth_maps(example, "test")
  np.testing.assert_array_equal(evaluation["depth"], depth[54:480, 41:601].astype(np.float32))
  np.testing.assert_array_equal(evaluation["image"], rgb[54:480, 41:601])
  assert evaluation["image"].shape == (426, 560, 3)
  with pytest.raises(ValueError, match=r"must be \(480, 640\) for the evaluation crop, got \(4, 4\)"):
    nyu_depth_maps({"image": b"", "depth": np.zeros((4, 4))}, "test")
  source = ImageSource(
    [example], (None, None, 3), ("depth",), adapter=functools.partial(nyu_depth_maps, split="test")
  )
  item = source[0]
  assert item["image"].shape == (426, 560, 3) and item["depth"].shape == (426, 560)


def test_squash_resizes_without_keeping_the_aspect_ratio():
  image = np.zeros((4, 8, 3), np.uint8)
  image[:, 4:] = 255
  out = resize_image(image, 4, "squash")
  assert out.shape == (4, 4, 3) and out[:, 0].max() < 30 and out[:, 3].min() > 225
  values = np.arange(32).reshape(4, 8)
  np.testing.assert_array_equal(resize_map(values, 4, "squash"), values[:, [1, 3, 5, 7]])
  np.testing.assert_array_equal(resize_map(values, 8, "squash"), values[[0, 0, 1, 1, 2, 2, 3, 3]])
