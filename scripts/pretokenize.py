"""Tokenises a dataset split once with a frozen MaskGIT stage I, for stage II to train on tokens.

  python -m scripts.pretokenize --config configs/maskgit.py:stage=transformer,run=imagenet256,quantizer=fsq \\
      --config.tokenizer_workdir=W1 --output TOKENS [--split train]
  python -m scripts.train --config configs/maskgit.py:stage=transformer,run=imagenet256,quantizer=fsq \\
      --config.tokenizer_workdir=W1 --config.data.tokens_dir=TOKENS --workdir W2

The stage II config says which tokenizer (``tokenizer_workdir``, ``tokenizer_step``: 0 pins its newest
checkpoint) and which images (``data``: dataset, image size, resize mode; the split defaults to the
training split). Every image is encoded with its left-right mirror image, on the whole mesh, in global
batches of ``config.batch_size``. Each process reads a contiguous 1/N of the split and writes its own
array_record file; process 0 writes ``manifest.json`` last (``fsq.data.tokens``). OUTPUT is a local or
shared folder: every training host reads all of it (copy it to each TPU worker's disk, as the TFDS
data). Multi-process flags as scripts.train.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from fsq.train import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "A MaskGIT stage II config, optionally with :ARG.")
_OUTPUT = flags.DEFINE_string("output", None, "The tokens folder to write (local or a shared file system).")
_SPLIT = flags.DEFINE_string(
  "split", "", "The split to tokenise (TFDS syntax, e.g. train[:10%]); '' = training."
)
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", list(distributed.MODES), "As scripts.train.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
flags.mark_flags_as_required(["config", "output"])

log = logging.getLogger("pretokenize")


def pretokenize(config, output: str | Path, split: str = "") -> dict:
  """Writes the tokens of ``split`` (default ``config.data.train_split``) and their manifest to ``output``;
  returns the manifest."""
  import jax
  import numpy as np

  from fsq.data import tokens as tokens_lib
  from fsq.files import is_cloud, run_path
  from fsq.tasks import build_task
  from fsq.train import mesh as mesh_lib
  from fsq.train.checkpoint import saved_step
  from fsq.train.data import InputPipeline

  if config.task != "transformer":
    raise ValueError(f"config.task must be 'transformer' (a MaskGIT stage II config), got {config.task!r}")
  if is_cloud(str(output)):
    raise ValueError(f"--output must be a local or shared folder (array_record writes files), got {output!r}")
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.tokens_dir = ""
    config.data.eval_split = split or config.data.train_split
    if not config.tokenizer_step:
      config.tokenizer_step = saved_step(
        run_path(config.tokenizer_workdir, "config.tokenizer_workdir") / "checkpoints", 0
      )
  task = build_task(config)
  mesh = mesh_lib.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.model)
  pipeline = InputPipeline(config.data, config.batch_size, config.seed)
  constants = jax.device_put(task.constants(), mesh_lib.replicated(mesh))
  rows = mesh_lib.batch_sharding(mesh)

  encode = jax.jit(
    lambda constants, images: (task.tokens(constants, images), task.tokens(constants, images[:, :, ::-1])),
    out_shardings=(rows, rows),
  )

  dtype = tokens_lib.token_dtype(task.vocab.codebook_size)
  seq_len = task.transformer.seq_len - 1
  output = Path(output).expanduser()
  index, count = jax.process_index(), jax.process_count()
  if index == 0:  # a manifest marks a complete folder: an earlier one must not vouch for the new files
    output.mkdir(parents=True, exist_ok=True)
    (output / tokens_lib.MANIFEST).unlink(missing_ok=True)
  if count > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("old manifest removed")
  name = tokens_lib.file_name(config.data.eval_split, index, count)
  start, done = time.perf_counter(), 0

  def records():
    nonlocal done
    for i, batch in enumerate(pipeline.eval_batches()):
      tokens, mirrored = mesh_lib.local_rows(
        encode(constants, mesh_lib.global_batch(batch["image"], mesh)), mesh
      )
      for row in np.flatnonzero(batch["mask"]):
        yield tokens_lib.encode_record(batch["label"][row], tokens[row], mirrored[row], dtype)
      done += int(batch["mask"].sum())
      if i % 50 == 49:
        log.info("%d images tokenised here (%.0f images/s)", done, done / (time.perf_counter() - start))

  written = tokens_lib.write_records(output / name, records())
  counts = mesh_lib.global_rows(np.asarray([written]))
  manifest = {
    "tokenizer_workdir": str(config.tokenizer_workdir),
    "tokenizer_step": int(config.tokenizer_step),
    "tokenizer_config_sha256": tokens_lib.config_sha256(config.tokenizer_workdir),
    "dataset": config.data.name,
    "split": config.data.eval_split,
    "image_size": int(config.data.image_size),
    "resize_mode": config.data.resize_mode,
    "seq_len": int(seq_len),
    "codebook_size": int(task.vocab.codebook_size),
    "dtype": dtype.str,
    "files": [
      {"name": tokens_lib.file_name(config.data.eval_split, p, count), "num_records": int(n)}
      for p, n in enumerate(counts)
    ],
  }
  if count > 1:
    multihost_utils.sync_global_devices("token files written")
  if index == 0:
    tokens_lib.write_manifest(output, manifest)
  log.info("%d records in %s (%.1f s)", int(sum(counts)), output, time.perf_counter() - start)
  return manifest


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.log_to_stdout()
  distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  pretokenize(_CONFIG.value, _OUTPUT.value, _SPLIT.value)


if __name__ == "__main__":
  app.run(main)
