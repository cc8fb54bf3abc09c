"""FID of real images against other real images of the same split: the floor that sampling FIDs measured
on as many images sit on (FID is biased upwards at small sample sizes), with precision and recall.

  python -m scripts.fid_floor --config configs/maskgit.py:stage=tokenizer,run=cpu --num_images 1000

Takes the first 2 x NUM_IMAGES images of the config's evaluation split (features cached under
artifacts/fid_reference, as evaluation's references), the first half against the second; prints the
result and writes it to --out as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from pathlib import Path


def load_config(spec: str):
  """``get_config(ARG)`` of a config spec 'PATH.py[:ARG]', as scripts/train takes it."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
  if module_spec is None or not Path(path).is_file():
    raise ValueError(f"--config must be PATH.py[:ARG] of an existing file, got {spec!r}")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def main(argv: list[str] | None = None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="config spec whose data section names the dataset")
  parser.add_argument("--num_images", type=int, default=1000, help="images in each of the two halves")
  parser.add_argument("--out", type=Path, help="JSON file for the result")
  args = parser.parse_args(argv)
  logging.basicConfig(
    level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
  )
  from fsq.evals.run_eval import real_floor
  from fsq.train.files import write_text_atomically

  result = real_floor(load_config(args.config), args.num_images)
  text = json.dumps(result, indent=2)
  print(text)
  if args.out is not None:
    write_text_atomically(args.out, text + "\n")
  return result


if __name__ == "__main__":
  main()
