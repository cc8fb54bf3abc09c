"""The ``train`` benchmark suite: the autoencoder's train step against the machine and the input.

Measured in one run on the default backend: the jitted train step (config ``configs/autoencoder.py``,
the CPU size), its FLOPs from the compiled program's cost analysis, a large float32 matmul as the
machine's reachable FLOP/s, the input pipeline alone, the same training set resident on the device
(``fsq.train.resident``: a batch drawn there), and the training loop's step fed by each. Ratios:
achieved / matmul FLOP/s, pipeline images/s / the images/s the step consumes (goal >= 5), resident /
pipeline images/s, and the loop's images/s with resident / Grain batches.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.autoencoder import get_config
from fsq.tasks import build_task
from fsq.train import mesh as mesh_lib
from fsq.train import resident
from fsq.train.data import InputPipeline, device_images
from scripts.bench.harness import flops, matmul_case, time_calls


def train_suite(steps: int, batch_size: int, data_dir: str, matmul_size: int = 2048) -> dict[str, object]:
  """Times ``steps`` train steps, the matmul and ``steps`` input batches; returns rows and ratios."""

  config = get_config("")
  config.batch_size, config.data.data_dir, config.mesh.data = batch_size, data_dir, 1
  task = build_task(config)
  mesh = mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1])
  pipeline = InputPipeline(config.data, batch_size, config.seed)
  shape = pipeline.global_image_shape
  state = jax.jit(lambda r: task.init(r, {"image": jnp.zeros(shape)}))(jax.random.key(0))
  batch = mesh_lib.global_batch(next(pipeline.train_iterator()), mesh)
  step = jax.jit(
    lambda s, b: task.train_step(s, device_images(b), jax.random.key(1), {}), donate_argnums=(0,)
  )
  compiled = step.lower(state, batch).compile()
  step_flops = flops(compiled)

  def run_steps():
    nonlocal state
    for _ in range(steps):
      state, metrics = compiled(state, batch)
    return metrics

  matmul, matmul_ops = matmul_case(matmul_size)
  seconds = time_calls({"steps": run_steps, "matmul": matmul}, repeats=3, min_seconds=0)
  step_s = seconds["steps"] / steps

  iterator = pipeline.train_iterator()
  next(iterator)
  start = time.perf_counter()
  for _ in range(steps):
    next(iterator)
  input_s = (time.perf_counter() - start) / steps

  # The same training set resident on the device (fsq.train.resident): the batch drawn there.
  d = config.data
  images, labels = resident.decode_all(pipeline.train_source, d.image_size, d.resize_mode)
  data = resident.place(images, labels, mesh)
  draw = jax.jit(
    functools.partial(resident.draw, seed=0, batch_size=batch_size, random_flip=d.random_flip),
    out_shardings=mesh_lib.batch_sharding(mesh),
  )

  def loop(get_batch):
    """``steps`` steps as the training loop runs them, fetching each batch from ``get_batch``."""
    nonlocal state
    for s in range(steps):
      state, metrics = compiled(state, get_batch(s))
    return metrics

  def grain_batch(_):
    return mesh_lib.global_batch(next(iterator), mesh)

  def resident_batch(s):
    return draw(data, np.int32(s))

  seconds.update(
    time_calls(
      {
        "resident": lambda: draw(data, np.int32(0)),
        "loop, Grain": lambda: loop(grain_batch),
        "loop, resident": lambda: loop(resident_batch),
      },
      repeats=3,
      min_seconds=0,
    )
  )
  resident_s = seconds["resident"]

  matmul_flops = matmul_ops / seconds["matmul"]
  rows = [
    {"name": "train step (autoencoder, fsq)", "shape": list(shape), "seconds": step_s},
    {"name": "input pipeline batch", "shape": list(shape), "seconds": input_s},
    {"name": "resident batch (drawn on the device)", "shape": list(shape), "seconds": resident_s},
    {"name": "loop step, Grain batches", "shape": list(shape), "seconds": seconds["loop, Grain"] / steps},
    {
      "name": "loop step, resident batches",
      "shape": list(shape),
      "seconds": seconds["loop, resident"] / steps,
    },
    {
      "name": f"matmul {matmul_size}^3 float32",
      "shape": [matmul_size, matmul_size],
      "seconds": seconds["matmul"],
    },
  ]
  for row in rows:
    row["us_per_vector"] = row["seconds"] / row["shape"][0] * 1e6
  values = {
    "step images/s": batch_size / step_s,
    "pipeline images/s": batch_size / input_s,
    "resident images/s": batch_size / resident_s,
    "loop images/s, Grain": batch_size * steps / seconds["loop, Grain"],
    "loop images/s, resident": batch_size * steps / seconds["loop, resident"],
    "step GFLOP/s (cost analysis)": step_flops / step_s / 1e9,
    "matmul GFLOP/s": matmul_flops / 1e9,
  }
  ratios = {
    "achieved / matmul FLOP/s": (step_flops / step_s) / matmul_flops,
    "pipeline / step images/s": step_s / input_s,
    "resident / pipeline images/s": input_s / resident_s,
    "loop resident / loop Grain images/s": seconds["loop, Grain"] / seconds["loop, resident"],
  }
  return {
    "rows": rows,
    "values": values,
    "ratios": ratios,
    "targets": {"pipeline / step images/s >= 5": ratios["pipeline / step images/s"] >= 5},
  }
