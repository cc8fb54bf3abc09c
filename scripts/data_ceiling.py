"""The distinct token footprints of a run's dataset: a lower bound on the distinct inputs its data offers
the quantizer.

  python -m scripts.data_ceiling --workdir runs/experiments/codebook_size/cpu/fsq_16_stage1 \
    --out experiments/results/codebook_size/cpu/data_ceiling.json

Reads the dataset and the tokenizer's downsampling factor from the run's recorded config
(WORKDIR/config.json), reads its evaluation and training splits as evaluation does (no flips or random
crops), and counts the distinct ``patch x patch`` pixel blocks of each (``fsq.evals.footprints``); prints
the result and writes it to --out as JSON. A split with far more distinct footprints than codes does not
limit the codebook's usage (a token's receptive field contains its footprint).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a stage I run's workdir, whose dataset is counted")
  parser.add_argument("--out", type=Path, help="JSON file for the result")
  args = parser.parse_args(argv)
  from fsq.evals.footprints import footprint_stats
  from fsq.files import report_json
  from fsq.train.data import InputPipeline
  from fsq.train.writers import read_config

  config = read_config(args.workdir)
  patch = 2 ** (len(config.model.channel_multipliers) - 1)
  result = {}
  for name, split in (("eval", config.data.eval_split), ("train", config.data.train_split)):
    config.data.eval_split = split
    pipeline = InputPipeline(config.data, config.batch_size, config.seed)
    images = [b["image"][b["mask"] > 0] for b in pipeline.eval_batches()]
    pixels = np.round((np.concatenate(images).astype(np.float64) + 1) * 127.5).astype(np.uint8)
    result[name] = {"split": split, "patch": patch, **footprint_stats(pixels, patch)}
  report_json(result, args.out)
  return result


if __name__ == "__main__":
  main()
