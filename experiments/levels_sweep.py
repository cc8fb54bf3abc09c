"""FSQ level sets at about the same codebook size (as in the paper's Fig. 10): which levels to pick.

  python -m scripts.sweep levels_sweep                                    # the sets of LEVEL_SETS
  python -m scripts.sweep levels_sweep --levels 8-5-5-5 8-8-8 5-5-5-5-5    # any sets
  python -m scripts.sweep levels_sweep --only '*_stage1'                  # stage I only
  python -m scripts.make_tables levels_sweep [--levels ...]               # the same --levels as the sweep

Each set trains a tokenizer (stage I: usage, PSNR, reconstruction FID) and a transformer on its tokens
(stage II: compression cost, sampling FID); paper scale is run=imagenet128, the codebook study's setup.
The paper's Fig. 10 plots sampling FID against log2 codebook size coloured by the smallest level (no
numbers); its heuristic is L_i >= 5 for every level, smaller levels being "subpar". ``LEVEL_SETS`` asks
that question at two sizes, 2^10 and 2^16: the paper's levels (which the level recommender returns at
both) against small levels (4s, and 2s at 2^10) and two large ones (32-32, 256-256). At CPU scale each
set trains both stages with the codebook study's budget and recipe (experiments/registry.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from experiments import report
from experiments.registry import Results, Run, check_scale, maskgit_runs
from experiments.report import PERCENT, cell, markdown_table, pyplot, save_figure, value

# At about 2^10 and 2^16 codes: Table 1's levels (also the level recommender's choice,
# fsq.quantizers.levels_for_codebook_size), all 4s, all 2s (LFQ's grid) at 2^10, and two large levels.
LEVEL_SETS = (
  (8, 5, 5, 5),
  (4, 4, 4, 4, 4),
  (2,) * 10,
  (32, 32),
  (8, 8, 8, 5, 5, 5),
  (4,) * 8,
  (256, 256),
)


def levels_text(levels: Sequence[int]) -> str:
  return "-".join(map(str, levels))


def runs(scale: str, levels: Sequence[Sequence[int]] = LEVEL_SETS) -> list[Run]:
  """Stage I and II runs 'fsq_{levels}_stage1' / '_stage2' for each level set."""
  check_scale(scale)
  out = []
  for level_set in levels:
    text = levels_text(level_set)
    out += maskgit_runs(
      f"fsq_{text}",
      f"quantizer=fsq,levels={text}",
      scale,
      "imagenet128",
      stage_1_metrics=("rfid",),
      stage_2_metrics=("compression", "fid"),
    )
  return out


def level_sets(runs: Sequence[Run]) -> list[tuple[int, ...]]:
  """The level sets of an experiment's runs, from the stage I run names."""
  names = [r.name for r in runs if r.name.endswith("_stage1")]
  return [tuple(int(v) for v in n.removeprefix("fsq_").removesuffix("_stage1").split("-")) for n in names]


def table(runs: Sequence[Run], results: Results) -> str:
  """One row per level set: codebook size, smallest level, usage, reconstruction, compression, FID."""
  header = ["levels", "codes", "log2", "min level", "usage", "perplexity", "PSNR (dB)", "rFID"]
  header += ["bits/token", "coded bits/token", "sampling FID"]
  rows = []
  for levels in level_sets(runs):
    one, two = f"fsq_{levels_text(levels)}_stage1", f"fsq_{levels_text(levels)}_stage2"
    size = math.prod(levels)
    rows.append(
      [
        levels_text(levels),
        str(size),
        f"{math.log2(size):.2f}",
        str(min(levels)),
        cell(results, one, "codebook/usage", PERCENT),
        cell(results, one, "codebook/perplexity", ".4g"),
        cell(results, one, "psnr", ".2f"),
        cell(results, one, "rfid", ".2f"),
        cell(results, two, "compression/bits_per_token", ".3f"),
        cell(results, two, "compression/coded_bits_per_token", ".3f"),
        cell(results, two, "fid", ".2f"),
      ]
    )
  return markdown_table(header, rows)


PANELS = tuple(report.PANELS[k] for k in ("rfid", "usage", "compression", "fid"))


def figures(runs: Sequence[Run], results: Results, out_dir: Path) -> list[Path]:
  """Each panel's metric for every level set against log2 codebook size, coloured by the smallest level
  and labelled with the levels, as in Fig. 10: levels_sweep.png."""
  plt = pyplot()
  sets = level_sets(runs)
  norm = plt.Normalize(min(map(min, sets)), max(map(min, sets)))
  fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.8), constrained_layout=True)
  for ax, (title, stage, key, factor) in zip(axes, PANELS, strict=True):
    for levels in sets:
      y = value(results, f"fsq_{levels_text(levels)}_{stage}", key)
      if y is not None:
        x = math.log2(math.prod(levels))
        ax.scatter([x], [factor * y], c=[min(levels)], cmap="viridis", norm=norm)
        ax.annotate(
          levels_text(levels), (x, factor * y), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    ax.set(title=title, xlabel="log2 codebook size")
    ax.grid(alpha=0.3)
  fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes, label="smallest level")
  return [save_figure(fig, Path(out_dir) / "levels_sweep.png")]
