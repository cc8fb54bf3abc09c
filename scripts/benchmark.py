"""Benchmarks: each suite times its cases side by side in one run, prints ratios and writes JSON.

  python -m scripts.benchmark --suite quantizers --out artifacts/benchmark_quantizers.json

One module per suite in ``scripts/bench/`` (``quantizers``, ``train``, ``maskgit``, ``uvim``, ``input``,
``conv``), each saying in its docstring what it times and against which targets, on the harness of
``scripts/bench/harness.py`` (interleaved timing, the machine, the report).
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from scripts.bench.harness import machine, print_report

# suite -> (its module in scripts/bench, how it is called with the parsed arguments)
SUITES = {
  "quantizers": ("quantizers", lambda m, a: m.quantizers_suite(a.repeats, a.fsq_rows, a.vq_rows, a.vq_dim)),
  "train": ("train", lambda m, a: m.train_suite(a.train_steps, a.batch_size, a.data_dir)),
  "maskgit": ("maskgit", lambda m, a: m.maskgit_suite(a.batch_size)),
  "uvim": ("uvim", lambda m, a: m.uvim_suite(a.batch_size)),
  "input": ("input", lambda m, a: m.input_suite(a.batch_size, a.input_batches, a.data_dir, a.workers)),
  "conv": ("conv", lambda m, a: m.conv_suite(a.batch_size)),
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
  module, run = SUITES[args.suite]
  result = run(importlib.import_module(f"scripts.bench.{module}"), args)
  result = {"suite": args.suite, "machine": machine(), **result}
  print_report(args.suite, result)
  if args.out is not None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
  return result


if __name__ == "__main__":
  main()
