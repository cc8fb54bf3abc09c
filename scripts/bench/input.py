"""The input suite: images per second of the ImageNet-shaped JPEG pipeline, in-process and with Grain
workers, against a tokens folder (pre-tokenised stage II), on this machine's cores.

  python -m scripts.benchmark --suite input --batch-size 64 --input-batches 20

Cases, each timed over the same batches after one warm-up batch (worker start-up excluded):
  * decode alone: PIL's JPEG decode of ``imagenet_like`` training images, one at a time (ms per image);
  * the training pipeline at 256 px (decode, centre crop, resize, flip, uint8 batches) in this process
    (worker_count 0) and with one Grain worker per core;
  * the same with MaskGIT-style random resized crops (``random_crop="inception"``), workers per core;
  * a tokens folder of as many records (256 tokens and their mirror image's), in this process.
Ratios: workers / in-process images/s, and tokens / images records/s.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from fsq.data import builders, pipeline
from fsq.data import tokens as tokens_lib

IMAGE_SIZE = 256


def _images_per_second(loader, batches: int) -> float:
  iterator = iter(loader)
  first = next(iterator)  # warm-up: worker start-up and the first reads
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * len(first["label"]) / (time.perf_counter() - start)


def _image_loader(source, batch_size: int, workers: int, random_crop: str = ""):
  return pipeline.make_loader(
    source,
    batch_size_per_process=batch_size,
    seed=0,
    shuffle=True,
    num_epochs=None,
    image_size=IMAGE_SIZE,
    resize_mode="crop",
    random_flip=True,
    worker_count=workers,
    read_threads=2,
    prefetch_buffer_size=4,
    process_index=0,
    process_count=1,
    random_crop=random_crop,
    image_dtype="uint8",
  )


def _token_folder(folder: Path, count: int, seq_len: int = 256) -> tokens_lib.TokenSource:
  rng = np.random.default_rng(0)
  dtype = tokens_lib.token_dtype(1024)
  records = (
    tokens_lib.encode_record(i % 1000, rng.integers(0, 1024, seq_len), rng.integers(0, 1024, seq_len), dtype)
    for i in range(count)
  )
  name = tokens_lib.file_name("train", 0, 1)
  written = tokens_lib.write_records(folder / name, records)
  tokens_lib.write_manifest(
    folder, {"seq_len": seq_len, "dtype": dtype.str, "files": [{"name": name, "num_records": written}]}
  )
  return tokens_lib.TokenSource.open(folder)


def input_suite(batch_size: int, batches: int, data_dir: str, workers: int = 0) -> dict[str, object]:
  """Times the cases above; ``workers`` 0 means one per core."""
  workers = workers or os.cpu_count() or 1
  builder = builders.prepare("imagenet_like", data_dir)
  source = pipeline.tfds_source(builder, "train")

  encoded = [source[i]["image"] for i in range(200)]
  start = time.perf_counter()
  shapes = [pipeline.decode_image(image, 3).shape for image in encoded]
  decode_s = (time.perf_counter() - start) / len(encoded)
  mean_bytes = float(np.mean([len(image) for image in encoded]))
  mean_pixels = float(np.mean([h * w for h, w, _ in shapes]))

  per_second = {
    "pipeline, in-process": _images_per_second(_image_loader(source, batch_size, 0), batches),
    f"pipeline, {workers} workers": _images_per_second(_image_loader(source, batch_size, workers), batches),
    f"pipeline, inception crop, {workers} workers": _images_per_second(
      _image_loader(source, batch_size, workers, "inception"), batches
    ),
  }
  with tempfile.TemporaryDirectory() as folder:
    token_source = _token_folder(Path(folder), len(source))
    loader = tokens_lib.make_token_loader(
      token_source,
      batch_size_per_process=batch_size,
      seed=0,
      random_flip=True,
      worker_count=0,
      read_threads=2,
      prefetch_buffer_size=4,
      process_index=0,
      process_count=1,
    )
    per_second["tokens, in-process"] = _images_per_second(loader, batches)

  rows = [{"name": "JPEG decode (PIL), one image", "shape": [1], "seconds": decode_s, "us_per_vector": 0.0}]
  for name, rate in per_second.items():
    shape = [batch_size, 256] if name.startswith("tokens") else [batch_size, IMAGE_SIZE, IMAGE_SIZE, 3]
    rows.append({"name": name, "shape": shape, "seconds": batch_size / rate})
  for row in rows:
    row["us_per_vector"] = row["seconds"] / row["shape"][0] * 1e6
  in_process = per_second["pipeline, in-process"]
  return {
    "rows": rows,
    "values": {
      **{f"{name} images/s": rate for name, rate in per_second.items()},
      "JPEG bytes per image (mean)": mean_bytes,
      "pixels per image (mean)": mean_pixels,
    },
    "ratios": {
      f"{workers} workers / in-process": per_second[f"pipeline, {workers} workers"] / in_process,
      "tokens / images, in-process": per_second["tokens, in-process"] / in_process,
    },
    "targets": {},
  }
