"""FID of real images against other real images of the same split: the floor that sampling FIDs measured
on as many images sit on (FID is biased upwards at small sample sizes), with precision and recall.

  python -m scripts.fid_floor --workdir runs/experiments/codebook_size/cpu/fsq_8_stage2 --num_images 1000

Reads the dataset from the run's recorded config (WORKDIR/config.json, as scripts/evaluate does) and takes
the first 2 x NUM_IMAGES images of its evaluation split (features cached under artifacts/fid_reference, as
evaluation's references), the first half against the second; prints the result and writes it to --out as
JSON.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="a training run's workdir, whose dataset is scored")
  parser.add_argument("--num_images", type=int, default=1000, help="images in each of the two halves")
  parser.add_argument("--out", type=Path, help="JSON file for the result")
  args = parser.parse_args(argv)
  logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
  )
  from fsq.files import report_json
  from fsq.tasks.evaluate import real_floor
  from fsq.train.writers import read_config

  result = real_floor(read_config(args.workdir), args.num_images)
  report_json(result, args.out)
  return result


if __name__ == "__main__":
  main()
