"""A training set held on the devices: a small dataset's images and labels (Fashion-MNIST, the synthetic
scenes' images; no dense maps) as uint8 arrays in device memory, each step's batch drawn there, with no
host work per step.

The images are decoded and resized once by the Grain pipeline's deterministic part (no flips or crops),
then split into D contiguous shards, one per batch shard of the mesh (its data x fsdp devices), as
``(D, n, S, S, C)`` uint8 and ``(D, n)`` int32 labels sharded on the first axis (n = N // D: the
remainder is dropped, as Grain drops it). Step s draws, on every shard d, the records at positions
``[(s mod E) b, (s mod E + 1) b)`` of a permutation of the shard's n records by (seed, epoch s // E, d),
where b = B / D is the shard's rows of the batch and E = n // b the steps per epoch: every epoch sees
each record of the shard at most once, and no record twice. Flips (probability 1/2 per image) come from
(seed, step). A batch is therefore a function of the step number alone: a resumed run draws exactly the
batches it would have drawn, with nothing to checkpoint.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fsq.data import pipeline
from fsq.train import mesh as mesh_lib


def decode_all(
  source: pipeline.ImageSource, image_size: int, resize_mode: str
) -> tuple[np.ndarray, np.ndarray]:
  """Every record of ``source`` in order as uint8 images (N, S, S, C), resized as the pipeline resizes
  them, and int32 labels (N,)."""
  loader = pipeline.make_loader(
    source,
    batch_size_per_process=1024,
    seed=0,
    shuffle=False,
    num_epochs=1,
    image_size=image_size,
    resize_mode=resize_mode,
    random_flip=False,
    worker_count=0,
    read_threads=2,
    prefetch_buffer_size=2,
    process_index=0,
    process_count=1,
    drop_remainder=False,
    image_dtype="uint8",
  )
  batches = list(loader)
  return np.concatenate([b["image"] for b in batches]), np.concatenate([b["label"] for b in batches])


def place(images: np.ndarray, labels: np.ndarray, mesh: Mesh) -> dict[str, jax.Array]:
  """Host arrays (N, ...) -> ``{"image": (D, n, ...), "label": (D, n)}`` on the mesh, shard d (the
  records [d n, (d + 1) n)) on the d-th batch shard's devices. Every process passes the whole dataset and
  places only its devices' shards."""
  shards = mesh_lib.batch_shards(mesh)
  n = len(labels) // shards
  if n < 1:
    raise ValueError(
      f"a resident dataset needs at least one record per batch shard ({shards}), got {len(labels)}"
    )
  sharding = NamedSharding(mesh, PartitionSpec(mesh_lib.BATCH_AXES))

  def put(array: np.ndarray) -> jax.Array:
    array = array[: shards * n].reshape(shards, n, *array.shape[1:])
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

  return {"image": put(images), "label": put(labels.astype(np.int32))}


def draw(
  data: dict[str, jax.Array], step: jax.Array, *, seed: int, batch_size: int, random_flip: bool
) -> dict:
  """The global batch of ``step`` (see the module docstring): ``{"image": uint8 (B, S, S, C), "label":
  int32 (B,)}``, each shard's rows drawn from its own records. Jit it with the batch sharding out."""
  shards, n = data["label"].shape
  rows = batch_size // shards
  if rows * shards != batch_size or rows > n:
    raise ValueError(f"batch_size {batch_size} must split into {shards} shards of at most {n} records each")
  per_epoch = n // rows
  epoch, position = step // per_epoch, (step % per_epoch) * rows
  order_key, flip_key = jax.random.split(jax.random.key(seed))
  key = jax.random.fold_in(order_key, epoch)

  def one(images, labels, shard):
    order = jax.random.permutation(jax.random.fold_in(key, shard), n)
    index = jax.lax.dynamic_slice(order, (position,), (rows,))
    return images[index], labels[index]

  images, labels = jax.vmap(one)(data["image"], data["label"], jnp.arange(shards))
  images = images.reshape(batch_size, *images.shape[2:])
  labels = labels.reshape(batch_size)
  if random_flip:
    mirror = jax.random.bernoulli(jax.random.fold_in(flip_key, step), 0.5, (batch_size,))
    images = jnp.where(mirror[:, None, None, None], images[:, :, ::-1], images)
  return {"image": images, "label": labels}
