"""A two-run experiment for tests: a tiny FSQ tokenizer and a tiny MaskGIT transformer on its tokens.

  python -m scripts.sweep tiny [--override data.data_dir=DIR]

Two training steps each on Fashion-MNIST (CPU scale only), 8 filters, one transformer layer of width 32:
seconds of training, so a test can run the whole sweep (stage II depends on stage I). Evaluation on
NUM_IMAGES images: reconstruction FID (stage I) and compression cost (stage II).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from experiments.registry import Results, Run
from experiments.report import runs_table

SPEC = "configs/maskgit.py:stage={},run=cpu,quantizer=fsq,levels=5-3"
NUM_IMAGES = 8  # images for reconstruction FID and compression
TINY = (
  "num_train_steps=2",
  "batch_size=8",
  "log_every_steps=1",
  "eval_every_steps=1000",
  "checkpoint_every_steps=2",
  "num_eval_batches=1",
  "optimizer.warmup_steps=1",
  "model.filters=8",
  "model.norm_groups=4",
)
TINY_GAN = ("gan.disc_filters=8",)
TINY_TRANSFORMER = (
  "transformer.num_layers=1",
  "transformer.hidden=32",
  "transformer.num_heads=2",
  "transformer.mlp_dim=64",
  "sampling.num_steps=2",
  "sampling.samples_per_class=1",
)


def runs(scale: str) -> list[Run]:
  if scale != "cpu":
    raise ValueError(f"the tiny experiment has the cpu scale only, got {scale!r}")
  return [
    Run("tokenizer", SPEC.format("tokenizer"), TINY + TINY_GAN, metrics=("rfid",), num_images=NUM_IMAGES),
    Run(
      "transformer",
      SPEC.format("transformer"),
      TINY + TINY_TRANSFORMER,
      depends_on="tokenizer",
      metrics=("compression",),
      num_images=NUM_IMAGES,
    ),
  ]


COLUMNS = (
  ("PSNR (dB)", "psnr", ".6g"),
  ("rFID", "rfid", ".6g"),
  ("usage", "codebook/usage", ".6g"),
  ("perplexity", "codebook/perplexity", ".6g"),
  ("masked accuracy", "masked_accuracy", ".6g"),
  ("coded bits/token", "compression/coded_bits_per_token", ".6g"),
)


def table(runs: Sequence[Run], results: Results) -> str:
  """One row per run."""
  return runs_table(runs, results, COLUMNS)


def figures(runs: Sequence[Run], results: Results, out_dir: Path) -> list[Path]:
  """No figures."""
  return []
