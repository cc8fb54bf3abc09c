"""Sample-quality metrics on Inception features, in float64 numpy: FID, Inception Score, precision/recall.

* ``FeatureStats`` accumulates the mean and covariance of (N, D) feature batches in one streaming pass;
  two accumulators (other shards or hosts) merge exactly, and the result saves to / loads from a
  ``.npz`` reference file tagged with a caller-chosen key (e.g. a cache key naming dataset and split).
* ``frechet_distance`` is the FID formula on two (mean, covariance) pairs.
* ``inception_score`` is exp(E_x KL(p(y|x) || p(y))) per split, as in Salimans et al. (2016).
* ``precision_recall`` is the improved precision and recall of Kynkäänniemi et al. (2019), which needs
  the raw features of both sets (not their moments).

Every function validates its inputs and raises ValueError naming the offending argument.
"""

from __future__ import annotations

import io
import os

import numpy as np

from fsq.files import write_atomically


def _as_features(name: str, x, dim: int | None = None) -> np.ndarray:
  """``x`` as a finite float64 (N, D) array, or ValueError naming ``name``."""
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
    want = f"(N, {dim})" if dim is not None else "(N, D)"
    raise ValueError(f"{name} must be a 2-D {want} array, got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} must be finite, got {np.sum(~np.isfinite(x))} non-finite values")
  return x


class FeatureStats:
  """Streaming count, mean and covariance of (N, D) feature batches.

  The state is the count, the mean (D,) and the centred sum of outer products (D, D), all float64,
  combined with the pairwise update of Chan et al. (1979): exact up to rounding, and free of the
  cancellation that a raw sum of outer products suffers when the mean is large against the spread.
  ``update`` adds a batch in place; ``merge`` combines two accumulators into a new one, and gives the
  same result as one pass over the concatenated batches, whatever the split.
  """

  def __init__(self, dim: int):
    """An empty accumulator of ``dim``-dimensional features."""
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
      raise ValueError(f"dim must be a positive integer, got {dim!r}")
    self.dim = int(dim)
    self.count = 0
    self._mean = np.zeros(self.dim, np.float64)
    self._m2 = np.zeros((self.dim, self.dim), np.float64)

  def _combine(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
    """Adds the moments of ``count`` further features (mean (D,), centred outer sum (D, D)) in place."""
    if count == 0:
      return
    total = self.count + count
    delta = mean - self._mean
    self._m2 += m2 + np.outer(delta, delta) * (self.count * count / total)
    self._mean += delta * (count / total)
    self.count = total

  def update(self, batch) -> FeatureStats:
    """Adds a (B, D) batch of features (B may be 0) in place; returns self."""
    batch = _as_features("batch", batch, self.dim)
    if batch.shape[0]:
      mean = batch.mean(axis=0)
      centred = batch - mean
      self._combine(batch.shape[0], mean, centred.T @ centred)
    return self

  def merge(self, other: FeatureStats) -> FeatureStats:
    """A new accumulator holding the features of both ``self`` and ``other`` (neither is changed)."""
    if not isinstance(other, FeatureStats) or other.dim != self.dim:
      raise ValueError(f"other must be a FeatureStats of dim {self.dim}, got {other!r}")
    merged = FeatureStats(self.dim)
    merged._combine(self.count, self._mean, self._m2)
    merged._combine(other.count, other._mean, other._m2)
    return merged

  @property
  def mean(self) -> np.ndarray:
    """(D,) float64 mean of all features seen; needs at least one."""
    if self.count < 1:
      raise ValueError("mean needs at least 1 feature, got count 0")
    return self._mean.copy()

  @property
  def covariance(self) -> np.ndarray:
    """(D, D) float64 unbiased covariance (divided by N - 1, as np.cov(rowvar=False)); needs N >= 2."""
    if self.count < 2:
      raise ValueError(f"covariance needs at least 2 features, got count {self.count}")
    return self._m2 / (self.count - 1)

  def __repr__(self) -> str:
    return f"FeatureStats(dim={self.dim}, count={self.count})"

  def save(self, path: str | os.PathLike, key: str | None = None) -> None:
    """Writes count, mean, covariance and, if given, ``key`` to the ``.npz`` file ``path`` (exact name).

    The file is written beside ``path`` and renamed into place, so a reader never sees half of it.
    """
    if key is not None and not isinstance(key, str):
      raise ValueError(f"key must be a string or None, got {type(key).__name__}")
    arrays = {"count": np.int64(self.count), "mean": self.mean, "cov": self.covariance}
    if key is not None:
      arrays["key"] = np.str_(key)
    npz = io.BytesIO()  # a file object: np.savez keeps the exact name
    np.savez(npz, **arrays)
    write_atomically(path, lambda tmp: tmp.write_bytes(npz.getvalue()))

  @classmethod
  def load(cls, path: str | os.PathLike) -> tuple[FeatureStats, str | None]:
    """Reads a file written by ``save``: (the accumulator, the stored key or None if none was stored).

    The accumulator can be updated and merged further. Callers check the key against the one they
    expect before trusting a cached reference.
    """
    with np.load(path, allow_pickle=False) as f:
      missing = {"count", "mean", "cov"} - set(f.files)
      if missing:
        raise ValueError(f"{os.fspath(path)} lacks fields {sorted(missing)}; it holds {sorted(f.files)}")
      count, mean, cov = int(f["count"]), f["mean"].astype(np.float64), f["cov"].astype(np.float64)
      key = str(f["key"]) if "key" in f.files else None
    if mean.ndim != 1 or cov.shape != (mean.size, mean.size) or count < 2:
      raise ValueError(
        f"{os.fspath(path)} holds inconsistent stats: count {count}, mean {mean.shape}, cov {cov.shape}"
      )
    stats = cls(mean.size)
    stats._combine(count, mean, cov * (count - 1))
    return stats, key


def _clip_rounding(eigenvalues: np.ndarray) -> np.ndarray:
  """Eigenvalues of a symmetric PSD matrix, with those within eigh's rounding error of 0 set to 0.

  eigh's absolute error is about D * eps * the largest magnitude; below that an eigenvalue cannot be
  told from 0, and its square root (about sqrt(eps) of the scale) would be pure noise.
  """
  tol = eigenvalues.size * np.finfo(np.float64).eps * np.abs(eigenvalues).max(initial=0.0)
  return np.where(eigenvalues > tol, eigenvalues, 0.0)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix."""
  w, v = np.linalg.eigh(sigma)
  return (v * np.sqrt(_clip_rounding(w))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): FID on Inception feature moments.

  ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2}). The trace of the square root is
  taken as the sum of the square roots of the eigenvalues of the symmetric PSD matrix
  sigma1^{1/2} sigma2 sigma1^{1/2}, which has the same eigenvalues as sigma1 sigma2; unlike
  ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` this needs no offset for singular covariances and has no
  imaginary part to discard. Eigenvalues within eigh's rounding error of 0 count as 0 (their square
  roots would be noise of order sqrt(eps)), and a result pushed a hair below 0 by rounding is clipped
  to 0. Asymmetric covariances are symmetrised.

  Args:
    mu1, mu2: (D,) means.
    sigma1, sigma2: (D, D) symmetric positive semi-definite covariances.

  Returns:
    The distance, a non-negative Python float.
  """
  mu1 = np.asarray(mu1, np.float64)
  if mu1.ndim != 1 or mu1.size == 0:
    raise ValueError(f"mu1 must be a non-empty 1-D (D,) array, got shape {mu1.shape}")
  dim = mu1.size
  args = {"mu1": mu1, "sigma1": sigma1, "mu2": mu2, "sigma2": sigma2}
  args = {name: np.asarray(value, np.float64) for name, value in args.items()}
  for name, value in args.items():
    want = (dim,) if name.startswith("mu") else (dim, dim)
    if value.shape != want:
      raise ValueError(f"{name} must have shape {want} (D = {dim} from mu1), got {value.shape}")
    if not np.all(np.isfinite(value)):
      raise ValueError(f"{name} must be finite, got {np.sum(~np.isfinite(value))} non-finite values")
  mu1, sigma1, mu2, sigma2 = args.values()
  sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
  root1 = _psd_sqrt(sigma1)
  product = root1 @ sigma2 @ root1
  eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
  trace_sqrt = np.sqrt(_clip_rounding(eigenvalues)).sum()
  diff = mu1 - mu2
  value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
  return max(float(value), 0.0)


def _log_softmax(logits: np.ndarray, axis: int) -> np.ndarray:
  shifted = logits - logits.max(axis=axis, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _logmeanexp(x: np.ndarray, axis: int) -> np.ndarray:
  peak = x.max(axis=axis, keepdims=True)
  return (peak + np.log(np.exp(x - peak).mean(axis=axis, keepdims=True))).squeeze(axis)


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
  """Inception Score exp(E_x KL(p(y|x) || p(y))), as the mean and std over ``splits`` splits.

  As in the original code, the samples are cut in order into ``splits`` contiguous parts (part i holds
  rows [i N // splits, (i + 1) N // splits)), p(y) is the mean prediction within a part, and the
  score is computed per part. Softmax and logs are float64; log-probabilities are valid logits too.

  Args:
    logits: (N, C) classifier logits (pre-softmax), one row per sample.
    splits: number of parts, in [1, N].

  Returns:
    (mean, std) of the per-part scores, Python floats; std is the population std (0 for one split).
  """
  logits = _as_features("logits", logits)
  n = logits.shape[0]
  if isinstance(splits, bool) or not isinstance(splits, int | np.integer) or not 1 <= splits <= n:
    raise ValueError(f"splits must be an integer in [1, {n}] (the number of samples), got {splits!r}")
  scores = []
  for i in range(splits):
    log_p = _log_softmax(logits[i * n // splits : (i + 1) * n // splits], axis=1)
    # log p(y) = log mean_x p(y|x), taken in log space so that it stays finite where p underflows.
    log_py = _logmeanexp(log_p, axis=0)
    kl = (np.exp(log_p) * (log_p - log_py)).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """(len(a), len(b)) squared Euclidean distances, clipped at 0."""
  d2 = (a * a).sum(axis=1)[:, None] - 2.0 * (a @ b.T) + (b * b).sum(axis=1)[None, :]
  return np.maximum(d2, 0.0)


def _knn_radii2(x: np.ndarray, k: int, batch_size: int) -> np.ndarray:
  """(N,) squared distance from each row of ``x`` to its k-th nearest other row (itself excluded)."""
  radii2 = np.empty(x.shape[0], np.float64)
  for start in range(0, x.shape[0], batch_size):
    d2 = _squared_distances(x[start : start + batch_size], x)
    rows = np.arange(d2.shape[0])
    d2[rows, start + rows] = np.inf
    radii2[start : start + batch_size] = np.partition(d2, k - 1, axis=1)[:, k - 1]
  return radii2


def _fraction_inside(manifold: np.ndarray, radii2: np.ndarray, queries: np.ndarray, batch_size: int) -> float:
  """Fraction of ``queries`` within the k-NN radius of at least one ``manifold`` point (boundary inside)."""
  inside = 0
  for start in range(0, queries.shape[0], batch_size):
    d2 = _squared_distances(queries[start : start + batch_size], manifold)
    inside += int(np.any(d2 <= radii2[None, :], axis=1).sum())
  return inside / queries.shape[0]


def precision_recall(real, fake, k: int = 3, batch_size: int = 1024) -> tuple[float, float]:
  """Improved precision and recall (Kynkäänniemi et al., 2019) of ``fake`` features against ``real``.

  Each set's manifold is the union of balls around its points, each ball's radius the distance to
  that point's k-th nearest neighbour in the same set (the point itself excluded; duplicates count).
  Precision is the fraction of fake points inside the real manifold, recall the fraction of real
  points inside the fake manifold; a point on a ball's boundary is inside, as in the official code.

  Distances are computed for ``batch_size`` query rows at a time, so memory is about
  batch_size * max(N_real, N_fake) float64s on top of the inputs (1024 x 10k: 80 MiB).

  Args:
    real: (N_real, D) features of real samples, N_real > k.
    fake: (N_fake, D) features of generated samples, N_fake > k.
    k: neighbour rank that sets the radii (3 in the paper).
    batch_size: rows per distance block, >= 1.

  Returns:
    (precision, recall), Python floats in [0, 1].
  """
  real = _as_features("real", real)
  fake = _as_features("fake", fake, real.shape[1])
  if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
    raise ValueError(f"k must be a positive integer, got {k!r}")
  for name, x in (("real", real), ("fake", fake)):
    if x.shape[0] <= k:
      raise ValueError(f"{name} needs more than k={k} rows for k-NN radii, got {x.shape[0]}")
  if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  precision = _fraction_inside(real, _knn_radii2(real, k, batch_size), fake, batch_size)
  recall = _fraction_inside(fake, _knn_radii2(fake, k, batch_size), real, batch_size)
  return precision, recall
