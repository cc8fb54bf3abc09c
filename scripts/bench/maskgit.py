"""The ``maskgit`` benchmark suite: sampling throughput and the transformer step against the machine.

On the default backend, with the CPU config of ``configs/maskgit.py`` (8x8 tokens, a 4-layer
transformer, the FSQ tokenizer; random weights, which cost the same as trained ones): class-conditional
sampling with T = 12 decoding steps and guidance (images/s, tokenizer decoding included), and one
transformer train step, whose FLOPs (XLA cost analysis) are compared with a large matmul's rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from configs.maskgit import get_config
from fsq.tasks import build_autoencoder, build_maskgit_task
from scripts.bench.harness import flops, matmul_case, time_calls


def maskgit_suite(batch_size: int, matmul_size: int = 2048) -> dict[str, object]:

  config = get_config("stage=transformer,run=cpu")
  tokenizer = build_autoencoder(config)
  images = jnp.zeros((batch_size, 32, 32, 1))
  variables = tokenizer.init(jax.random.key(0), images[:1])
  task = build_maskgit_task(config, tokenizer_variables=variables)
  state = task.init(jax.random.key(1), {"image": images})
  constants = task.constants()
  labels = jnp.arange(batch_size) % config.transformer.num_classes
  sample = jax.jit(
    lambda s, c, y: task.sample(
      s,
      c,
      y,
      jax.random.key(2),
      num_steps=config.sampling.num_steps,
      guidance_scale=config.sampling.guidance_scale,
    )
  )
  batch = {"image": jax.random.uniform(jax.random.key(3), images.shape, minval=-1, maxval=1), "label": labels}
  step = jax.jit(lambda s, b, c: task.train_step(s, b, jax.random.key(4), c))
  compiled = step.lower(state, batch, constants).compile()
  matmul, matmul_ops = matmul_case(matmul_size)
  seconds = time_calls(
    {
      "sample": lambda: sample(state, constants, labels),
      "step": lambda: compiled(state, batch, constants),
      "matmul": matmul,
    },
    repeats=3,
    min_seconds=0,
  )
  shape = [batch_size, 32, 32, 1]
  rows = [
    {"name": "sample, T=12, guided", "shape": shape, "seconds": seconds["sample"]},
    {"name": "transformer train step", "shape": shape, "seconds": seconds["step"]},
    {
      "name": f"matmul {matmul_size}^3 float32",
      "shape": [matmul_size, matmul_size],
      "seconds": seconds["matmul"],
    },
  ]
  for row in rows:
    row["us_per_vector"] = row["seconds"] / row["shape"][0] * 1e6
  matmul_flops = matmul_ops / seconds["matmul"]
  step_flops = flops(compiled) / seconds["step"]
  return {
    "rows": rows,
    "values": {
      "samples/s (T=12, guidance)": batch_size / seconds["sample"],
      "step GFLOP/s (cost analysis)": step_flops / 1e9,
      "matmul GFLOP/s": matmul_flops / 1e9,
    },
    "ratios": {"transformer step / matmul FLOP/s": step_flops / matmul_flops},
    "targets": {},
  }
