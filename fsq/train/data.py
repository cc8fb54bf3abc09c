"""The loop's input: training and evaluation batches for this process, from a data config.

The data is split into ``num_shards`` shards (default: one per process). Each process reads the
shards ``[p * S / P, (p + 1) * S / P)`` with one Grain loader per shard and concatenates their batches,
so the global batch is the same whether S shards are read by one process or by S processes: a
two-process run sees exactly the batches of a one-process run with ``num_shards=2``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from fsq.data import builders, pipeline, tokens


class ShardedIterator:
  """Concatenates one batch from each of this process's shard iterators.

  Grain's orbax handler saves one iterator, so ``get_state``/``set_state`` join the shards' states.
  """

  def __init__(self, iterators: list):
    self.iterators = iterators

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batches = [next(it) for it in self.iterators]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

  def get_state(self) -> bytes:
    """A JSON list of the shards' states."""
    return json.dumps([it.get_state().decode() for it in self.iterators]).encode()

  def set_state(self, state: bytes) -> None:
    parts = json.loads(state.decode())
    if len(parts) != len(self.iterators):
      raise ValueError(f"data state holds {len(parts)} shards, this process reads {len(self.iterators)}")
    for it, part in zip(self.iterators, parts, strict=True):
      it.set_state(part.encode())

  def start_prefetch(self) -> None:
    """Called by Grain's orbax handler after a restore."""
    for it in self.iterators:
      it.start_prefetch()


def _open_sources(
  data_config: ml_collections.ConfigDict,
) -> tuple[pipeline.ImageSource, pipeline.ImageSource]:
  """The train and eval splits of the configured TFDS dataset; process 0 prepares it first."""
  manual_dir = data_config.manual_dir or None
  if jax.process_index() == 0:
    builder = builders.prepare(data_config.name, data_config.data_dir, manual_dir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("dataset prepared")
  if jax.process_index() != 0:
    builder = builders.prepare(data_config.name, data_config.data_dir, manual_dir)
  dense = tuple(data_config.get("dense", ()))  # per-pixel targets of dense tasks, e.g. ("depth",)
  return (
    pipeline.tfds_source(builder, data_config.train_split, dense),
    pipeline.tfds_source(builder, data_config.eval_split, dense),
  )


# The dtype each dense map has in a batch (the datasets' features and adapters make these).
DENSE_DTYPES = {"depth": np.float32, "semantic": np.int32, "instance": np.int32}


def batch_spec(
  data_config: ml_collections.ConfigDict, batch_size: int, eval_batch: bool = False, seq_len: int = 0
) -> dict:
  """``jax.ShapeDtypeStruct``s of one global batch of ``data_config`` (as the pipeline makes them):
  "image" (B, S, S, C) uint8 pixels in a training batch, float32 in [-1, 1] in an evaluation batch,
  "label" (B,) int32, each of ``data_config.dense`` (B, S, S), and for an evaluation batch the "mask"
  (B,) float32. A training batch of a tokens folder (``data_config.tokens_dir``)
  has "tokens" (B, seq_len) int32 in place of the image. For shapes without data: ahead-of-time
  compiles, plans."""
  b, s, c = batch_size, data_config.image_size, data_config.channels
  if data_config.get("tokens_dir", "") and not eval_batch:
    if seq_len < 1:
      raise ValueError(f"a batch of tokens (config.data.tokens_dir) needs seq_len >= 1, got {seq_len}")
    return {
      "tokens": jax.ShapeDtypeStruct((b, seq_len), np.int32),
      "label": jax.ShapeDtypeStruct((b,), np.int32),
    }
  spec = {
    "image": jax.ShapeDtypeStruct((b, s, s, c), np.float32 if eval_batch else np.uint8),
    "label": jax.ShapeDtypeStruct((b,), np.int32),
  }
  for name in data_config.get("dense", ()):
    if name not in DENSE_DTYPES:
      raise ValueError(f"config.data.dense names {name!r}; the dense maps are {sorted(DENSE_DTYPES)}")
    spec[name] = jax.ShapeDtypeStruct((b, s, s), DENSE_DTYPES[name])
  if eval_batch:
    spec["mask"] = jax.ShapeDtypeStruct((b,), np.float32)
  return spec


def device_images(batch: dict) -> dict:
  """A batch whose uint8 "image" (training batches) is scaled to float32 in [-1, 1] (``jax.numpy``, inside
  the jitted step: the host copies bytes, the device does the arithmetic); other batches as they are."""
  image = batch.get("image")
  if image is None or image.dtype != np.uint8:
    return batch
  return {**batch, "image": pipeline.scale_pixels(image)}


class InputPipeline:
  """Training and evaluation batches of ``data_config`` for a global batch of ``batch_size``."""

  def __init__(
    self,
    data_config: ml_collections.ConfigDict,
    batch_size: int,
    seed: int,
    skip_log_path: Path | None = None,
    sources: tuple[pipeline.ImageSource, pipeline.ImageSource] | None = None,
  ):
    """``sources`` (train, eval) replace the TFDS dataset named by the config (tests use mock data)."""
    self.config = data_config
    self.skip_log = (
      pipeline.SkipLog(skip_log_path) if data_config.skip_bad_examples and skip_log_path else None
    )
    self.batch_size = batch_size
    self.seed = seed
    processes, index = jax.process_count(), jax.process_index()
    shards = data_config.get("num_shards", 0) or processes
    if shards % processes or batch_size % shards:
      raise ValueError(
        f"config.data.num_shards = {shards} must be a multiple of the process count ({processes}) "
        f"and divide config.batch_size = {batch_size}"
      )
    self.num_shards = shards
    self.local_shards = list(range(index * shards // processes, (index + 1) * shards // processes))
    self.shard_batch = batch_size // shards
    if sources is None:
      sources = _open_sources(data_config)
    self.train_source, self.eval_source = sources

  @property
  def global_image_shape(self) -> tuple[int, int, int, int]:
    size = self.config.image_size
    return (self.batch_size, size, size, self.config.channels)

  def _loader(self, source, shard: int, *, train: bool):
    """Training: grain's equal shares of the shuffled records. Evaluation: contiguous shards that hold
    every record exactly once (grain's sharding would drop the remainder)."""
    if not train:
      source = source.shard(shard, self.num_shards)
    return pipeline.make_loader(
      source,
      batch_size_per_process=self.shard_batch,
      seed=self.seed,
      shuffle=train,
      num_epochs=None if train else 1,
      image_size=self.config.image_size,
      resize_mode=self.config.resize_mode,
      random_flip=self.config.random_flip and train,
      random_crop=self.config.get("random_crop", "") if train else "",
      worker_count=self.config.worker_count if train else 0,
      read_threads=max(1, self.config.get("read_threads", 2)),
      prefetch_buffer_size=self.config.prefetch_buffer_size,
      process_index=shard if train else 0,
      process_count=self.num_shards if train else 1,
      skip_log=self.skip_log,
      drop_remainder=train,
      image_dtype="uint8" if train else "float32",
    )

  def _token_loader(self, source: tokens.TokenSource, shard: int):
    return tokens.make_token_loader(
      source,
      batch_size_per_process=self.shard_batch,
      seed=self.seed,
      random_flip=self.config.random_flip,
      worker_count=self.config.worker_count,
      read_threads=max(1, self.config.get("read_threads", 2)),
      prefetch_buffer_size=self.config.prefetch_buffer_size,
      process_index=shard,
      process_count=self.num_shards,
    )

  def train_iterator(self) -> ShardedIterator:
    """Endless training batches ``{"image", "label"}`` (``{"tokens", "label"}`` from a tokens folder) with
    this process's rows of the global batch; images are uint8 pixels (``device_images`` scales them in
    the train step, on the device)."""
    tokens_dir = self.config.get("tokens_dir", "")
    if tokens_dir:  # stage II on pre-tokenised data: training batches of tokens, evaluation on images
      source = tokens.TokenSource.open(tokens_dir)
      return ShardedIterator([iter(self._token_loader(source, s)) for s in self.local_shards])
    return ShardedIterator([iter(self._loader(self.train_source, s, train=True)) for s in self.local_shards])

  def num_eval_batches(self, limit: int = -1) -> int:
    per_shard = math.ceil(len(self.eval_source) / self.num_shards)
    total = math.ceil(per_shard / self.shard_batch)
    return total if limit == -1 else min(limit, total)

  @property
  def eval_order(self) -> str | None:
    """How ``eval_batches`` orders the evaluation split: None for its own order (one shard), else a
    description of the interleaving (each batch takes ``shard_batch`` rows of each contiguous shard)."""
    if self.num_shards == 1:
      return None
    return f"{self.num_shards} contiguous shards interleaved {self.shard_batch} rows at a time"

  def eval_batches(self, limit: int = -1) -> Iterator[dict[str, np.ndarray]]:
    """The evaluation split once, every batch full-size with ``mask`` 1 for real rows, 0 for padding.

    Every process yields the same number of batches (shards that run out yield padding only).
    """
    iterators = [iter(self._loader(self.eval_source, s, train=False)) for s in self.local_shards]
    empty = None  # a batch of no rows with every field, to pad the shards that ran out
    for _ in range(self.num_eval_batches(limit)):
      raw = [next(it, None) for it in iterators]
      if empty is None and None in raw:
        template = next((b for b in raw if b is not None), None)
        if template is None:  # this process's shards are all done: read the fields off shard 0
          template = next(iter(self._loader(self.eval_source, 0, train=False)))
        empty = {k: v[:0] for k, v in template.items()}
      parts = [_padded(empty if b is None else b, self.shard_batch) for b in raw]
      yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def eval_image_batch(self) -> dict[str, np.ndarray]:
    """The first evaluation batch (for image grids)."""
    return next(self.eval_batches(1))


def _padded(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Pads a (possibly partial or empty) batch to ``size`` rows and adds its ``mask``."""
  n = batch["image"].shape[0]
  out = {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
  out["mask"] = (np.arange(size) < n).astype(np.float32)
  return out
