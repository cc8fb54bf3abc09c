"""Pre-tokenised datasets: a frozen tokenizer's tokens of every image and of its mirror image, so that
MaskGIT's stage II trains without running the encoder.

A tokens folder holds array_record files, one per writing process (``SPLIT-PPPPP-of-NNNNN.array_record``),
and ``manifest.json``, written last (its presence means the folder is complete). A record is one image:
its label (int32, little-endian) then two rows of ``seq_len`` tokens (the image's, then its left-right
mirror's) in the manifest's dtype (uint16 for codebooks of up to 2^16 codes, else int32). The manifest
pins what made the tokens: the tokenizer's workdir, checkpoint step and the sha256 of its config.json,
the dataset, split, image size and resize mode, and the record count of each file.

The loader yields ``{"tokens": int32 (B, seq_len), "label": int32 (B,)}``, shuffled and sharded as the
image pipeline (``fsq.data.pipeline``), with the mirror image's tokens in place of the image's with
probability 1/2 when ``random_flip``: the same augmentation as flipping the image before encoding.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grain
import numpy as np
from absl import flags

from fsq import files

FORMAT = "fsq-tokens/1"
MANIFEST = "manifest.json"


def token_dtype(codebook_size: int) -> np.dtype:
  """The narrowest stored dtype: uint16 up to 2^16 codes, else int32."""
  return np.dtype("<u2") if codebook_size <= 2**16 else np.dtype("<i4")


def encode_record(label: int, tokens: np.ndarray, mirrored: np.ndarray, dtype: np.dtype) -> bytes:
  """One record: ``label`` then the (seq_len,) tokens of the image and of its mirror image."""
  rows = np.stack([np.asarray(tokens).reshape(-1), np.asarray(mirrored).reshape(-1)])
  if rows.min() < 0 or rows.max() > np.iinfo(dtype).max:
    raise ValueError(
      f"tokens must be in [0, {np.iinfo(dtype).max}] to be stored as {dtype}, got {rows.min()}.."
    )
  return np.int32(label).astype("<i4").tobytes() + rows.astype(dtype).tobytes()


def decode_record(record: bytes, seq_len: int, dtype: np.dtype) -> tuple[int, np.ndarray, np.ndarray]:
  """``encode_record``'s inverse: (label, tokens (seq_len,) int32, mirrored (seq_len,) int32)."""
  expected = 4 + 2 * seq_len * dtype.itemsize
  if len(record) != expected:
    raise ValueError(f"a token record of seq_len {seq_len} ({dtype}) has {expected} bytes, got {len(record)}")
  label = int(np.frombuffer(record[:4], "<i4")[0])
  rows = np.frombuffer(record[4:], dtype).reshape(2, seq_len).astype(np.int32)
  return label, rows[0], rows[1]


def write_records(path: str | Path, records: Iterable[bytes]) -> int:
  """Writes ``records`` to a new array_record file at a local ``path``; returns their count. The file is
  written under a temporary name and renamed, so a crash never leaves a half file under ``path``."""
  from array_record.python.array_record_module import ArrayRecordWriter

  path = Path(path)
  partial = path.with_name(path.name + ".partial")
  writer = ArrayRecordWriter(str(partial), "group_size:1")
  count = 0
  try:
    for record in records:
      writer.write(record)
      count += 1
  finally:
    writer.close()
  partial.replace(path)
  return count


def file_name(split: str, index: int, count: int) -> str:
  """The array_record file of writing process ``index`` of ``count``; '[', ']' and ':' of a split slice
  such as ``train[:1%]`` become '_'."""
  safe = "".join("_" if c in "[]:%" else c for c in split)
  return f"{safe}-{index:05d}-of-{count:05d}.array_record"


def config_sha256(workdir: str | Path) -> str:
  """The sha256 of a run's ``config.json``: what a tokens folder pins of the tokenizer's settings."""
  return hashlib.sha256((files.run_path(workdir, "workdir") / "config.json").read_bytes()).hexdigest()


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> None:
  files.write_text_atomically(Path(folder) / MANIFEST, json.dumps({"format": FORMAT, **manifest}, indent=2))


def read_manifest(folder: str | Path) -> dict[str, Any]:
  """The manifest of a complete tokens folder; a ValueError names the folder when it is missing (the
  tokenising job has not finished) or of another format."""
  path = Path(folder).expanduser() / MANIFEST
  if not path.exists():
    raise ValueError(
      f"config.data.tokens_dir = {str(folder)!r} has no {MANIFEST}: run scripts.pretokenize first"
    )
  manifest = json.loads(path.read_text())
  if manifest.get("format") != FORMAT:
    raise ValueError(f"{path}: format must be {FORMAT!r}, got {manifest.get('format')!r}")
  return manifest


def check_manifest(manifest: dict[str, Any], expected: dict[str, Any], folder: str) -> None:
  """A ValueError naming every entry of ``expected`` that the tokens in ``folder`` were not made with."""
  wrong = {k: (manifest.get(k), v) for k, v in expected.items() if manifest.get(k) != v}
  if wrong:
    listed = "; ".join(
      f"{k}: tokens made with {got!r}, this run has {want!r}" for k, (got, want) in wrong.items()
    )
    raise ValueError(f"config.data.tokens_dir = {folder!r} does not match this run: {listed}")


@dataclasses.dataclass(frozen=True)
class TokenSource:
  """Random access to the records of a tokens folder (all its files, in the manifest's order)."""

  folder: str
  seq_len: int
  dtype: str
  paths: tuple[str, ...]
  num_records: int

  @classmethod
  def open(cls, folder: str | Path) -> TokenSource:
    manifest = read_manifest(folder)
    root = Path(folder).expanduser()
    paths = tuple(str(root / f["name"]) for f in manifest["files"])
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
      raise ValueError(
        f"config.data.tokens_dir = {str(folder)!r}: the manifest lists missing files {missing}"
      )
    total = sum(f["num_records"] for f in manifest["files"])
    source = cls(str(folder), manifest["seq_len"], manifest["dtype"], paths, total)
    if len(source.records) != total:
      raise ValueError(
        f"config.data.tokens_dir = {str(folder)!r}: its files hold {len(source.records)} records, "
        f"the manifest {total}: the folder was rewritten after the manifest; tokenise again"
      )
    return source

  @functools.cached_property
  def records(self) -> grain.sources.ArrayRecordDataSource:
    return grain.sources.ArrayRecordDataSource(list(self.paths))

  def __len__(self) -> int:
    return self.num_records

  def __getitem__(self, record_key: int) -> bytes:
    return self.records[int(record_key)]

  def __repr__(self) -> str:
    """Stable (grain compares it when an iterator's state is restored)."""
    return f"TokenSource({self.folder!r}, {self.num_records} records)"


@dataclasses.dataclass(frozen=True)
class _Parse(grain.transforms.Map):
  seq_len: int
  dtype: str

  def map(self, record: bytes) -> dict[str, np.ndarray]:
    label, tokens, mirrored = decode_record(record, self.seq_len, np.dtype(self.dtype))
    return {"tokens": tokens, "mirrored": mirrored, "label": np.int32(label)}


class _RandomMirror(grain.transforms.RandomMap):
  """The mirror image's tokens with probability 1/2 (grain seeds rng from the seed and stream position)."""

  def random_map(self, example: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {**example, "tokens": example["mirrored"]} if rng.random() < 0.5 else example


class _Select(grain.transforms.Map):
  def map(self, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"tokens": example["tokens"], "label": example["label"]}


def make_token_loader(
  source: TokenSource,
  *,
  batch_size_per_process: int,
  seed: int,
  random_flip: bool,
  worker_count: int,
  read_threads: int,
  prefetch_buffer_size: int,
  process_index: int,
  process_count: int,
) -> grain.DataLoader:
  """Endless shuffled batches ``{"tokens": int32 (batch_size_per_process, seq_len), "label": int32
  (batch_size_per_process,)}`` of this shard's equal share of the records (as ``pipeline.make_loader``
  shards and shuffles images), afresh each epoch; a pure function of the arguments, so a resumed run
  sees the batches it would have seen."""
  if batch_size_per_process < 1:
    raise ValueError(f"batch_size_per_process must be positive, got {batch_size_per_process}")
  if worker_count > 0 and not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # grain <= 0.2.18 reads an absl flag to start workers (google/grain#1355).
  shard_options = grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True)
  sampler = grain.samplers.IndexSampler(
    num_records=len(source), shard_options=shard_options, shuffle=True, num_epochs=None, seed=seed
  )
  operations: list[Any] = [_Parse(source.seq_len, source.dtype)]
  if random_flip:
    operations.append(_RandomMirror())
  operations += [_Select(), grain.transforms.Batch(batch_size_per_process, drop_remainder=True)]
  return grain.DataLoader(
    data_source=source,
    sampler=sampler,
    operations=operations,
    worker_count=worker_count,
    shard_options=shard_options,
    read_options=grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size),
  )
