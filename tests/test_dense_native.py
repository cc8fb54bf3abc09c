"""Dense metrics at each image's original resolution: nearest resizing, and PQ / depth of predictions made
at the model's resolution against the original maps, on constructed examples of three sizes."""

import numpy as np

from fsq.data import pipeline
from fsq.data.pipeline import ImageSource
from fsq.evals import dense_native
from fsq.evals.dense_metrics import DepthMetrics, PanopticQuality

SIZES = [(20, 30), (24, 24), (30, 18)]
S = 8  # the model's resolution


def test_resize_nearest_takes_the_pixel_under_each_centre():
  values = np.arange(6).reshape(2, 3)
  np.testing.assert_array_equal(pipeline.resize_nearest(values, 4, 3), values[[0, 0, 1, 1]])
  np.testing.assert_array_equal(pipeline.resize_nearest(values, 2, 2), [[0, 2], [3, 5]])
  assert pipeline.resize_nearest(np.zeros((5, 7, 2)), 3, 4).shape == (3, 4, 2)


def _upsample(values, height, width):
  """Nearest by pixel centres, written out: row i reads floor((i + 0.5) * h / height)."""
  h, w = values.shape[:2]
  rows = [min(int(np.floor((i + 0.5) * h / height)), h - 1) for i in range(height)]
  cols = [min(int(np.floor((j + 0.5) * w / width)), w - 1) for j in range(width)]
  return values[np.ix_(rows, cols)]


def _source(dense):
  """Examples of three sizes whose blue channel holds 10 x their index (so a fake model knows which
  example it sees after the resize), with the given dense maps."""
  examples = []
  for index, (h, w) in enumerate(SIZES):
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 2] = 10 * index
    examples.append({"image": image, **dense(index, h, w)})
  return ImageSource(examples, (None, None, 3), tuple(k for k in examples[0] if k != "image"))


def _fake_model(predictions):
  """predict(images) -> the prepared (S, S, ...) prediction of the example each row shows (zeros for
  the padding rows, which are 0, i.e. grey, in [-1, 1])."""
  padding = np.zeros_like(predictions[0])

  def predict(images):
    return np.stack([predictions.get(round(float(x[0, 0, 2] * 127.5 + 127.5) / 10), padding) for x in images])

  return predict


def test_panoptic_quality_is_scored_at_the_original_size_with_crowd():
  rng = np.random.default_rng(0)

  def maps(index, h, w):
    semantic = np.kron(rng.integers(0, 4, (4, 4)), np.ones((h // 4 + 1, w // 4 + 1), np.int64))[:h, :w]
    instance = np.kron(rng.integers(0, 3, (4, 4)), np.ones((h // 4 + 1, w // 4 + 1), np.int64))[:h, :w]
    crowd = np.zeros((h, w), bool)
    crowd[: h // 3, : w // 3] = index == 1
    return {"semantic": semantic, "instance": instance, "crowd": crowd}

  source = _source(maps)
  predictions = {}
  for index in range(3):
    truth = source[index]
    small = np.stack([_upsample(truth["semantic"], S, S), _upsample(truth["instance"], S, S)], -1)
    small[rng.random((S, S)) < 0.2] = (2, 1)  # noise
    predictions[index] = small
  batches = dense_native.native_batches(source, S, "squash", 3, batch_size=2, num_images=3)
  metric = PanopticQuality(4, (2, 3), void_label=0, stuff_by_instance=True)
  got = dense_native.panoptic_native(_fake_model(predictions), batches, metric)
  reference = PanopticQuality(4, (2, 3), void_label=0, stuff_by_instance=True)
  for index in range(3):
    truth = source[index]
    p = _upsample(predictions[index], *truth["semantic"].shape)
    reference.update(p[..., 0], p[..., 1], truth["semantic"], truth["instance"], truth["crowd"])
  expected = reference.result()
  assert (
    got["native/pq/all_pq"] == expected["All"]["pq"]
    and got["native/pq/things_rq"] == expected["Things"]["rq"]
  )
  assert 0 < got["native/pq/all_pq"] < 1
  # Scored at the model's resolution instead, the numbers differ: the protocol matters.
  low = PanopticQuality(4, (2, 3), void_label=0, stuff_by_instance=True)
  for index in range(3):
    truth = source[index]
    small_truth = [_upsample(truth[k], S, S) for k in ("semantic", "instance", "crowd")]
    low.update(predictions[index][..., 0], predictions[index][..., 1], *small_truth)
  assert low.result()["All"]["pq"] != expected["All"]["pq"]


def test_depth_is_scored_against_the_original_crop():
  rng = np.random.default_rng(1)
  source = _source(lambda index, h, w: {"depth": rng.uniform(0.5, 9.0, (h, w)).astype(np.float32)})
  predictions = {i: rng.uniform(0.5, 9.0, (S, S)).astype(np.float32) for i in range(3)}
  batches = dense_native.native_batches(source, S, "squash", 3, batch_size=4, num_images=2)
  got = dense_native.depth_native(_fake_model(predictions), batches, DepthMetrics(1e-3, 10.0, crop=None))
  errors = []
  for index in range(2):  # num_images = 2: the third example is not read
    truth = source[index]["depth"]
    errors.append(np.sqrt(np.mean((_upsample(predictions[index], *truth.shape) - truth) ** 2)))
  np.testing.assert_allclose(got["native/depth/rmse"], np.mean(errors), rtol=1e-5)


def test_shards_cover_the_first_images_once_in_equal_numbers_of_batches():
  """Process shards of the first 3 images: contiguous, disjoint, together all 3; every shard yields as
  many batches (the short one pads with empty batches)."""
  source = _source(lambda index, h, w: {"depth": np.full((h, w), float(index + 1), np.float32)})
  shards = [
    list(dense_native.native_batches(source, S, "squash", 3, batch_size=1, num_images=3, shard=(i, 2)))
    for i in range(2)
  ]
  assert len(shards[0]) == len(shards[1]) == 2
  seen = [int(e["depth"][0, 0]) - 1 for batches in shards for _, examples in batches for e in examples]
  assert seen == [0, 1, 2]
  assert all(images.shape == (1, S, S, 3) for batches in shards for images, _ in batches)
