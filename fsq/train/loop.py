"""The one generic training loop: mesh, input, sharded init or resume, jitted steps, evaluation,
logging and checkpoints. A model family supplies the task (the contract: ``fsq.tasks.base.Task``)."""

from __future__ import annotations

import functools
import json
import logging
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from fsq.files import check_shared, run_path, write_text_atomically
from fsq.metrics import CodebookUsage
from fsq.train import checkpoint, resident
from fsq.train import flops as flops_lib
from fsq.train import mesh as mesh_lib
from fsq.train.data import InputPipeline, batch_spec, device_images
from fsq.train.writers import MetricWriter, write_config

if TYPE_CHECKING:  # the loop imports no task module: callers hand it a built task
  from fsq.tasks.base import Task

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
  """A training metric became NaN or infinite; the last good checkpoint is left untouched."""


class _Preemption:
  """Turns SIGTERM (a preemption, a scheduler) and SIGHUP (the terminal or SSH session that ran the job
  went away) into a flag that the loop polls (and agrees on across processes): save, then stop."""

  SIGNALS = (signal.SIGTERM, signal.SIGHUP)

  def __init__(self):
    self.requested = False
    self.signal_name = ""
    self._previous = {}

  def __enter__(self):
    try:
      self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
    except ValueError:  # not the main thread: no handler, no preemption saves
      self._previous = {}
    return self

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    self.signal_name = signal.Signals(signum).name

  def agreed(self, step: int, every: int) -> bool:
    """Whether every process stops after ``step``: in a multi-process job they agree (a cross-host
    collective) only every ``every`` steps, so that no step waits on the others' hosts."""
    if jax.process_count() == 1:
      return self.requested
    if step % every:
      return False
    return bool(multihost_utils.process_allgather(np.int32(self.requested)).max())

  def __exit__(self, *exc):
    for s, previous in self._previous.items():
      signal.signal(s, previous)


class _Profile:
  """A ``jax.profiler`` trace of the train steps ``first`` .. ``last`` (``config.profile_steps``; () is
  none) into ``directory`` (TensorBoard's profile plugin reads ``WORKDIR/profile``), one per process."""

  def __init__(self, directory: Path, steps: tuple[int, ...]):
    self.directory, self.steps, self.active = directory, steps, False

  def before(self, step: int) -> None:
    if self.steps and step == self.steps[0]:
      jax.profiler.start_trace(str(self.directory))
      self.active = True

  def after(self, step: int, state) -> None:
    if self.active and step == self.steps[1]:
      self.stop(state)
      log.info("profile of steps %d-%d written to %s", *self.steps, self.directory)

  def stop(self, state) -> None:
    if self.active:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _check_finite(step: int, metrics: dict[str, float]) -> None:
  for name, value in metrics.items():
    if not np.isfinite(value):
      raise NonFiniteLossError(
        f"step {step}: metric {name} is {value}; stopping (the last good checkpoint is kept)"
      )


def _count_flops(task, train_step, args, num_devices: int, peak: float) -> float:
  """FLOPs of one train step for MFU (``flops.step_flops`` of the loop's own program). A metric must
  never stop a run: a failure to count logs a warning, no MFU."""
  try:
    flops = flops_lib.step_flops(train_step, args, num_devices, getattr(task, "accumulation_steps", 1))
  except Exception as e:  # any backend's cost-analysis or compile failure
    log.warning("MFU not measured: counting the train step's FLOPs failed: %s", e)
    return 0.0
  log.info("train step: %.4g FLOP; MFU against %.4g FLOP/s per device", flops, peak)
  return flops


def evaluate(
  task, state, constants, pipeline: InputPipeline, eval_step, mesh, num_batches: int
) -> dict[str, float]:
  """Runs the task's eval step over the evaluation split (or num_batches of it) and summarises it,
  with codebook usage counted over every evaluated example."""
  size, groups = task.codebook_shape
  usage = CodebookUsage.create(size, groups)
  sums: dict[str, np.ndarray] = {}
  for local in pipeline.eval_batches(num_batches):
    out = jax.device_get(eval_step(state, mesh_lib.global_batch(local, mesh), constants))
    usage.add_counts(out.pop("code_counts"))
    for key, value in out.items():
      sums[key] = sums.get(key, 0.0) + np.asarray(value, np.float64)
  metrics = task.summarize(sums)
  stats = usage.summary()
  metrics.update({f"codebook/{k}": v for k, v in stats.items() if not k.endswith("_per_group")})
  return metrics


def jit_train_step(task, shardings, mesh: jax.sharding.Mesh, seed: int):
  """The loop's jitted train step ``(state, global batch, constants) -> (state, metrics)``: the state
  sharded as ``shardings`` and donated, the batch split over the mesh, randomness from (seed, step).
  Training images arrive as uint8 and are scaled inside the step (``data.device_images``).
  ``scripts.plan`` compiles this same function ahead of time."""
  step_key = jax.random.fold_in(jax.random.key(seed), 1)
  replicated = mesh_lib.replicated(mesh)
  return jax.jit(
    lambda s, b, c: task.train_step(s, device_images(b), jax.random.fold_in(step_key, s.step), c),
    in_shardings=(shardings, mesh_lib.batch_sharding(mesh), replicated),
    out_shardings=(shardings, replicated),
    donate_argnums=(0,),
  )


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str | Path, task: Task, sources=None
) -> dict[str, float]:
  """Trains ``task`` as ``config`` says and returns the final evaluation metrics. ``config`` is the run's
  resolved config (``fsq.train.stages.resolve``), recorded as it is; ``fsq.tasks.train_and_evaluate``
  resolves it and builds the task of ``config.task``.

  ``sources`` (train, eval ImageSources) replace the configured TFDS dataset, for tests on mock data.

  Resumes from the newest checkpoint in ``workdir/checkpoints`` when there is one. Writes
  ``config.json``, ``metrics.jsonl``, TensorBoard events and image grids into workdir.
  """
  workdir = run_path(workdir, "workdir")
  mesh = mesh_lib.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.model)
  log.info("%d processes, %d devices, mesh %s", jax.process_count(), jax.device_count(), dict(mesh.shape))
  pipeline = InputPipeline(
    config.data, config.batch_size, config.seed, workdir / "skipped_examples.tsv", sources
  )
  writer = MetricWriter(workdir)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(workdir, config)
  check_shared(workdir)

  init_rng = jax.random.key(config.seed)
  example = {"image": jax.ShapeDtypeStruct(pipeline.global_image_shape, jnp.float32)}
  abstract = jax.eval_shape(task.init, init_rng, example)
  rules = getattr(task, "sharding_rules", ())  # (regex, PartitionSpec) pairs for model parallelism
  shardings = mesh_lib.state_shardings(abstract, mesh, rules, fsdp_min_size=config.mesh.fsdp_min_size)
  ckpt = checkpoint.Checkpointer(workdir / "checkpoints", config.max_to_keep)
  batch_shardings = mesh_lib.batch_sharding(mesh)
  # Training batches: drawn on the devices from a resident copy of the training set (a function of the
  # step alone, nothing to checkpoint), or read by Grain (its iterator saved with every checkpoint).
  train_iter = draw = None
  if config.data.get("resident", False):
    images, labels = resident.decode_all(
      pipeline.train_source, config.data.image_size, config.data.resize_mode
    )
    data = resident.place(images, labels, mesh)
    draw = jax.jit(
      functools.partial(
        resident.draw, seed=config.seed, batch_size=config.batch_size, random_flip=config.data.random_flip
      ),
      out_shardings=batch_shardings,
    )
    log.info("training set resident on the devices: %d images, %.1f MB", len(labels), images.nbytes / 1e6)
  else:
    train_iter = pipeline.train_iterator()

  start = ckpt.latest_step()
  if start is None:
    init = jax.jit(
      lambda r: task.init(r, {"image": jnp.zeros(example["image"].shape)}), out_shardings=shardings
    )
    state, start = init(init_rng), 0
    # A task may start some parameters from a pretrained checkpoint (host arrays, placed by jit).
    pretrained = task.pretrained(abstract.params) if hasattr(task, "pretrained") else None
    if pretrained is not None:
      state = jax.jit(task.with_pretrained, out_shardings=shardings, donate_argnums=(0,))(state, pretrained)
      log.info("started from pretrained parameters")
  else:
    state = ckpt.restore(start, checkpoint.abstract_with_shardings(abstract, shardings), train_iter)
    log.info("resumed from step %d", start)

  constants = jax.device_put(task.constants(), mesh_lib.replicated(mesh))
  train_step = jit_train_step(task, shardings, mesh, config.seed)
  replicated = mesh_lib.replicated(mesh)
  eval_step = jax.jit(
    task.eval_step, in_shardings=(shardings, batch_shardings, replicated), out_shardings=replicated
  )
  # Replicated outputs: every process can read the whole batch of images to log.
  log_images = jax.jit(
    task.log_images, in_shardings=(shardings, batch_shardings, replicated), out_shardings=replicated
  )
  # The evaluation and image programs are compiled now, ahead of time: one that does not compile or fit
  # fails at the start, not at the first evaluation hours in.
  t_compile = time.perf_counter()
  eval_spec = batch_spec(config.data, config.batch_size, eval_batch=True)
  eval_step = eval_step.lower(state, eval_spec, constants).compile()
  log_images = log_images.lower(state, eval_spec, constants).compile()
  log.info("evaluation programs compiled in %.1f s", time.perf_counter() - t_compile)
  nan_step = config.get("debug_nan_at_step", -1)
  profile = _Profile(workdir / "profile", tuple(config.get("profile_steps", ())))
  # MFU where the chip's peak is known (or config.peak_flops_per_device says it): FLOPs counted once,
  # from the first step's program.
  peak = flops_lib.peak_flops_per_device(config.get("peak_flops_per_device", 0.0))
  flops_per_step = None

  def log_eval(step):
    metrics = evaluate(task, state, constants, pipeline, eval_step, mesh, config.num_eval_batches)
    writer.write_scalars(step, metrics, split="eval")
    images = pipeline.eval_image_batch()
    images = jax.device_get(log_images(state, mesh_lib.global_batch(images, mesh), constants))
    writer.write_images(step, images, "eval", columns=getattr(task, "image_columns", 8))
    log.info("eval step %d: %s", step, " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics

  window: list[dict[str, float]] = []
  pending: tuple[int, dict] | None = None  # the newest step's metrics, still on device

  def settle() -> None:
    """Fetches the pending step's metrics and stops on a non-finite value."""
    nonlocal pending
    if pending is not None:
      step_done, values = pending[0], {k: float(v) for k, v in jax.device_get(pending[1]).items()}
      _check_finite(step_done, values)
      window.append(values)
      pending = None

  def shutdown() -> None:
    profile.stop(state)
    ckpt.close()
    writer.close()

  t_start = t_window = time.perf_counter()
  step = start
  with _Preemption() as preemption:
    try:
      for step in range(start + 1, config.num_train_steps + 1):
        if draw is not None:
          profile.before(step)
          global_batch = draw(data, np.int32(step - 1))  # step 1 draws the first rows of epoch 0
        else:
          batch = next(train_iter)
          if step == nan_step:
            batch = {**batch, "image": np.full(batch["image"].shape, np.nan, np.float32)}
          profile.before(step)
          global_batch = mesh_lib.global_batch(batch, mesh)
        if peak and flops_per_step is None:
          flops_per_step = _count_flops(task, train_step, (state, global_batch, constants), mesh.size, peak)
        state, metrics = train_step(state, global_batch, constants)
        profile.after(step, state)
        settle()  # the previous step, while this one runs
        pending = (step, metrics)
        last = step == config.num_train_steps
        if step % config.log_every_steps == 0 or last:
          settle()
          steps_per_s = len(window) / max(time.perf_counter() - t_window, 1e-9)
          mean = {k: float(np.mean([m[k] for m in window])) for k in window[0]}
          mean.update(steps_per_second=steps_per_s, images_per_second=steps_per_s * config.batch_size)
          if flops_per_step:
            mean["mfu"] = flops_lib.mfu(flops_per_step, steps_per_s, mesh.size, peak)
          writer.write_scalars(step, mean)
          eta = _format_eta((config.num_train_steps - step) / max(steps_per_s, 1e-9))
          log.info(
            "step %d/%d | loss %.5g | %.2f steps/s | %.0f img/s%s | ETA %s",
            step,
            config.num_train_steps,
            mean["loss"],
            steps_per_s,
            mean["images_per_second"],
            f" | MFU {mean['mfu']:.1%}" if "mfu" in mean else "",
            eta,
          )
          window, t_window = [], time.perf_counter()
        preempted = preemption.agreed(step, config.preemption_check_every_steps)
        if step % config.checkpoint_every_steps == 0 or last or preempted:
          settle()  # never save a state whose step produced a non-finite loss
          ckpt.save(step, state, train_iter)
          writer.flush()  # the logs up to the checkpoint (a cloud workdir gets them uploaded)
        if preempted:
          log.warning("%s: saved step %d, stopping", preemption.signal_name or "SIGTERM", step)
          return {"preempted_at_step": float(step)}
        if step % config.eval_every_steps == 0 and not last:
          log_eval(step)
      settle()
      final = log_eval(step)
    finally:  # whatever stops the run: pending saves finish, logs reach the workdir (a bucket's too)
      shutdown()
  if jax.process_index() == 0:
    write_text_atomically(workdir / "final_metrics.json", json.dumps(final, indent=2))
  log.info("done in %.1fs; workdir %s", time.perf_counter() - t_start, workdir)
  return final
