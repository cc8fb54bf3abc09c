"""Grain input pipelines over random-access sources: shuffle, shard per process, decode, augment, batch.

A loader yields ``{"image": float32 (B, H, W, C) in [-1, 1], "label": int32 (B,)}`` with B the
per-process batch. The batches are a pure function of the source and the loader's arguments
(worker_count included), so a resumed run sees exactly the batches it would have seen. Save and restore the
iterator with orbax next to the train state (grain registers these args when orbax is installed):

  iterator = iter(loader)
  manager = ocp.CheckpointManager(directory)
  manager.save(step, args=ocp.args.Composite(
    state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator)))
  # later, in a fresh run with a loader made by the same call:
  iterator = iter(make_loader(...))
  manager.restore(step, args=ocp.args.Composite(
    state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(iterator)))

Each process writes its own ``process_<i>-of-<n>.json``. Without orbax, ``iterator.get_state()`` (bytes)
and ``iterator.set_state(state)`` do the same. A restored loader must have the same sampler, source
and worker_count (grain checks this).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import flags, logging
from PIL import Image

from fsq import files
from fsq.data import dense_targets

RESIZE_MODES = ("pad", "crop", "squash")
RANDOM_CROPS = ("", "inception")
_PIL_MODES = {1: "L", 3: "RGB"}


@dataclasses.dataclass(frozen=True)
class ImageSource:
  """Random access to examples ``{"image": encoded bytes or uint8 (H, W[, C]), "label": int}``.

  Items are ``{"image", "label", "record_key"}`` with the image still undecoded (label -1 for datasets
  without labels), plus the ``dense`` per-pixel maps (H, W) of the image (e.g. depth, semantic and
  instance maps: dense tasks' targets); `image_shape` is the expected decoded shape (H, W, C), None
  for a size that varies.
  """

  examples: Sequence[dict[str, Any]]
  image_shape: tuple[int | None, int | None, int]
  dense: tuple[str, ...] = ()
  start: int = 0  # a shard's first record in ``examples``
  stop: int | None = None  # one past its last (None: the end)
  adapter: Callable[[dict[str, Any]], dict[str, np.ndarray]] | None = None  # example -> dense maps[, image]

  def __len__(self) -> int:
    return (len(self.examples) if self.stop is None else self.stop) - self.start

  def __getitem__(self, record_key: int) -> dict[str, Any]:
    key = self.start + int(record_key)
    example = self.examples[key]
    item = {"image": example["image"], "label": example.get("label", -1), "record_key": key}
    if self.adapter is None or not self.dense:
      return {**item, **{name: np.asarray(example[name]) for name in self.dense}}
    maps = self.adapter(example)
    return {**item, "image": maps.get("image", item["image"]), **{name: maps[name] for name in self.dense}}

  def shard(self, index: int, count: int) -> ImageSource:
    """The index-th of ``count`` contiguous shards (sizes differ by at most one; together every record
    exactly once), keeping the records' keys for error messages."""
    if not 0 <= index < count:
      raise ValueError(f"shard index must be in [0, {count}), got {index}")
    n = len(self)
    start, stop = self.start + index * n // count, self.start + (index + 1) * n // count
    return dataclasses.replace(self, start=start, stop=stop)

  def __repr__(self) -> str:
    """Grain compares it on restore, so it must stay stable: a list would print all its data, and a
    source of all its records prints no range, as it did before shards had one (older checkpoints of
    unsharded sources still restore)."""
    examples = self.examples
    name = f"{type(examples).__name__} of {len(examples)}" if isinstance(examples, list | tuple) else examples
    whole = self.start == 0 and self.stop is None
    return f"ImageSource({name!s}, image_shape={self.image_shape}" + (
      ")" if whole else f", records [{self.start}, {self.stop}))"
    )


def tfds_source(builder: tfds.core.DatasetBuilder, split: str, dense: tuple[str, ...] = ()) -> ImageSource:
  """The split of a prepared array_record TFDS dataset, images left encoded for the pipeline to decode;
  ``dense`` names per-pixel maps to carry along: features of the dataset, or maps that its adapter in
  ``fsq.data.dense_targets`` makes from its features (COCO panoptic, NYU depth). A ValueError lists
  what the dataset has."""
  features = builder.info.features
  config = builder.builder_config
  adapter = dense_targets.ADAPTERS.get(f"{builder.name}/{config.name}" if config else builder.name)
  available = adapter.makes if adapter is not None else tuple(features)
  missing = [name for name in dense if name not in available]
  if missing:
    raise ValueError(f"dense features {missing} are not in {builder.name}, which has {sorted(available)}")
  encoded = adapter.encoded if adapter is not None and dense else ()
  decoders = {name: tfds.decode.SkipDecoding() for name in ("image", *encoded)}
  examples = builder.as_data_source(split=split, decoders=decoders)
  fn = functools.partial(adapter.fn, split=split) if adapter is not None else None
  return ImageSource(examples, tuple(features["image"].shape), tuple(dense), adapter=fn)


class SkipLog:
  """A file of skipped examples (``record_key<TAB>reason`` per line), shared by all worker processes.

  Appends are single small writes, so workers can add lines concurrently. The file outlives the
  loader: a resumed run keeps appending, and an example skipped again (next epoch) is listed again.
  Readers run ahead of training by the prefetch buffers, so the log may list examples of batches not
  yet consumed. Cloud objects cannot be appended to: on a ``gs://`` path each skip is an object of its
  own in the folder ``PATH.d``, listed as if it were a line of the file.
  """

  def __init__(self, path):
    self.path = files.run_path(path, "skip log")
    self.folder = self.path.parent / f"{self.path.name}.d"

  def add(self, record_key: int, reason: str) -> None:
    line = f"{record_key}\t{reason}\n"
    if files.is_cloud(self.path):
      self.folder.mkdir(parents=True, exist_ok=True)
      (self.folder / f"{record_key}.{os.getpid()}.{time.time_ns()}.tsv").write_text(line)
      return
    with open(self.path, "a") as f:
      f.write(line)

  def record_keys(self) -> list[int]:
    lines = self.path.read_text().splitlines() if self.path.exists() else []
    if self.folder.exists():
      lines += [p.read_text().strip() for p in sorted(self.folder.iterdir())]
    return [int(line.split("\t", 1)[0]) for line in lines]

  def __len__(self) -> int:
    return len(self.record_keys())


def decode_image(image: bytes | np.ndarray, channels: int) -> np.ndarray:
  """uint8 (H, W, channels) from PNG/JPEG bytes or a uint8 (H, W) / (H, W, C) array."""
  if isinstance(image, bytes):
    with Image.open(io.BytesIO(image)) as pil:
      if channels in _PIL_MODES and pil.mode != _PIL_MODES[channels]:
        pil = pil.convert(_PIL_MODES[channels])
      image = np.asarray(pil)
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"image dtype must be uint8, got {image.dtype}")
  return image[..., None] if image.ndim == 2 else image


@dataclasses.dataclass(frozen=True)
class _Decode(grain.transforms.Map):
  image_shape: tuple[int | None, int | None, int]
  skip_log: SkipLog | None

  def map(self, example: dict[str, Any]) -> dict[str, Any] | None:
    key = example["record_key"]
    try:
      image = decode_image(example["image"], self.image_shape[-1])
      if image.ndim != 3 or any(
        e not in (None, s) for e, s in zip(self.image_shape, image.shape, strict=True)
      ):
        raise ValueError(f"image shape must be {self.image_shape}, got {image.shape}")
      for name, values in _dense(example).items():
        if values.shape != image.shape[:2]:
          raise ValueError(f"{name} must have the image's shape {image.shape[:2]}, got {values.shape}")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # PIL's errors.
      reason = f"{type(error).__name__}: {error}"
      if self.skip_log is None:
        raise ValueError(f"bad example with record_key {key}: {reason}") from error
      logging.warning("skipping bad example with record_key %d: %s", key, reason)
      self.skip_log.add(key, reason)
      return None
    return {**_dense(example), "image": image, "label": example["label"]}


def _dense(example: dict[str, Any]) -> dict[str, Any]:
  """The example's per-pixel maps: every entry but the image, its label and its record key."""
  return {k: v for k, v in example.items() if k not in ("image", "label", "record_key")}


def resize_nearest(values: np.ndarray, height: int, width: int) -> np.ndarray:
  """A map (h, w, ...) -> (height, width, ...) by nearest neighbour at pixel centres: output pixel (i, j)
  takes input pixel (floor((i + 0.5) h / height), floor((j + 0.5) w / width))."""
  h, w = values.shape[:2]
  rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
  cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
  return values[rows[:, None], cols[None, :]]


def resize_map(values: np.ndarray, image_size: int, resize_mode: str) -> np.ndarray:
  """A per-pixel map (H, W) resized as ``resize_image`` resizes its image, by nearest neighbour (labels
  and depths are never blended); 'pad' fills with 0 (depth 0 is invalid; labels need a class 0 or a
  void class the task maps padding to)."""
  height, width = values.shape
  if resize_mode == "pad":
    top, left = (image_size - height) // 2, (image_size - width) // 2
    out = np.zeros((image_size, image_size), values.dtype)
    out[top : top + height, left : left + width] = values
    return out
  if resize_mode == "squash":
    return resize_nearest(values, image_size, image_size)
  scale = image_size / min(height, width)
  new_height, new_width = max(image_size, round(height * scale)), max(image_size, round(width * scale))
  top, left = (new_height - image_size) // 2, (new_width - image_size) // 2
  return resize_nearest(values, new_height, new_width)[top : top + image_size, left : left + image_size]


def inception_box(
  height: int,
  width: int,
  rng: np.random.Generator,
  area_range: tuple[float, float] = (0.05, 1.0),
  aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
  attempts: int = 100,
) -> tuple[int, int, int, int]:
  """A random crop box (top, left, h, w) of an image (height, width) in the manner of big_vision's
  ``inception_box`` (its ranges; ``tf.image.sample_distorted_bounding_box`` draws the height rather than the
  area uniformly): up to ``attempts`` draws of an area fraction uniform in ``area_range`` and an aspect
  ratio w / h uniform in ``aspect_range``; the first box that fits is placed uniformly; if none fits, the
  whole image."""
  for _ in range(attempts):
    area = rng.uniform(*area_range) * height * width
    aspect = rng.uniform(*aspect_range)
    h, w = round(np.sqrt(area / aspect)), round(np.sqrt(area * aspect))
    if 1 <= h <= height and 1 <= w <= width:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  return 0, 0, height, width


class _InceptionCrop(grain.transforms.RandomMap):
  """Crops the image and its dense maps to one ``inception_box`` (before the resize, as big_vision's
  ``inception_box`` + ``crop_box`` + ``resize``); grain seeds rng from the seed and the stream position."""

  def random_map(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    top, left, h, w = inception_box(*example["image"].shape[:2], rng)
    window = (slice(top, top + h), slice(left, left + w))
    dense = {k: v[window] for k, v in _dense(example).items()}
    return {**example, **dense, "image": example["image"][window]}


class _IsDecoded(grain.transforms.Filter):
  def filter(self, example: dict[str, Any] | None) -> bool:
    return example is not None


def resize_image(image: np.ndarray, image_size: int, resize_mode: str) -> np.ndarray:
  """uint8 (H, W, C) -> (image_size, image_size, C).

  'pad' centres the image on zero pixels (28 -> 32 adds 2 rows and columns on each side; it needs
  H, W <= image_size); 'crop' resizes the shorter side to image_size (bicubic, antialiased) and
  keeps the centre square; 'squash' resizes H and W to image_size, not keeping the aspect ratio
  (big_vision's ``resize``).
  """
  height, width, channels = image.shape
  if resize_mode == "pad":
    if height > image_size or width > image_size:
      raise ValueError(f"resize_mode 'pad' needs images of at most {image_size}, got {image.shape}")
    top, left = (image_size - height) // 2, (image_size - width) // 2
    out = np.zeros((image_size, image_size, channels), np.uint8)
    out[top : top + height, left : left + width] = image
    return out
  if resize_mode == "squash":
    new_height = new_width = image_size
  else:
    scale = image_size / min(height, width)
    new_height, new_width = max(image_size, round(height * scale)), max(image_size, round(width * scale))
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  resized = np.asarray(pil.resize((new_width, new_height), Image.Resampling.BICUBIC)).reshape(
    new_height, new_width, channels
  )
  top, left = (new_height - image_size) // 2, (new_width - image_size) // 2
  return resized[top : top + image_size, left : left + image_size]


@dataclasses.dataclass(frozen=True)
class _Resize(grain.transforms.Map):
  image_size: int
  resize_mode: str

  def map(self, example: dict[str, Any]) -> dict[str, Any]:
    image = resize_image(example["image"], self.image_size, self.resize_mode)
    dense = {k: resize_map(v, self.image_size, self.resize_mode) for k, v in _dense(example).items()}
    return {**example, **dense, "image": image}


class _RandomFlip(grain.transforms.RandomMap):
  """Mirrors left-right with probability 1/2; grain seeds rng from the seed and the stream position."""

  def random_map(self, example: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    if rng.random() >= 0.5:
      return example
    dense = {k: v[:, ::-1] for k, v in _dense(example).items()}
    return {**example, **dense, "image": example["image"][:, ::-1]}


class _CanonicalInstances(grain.transforms.Map):
  """Renumbers the "instance" map by centre of mass (``dense_targets.canonical_instances``) after the
  resize and the flip, as big_vision's ``make_canonical`` ends every panoptic pipeline: the ids are then a
  function of the layout the model sees, never of the order the objects were annotated or drawn in."""

  def map(self, example: dict[str, Any]) -> dict[str, Any]:
    return {**example, "instance": dense_targets.canonical_instances(example["instance"])}


def scale_pixels(image):
  """uint8 pixels p -> float32 (p - 127.5) / 127.5 in [-1, 1] (numpy, or jax.numpy arrays on a device)."""
  return (image.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)


@dataclasses.dataclass(frozen=True)
class _Scale(grain.transforms.Map):
  """Pixels -> float32 in [-1, 1] (``scale_pixels``) or kept uint8; labels -> int32; dense maps unchanged
  (contiguous, after flips)."""

  uint8: bool = False

  def map(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
    image = np.ascontiguousarray(example["image"]) if self.uint8 else scale_pixels(example["image"])
    dense = {k: np.ascontiguousarray(v) for k, v in _dense(example).items()}
    return {**dense, "image": image, "label": np.int32(example["label"])}


def make_loader(
  source: ImageSource,
  *,
  batch_size_per_process: int,
  seed: int,
  shuffle: bool,
  num_epochs: int | None,
  image_size: int | None,
  resize_mode: str,
  random_flip: bool,
  worker_count: int,
  read_threads: int,
  prefetch_buffer_size: int,
  process_index: int | None = None,
  process_count: int | None = None,
  skip_log: SkipLog | None = None,
  drop_remainder: bool = True,
  random_crop: str = "",
  image_dtype: str = "float32",
) -> grain.DataLoader:
  """A grain loader over this process's shard of `source`, yielding dicts of numpy batches.

  Batches are ``{"image": float32 (batch_size_per_process, S, S, C) in [-1, 1], "label": int32
  (batch_size_per_process,)}`` (image_dtype "uint8": the pixels, 4x fewer bytes to copy to a device,
  which scales them with ``scale_pixels``) plus the source's dense maps (batch_size_per_process, S, S), with
  S = image_size (the source's fixed size when None; resize_mode 'pad' or 'crop' as in `resize_image`,
  nearest neighbour for dense maps); random_crop "inception" first crops image and maps to an
  ``inception_box``; an "instance" map is renumbered canonically after the resize and flip. Each process
  reads a disjoint 1/process_count of the records (default: this JAX process's share), shuffled by `seed`
  afresh each epoch; num_epochs None repeats forever. Flips and crops depend only on seed and stream
  position. worker_count 0 transforms in this process,
  > 0 in that many worker processes (batches then differ from worker_count 0, as each worker batches
  its own records). read_threads and prefetch_buffer_size set grain's per-process reading threads and
  element buffer. A bad example (undecodable, wrong shape) raises ValueError naming its record_key,
  unless skip_log is given: then it is dropped and written there. drop_remainder also drops the
  records beyond an equal share per process.
  """
  checks = {
    "batch_size_per_process": (batch_size_per_process, batch_size_per_process >= 1),
    "seed": (seed, 0 <= seed < 2**32),
    "num_epochs": (num_epochs, num_epochs is None or num_epochs >= 1),
    "image_size": (image_size, image_size is None or image_size >= 1),
    "resize_mode": (resize_mode, resize_mode in RESIZE_MODES),
    "random_crop": (random_crop, random_crop in RANDOM_CROPS),
    "worker_count": (worker_count, worker_count >= 0),
    "image_dtype": (image_dtype, image_dtype in ("float32", "uint8")),
  }
  for field, (value, ok) in checks.items():
    if not ok:
      raise ValueError(f"{field} is out of range, got {value!r}")
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
  if image_size is None and None in source.image_shape:
    raise ValueError(f"image_size is needed for images of varying shape {source.image_shape}, got None")
  if worker_count > 0 and not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain <= 0.2.18 reads an absl flag to start workers (google/grain#1355).
  shard_options = grain.sharding.ShardOptions(process_index, process_count, drop_remainder=drop_remainder)
  sampler = grain.samplers.IndexSampler(
    num_records=len(source), shard_options=shard_options, shuffle=shuffle, num_epochs=num_epochs, seed=seed
  )
  operations: list[Any] = [_Decode(source.image_shape, skip_log)]
  if skip_log is not None:
    operations.append(_IsDecoded())
  if random_crop:
    operations.append(_InceptionCrop())
  if image_size is not None:
    operations.append(_Resize(image_size, resize_mode))
  if random_flip:
    operations.append(_RandomFlip())
  if "instance" in source.dense:
    operations.append(_CanonicalInstances())
  operations.append(_Scale(image_dtype == "uint8"))
  operations.append(grain.transforms.Batch(batch_size_per_process, drop_remainder=drop_remainder))
  return grain.DataLoader(
    data_source=source,
    sampler=sampler,
    operations=operations,
    worker_count=worker_count,
    shard_options=shard_options,
    read_options=grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size),
  )
