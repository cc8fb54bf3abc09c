"""Evaluating a finished training run from its workdir: reconstruction FID (stage I), sampling FID with
precision/recall (stage II), results gathered into ``results.json``.

A run is rebuilt from ``WORKDIR/config.json`` (stage II finds its tokenizer through
``tokenizer_workdir`` and the ``tokenizer_step`` pinned when it started, as in training) and its newest
checkpoint. Reference images are the first
``num_images`` examples of the evaluation split; their features are cached (``fsq.evals.features``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from fsq.evals import dense_metrics, sample_metrics
from fsq.evals.features import FeatureExtractor, reference_features
from fsq.files import run_path, write_text_atomically
from fsq.tasks import build_task
from fsq.tasks.base import METRICS, family_of
from fsq.train import checkpoint
from fsq.train import mesh as mesh_lib
from fsq.train.data import InputPipeline
from fsq.train.writers import read_config

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LoadedRun:
  """A trained run: its config, task, restored state (on ``mesh``), task constants and data."""

  workdir: Path
  config: ml_collections.ConfigDict
  task: object
  state: object
  step: int
  constants: dict
  mesh: jax.sharding.Mesh
  pipeline: InputPipeline


def load_run(workdir: str | Path) -> LoadedRun:
  """Rebuilds the task of ``workdir/config.json`` and restores its newest checkpoint onto the mesh."""
  workdir = run_path(workdir, "workdir")
  config = read_config(workdir)
  if config.data.get("tokens_dir", ""):  # evaluation reads images: a run trained on tokens needs none here
    config.data.tokens_dir = ""
  task = build_task(config)
  mesh = mesh_lib.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.model)
  pipeline = InputPipeline(config.data, config.batch_size, config.seed)
  example = {"image": jax.ShapeDtypeStruct(pipeline.global_image_shape, jnp.float32)}
  abstract = jax.eval_shape(task.init, jax.random.key(config.seed), example)
  rules = getattr(task, "sharding_rules", ())
  shardings = mesh_lib.state_shardings(abstract, mesh, rules, fsdp_min_size=config.mesh.fsdp_min_size)
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", async_save=False)
  step = ckpt.latest_step()
  if step is None:
    raise ValueError(f"no checkpoint in {workdir / 'checkpoints'}: train the run first")
  state = ckpt.restore(step, checkpoint.abstract_with_shardings(abstract, shardings))
  ckpt.close()
  constants = jax.device_put(task.constants(), mesh_lib.replicated(mesh))
  return LoadedRun(workdir, config, task, state, step, constants, mesh, pipeline)


def _reference(
  run: LoadedRun, extractor: FeatureExtractor, num_images: int, cache_dir: Path | None, split: str = ""
) -> np.ndarray:
  """Features of the first ``num_images`` images of ``split`` ("": the run's evaluation split)."""
  data, pipeline = run.config.data, run.pipeline
  if split and split != data.eval_split:
    data = ml_collections.ConfigDict(data.to_dict())
    data.eval_split = split
    pipeline = InputPipeline(data, run.config.batch_size, run.config.seed)
  return reference_features(
    extractor, data, pipeline.eval_batches(), data.eval_split, num_images, cache_dir, pipeline.eval_order
  )


def _fid(real: np.ndarray, fake: np.ndarray) -> float:
  a = sample_metrics.FeatureStats(real.shape[1]).update(real)
  b = sample_metrics.FeatureStats(fake.shape[1]).update(fake)
  return sample_metrics.frechet_distance(a.mean, a.covariance, b.mean, b.covariance)


def _sample_quality(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
  """FID and precision/recall (k = 3) of feature sets real [N, D] and fake [M, D]."""
  precision, recall = sample_metrics.precision_recall(real, fake, k=3)
  return {"fid": _fid(real, fake), "precision": precision, "recall": recall}


def reconstruction_fid(
  run: LoadedRun, extractor: FeatureExtractor, num_images: int, cache_dir: Path | None = None
) -> dict[str, float]:
  """FID between the first ``num_images`` evaluation images and their reconstructions (stage I)."""
  task = run.task
  reconstruct = jax.jit(
    lambda state, images: jnp.clip(
      task.model.apply(task.eval_variables(state), images, train=False)[0].astype(jnp.float32), -1, 1
    ),
    out_shardings=mesh_lib.batch_sharding(run.mesh),
  )

  def batches():
    for batch in run.pipeline.eval_batches():
      images = mesh_lib.global_batch(batch["image"], run.mesh)
      yield {"image": mesh_lib.local_rows(reconstruct(run.state, images), run.mesh), "mask": batch["mask"]}

  real = _reference(run, extractor, num_images, cache_dir)
  fake = extractor.extract(batches(), num_images, "reconstructions")
  return {"rfid": _fid(real, fake), "rfid/num_images": float(num_images)}


def area_resize_to_8_bit(images: np.ndarray, size: int) -> np.ndarray:
  """(B, S, S, C) in [-1, 1] -> (B, size, size, C): the mean of each (S / size)^2 block (area resizing;
  ``size`` must divide S), rounded to the 256 levels of 8-bit images, as ColTran's FID protocol stores
  its colourings."""
  b, s, _, c = images.shape
  if s % size:
    raise ValueError(f"the FID size {size} must divide the image size {s}")
  k = s // size
  pooled = np.asarray(images, np.float64).reshape(b, size, k, size, k, c).mean(axis=(2, 4))
  return (np.round((pooled + 1) * 127.5) / 127.5 - 1).astype(np.float32)


def colorization_fid(
  run: LoadedRun, extractor: FeatureExtractor, num_images: int, cache_dir: Path | None = None
) -> dict[str, float]:
  """FID of a UViM stage II run's colourings (the VTT's greedy codes for the grey image, decoded by the
  frozen stage I) of the first ``num_images`` evaluation images against a reference set, by
  ``config.uvim.fid_reference_offset`` and ``fid_size``. ColTran's FID-5k, the paper's protocol: the
  colourings of images 0 .. N-1 against images 10000 .. 10000 + N - 1 (disjoint), both area-resized to
  256 px and rounded to 8 bits. Offset 0 and size 0 (the CPU runs): against the same images, as they are."""
  task = run.task
  offset, size = run.config.uvim.get("fid_reference_offset", 0), run.config.uvim.get("fid_size", 0)
  if jax.process_count() > 1:  # its reference offset counts rows in one process's reading order
    raise ValueError(f"metric 'color_fid' runs in one process, this job has {jax.process_count()}")
  if 0 < offset < num_images:
    raise ValueError(
      f"num_images = {num_images} would overlap the reference images from config.uvim.fid_reference_offset"
      f" = {offset}: use at most {offset}"
    )
  colour = jax.jit(
    lambda state, constants, images: task.representation.predict(
      task.predict_outputs(state, constants, images)[0]
    ),
    out_shardings=mesh_lib.batch_sharding(run.mesh),
  )

  def at_fid_size(images):
    return area_resize_to_8_bit(images, size) if size else images

  def colourings():
    for batch in run.pipeline.eval_batches():
      images = mesh_lib.global_batch(batch["image"], run.mesh)
      yield {
        "image": at_fid_size(mesh_lib.local_rows(colour(run.state, run.constants, images), run.mesh)),
        "mask": batch["mask"],
      }

  def references():
    seen = 0
    for batch in run.pipeline.eval_batches():
      mask = np.asarray(batch["mask"]).copy()
      index = seen + np.cumsum(mask) - 1  # each valid row's position in the order evaluation reads
      seen += int(mask.sum())
      yield {"image": at_fid_size(batch["image"]), "mask": mask * (index >= offset)}

  data = run.config.data
  split = f"{data.eval_split}[{offset}:]" + (f"@{size}px-8bit" if size else "")
  order = run.pipeline.eval_order
  real = reference_features(extractor, data, references(), split, num_images, cache_dir, order)
  fake = extractor.extract(colourings(), num_images, "colourings")
  return {"color_fid": _fid(real, fake), "color_fid/num_images": float(num_images)}


def sample_batches(run: LoadedRun, num_images: int, batch_size: int, seed: int = 0):
  """Class-conditional samples of a stage II run with its sampling settings: dicts {"image": (B, H, W,
  C), "label": (B,)}, labels cycling through the classes so every class is equally represented. Each
  batch of ``batch_size`` samples is drawn over the whole mesh; a process gets its rows of it (B =
  batch_size / process count), which ``FeatureExtractor`` puts back together."""
  task = run.task
  shards = mesh_lib.batch_shards(run.mesh)
  if batch_size % shards:
    raise ValueError(f"batch_size = {batch_size} must divide over the mesh's {shards} batch shards")

  def sample(state, constants, labels, i):
    rng = jax.random.fold_in(jax.random.key(seed), i)
    return task.sample(state, constants, labels, rng), labels

  batch = mesh_lib.batch_sharding(run.mesh)
  sample_jit = jax.jit(sample, out_shardings=(batch, batch))
  num_classes = task.vocab.num_classes
  for i, start in enumerate(range(0, num_images, batch_size)):
    labels = (np.arange(start, start + batch_size) % num_classes).astype(np.int32)
    images, labels = mesh_lib.local_rows(sample_jit(run.state, run.constants, labels, np.int32(i)), run.mesh)
    yield {"image": images, "label": labels}


def sampling_fid(
  run: LoadedRun,
  extractor: FeatureExtractor,
  num_images: int,
  cache_dir: Path | None = None,
) -> dict[str, float]:
  """Sampling FID and precision/recall (k = 3) of ``num_images`` class-balanced samples (in batches of
  the run's batch size) against the first ``num_images`` images of ``config.fid_reference_split`` (the
  paper's ADM suite: the training split) or, where that is "", of the evaluation split (stage II)."""
  real = _reference(run, extractor, num_images, cache_dir, run.config.get("fid_reference_split", ""))
  batches = sample_batches(run, num_images, run.config.batch_size)
  fake = extractor.extract(batches, num_images, "samples")
  return {
    **_sample_quality(real, fake),
    "fid/num_images": float(num_images),
    "fid/guidance_scale": float(run.task.guidance_scale),
  }


def compression_cost(run: LoadedRun, num_images: int, num_steps: int = 12, seed: int = 0) -> dict[str, float]:
  """Bits per token of the first ``num_images`` evaluation images' tokens under the stage II model, given
  their class, revealed by a deterministic schedule (``num_steps`` cosine steps, positions in a fixed
  pseudo-random order): from the model's probabilities, and by range coding each batch as one stream.
  In a multi-process job each process codes its rows of every batch on its own device (one stream per
  process and batch) and the sums are merged."""
  from fsq.evals import compression

  task, mesh = run.task, run.mesh
  seq_len = task.transformer.seq_len - 1
  schedule = compression.reveal_schedule(seq_len, num_steps, seed)
  coding = dict(mask_id=task.vocab.mask_id, codebook_size=task.vocab.codebook_size, schedule=schedule)
  tokens_fn = jax.jit(task.tokens, out_shardings=mesh_lib.batch_sharding(mesh))
  # The model's probabilities are computed here, on this process's first device, from a host copy of
  # the parameters (whatever their sharding), for this process's rows only.
  params = jax.device_put(_host_copy(run.state.params), jax.local_devices()[0])
  logits = jax.jit(
    lambda params, tokens, class_ids: compression.transformer_logits_fn(task.transformer, params)(
      tokens, class_ids
    )
  )

  def logits_fn(tokens, class_ids):
    return logits(params, tokens, class_ids)

  model_bits = coded_bits = 0.0
  done = 0
  for batch in run.pipeline.eval_batches():
    keep = _first_rows(batch["mask"], num_images - done)
    tokens = mesh_lib.local_rows(tokens_fn(run.constants, mesh_lib.global_batch(batch["image"], mesh)), mesh)
    if keep.any():
      class_ids = task.vocab.class_tokens(batch["label"][keep])
      log2p = compression.token_log2_probs(logits_fn, tokens[keep], class_ids, **coding)
      model_bits += float(np.sum(compression.bits_per_image(log2p)))
      bits, _ = compression.range_code(logits_fn, tokens[keep], class_ids, one_stream=True, **coding)
      coded_bits += float(np.sum(bits))
    done += int(_all_processes(np.sum(keep))[0])
    if done >= num_images:
      break
  model_bits, coded_bits = (float(b) for b in _all_processes([model_bits, coded_bits]))
  count = done * seq_len
  return {
    "compression/bits_per_token": model_bits / count,
    "compression/coded_bits_per_token": coded_bits / count,
    "compression/num_images": float(done),
  }


def _host_copy(tree):
  """Global arrays as numpy on every process, whatever their sharding."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def _all_processes(x) -> np.ndarray:
  """The float64 sum of ``x`` over processes (sent as its bytes: jax would round float64 to float32)."""
  x = np.atleast_1d(np.asarray(x, np.float64))
  if jax.process_count() > 1:
    gathered = multihost_utils.process_allgather(x.view(np.uint32))
    x = np.asarray(gathered, np.uint32).view(np.float64).reshape(-1, *x.shape).sum(axis=0)
  return x


def _first_rows(mask: np.ndarray, count: int) -> np.ndarray:
  """(B,) bool: this process's rows of a global batch that are among its first ``count`` valid rows
  (process p holds rows p * B .. (p + 1) * B - 1 of the global batch, as ``FeatureExtractor`` reads it)."""
  valid = mesh_lib.global_rows(np.asarray(mask, bool))
  first = valid & (np.cumsum(valid) <= count)
  b = len(mask)
  return first[jax.process_index() * b : (jax.process_index() + 1) * b]


def train_split_usage(run: LoadedRun) -> dict[str, float]:
  """Codebook usage and perplexity over the whole training split (its images unflipped and uncropped,
  through the run's evaluation step), beside the evaluation split's in final_metrics.json: a shortfall
  on the smaller split that the training split does not show is a limit of that data, not of the
  tokenizer. Keys ``codebook/usage_train``, ``codebook/perplexity_train`` and ``codebook/train_images``."""
  from fsq.train.loop import evaluate as evaluate_split

  data = ml_collections.ConfigDict(run.config.data.to_dict())
  data.eval_split = data.train_split
  pipeline = InputPipeline(data, run.config.batch_size, run.config.seed)
  replicated = mesh_lib.replicated(run.mesh)
  eval_step = jax.jit(run.task.eval_step, out_shardings=replicated)
  metrics = evaluate_split(run.task, run.state, run.constants, pipeline, eval_step, run.mesh, -1)
  return {
    "codebook/usage_train": metrics["codebook/usage"],
    "codebook/perplexity_train": metrics["codebook/perplexity"],
    "codebook/train_images": float(len(pipeline.eval_source)),
  }


def real_floor(
  config: ml_collections.ConfigDict,
  num_images: int,
  cache_dir: Path | None = None,
  extractor: FeatureExtractor | None = None,
) -> dict[str, float]:
  """FID and precision/recall (k = 3) of the first ``num_images`` evaluation images of ``config.data``
  against the next ``num_images``: what samples indistinguishable from the data would score at this
  sample size (FID's small-sample bias), to read sampling FIDs measured on ``num_images`` against."""
  if num_images < 2:
    raise ValueError(f"num_images must be >= 2, got {num_images}")
  pipeline = InputPipeline(config.data, config.batch_size, config.seed)
  if extractor is None:
    extractor = FeatureExtractor(mesh_lib.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.model))
  split = config.data.eval_split
  feats = reference_features(
    extractor, config.data, pipeline.eval_batches(), split, 2 * num_images, cache_dir, pipeline.eval_order
  )
  return {**_sample_quality(feats[:num_images], feats[num_images:]), "num_images": float(num_images)}


def dense_native(run: LoadedRun, num_images: int) -> dict[str, float]:
  """UViM stage II's depth or panoptic metric as the paper reports it (``fsq.evals.dense_native``): the
  first ``num_images`` evaluation images predicted at the model's resolution, the predictions resized to
  each image's original size and scored against the original maps (COCO: with crowd regions). Each
  process reads, predicts and scores a contiguous shard of the images; the statistics are summed over
  processes."""
  from fsq.data import dense_targets
  from fsq.evals import dense_native as native

  task, config = run.task, run.config
  rep, data = task.representation, config.data
  source = run.pipeline.eval_source
  adapter = dense_targets.ADAPTERS.get(data.name)
  if adapter is not None and "crowd" in adapter.makes:
    source = dataclasses.replace(source, dense=(*source.dense, "crowd"))
  predict_jit = jax.jit(
    lambda state, constants, images: rep.predict(task.predict_outputs(state, constants, images)[0]),
    out_shardings=mesh_lib.batch_sharding(run.mesh),
  )

  def predict(images: np.ndarray) -> np.ndarray:
    """This process's rows of a global batch (the others' rows come from their processes)."""
    predictions = predict_jit(run.state, run.constants, mesh_lib.global_batch(images, run.mesh))
    return mesh_lib.local_rows(predictions, run.mesh)

  def merge(metric):
    """The statistics of every process's shard, added up (float64 sums; counts stay exact)."""
    for name in metric.SUMS:
      value = getattr(metric, name)
      total = _all_processes(value).astype(np.asarray(value).dtype)
      setattr(metric, name, total if np.ndim(value) else total.item())
    return metric

  if config.batch_size % jax.process_count():
    raise ValueError(
      f"dense_native splits config.batch_size = {config.batch_size} over the processes: "
      f"{jax.process_count()} do not divide it"
    )
  rows = config.batch_size // jax.process_count()
  shard = (jax.process_index(), jax.process_count())
  batches = native.native_batches(
    source, data.image_size, data.resize_mode, data.channels, rows, num_images, shard
  )
  u = config.uvim
  if u.task == "panoptic":
    metric = dense_metrics.PanopticQuality(
      u.num_classes, tuple(u.thing_classes), u.void_label, u.get("pq_stuff_by_instance", False)
    )
    results = native.panoptic_native(predict, batches, metric, merge)
  else:
    results = native.depth_native(
      predict, batches, dense_metrics.DepthMetrics(u.min_depth, u.max_depth, crop=None), merge
    )
  return {**results, "native/num_images": float(min(num_images, len(source)))}


def evaluate(
  workdir: str | Path, metrics: tuple[str, ...], num_images: int, cache_dir: Path | None = None
) -> dict[str, float]:
  """Computes ``metrics`` for the run in ``workdir`` and writes ``workdir/results.json`` (atomically):
  its ``final_metrics.json`` plus the new metrics and the checkpoint step. ``cache_dir``: where reference
  features are cached (default ``fsq.evals.features.CACHE_DIR``)."""
  workdir = run_path(workdir, "workdir")
  unknown = set(metrics) - set(METRICS)
  if unknown:
    raise ValueError(f"metrics must be among {METRICS}, got {sorted(unknown)}")
  if num_images < 2:
    raise ValueError(f"num_images must be >= 2, got {num_images}")
  final = workdir / "final_metrics.json"
  if not final.exists():
    raise FileNotFoundError(f"{final} is missing: the run has not finished training")
  results = json.loads(final.read_text())
  if not metrics:
    results["step"] = float(checkpoint.Checkpointer(workdir / "checkpoints", async_save=False).latest_step())
    _write_results(workdir, results)
    return results
  run = load_run(workdir)
  for name in metrics:
    if name not in family_of(run.config).metrics(run.config):
      what = run.config.task + (f" ({run.config.uvim.task})" if run.config.task.startswith("uvim") else "")
      raise ValueError(f"metric {name!r} does not apply to task {what!r} in {workdir}")
  extractor = FeatureExtractor(run.mesh) if {"rfid", "fid", "color_fid"} & set(metrics) else None
  if "rfid" in metrics:
    results.update(reconstruction_fid(run, extractor, num_images, cache_dir=cache_dir))
  if "fid" in metrics:
    results.update(sampling_fid(run, extractor, num_images, cache_dir=cache_dir))
  if "compression" in metrics:
    results.update(compression_cost(run, num_images))
  if "color_fid" in metrics:
    results.update(colorization_fid(run, extractor, num_images, cache_dir=cache_dir))
  if "dense_native" in metrics:
    results.update(dense_native(run, num_images))
  if "train_usage" in metrics:
    results.update(train_split_usage(run))
  results["step"] = float(run.step)
  _write_results(workdir, results)
  return results


def _write_results(workdir: Path, results: dict[str, float]) -> None:
  """workdir/results.json, written atomically by process 0."""
  if jax.process_index() == 0:
    write_text_atomically(workdir / "results.json", json.dumps(results, indent=2))
  log.info("results for %s: %s", workdir, results)
