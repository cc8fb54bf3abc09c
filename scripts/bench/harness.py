"""The benchmark harness: cases timed side by side, the machine they ran on, the report every suite prints,
and the reference cases (a large matmul) that suites measure the machine with."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp


def time_calls(
  fns: dict[str, Callable[[], object]], repeats: int, min_seconds: float = 0.3
) -> dict[str, float]:
  """Median seconds of one call of each fn, measured interleaved (one call of each per round).

  Interleaving puts every case under the same machine conditions, so their ratios stay stable even
  when the absolute times drift. Each fn is called once first to compile and warm up.
  """
  for fn in fns.values():
    jax.block_until_ready(fn())
  times: dict[str, list[float]] = {name: [] for name in fns}
  start = time.perf_counter()
  rounds = 0
  while rounds < repeats or (time.perf_counter() - start < min_seconds and rounds < 1000):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times[name].append(time.perf_counter() - t0)
    rounds += 1
  return {name: statistics.median(t) for name, t in times.items()}


def machine() -> dict[str, object]:
  return {
    "platform": platform.platform(),
    "processor": platform.processor() or platform.machine(),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "device": jax.devices()[0].device_kind,
    "backend": jax.default_backend(),
  }


def flops(compiled) -> float:
  """The FLOPs of a compiled program, from XLA's cost analysis (0 where it has none)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list | tuple) else cost
  return float(cost.get("flops", 0.0))


def matmul_case(size: int = 2048):
  """(a jitted callable, its FLOPs): a size^3 float32 matmul, the machine's reachable FLOP/s."""
  a = jax.random.normal(jax.random.key(2), (size, size), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  return (lambda: matmul(a)), 2 * size**3


def print_report(name: str, result: dict[str, object]) -> None:
  print(f"suite {name} on {machine()['processor']} ({os.cpu_count()} cores, {jax.default_backend()})")
  print(f"{'case':32s} {'shape':>14s} {'ms':>10s} {'us/item':>10s}")
  for row in result["rows"]:
    shape = "x".join(str(s) for s in row["shape"])
    print(f"{row['name']:32s} {shape:>14s} {row['seconds'] * 1e3:10.3f} {row['us_per_vector']:10.5f}")
  print()
  for label, value in {**result.get("values", {}), **result["ratios"]}.items():
    print(f"{label:40s} {value:10.2f}")
  for label, ok in result["targets"].items():
    print(f"target {label:33s} {'met' if ok else 'MISSED'}")
