"""The ``uvim`` benchmark suite: stage II decoding throughput, with and without the key-value cache.

On the default backend, with the CPU config of ``configs/uvim.py`` (depth on 64x64 scenes, an 8x8 code
grid, a 2-layer VTT; random weights, which cost the same as trained ones): images/s of the whole
inference (greedy codes with the cache, then stage I's base model), of the cached decoding alone, and of
a decoder without cache that re-runs the teacher-forced model on the whole sequence at each of the S
steps (what a cache saves; the ratio is the cache's speed-up).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from configs.uvim import get_config
from fsq.models.vtt import generate
from fsq.tasks import build_dense_representation, build_uvim, build_uvim_stage_two_task
from scripts.bench.harness import time_calls


def _uncached_greedy(model, params, images):
  """(B, S) greedy codes by re-running the full teacher-forced model on the prefix at every step."""
  batch, length = images.shape[0], model.seq_len

  def step(t, codes):
    logits = model.apply({"params": params}, images, codes, train=False)[:, t, : model.codebook_size]
    return codes.at[:, t].set(jnp.argmax(logits, -1).astype(jnp.int32))

  return jax.lax.fori_loop(0, length, step, jnp.zeros((batch, length), jnp.int32))


def uvim_suite(batch_size: int) -> dict[str, object]:

  config = get_config("stage=lm,task=depth,run=cpu")
  representation = build_dense_representation(config)
  stage_one = build_uvim(config, representation.output_channels)
  size = config.data.image_size
  batch = {
    "image": jax.random.uniform(jax.random.key(0), (batch_size, size, size, 3), minval=-1, maxval=1),
    "depth": jax.random.uniform(jax.random.key(1), (batch_size, size, size), minval=1, maxval=10),
  }
  x, y = representation.context(batch["image"]), representation.target(batch)
  stage_one_variables = stage_one.init({"params": jax.random.key(2)}, x, y, train=False)
  task = build_uvim_stage_two_task(config, stage_one_variables)
  state = task.init(jax.random.key(3), batch)
  constants = task.constants()
  predict = jax.jit(lambda s, c, images: task.predict_outputs(s, c, images)[0])
  cached = jax.jit(lambda p, images: generate(task.model, p, images, jax.random.key(4)))
  uncached = jax.jit(lambda p, images: _uncached_greedy(task.model, p, images))
  seconds = time_calls(
    {
      "predict": lambda: predict(state, constants, batch["image"]),
      "cached": lambda: cached(state.params, x),
      "uncached": lambda: uncached(state.params, x),
    },
    repeats=3,
    min_seconds=0,
  )
  shape = [batch_size, size, size, 3]
  names = {
    "predict": "inference: cached greedy codes + base model",
    "cached": f"codes, key-value cache ({task.model.seq_len} steps)",
    "uncached": "codes, full model re-run per step",
  }
  rows = [{"name": names[k], "shape": shape, "seconds": seconds[k]} for k in names]
  for row in rows:
    row["us_per_vector"] = row["seconds"] / batch_size * 1e6
  return {
    "rows": rows,
    "values": {
      "images/s (inference)": batch_size / seconds["predict"],
      "images/s (codes, cached)": batch_size / seconds["cached"],
      "images/s (codes, uncached)": batch_size / seconds["uncached"],
    },
    "ratios": {"uncached / cached decoding time": seconds["uncached"] / seconds["cached"]},
    "targets": {},
  }
