"""Dense-task metrics (panoptic quality, NYU depth errors) against hand-computed cases, and their jitted
statistics against the numpy accumulators."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from fsq.data.dense_targets import NYU_EVAL_CROP
from fsq.evals import dense_metrics
from fsq.evals.dense_metrics import DepthMetrics, PanopticQuality, depth_metric_sums, panoptic_stats

# Classes: 0 void, 1 and 2 things, 3 stuff.
THINGS = (1, 2)


def _pq() -> dense_metrics.PanopticQuality:
  return dense_metrics.PanopticQuality(num_classes=4, thing_classes=THINGS, void_label=0)


def _row(*values: int) -> np.ndarray:
  """A (1, W) map: one image row is enough for every case here."""
  return np.asarray([values], np.int32)


def test_perfect_prediction_gives_one_with_any_instance_ids():
  gt_sem = np.asarray([[1, 1, 3, 3], [1, 0, 3, 1], [0, 0, 3, 1]], np.int32)
  gt_ins = np.asarray([[7, 7, 0, 0], [7, 0, 0, 0], [0, 0, 0, 0]], np.int32)
  # Same segments, other instance ids; the stuff pixels' instance ids differ and are ignored.
  pred_ins = np.asarray([[2, 2, 5, 6], [2, 9, 7, 4], [1, 1, 8, 4]], np.int32)
  res = _pq().update(gt_sem, pred_ins, gt_sem, gt_ins).result()
  for group in ("All", "Things", "Stuff"):
    assert res[group] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2 if group == "All" else 1}
  assert res["per_class"][1] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 2, "fp": 0, "fn": 0, "iou_sum": 2.0}
  assert math.isnan(res["per_class"][2]["pq"])  # Absent from both: excluded from every mean.
  assert set(res["per_class"]) == {1, 2, 3}


def test_one_match_with_iou_0_6_and_one_miss_split_into_things_and_stuff():
  # Thing 1: GT A = pixels 0..3, GT B = pixels 7..8; the prediction covers 1..4 (IoU 3/5) and misses B.
  # Stuff 3: GT {4, 5, 6, 9, 10, 11}, predicted {0, 5, ..., 11}: IoU 5 / (6 + 8 - 5) = 5/9.
  gt_sem, gt_ins = _row(1, 1, 1, 1, 3, 3, 3, 1, 1, 3, 3, 3), _row(1, 1, 1, 1, 0, 0, 0, 2, 2, 0, 0, 0)
  pred_sem, pred_ins = _row(3, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3), _row(0, 5, 5, 5, 5, 0, 0, 0, 0, 0, 0, 0)
  res = _pq().update(pred_sem, pred_ins, gt_sem, gt_ins).result()
  thing = {"pq": 0.6 / 1.5, "sq": 0.6, "rq": 1 / 1.5}
  stuff = {"pq": 5 / 9, "sq": 5 / 9, "rq": 1.0}
  assert res["Things"] == pytest.approx({**thing, "n": 1})
  assert res["Stuff"] == pytest.approx({**stuff, "n": 1})
  assert res["All"] == pytest.approx({k: (thing[k] + stuff[k]) / 2 for k in thing} | {"n": 2})
  assert res["per_class"][1] == pytest.approx({**thing, "tp": 1, "fp": 0, "fn": 1, "iou_sum": 0.6})
  assert math.isnan(res["per_class"][2]["sq"])


def test_iou_of_exactly_one_half_does_not_match():
  gt_sem, gt_ins = _row(1, 1, 1, 1), _row(1, 1, 1, 1)
  # Prediction covers 2 of the 4 GT pixels (rest predicted void): IoU 2/4.
  half = _pq().update(_row(1, 1, 0, 0), _row(1, 1, 0, 0), gt_sem, gt_ins).result()
  assert half["per_class"][1] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1, "iou_sum": 0.0}
  # Three of four: IoU 3/4 matches.
  more = _pq().update(_row(1, 1, 1, 0), _row(1, 1, 1, 0), gt_sem, gt_ins).result()
  assert more["per_class"][1] == pytest.approx(
    {"pq": 0.75, "sq": 0.75, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0, "iou_sum": 0.75}
  )


def test_gt_void_is_left_out_of_the_union():
  # The prediction spills onto 2 GT void pixels: IoU 2 / (4 + 2 - 2 - 2) = 1, not 2/4.
  res = _pq().update(_row(1, 1, 1, 1), _row(3, 3, 3, 3), _row(1, 1, 0, 0), _row(1, 1, 0, 0)).result()
  assert res["per_class"][1] == pytest.approx(
    {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0, "iou_sum": 1.0}
  )


def test_false_positive_mostly_on_void_is_ignored():
  # Thing 2, instance 1 lies wholly on GT void: ignored. Instance 2 is half on void (not more): an FP.
  # Stuff 3: GT pixels 3..7, predicted 4..7: IoU 4/5.
  gt_sem, gt_ins = _row(0, 0, 0, 3, 3, 3, 3, 3), _row(0, 0, 0, 0, 0, 0, 0, 0)
  pred_sem, pred_ins = _row(2, 2, 2, 2, 3, 3, 3, 3), _row(1, 1, 2, 2, 0, 0, 0, 0)
  res = _pq().update(pred_sem, pred_ins, gt_sem, gt_ins).result()
  assert res["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 0, "iou_sum": 0.0}
  assert res["Things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1}  # Class 1 is absent: excluded.
  assert res["Stuff"] == pytest.approx({"pq": 0.8, "sq": 0.8, "rq": 1.0, "n": 1})
  # With instance 2 moved fully onto void, no false positive remains and class 2 drops out.
  res = _pq().update(_row(2, 2, 2, 3, 3, 3, 3, 3), _row(1, 1, 2, 0, 0, 0, 0, 0), gt_sem, gt_ins).result()
  assert res["per_class"][2]["fp"] == 0
  assert res["Things"]["n"] == 0 and math.isnan(res["Things"]["pq"])
  assert res["All"] == pytest.approx({"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1})


def test_merging_accumulators_equals_accumulating_both_images():
  first = (_row(3, 1, 1, 1, 1, 3), _row(0, 5, 5, 5, 5, 0), _row(1, 1, 1, 1, 3, 3), _row(1, 1, 1, 1, 0, 0))
  second = (_row(2, 2, 2, 2, 3, 3), _row(1, 1, 2, 2, 0, 0), _row(0, 0, 0, 3, 3, 3), _row(0, 0, 0, 0, 0, 0))
  merged = _pq().update(*first).merge(_pq().update(*second))
  both = _pq().update(*[np.concatenate([a, b]).reshape(2, 1, 6) for a, b in zip(first, second, strict=True)])
  np.testing.assert_equal(merged.result(), both.result())
  # Image 1: thing TP (IoU 3/5), stuff FN + FP (IoU 1/3). Image 2: thing FP (half on void), stuff TP.
  np.testing.assert_array_equal(merged.tp, [0, 1, 0, 1])
  np.testing.assert_array_equal(merged.fp, [0, 0, 1, 1])
  np.testing.assert_array_equal(merged.fn, [0, 0, 0, 1])
  with pytest.raises(ValueError):
    merged.merge(dense_metrics.PanopticQuality(4, thing_classes=(1,), void_label=0))


def test_panoptic_input_checks():
  with pytest.raises(ValueError, match="neither a class nor void"):
    _pq().update(_row(4), _row(0), _row(1), _row(0))
  with pytest.raises(ValueError, match="share one shape"):
    _pq().update(_row(1, 1), _row(0, 0), _row(1), _row(0))
  with pytest.raises(ValueError, match="thing class"):
    dense_metrics.PanopticQuality(4, thing_classes=(0,), void_label=0)


def _depth(**kwargs) -> dense_metrics.DepthMetrics:
  return dense_metrics.DepthMetrics(min_depth=1e-3, max_depth=10.0, **kwargs)


def test_depth_errors_of_a_known_pair():
  gt = np.asarray([[1.0, 2.0], [3.0, 4.0]])
  pred = np.asarray([[1.0, 2.0], [3.0, 6.0]])  # One error of 2 m at gt 4 m (ratio 1.5).
  res = _depth(crop=None).update(pred, gt).result()
  expected = {"rmse": 1.0, "abs_rel": 0.5 / 4, "delta1": 0.75, "delta2": 1.0, "delta3": 1.0}
  assert res == pytest.approx({**expected, "num_images": 1, "num_pixels": 4, "num_skipped": 0})


def test_depth_excludes_invalid_pixels():
  # 0 (missing), above the range, and the range's ends (the bounds are strict) are all left out.
  gt = np.asarray([[0.0, 12.0, 10.0, 1e-3], [2.0, 2.0, 4.0, 4.0]])
  pred = np.asarray([[9.0, 1.0, 3.0, 5.0], [2.0, 3.0, 4.0, 5.0]])
  res = _depth(crop=None).update(pred, gt).result()
  assert res["num_pixels"] == 4
  assert res["rmse"] == pytest.approx(math.sqrt((1 + 1) / 4))
  assert res["abs_rel"] == pytest.approx((0.5 + 0.25) / 4)
  assert res["delta1"] == pytest.approx(2 / 4)  # Ratios 1, 1.5, 1, 1.25: 1.25 is not < 1.25.


def test_depth_crop():
  gt = np.full((4, 5), 2.0)
  pred = np.full((4, 5), 100.0)
  pred[1:3, 1:4] = [[2.0, 2.0, 2.0], [2.0, 2.0, 5.0]]  # Inside the crop: one error of 3 m in 6 pixels.
  res = _depth(crop=(1, 3, 1, 4)).update(pred, gt).result()
  assert res["num_pixels"] == 6
  assert res["rmse"] == pytest.approx(math.sqrt(9 / 6))
  nyu = _depth(crop=dense_metrics.NYU_EIGEN_CROP).update(np.ones((480, 640)), np.ones((480, 640))).result()
  assert nyu["num_pixels"] == 426 * 560 and nyu["rmse"] == 0.0
  # The default is big_vision's crop, the one the data adapter cuts: rows 54:480, columns 41:601.
  frame = np.ones((480, 640))
  frame[54:480, 41:601] = 2.0
  default = dense_metrics.DepthMetrics().update(np.full((480, 640), 2.0), frame).result()
  assert default["num_pixels"] == 426 * 560 and default["rmse"] == 0.0
  crop = dense_metrics.NYU_EVAL_CROP
  assert (slice(crop[0], crop[1]), slice(crop[2], crop[3])) == NYU_EVAL_CROP
  with pytest.raises(ValueError, match="does not fit"):
    _depth(crop=dense_metrics.NYU_EIGEN_CROP).update(np.ones((426, 560)), np.ones((426, 560)))


def test_depth_per_image_and_per_pixel_averaging_differ():
  # Image 1: one valid pixel, gt 2, pred 5. Image 2: four exact pixels.
  gt = np.asarray([[[2.0, 0.0], [0.0, 0.0]], [[2.0, 2.0], [2.0, 2.0]]])
  pred = np.asarray([[[5.0, 1.0], [1.0, 1.0]], [[2.0, 2.0], [2.0, 2.0]]])
  per_image = _depth(crop=None).update(pred, gt).result()
  assert per_image == pytest.approx(
    {"rmse": 1.5, "abs_rel": 0.75, "delta1": 0.5, "delta2": 0.5, "delta3": 0.5}
    | {"num_images": 2, "num_pixels": 5, "num_skipped": 0}
  )
  per_pixel = _depth(crop=None, per_image=False).update(pred, gt).result()
  assert per_pixel["rmse"] == pytest.approx(math.sqrt(9 / 5))
  assert per_pixel["abs_rel"] == pytest.approx(1.5 / 5)
  assert per_pixel["delta1"] == pytest.approx(4 / 5)
  # Merging one accumulator per image gives the same numbers.
  merged = _depth(crop=None).update(pred[0], gt[0]).merge(_depth(crop=None).update(pred[1], gt[1]))
  assert merged.result() == per_image


def test_depth_negative_prediction_is_not_accurate_and_empty_image_is_skipped():
  res = _depth(crop=None).update(np.asarray([[-2.0, 2.0]]), np.asarray([[2.0, 2.0]])).result()
  assert res["delta1"] == 0.5
  res = _depth(crop=None).update(np.asarray([[[1.0]], [[3.0]]]), np.asarray([[[0.0]], [[2.0]]])).result()
  assert res == pytest.approx(
    {"rmse": 1.0, "abs_rel": 0.5, "delta1": 0.0, "delta2": 1.0, "delta3": 1.0}
    | {"num_images": 1, "num_pixels": 1, "num_skipped": 1}
  )


def test_crowd_segments_are_neither_matched_nor_missed_and_excuse_predictions_of_their_class():
  """1x12 image, thing class 1. GT: a crowd segment of class 1 on pixels 0-5 and an ordinary one on
  6-11; the prediction equals the GT maps. By hand, as panopticapi: the crowd is no TP and no FN, and
  the prediction lying on it is excused (6/6 on a crowd of its class); without crowd both would match."""
  gs = np.array([[1] * 12])
  gi = np.array([[1] * 6 + [2] * 6])
  crowd = np.array([[True] * 6 + [False] * 6])
  m = dense_metrics.PanopticQuality(3, (1, 2), void_label=0).update(gs, gi, gs, gi, gt_crowd=crowd)
  assert (m.tp[1], m.fp[1], m.fn[1], m.iou_sum[1]) == (1, 0, 0, 1.0)
  plain = dense_metrics.PanopticQuality(3, (1, 2), void_label=0).update(gs, gi, gs, gi)
  assert (plain.tp[1], plain.fp[1], plain.fn[1]) == (2, 0, 0)
  # A prediction of another class on the crowd region is not excused: a false positive of class 2.
  ps = np.array([[2] * 6 + [1] * 6])
  m = dense_metrics.PanopticQuality(3, (1, 2), void_label=0).update(ps, gi, gs, gi, gt_crowd=crowd)
  assert (m.tp[1], m.fn[1], m.fp[2]) == (1, 0, 1)
  with pytest.raises(ValueError, match=r"gt_crowd must have the maps' shape \(1, 1, 12\)"):
    m.update(ps, gi, gs, gi, gt_crowd=np.zeros((1, 6), bool))


def test_stuff_split_by_instance_as_big_vision_scores_two_channel_outputs():
  """Stuff class 1 (no things). GT: instances 1 and 2 on six pixels each; prediction: one instance over
  all twelve. Merged per class (the standard format) the prediction matches with IoU 1; split by
  instance, IoU 6/12 is not > 0.5: two false negatives and a false positive."""
  gs, ps = np.ones((1, 12), int), np.ones((1, 12), int)
  gi, pi = np.array([[1] * 6 + [2] * 6]), np.full((1, 12), 5)
  merged = dense_metrics.PanopticQuality(2, (), void_label=0).update(ps, pi, gs, gi)
  assert (merged.tp[1], merged.fp[1], merged.fn[1]) == (1, 0, 0)
  split = dense_metrics.PanopticQuality(2, (), void_label=0, stuff_by_instance=True).update(ps, pi, gs, gi)
  assert (split.tp[1], split.fp[1], split.fn[1]) == (0, 1, 2)
  with pytest.raises(ValueError, match="cannot merge"):
    merged.merge(split)


def test_jitted_metric_statistics_match_the_numpy_accumulators():
  rng = np.random.default_rng(5)
  gt = rng.uniform(0.5, 13.0, (4, 8, 8))
  gt[1] = 20.0  # no valid pixel: skipped
  pred = gt * rng.uniform(0.7, 1.4, gt.shape)
  mask = np.array([1.0, 1.0, 1.0, 0.0])
  sums = np.asarray(depth_metric_sums(jnp.asarray(pred), jnp.asarray(gt), jnp.asarray(mask), 1e-3, 12.0))
  reference = DepthMetrics(1e-3, 12.0, crop=None).update(pred[:3], gt[:3])
  np.testing.assert_allclose(sums[:5], reference.image_sums, rtol=1e-4)
  assert (sums[5], sums[6]) == (reference.num_images, reference.num_skipped) == (2, 1)

  shape = (3, 16, 16)
  gs, gi = rng.integers(-1, 5, shape), rng.integers(0, 4, shape)
  gs[:, :8], gi[:, :8] = 3, 1  # a large thing segment that the prediction below mostly keeps
  ps, pi = gs.copy(), gi.copy()
  noise = rng.random(shape) < 0.2
  ps[noise], pi[noise] = rng.integers(-1, 5, noise.sum()), rng.integers(0, 4, noise.sum())
  stats = panoptic_stats(*map(jnp.asarray, (ps, pi, gs, gi)), jnp.ones(3), 5, 4, (2, 3, 4), -1)
  reference = PanopticQuality(5, (2, 3, 4), void_label=-1).update(ps, pi, gs, gi)
  np.testing.assert_array_equal(np.asarray(stats[:3]), np.stack([reference.tp, reference.fp, reference.fn]))
  np.testing.assert_allclose(stats[3], reference.iou_sum, rtol=1e-5)
  assert reference.tp.sum() > 0
  # with_stats: the jitted statistics in an accumulator of the same classes report the same PQ.
  made = PanopticQuality(5, (2, 3, 4), void_label=-1).with_stats(stats).result()
  for group in ("All", "Things", "Stuff"):
    for key in ("pq", "sq", "rq"):
      assert made[group][key] == pytest.approx(reference.result()[group][key], rel=1e-6), (group, key)
  with pytest.raises(ValueError, match=r"stats must have shape \(4, 5\), got \(3, 5\)"):
    PanopticQuality(5, (2, 3, 4), void_label=-1).with_stats(stats[:3])


@pytest.mark.parametrize("void", [12, 0])
def test_panoptic_statistics_with_many_classes_and_instances_match_numpy(void):
  """Per-class overlap histograms against the numpy accumulator: 12 classes x 20 instances, blocky
  segments (so that many pairs match) with noise, void in both maps, one image masked out. Void lies
  outside the class range (12) or inside it (0, as in big_vision's COCO, where class 0's blocks are void)."""
  rng = np.random.default_rng(9)
  blocks = rng.integers(0, 12, (3, 8, 8)), rng.integers(0, 20, (3, 8, 8))
  gs, gi = (np.kron(b, np.ones((4, 4), np.int64)) for b in blocks)  # (3, 32, 32), 4x4 blocks
  gs[rng.random(gs.shape) < 0.05] = void
  ps, pi = gs.copy(), gi.copy()
  noise = rng.random(gs.shape) < 0.3
  labels = sorted({*range(12), void})  # the classes and void
  ps[noise], pi[noise] = rng.choice(labels, noise.sum()), rng.integers(0, 20, noise.sum())
  things = tuple(range(4, 12))
  mask = np.array([1.0, 0.0, 1.0])
  args = (jnp.asarray(mask), 12, 20, things, void)
  stats = np.asarray(panoptic_stats(*map(jnp.asarray, (ps, pi, gs, gi)), *args))
  keep = mask.astype(bool)
  reference = PanopticQuality(12, things, void_label=void).update(ps[keep], pi[keep], gs[keep], gi[keep])
  np.testing.assert_array_equal(stats[:3], np.stack([reference.tp, reference.fp, reference.fn]))
  np.testing.assert_allclose(stats[3], reference.iou_sum, rtol=1e-5)
  assert reference.tp.sum() > 20 and reference.fp.sum() > 0 and reference.fn.sum() > 0


@pytest.mark.parametrize("void", [0, -1])
def test_panoptic_statistics_apply_the_void_rules_to_a_void_label_inside_the_class_range(void):
  """One 1x10 image, thing class 2 (instance 1): GT ``v v v v 2 2 2 2 2 2``, prediction ``2 x8, 1 1``.
  By hand (panopticapi's rules): the predicted 2 covers 8 pixels, 4 of them on GT void, so its union
  is 8 + 6 - 4 - 4 = 6 and IoU 4/6 > 0.5: a true positive; the predicted 1 is a false positive. Void 0
  lies inside the class range, as in big_vision's COCO; -1 outside it: the same numbers either way."""
  gs = np.array([[[void] * 4 + [2] * 6]])
  ps = np.array([[[2] * 8 + [1] * 2]])
  ones = np.ones_like(gs)
  stats = np.asarray(panoptic_stats(*map(jnp.asarray, (ps, ones, gs, ones)), jnp.ones(1), 3, 2, (2,), void))
  expected = np.zeros((4, 3))
  expected[0, 2], expected[3, 2] = 1, 4 / 6  # TP and IoU of class 2
  expected[1, 1] = 1  # FP of class 1
  np.testing.assert_allclose(stats, expected, rtol=1e-6)
