"""Inception features streamed over batches of images, sharded over a mesh, with cached reference sets.

Images are (B, H, W, C) floats in [-1, 1] with C = 1 (repeated to 3 channels: grey as RGB) or 3. They
are first rounded to 8-bit levels, as they would be when saved as PNG, so real images (8-bit already)
and generated ones are measured alike; ``fsq.evals.inception.features`` then resizes them to 299x299.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from fsq import weights
from fsq.evals import inception
from fsq.files import run_path, write_atomically
from fsq.train import mesh as mesh_lib

log = logging.getLogger(__name__)

DIM = 2048  # pool3 features
# A local folder or a gs:// URL (shared by a pod's hosts).
CACHE_DIR = os.environ.get(
  "FSQ_FID_CACHE", str(Path(__file__).resolve().parents[2] / "artifacts" / "fid_reference")
)


def to_inception_input(images: jax.Array) -> jax.Array:
  """(B, H, W, 1 or 3) in [-1, 1] -> (B, H, W, 3) rounded to 8-bit levels, still in [-1, 1]."""
  if images.shape[-1] not in (1, 3):
    raise ValueError(f"images must have 1 or 3 channels, got shape {images.shape}")
  images = jnp.broadcast_to(images, (*images.shape[:-1], 3))
  return jnp.round((jnp.clip(images, -1, 1) + 1) * 127.5) / 127.5 - 1


class FeatureExtractor:
  """Jitted Inception pool3 features over ``mesh`` (the batch split over its data and fsdp axes).

  Args:
    mesh: the device mesh (``fsq.train.mesh.make_mesh``).
    params: Inception parameters (default: the verified pretrained weights).

  ``weights_digest`` names the parameters in cache keys: the pretrained file's recorded sha256, or the
  sha256 of the given parameters' bytes.
  """

  def __init__(self, mesh: jax.sharding.Mesh, params: dict | None = None):
    self.mesh = mesh
    if params is None:
      self.weights_digest = weights.KNOWN["inception_fid"][1]
    else:
      digest = hashlib.sha256()
      for leaf in jax.tree.leaves(params):
        digest.update(np.ascontiguousarray(leaf).tobytes())
      self.weights_digest = digest.hexdigest()
    replicated = mesh_lib.replicated(mesh)
    self.params = jax.device_put(inception.inception_params() if params is None else params, replicated)
    self._features = jax.jit(
      lambda p, x: inception.features(p, to_inception_input(x))["pool"],
      in_shardings=(replicated, mesh_lib.batch_sharding(mesh)),
      out_shardings=replicated,
    )

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """(B, H, W, C) -> (B, 2048) float32; B must divide over the mesh's batch axes."""
    return np.asarray(self._features(self.params, mesh_lib.global_batch(np.asarray(images), self.mesh)))

  def extract(self, batches: Iterable[dict], num_images: int, what: str = "images") -> np.ndarray:
    """Features of the first ``num_images`` valid rows of ``batches`` ({"image": (B, H, W, C), "mask":
    (B,) 1 for real rows}; without "mask" every row counts), with a progress line: (num_images, 2048).

    Raises ValueError if the batches run out first."""
    out, done, start, last_log = [], 0, time.perf_counter(), 0.0
    for batch in batches:
      feats = self(batch["image"])
      valid = np.asarray(batch["mask"], bool) if "mask" in batch else np.ones(len(batch["image"]), bool)
      valid = mesh_lib.global_rows(valid)  # features are of the global batch; so must the mask be
      out.append(feats[valid][: num_images - done])
      done += len(out[-1])
      now = time.perf_counter()
      if done >= num_images or now - last_log > 30:
        rate = done / max(now - start, 1e-9)
        eta = (num_images - done) / max(rate, 1e-9)
        log.info(
          "inception features of %s: %d/%d, %.1f images/s, ETA %.0fs", what, done, num_images, rate, eta
        )
        last_log = now
      if done >= num_images:
        return np.concatenate(out)
    raise ValueError(f"num_images = {num_images} but the {what} ran out after {done}")


def reference_key(data_config, split: str, num_images: int, weights_digest: str, order: str | None) -> str:
  """What a cached reference set depends on: dataset, split, size, channels, resize mode, which
  ``num_images`` examples come first (``order``: None for the split's own order, as
  ``InputPipeline.eval_order`` says), and the Inception weights' digest."""
  c = data_config
  key = f"{c.name}|{split}|{c.image_size}|{c.channels}|{c.resize_mode}|{num_images}"
  key = f"{key}|inception_fid:{weights_digest}"
  return key if order is None else f"{key}|{order}"


def _cached(path, key: str) -> np.ndarray | None:
  """The features cached in ``path`` under ``key``, if this process has them and every process does
  (a cache on a disk that only some hosts see must not split them between reading and extracting)."""
  feats = None
  if path.exists():
    with path.open("rb") as f, np.load(f, allow_pickle=False) as data:
      if str(data["key"]) == key:
        feats = data["features"]
  if jax.process_count() > 1:
    everywhere = multihost_utils.process_allgather(np.int32(feats is not None))
    feats = feats if np.all(everywhere) else None
  return feats


def reference_features(
  extractor: FeatureExtractor,
  data_config,
  batches: Iterator[dict],
  split: str,
  num_images: int,
  cache_dir: Path | None = None,
  order: str | None = None,
) -> np.ndarray:
  """(num_images, 2048) features of the first ``num_images`` examples of ``split`` (from ``batches``, which
  enumerate it in ``order``: None for the split's own order), computed once and cached as ``.npz`` under
  ``cache_dir`` keyed by ``reference_key``."""
  key = reference_key(data_config, split, num_images, extractor.weights_digest, order)
  cache_dir = run_path(CACHE_DIR if cache_dir is None else cache_dir, "FID reference cache")
  path = cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
  cached = _cached(path, key)
  if cached is not None:
    log.info("reference features from %s (%s)", path, key)
    return cached
  feats = extractor.extract(batches, num_images, f"{data_config.name}/{split}")
  if jax.process_index() == 0:
    write_atomically(path, lambda tmp: np.savez(tmp, features=feats, key=np.asarray(key)))
  return feats
