"""Fig. 3: MaskGIT with FSQ or VQ tokenizers as the codebook grows from 2^8 to 2^16 codes.

  python -m scripts.sweep codebook_size [--scale paper]   # then: python -m scripts.make_tables codebook_size

Stage I (tokenizer; reconstruction FID, PSNR, codebook usage) for FSQ with the Table-1 levels, MaskGIT's
VQ (with its entropy loss) and plain VQ (without it) at 2^8, 2^10, 2^12, 2^14 and 2^16 codes; stage II
(transformer; compression cost and sampling FID, precision, recall) for FSQ and MaskGIT's VQ at 2^8, 2^12
and 2^16 at CPU scale and at every size at paper scale (run=imagenet128: ImageNet 128, stage I ~500k
steps, stage II ~1M steps).

The paper gives this study as plots only (no numbers). Its findings:
  * FSQ reconstruction FID keeps improving with the codebook size; VQ's is best at 2^11 and its usage then
    drops below 50%. VQ never uses more than about 2^10 codes; FSQ uses almost all of 2^14 and more than
    2^15 of 2^16.
  * FSQ sampling FID saturates from about 2^12 codes.
  * The compression cost (bits, with a deterministic masking schedule and entropy coding) rises with the
    codebook size, slightly higher for FSQ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from experiments import report
from experiments.registry import Results, Run, check_scale, maskgit_runs
from experiments.report import PERCENT, cell, markdown_table, pyplot, save_figure, value
from fsq.quantizers import codebook_size, levels_for_codebook_size

SIZES = (8, 10, 12, 14, 16)  # log2 of the codebook size
CPU_STAGE_2_SIZES = (8, 12, 16)
RUN_ORDER = (8, 12, 16, 10, 14)  # the stage II sizes first, so a partial sweep already shows the trend


@dataclasses.dataclass(frozen=True)
class Arm:
  """A tokenizer family of the study: run-name prefix, label in tables, configs/maskgit.py arguments,
  and whether it also trains stage II."""

  key: str
  label: str
  args: str
  stage_2: bool


ARMS = (
  Arm("fsq", "FSQ", "quantizer=fsq", stage_2=True),
  Arm("vq", "VQ", "quantizer=vq", stage_2=True),
  Arm("vq_plain", "VQ, no entropy loss", "quantizer=vq_plain", stage_2=False),
)


def run_name(arm: Arm, bits: int) -> str:
  return f"{arm.key}_{bits}"


def runs(scale: str) -> list[Run]:
  check_scale(scale)
  out = []
  for bits in RUN_ORDER:
    for arm in ARMS:
      stage_2 = arm.stage_2 and (scale == "paper" or bits in CPU_STAGE_2_SIZES)
      out += maskgit_runs(
        run_name(arm, bits),
        f"{arm.args},codebook={bits}",
        scale,
        "imagenet128",
        stage_1_metrics=("rfid", "train_usage"),
        stage_2_metrics=("compression", "fid") if stage_2 else None,
      )
  return out


def codes(arm: Arm, bits: int) -> str:
  """The codebook of a row: FSQ levels and their product, or VQ's number of codewords."""
  if arm.key == "fsq":
    levels = levels_for_codebook_size(2**bits)
    return f"{'-'.join(map(str, levels))} ({codebook_size(levels)})"
  return str(2**bits)


def planned_cell(runs: Sequence[Run], results: Results, run: str, key: str, spec: str) -> str:
  """A table cell (report.cell); empty when ``run`` is not part of the experiment at this scale."""
  return cell(results, run, key, spec) if any(r.name == run for r in runs) else ""


HEADER = [
  "quantizer",
  "log2 size",
  "levels (codes)",
  "usage",
  "usage (train)",
  "perplexity",
  "PSNR (dB)",
  "rFID",
  "bits/token",
  "coded bits/token",
  "sampling FID",
  "precision",
  "recall",
]


def table(runs: Sequence[Run], results: Results) -> str:
  """One row per (quantizer, size); stage II cells are empty where the scale trains no stage II."""
  rows = []
  for arm in ARMS:
    for bits in SIZES:
      one, two = f"{run_name(arm, bits)}_stage1", f"{run_name(arm, bits)}_stage2"
      rows.append(
        [
          arm.label,
          str(bits),
          codes(arm, bits),
          cell(results, one, "codebook/usage", PERCENT),
          planned_cell(runs, results, one, "codebook/usage_train", PERCENT),
          planned_cell(runs, results, one, "codebook/perplexity", ".4g"),
          planned_cell(runs, results, one, "psnr", ".2f"),
          planned_cell(runs, results, one, "rfid", ".2f"),
          planned_cell(runs, results, two, "compression/bits_per_token", ".3f"),
          planned_cell(runs, results, two, "compression/coded_bits_per_token", ".3f"),
          planned_cell(runs, results, two, "fid", ".2f"),
          planned_cell(runs, results, two, "precision", ".3f"),
          planned_cell(runs, results, two, "recall", ".3f"),
        ]
      )
  return markdown_table(HEADER, rows)


PANELS = tuple(report.PANELS[k] for k in ("rfid", "psnr", "usage", "compression", "fid"))


def figures(runs: Sequence[Run], results: Results, out_dir: Path) -> list[Path]:
  """Fig. 3's panels against log2 codebook size, one line per quantizer: codebook_size.png."""
  plt = pyplot()
  fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4), constrained_layout=True)
  for ax, (title, stage, key, factor) in zip(axes, PANELS, strict=True):
    for arm in ARMS:
      points = [(b, value(results, f"{run_name(arm, b)}_{stage}", key)) for b in SIZES]
      points = [(b, factor * v) for b, v in points if v is not None]
      if points:
        ax.plot(*zip(*points, strict=True), marker="o", label=arm.label)
    ax.set(title=title, xlabel="log2 codebook size", xticks=SIZES)
    ax.grid(alpha=0.3)
  for ax in axes:
    if ax.lines:  # the first panel with data (none before the first results)
      ax.legend()
      break
  return [save_figure(fig, Path(out_dir) / "codebook_size.png")]
