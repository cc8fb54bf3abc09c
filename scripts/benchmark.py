"""Benchmarks: each suite times its cases side by side in one run, prints ratios and writes JSON.

  python -m scripts.benchmark --suite quantizers --out artifacts/benchmark_quantizers.json

Suite ``quantizers`` times, on the default JAX device:
  * an elementwise copy of a 2^20 x 4 float32 array (``x -> -x``: one read and one write, the memory
    floor any elementwise quantizer must pay);
  * FSQ forward (codes) and forward + backward on the same array, levels [8, 5, 5, 5];
  * VQ forward (nearest codeword and lookup) with 2^10 and 2^16 codes on 2^16 vectors;
  * if torch and vector-quantize-pytorch are installed, that library's FSQ on the same shapes.
Ratios: FSQ / copy, and VQ / FSQ per vector. Targets on a 2-core CPU: FSQ forward <= 2x the copy,
FSQ >= 100x faster than VQ with 2^16 codes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

from fsq import quantizers, vq

LEVELS = (8, 5, 5, 5)


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


def _torch_fsq(rows: int) -> dict[str, Callable[[], object]]:
  """vector-quantize-pytorch's FSQ on the same shape, when torch and that library are installed."""
  try:
    import torch
    from vector_quantize_pytorch import FSQ as TorchFSQ  # noqa: N811
  except ImportError:
    return {}
  torch.manual_seed(0)
  layer = TorchFSQ(levels=list(LEVELS))
  z = torch.randn(1, rows, len(LEVELS))
  zg = z.clone().requires_grad_(True)

  def forward():
    with torch.no_grad():
      return layer(z)[0]

  def forward_backward():
    zg.grad = None
    layer(zg)[0].sum().backward()
    return zg.grad

  return {"torch FSQ forward": forward, "torch FSQ forward+backward": forward_backward}


def quantizers_suite(repeats: int, fsq_rows: int, vq_rows: int, vq_dim: int) -> dict[str, object]:
  """Times copy, FSQ (and torch FSQ) interleaved, then VQ; returns rows and ratios."""
  z = jax.random.normal(jax.random.key(0), (fsq_rows, len(LEVELS)), jnp.float32) * 2
  cotangent = jax.random.normal(jax.random.key(1), z.shape, jnp.float32)
  copy = jax.jit(lambda x: -x)
  fsq_fwd = jax.jit(lambda x: quantizers.quantize(x, LEVELS))
  fsq_idx = jax.jit(lambda x: quantizers.codes_to_indices(quantizers.quantize(x, LEVELS), LEVELS))
  fsq_bwd = jax.jit(jax.grad(lambda x: jnp.vdot(quantizers.quantize(x, LEVELS), cotangent)))
  fns = {
    "copy (x -> -x)": lambda: copy(z),
    "FSQ forward": lambda: fsq_fwd(z),
    "FSQ forward + indices": lambda: fsq_idx(z),
    "FSQ forward+backward": lambda: fsq_bwd(z),
  }
  seconds = time_calls(fns, repeats)
  # Timed apart: torch's idle worker threads would slow the JAX calls interleaved with them.
  seconds.update(time_calls(_torch_fsq(fsq_rows), repeats))
  rows = [{"name": name, "shape": list(z.shape), "seconds": s} for name, s in seconds.items()]
  x = jax.random.normal(jax.random.key(2), (vq_rows, vq_dim), jnp.float32)
  for bits in (10, 16):
    module = vq.VectorQuantizer(codebook_size=2**bits, dim=vq_dim)
    variables = module.init(jax.random.key(3), x[:1])
    fwd = jax.jit(lambda v, x, module=module: module.apply(v, x)[0])
    s = time_calls({"vq": lambda v=variables, f=fwd: f(v, x)}, max(2, repeats // 10), min_seconds=0)["vq"]
    rows.append({"name": f"VQ forward, 2^{bits} codes", "shape": [vq_rows, vq_dim], "seconds": s})
  for row in rows:
    row["us_per_vector"] = row["seconds"] / row["shape"][0] * 1e6
  by_name = {row["name"]: row for row in rows}
  copy_s = by_name["copy (x -> -x)"]["seconds"]
  fsq_vec = by_name["FSQ forward"]["us_per_vector"]
  ratios = {
    "FSQ forward / copy": by_name["FSQ forward"]["seconds"] / copy_s,
    "FSQ forward+backward / copy": by_name["FSQ forward+backward"]["seconds"] / copy_s,
    "VQ 2^10 / FSQ, per vector": by_name["VQ forward, 2^10 codes"]["us_per_vector"] / fsq_vec,
    "VQ 2^16 / FSQ, per vector": by_name["VQ forward, 2^16 codes"]["us_per_vector"] / fsq_vec,
  }
  for kind in ("forward", "forward+backward"):
    if f"torch FSQ {kind}" in by_name:
      ratios[f"torch FSQ / FSQ, {kind}"] = (
        by_name[f"torch FSQ {kind}"]["seconds"] / by_name[f"FSQ {kind}"]["seconds"]
      )
  targets = {
    "FSQ forward / copy <= 2": ratios["FSQ forward / copy"] <= 2,
    "VQ 2^16 / FSQ, per vector >= 100": ratios["VQ 2^16 / FSQ, per vector"] >= 100,
  }
  return {"rows": rows, "ratios": ratios, "targets": targets}


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


def _train(args: argparse.Namespace) -> dict[str, object]:
  from scripts.benchmark_train import train_suite

  return train_suite(args.train_steps, args.batch_size, args.data_dir)


def _maskgit(args: argparse.Namespace) -> dict[str, object]:
  from scripts.benchmark_maskgit import maskgit_suite

  return maskgit_suite(args.batch_size)


def _input(args: argparse.Namespace) -> dict[str, object]:
  from scripts.benchmark_input import input_suite

  return input_suite(args.batch_size, args.input_batches, args.data_dir, args.workers)


def _uvim(args: argparse.Namespace) -> dict[str, object]:
  from scripts.benchmark_uvim import uvim_suite

  return uvim_suite(args.batch_size)


def _conv(args: argparse.Namespace) -> dict[str, object]:
  from scripts.benchmark_conv import conv_suite

  return conv_suite(args.batch_size)


SUITES = {
  "quantizers": lambda args: quantizers_suite(args.repeats, args.fsq_rows, args.vq_rows, args.vq_dim),
  "train": _train,
  "maskgit": _maskgit,
  "uvim": _uvim,
  "input": _input,
  "conv": _conv,
}


def main(argv: list[str] | None = None) -> dict[str, object]:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--suite", choices=sorted(SUITES), default="quantizers")
  parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--fsq-rows", type=int, default=2**20)
  parser.add_argument("--vq-rows", type=int, default=2**16)
  parser.add_argument("--vq-dim", type=int, default=32)
  parser.add_argument(
    "--train-steps", type=int, default=20, help="train suite: steps and input batches timed"
  )
  parser.add_argument(
    "--batch-size", type=int, default=64, help="train, maskgit, uvim, input, conv suites: batch"
  )
  parser.add_argument(
    "--data-dir", default="artifacts/tensorflow_datasets", help="train and input suites: TFDS data_dir"
  )
  parser.add_argument("--input-batches", type=int, default=20, help="input suite: batches timed per case")
  parser.add_argument("--workers", type=int, default=0, help="input suite: Grain workers (0: one per core)")
  args = parser.parse_args(argv)
  for name in ("repeats", "fsq_rows", "vq_rows", "vq_dim", "train_steps", "batch_size", "input_batches"):
    if getattr(args, name) < 1:
      parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
  result = SUITES[args.suite](args)
  result = {"suite": args.suite, "machine": machine(), **result}
  print_report(args.suite, result)
  if args.out is not None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
  return result


if __name__ == "__main__":
  main()
