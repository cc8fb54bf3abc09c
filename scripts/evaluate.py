"""Evaluates a trained run and writes WORKDIR/results.json (its final_metrics.json plus these metrics).

  python -m scripts.evaluate --workdir runs/tok --metrics rfid --num_images 2000
  python -m scripts.evaluate --workdir runs/maskgit --metrics fid,compression --num_images 2000
  python -m scripts.evaluate --workdir runs/uvim_colorization_lm --metrics color_fid --num_images 500
  python -m scripts.evaluate --workdir runs/uvim_panoptic_lm --metrics dense_native --num_images 5000
  python -m scripts.evaluate --workdir runs/tok --metrics rfid,train_usage --num_images 2000

Metrics: rfid (stage I: reconstruction FID), fid (stage II: sampling FID, precision and recall, k = 3),
compression (stage II: bits per token under a deterministic masking schedule, from the model's
probabilities and by range coding), color_fid (UViM stage II colorization: FID of the colourings of the
evaluation images against the images), dense_native (UViM stage II depth or panoptic: the metric at each
image's original resolution, as the paper reports it), train_usage (stage I: codebook usage and
perplexity over the whole training split, beside the evaluation split's). FID uses the standard
Inception network (``make weights``) on the first NUM_IMAGES images of the evaluation split, whose
features are cached under artifacts/fid_reference. Multi-process jobs take the flags of scripts.train
(``scripts.launch_local --module scripts.evaluate`` on one machine); rfid, fid and compression run on
every process's share of the batches, dense_native on every process's shard of the images, train_usage
on every process's shards of the training split, color_fid in one process.
"""

from __future__ import annotations

import argparse

from fsq.train import distributed


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True, help="the training run's workdir")
  parser.add_argument(
    "--metrics",
    default="",
    help="comma-separated: rfid, fid, compression, color_fid, dense_native, train_usage ('' = none)",
  )
  parser.add_argument("--num_images", type=int, default=2000, help="images for FID and compression")
  parser.add_argument("--distributed", choices=distributed.MODES, default="auto", help="as scripts.train")
  parser.add_argument("--coordinator_address", default=None, help="host:port of process 0")
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  args = parser.parse_args(argv)
  distributed.log_to_stdout()
  distributed.initialize(args.distributed, args.coordinator_address, args.num_processes, args.process_id)
  from fsq.tasks.evaluate import evaluate

  metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
  evaluate(args.workdir, metrics, args.num_images)


if __name__ == "__main__":
  main()
