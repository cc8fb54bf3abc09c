"""Fig. 4 (top): MaskGIT on ImageNet 256 with an FSQ [8,5,5,5] or a VQ 1024 tokenizer, the paper beside us.

  python -m scripts.sweep maskgit_imagenet256 [--scale paper]
  python -m scripts.make_tables maskgit_imagenet256 [--scale paper]

Paper scale: configs/maskgit.py run=imagenet256 (stage I 1M steps at batch 512, stage II 2.5M steps at
batch 256; sampling with 12 steps and the paper's best guidance, 0.2 for FSQ and 0.1 for VQ), metrics on
50k samples. CPU scale: its twin run=cpu on Fashion-MNIST, whose FID is not comparable to ImageNet's.
The paper's column is its ADM-suite evaluation (50k samples against the train set); ours compares samples
with the first NUM_IMAGES images of the evaluation split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from experiments.registry import Results, Run, check_scale, maskgit_runs
from experiments.report import cell, markdown_table

MODELS = (("fsq", "MaskGIT (FSQ)"), ("vq", "MaskGIT (VQ)"))

# Fig. 4 (top) of the paper: classifier-free guidance, sampling FID, precision, recall, codebook usage.
PAPER = {
  "fsq": dict(guidance=0.2, fid=4.534, precision=0.864, recall=0.453, usage=1.00),
  "vq": dict(guidance=0.1, fid=4.509, precision=0.860, recall=0.465, usage=0.81),
}
# Reference rows of the same figure that have no run here (None: not given).
PAPER_REFERENCES = {
  "MaskGIT (VQ), public checkpoint": dict(
    guidance=None, fid=4.916, precision=0.836, recall=0.489, usage=None
  ),
  "ADM": dict(guidance=1.5, fid=4.59, precision=0.83, recall=0.52, usage=None),
}
# (header, our run's stage, metric key, format spec, the PAPER entry)
COLUMNS = (
  ("CFG", "stage2", "fid/guidance_scale", "g", "guidance"),
  ("FID", "stage2", "fid", ".3f", "fid"),
  ("precision", "stage2", "precision", ".3f", "precision"),
  ("recall", "stage2", "recall", ".3f", "recall"),
  ("usage", "stage1", "codebook/usage", ".0%", "usage"),
)


def runs(scale: str) -> list[Run]:
  check_scale(scale)
  out = []
  for key, _ in MODELS:
    out += maskgit_runs(
      key, f"quantizer={key}", scale, "imagenet256", stage_1_metrics=(), stage_2_metrics=("fid",)
    )
  return out


def table(runs: Sequence[Run], results: Results) -> str:
  """Ours and the paper's numbers side by side, one row per tokenizer, then the paper's reference rows."""
  header = ["model"] + [h for c in COLUMNS for h in (c[0], f"{c[0]} (paper)")]
  rows = []
  for key, label in MODELS:
    row = [label]
    for _, stage, metric, spec, paper_key in COLUMNS:
      row += [cell(results, f"{key}_{stage}", metric, spec), format(PAPER[key][paper_key], spec)]
    rows.append(row)
  for label, paper in PAPER_REFERENCES.items():
    row = [label]
    for _, _, _, spec, paper_key in COLUMNS:
      row += ["", "" if paper[paper_key] is None else format(paper[paper_key], spec)]
    rows.append(row)
  return markdown_table(header, rows)


def figures(runs: Sequence[Run], results: Results, out_dir: Path) -> list[Path]:
  """Fig. 4 (top) is a table: no figures."""
  return []
