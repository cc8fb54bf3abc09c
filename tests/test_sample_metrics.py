"""Sample metrics against independent references: np.cov, scipy sqrtm, closed forms, brute-force k-NN."""

import itertools

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.special
import scipy.stats

from fsq.evals import sample_metrics as sm


def _random_spd(rng, dim):
  a = rng.normal(size=(dim, dim))
  return a @ a.T + 0.1 * np.eye(dim)


# FeatureStats.


def test_feature_stats_equal_numpy_over_the_concatenation():
  rng = np.random.default_rng(0)
  batches = [rng.normal(3.0, 2.0, size=(n, 5)) for n in (7, 1, 0, 12, 2)]
  stats = sm.FeatureStats(5)
  for batch in batches:
    stats.update(batch)
  everything = np.concatenate(batches)
  assert stats.count == 22
  np.testing.assert_allclose(stats.mean, everything.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(stats.covariance, np.cov(everything, rowvar=False), rtol=1e-10)


def test_feature_stats_stay_accurate_with_a_large_offset():
  # A raw sum of outer products would lose the unit-scale spread under a 1e8 offset; np.cov centres first.
  rng = np.random.default_rng(1)
  x = 1e8 + rng.normal(size=(400, 3))
  stats = sm.FeatureStats(3).update(x[:150]).update(x[150:])
  np.testing.assert_allclose(stats.covariance, np.cov(x, rowvar=False), rtol=1e-6, atol=1e-6)


def test_merging_two_halves_equals_one_pass():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(50, 4)) * [1.0, 2.0, 0.5, 3.0] + [1.0, -2.0, 0.0, 10.0]
  whole = sm.FeatureStats(4).update(x)
  merged = sm.FeatureStats(4).update(x[:17]).merge(sm.FeatureStats(4).update(x[17:]))
  assert merged.count == whole.count == 50
  np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
  np.testing.assert_allclose(merged.covariance, whole.covariance, rtol=1e-12)
  # Merging with an empty accumulator changes nothing, on either side.
  for combined in (whole.merge(sm.FeatureStats(4)), sm.FeatureStats(4).merge(whole)):
    np.testing.assert_array_equal(combined.mean, whole.mean)
    np.testing.assert_array_equal(combined.covariance, whole.covariance)


def test_save_load_round_trip_keeps_the_key(tmp_path):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(30, 3))
  stats = sm.FeatureStats(3).update(x)
  path = tmp_path / "ref.npz"
  stats.save(path, key="imagenet64/validation/inception_v3")
  loaded, key = sm.FeatureStats.load(path)
  assert key == "imagenet64/validation/inception_v3"
  assert loaded.count == 30
  np.testing.assert_allclose(loaded.mean, x.mean(axis=0), rtol=1e-12)
  np.testing.assert_allclose(loaded.covariance, np.cov(x, rowvar=False), rtol=1e-12)
  # The loaded accumulator keeps accumulating.
  y = rng.normal(size=(5, 3))
  np.testing.assert_allclose(loaded.update(y).covariance, np.cov(np.concatenate([x, y]), rowvar=False))
  stats.save(tmp_path / "nokey.npz")
  assert sm.FeatureStats.load(tmp_path / "nokey.npz")[1] is None
  assert sorted(p.name for p in tmp_path.iterdir()) == ["nokey.npz", "ref.npz"]  # No temporary left.


def test_feature_stats_reject_bad_inputs(tmp_path):
  stats = sm.FeatureStats(3)
  with pytest.raises(ValueError, match=r"dim must be a positive integer, got 0"):
    sm.FeatureStats(0)
  with pytest.raises(ValueError, match=r"batch must be a 2-D \(N, 3\) array, got shape \(2, 4\)"):
    stats.update(np.zeros((2, 4)))
  with pytest.raises(ValueError, match=r"batch must be finite, got 1 non-finite"):
    stats.update(np.array([[0.0, np.nan, 1.0]]))
  with pytest.raises(ValueError, match=r"other must be a FeatureStats of dim 3"):
    stats.merge(sm.FeatureStats(2))
  with pytest.raises(ValueError, match=r"mean needs at least 1 feature"):
    _ = stats.mean
  with pytest.raises(ValueError, match=r"covariance needs at least 2 features, got count 1"):
    _ = stats.update(np.ones((1, 3))).covariance
  with pytest.raises(ValueError, match=r"covariance needs at least 2"):
    stats.save(tmp_path / "one.npz")
  np.savez(tmp_path / "partial.npz", mean=np.zeros(3))
  with pytest.raises(ValueError, match=r"lacks fields \['count', 'cov'\]"):
    sm.FeatureStats.load(tmp_path / "partial.npz")


# Frechet distance.


def test_frechet_distance_of_a_set_with_itself_is_zero():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
  mu, sigma = x.mean(axis=0), np.cov(x, rowvar=False)
  assert sm.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8 * np.trace(sigma))


def test_frechet_distance_grows_with_added_noise():
  rng = np.random.default_rng(5)
  real = rng.normal(size=(2000, 8))
  noise = rng.normal(size=real.shape)
  ref = sm.FeatureStats(8).update(real)
  fids = []
  for scale in (0.0, 0.1, 0.3, 1.0, 3.0):
    fake = sm.FeatureStats(8).update(real + scale * noise)
    fids.append(sm.frechet_distance(ref.mean, ref.covariance, fake.mean, fake.covariance))
  assert fids[0] == pytest.approx(0.0, abs=1e-9)
  assert all(a < b for a, b in itertools.pairwise(fids))


def test_frechet_distance_equals_scipy_sqrtm_on_random_spd():
  rng = np.random.default_rng(6)
  for dim in (1, 3, 20):
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert sm.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert sm.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_diagonal_covariances_by_hand():
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
  # sum (sqrt(a) - sqrt(b))^2 + ||mu1 - mu2||^2 = (1 + 0 + 4) + (1 + 0 + 4).
  assert sm.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(10.0, rel=1e-12)


def test_frechet_distance_of_equal_singular_covariances_is_the_mean_gap():
  # Rank 2 in 6 dimensions (fewer samples than features): sqrtm-based code needs an offset here.
  rng = np.random.default_rng(7)
  basis = rng.normal(size=(6, 2))
  sigma = basis @ basis.T
  mu1, mu2 = np.zeros(6), np.full(6, 0.5)
  assert sm.frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(1.5, rel=1e-9, abs=1e-9)


def test_frechet_distance_rejects_bad_inputs():
  mu, sigma = np.zeros(3), np.eye(3)
  with pytest.raises(ValueError, match=r"mu1 must be a non-empty 1-D \(D,\) array, got shape \(3, 3\)"):
    sm.frechet_distance(sigma, sigma, mu, sigma)
  with pytest.raises(ValueError, match=r"sigma1 must have shape \(3, 3\) \(D = 3 from mu1\), got \(2, 2\)"):
    sm.frechet_distance(mu, np.eye(2), mu, sigma)
  with pytest.raises(ValueError, match=r"mu2 must have shape \(3,\) .*got \(4,\)"):
    sm.frechet_distance(mu, sigma, np.zeros(4), sigma)
  with pytest.raises(ValueError, match=r"sigma2 must be finite, got 1 non-finite"):
    sm.frechet_distance(mu, sigma, mu, np.diag([1.0, np.inf, 1.0]))


# Inception score.


def test_inception_score_of_uniform_predictions_is_one():
  mean, std = sm.inception_score(np.zeros((100, 7)), splits=10)
  assert mean == pytest.approx(1.0, abs=1e-12)
  assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_one_hot_predictions_over_c_classes_is_c():
  classes = 8
  labels = np.tile(np.arange(classes), 10)  # Each of the 10 splits holds every class once.
  logits = np.where(np.arange(classes)[None, :] == labels[:, None], 1000.0, 0.0)
  mean, std = sm.inception_score(logits, splits=10)
  assert mean == pytest.approx(classes, rel=1e-12)
  assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_equals_a_scipy_reference():
  rng = np.random.default_rng(8)
  logits = 3.0 * rng.normal(size=(103, 5))
  splits = 4
  scores = []
  for i in range(splits):
    p = scipy.special.softmax(logits[i * 103 // splits : (i + 1) * 103 // splits], axis=1)
    py = p.mean(axis=0)
    scores.append(np.exp(np.mean([scipy.stats.entropy(row, py) for row in p])))
  mean, std = sm.inception_score(logits, splits=splits)
  assert (mean, std) == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-10)


def test_inception_score_rejects_bad_inputs():
  with pytest.raises(ValueError, match=r"logits must be a 2-D \(N, D\) array, got shape \(10,\)"):
    sm.inception_score(np.zeros(10))
  with pytest.raises(ValueError, match=r"splits must be an integer in \[1, 5\].*got 6"):
    sm.inception_score(np.zeros((5, 3)), splits=6)
  with pytest.raises(ValueError, match=r"logits must be finite"):
    sm.inception_score(np.full((5, 3), np.nan), splits=1)


# Precision and recall.


def test_precision_recall_of_identical_sets_is_one():
  x = np.random.default_rng(9).normal(size=(40, 3))
  assert sm.precision_recall(x, x, k=3, batch_size=7) == (1.0, 1.0)


def test_precision_recall_of_a_far_set_is_zero():
  x = np.random.default_rng(10).normal(size=(40, 3))
  assert sm.precision_recall(x, x + 1000.0, k=3) == (0.0, 0.0)


def test_precision_recall_of_a_cluster_inside_the_real_manifold_by_hand():
  # 1-D, k = 1. Real points 0..4 have radius 1: the real manifold is [-1, 5], holding both fake points.
  # Fake points 1.5 and 2.5 have radius 1: the fake manifold is [0.5, 3.5], holding reals 1, 2, 3.
  real = np.arange(5.0)[:, None]
  fake = np.array([[1.5], [2.5]])
  assert sm.precision_recall(real, fake, k=1, batch_size=2) == pytest.approx((1.0, 3 / 5))
  # k = 2: real radii 2, 1, 1, 1, 2 (manifold [-2, 6]); fake needs 3 points: 1.5, 2.5, 3.0 with
  # radii 1.5, 1.0, 1.5, so the fake manifold is [0, 4.5] and holds every real point (0 on its boundary,
  # which counts as inside).
  fake = np.array([[1.5], [2.5], [3.0]])
  assert sm.precision_recall(real, fake, k=2, batch_size=1) == pytest.approx((1.0, 1.0))


def test_precision_recall_equals_a_brute_force_reference():
  rng = np.random.default_rng(11)
  real, fake = rng.normal(size=(60, 4)), 0.7 * rng.normal(size=(45, 4)) + 0.8
  k = 3

  def inside(manifold, queries):
    radii = np.sort(scipy.spatial.distance.cdist(manifold, manifold), axis=1)[:, k]  # Column 0 is self.
    return np.mean(np.any(scipy.spatial.distance.cdist(queries, manifold) <= radii[None, :], axis=1))

  expected = (inside(real, fake), inside(fake, real))
  assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0  # A non-trivial case.
  for batch_size in (1, 16, 1024):
    assert sm.precision_recall(real, fake, k=k, batch_size=batch_size) == pytest.approx(expected)


def test_precision_recall_rejects_bad_inputs():
  x = np.zeros((5, 2))
  with pytest.raises(ValueError, match=r"real must be a 2-D \(N, D\) array, got shape \(5,\)"):
    sm.precision_recall(np.zeros(5), x)
  with pytest.raises(ValueError, match=r"fake must be a 2-D \(N, 2\) array, got shape \(5, 3\)"):
    sm.precision_recall(x, np.zeros((5, 3)))
  with pytest.raises(ValueError, match=r"fake needs more than k=3 rows for k-NN radii, got 3"):
    sm.precision_recall(x, np.zeros((3, 2)))
  with pytest.raises(ValueError, match=r"k must be a positive integer, got 0"):
    sm.precision_recall(x, x, k=0)
  with pytest.raises(ValueError, match=r"batch_size must be a positive integer, got 0"):
    sm.precision_recall(x, x, batch_size=0)
  with pytest.raises(ValueError, match=r"fake must be finite"):
    sm.precision_recall(x, np.full((5, 2), np.nan))
