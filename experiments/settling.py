"""How long the CPU-scale tokenizers take to settle: stage I of the codebook study trained 4x longer.

  python -m scripts.sweep settling && python -m scripts.make_tables settling

The codebook-size study's first recipe trained each stage I for 1000 steps at a constant rate, and its
runs were still improving at the end. These runs repeat three of them with the same recipe over ``STEPS``
steps and validate every ``EVAL_EVERY`` steps on the whole test split: FSQ and MaskGIT's VQ at 2^8, and
FSQ at 2^14, whose usage fell furthest short of the paper's. Stage I's learning rate is constant after
its warm-up (``CONSTANT_RECIPE``, the recipe of that study), so each run repeats the study's run for its
first 1000 steps and then trains on. These runs are why the CPU recipe now ends at its budget
(experiments/registry.py).

``settled_at`` is the first validation after which every later one stays within ``PSNR_TOLERANCE`` dB
(or ``USAGE_TOLERANCE`` of the codebook) of the last: with 4x the study's steps, a run that settles
late in the schedule had not settled at step 1000.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.convergence import series
from experiments.registry import CPU_STAGE_1_OVERRIDES, Results, Run
from experiments.report import PERCENT, cell, formatted, markdown_table, pyplot, save_figure
from fsq.files import run_path
from fsq.train.writers import read_metrics

STEPS = 4000
EVAL_EVERY = 250
ARMS = (("fsq", 8), ("vq", 8), ("fsq", 14))  # (quantizer, log2 codebook size)
PSNR_TOLERANCE = 0.25  # dB
USAGE_TOLERANCE = 0.01  # of the codebook: one percentage point
REPORT_STEPS = (1000, 2000, 3000, 4000)
# The recipe these runs measured (the CPU studies' before they took a cosine schedule, clipping and
# b1 = 0.9).
CONSTANT_RECIPE = (
  "optimizer.schedule=constant",
  "optimizer.grad_clip_norm=0.0",
  "optimizer.warmup_steps=50",
  "optimizer.b1=0.0",
)


def runs(scale: str) -> list[Run]:
  if scale != "cpu":
    raise ValueError(f"settling checks the cpu scale's training budget; it has no {scale!r} scale")
  overrides = (f"num_train_steps={STEPS}", f"eval_every_steps={EVAL_EVERY}", *CPU_STAGE_1_OVERRIDES)
  overrides += CONSTANT_RECIPE
  spec = "configs/maskgit.py:stage=tokenizer,run=cpu,quantizer={},codebook={}"
  return [Run(f"{q}_{bits}_stage1", spec.format(q, bits), overrides) for q, bits in ARMS]


def settled_at(steps: np.ndarray, values: np.ndarray, tolerance: float) -> float:
  """The first step from which every value (steps [n] ascending, values [n]) is within ``tolerance`` of
  the last value."""
  outside = np.abs(values - values[-1]) > tolerance
  return float(steps[0]) if not outside.any() else float(steps[np.nonzero(outside)[0][-1] + 1])


def table(runs: Sequence[Run], results: Results) -> str:
  """The final validation of each run (results.json): PSNR, usage, perplexity."""
  header = ["run", "PSNR (dB)", "usage", "perplexity"]
  rows = [
    [
      run.name,
      cell(results, run.name, "psnr", ".2f"),
      cell(results, run.name, "codebook/usage", PERCENT),
      cell(results, run.name, "codebook/perplexity", ".4g"),
    ]
    for run in runs
  ]
  return markdown_table(header, rows)


def _validations(run: Run, run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{metric: (steps, values)} of the run's validations in its metrics.jsonl (empty without one)."""
  path = run_path(run_dir, "run_dir") / run.name / "metrics.jsonl"
  if not path.exists():
    return {}
  records = read_metrics(path)
  found = {key: series(records, "eval", (key,)) for key in ("psnr", "codebook/usage")}
  return {key: (s[1], s[2]) for key, s in found.items() if s is not None}


def _settled_cell(steps: np.ndarray, values: np.ndarray, tolerance: float) -> str:
  """``settled_at`` as a table cell: "not by S" when only the last validation (step S) is within the
  tolerance of itself, as nothing then shows the run has settled; "" without validations."""
  if not len(steps):
    return ""
  at = settled_at(steps, values, tolerance)
  return f"not by {steps[-1]:.0f}" if at == steps[-1] else f"{at:.0f}"


def from_logs(runs: Sequence[Run], run_dir: Path, out_dir: Path) -> tuple[str | None, list[Path]]:
  """``log_table`` and ``settling_figure``."""
  return log_table(runs, run_dir), settling_figure(runs, run_dir, out_dir)


def log_table(
  runs: Sequence[Run], run_dir: Path, report_steps: Sequence[int] = REPORT_STEPS, eval_every: int = EVAL_EVERY
) -> str | None:
  """Markdown: per run, validation PSNR and usage at ``report_steps`` and the step each settled at (the
  runs validate every ``eval_every`` steps). None if no run has validations yet."""
  rows = []
  for run in runs:
    found = _validations(run, run_dir)
    if not found:
      continue
    row = [run.name]
    for key, spec, tolerance in (
      ("psnr", ".2f", PSNR_TOLERANCE),
      ("codebook/usage", PERCENT, USAGE_TOLERANCE),
    ):
      steps, values = found.get(key, (np.zeros(0), np.zeros(0)))
      at = dict(zip(steps.tolist(), values.tolist(), strict=True))
      row += [formatted(at[s], spec) if s in at else "" for s in report_steps]
      row.append(_settled_cell(steps, values, tolerance))
    rows.append(row)
  if not rows:
    return None
  header = ["run"]
  for what in ("PSNR", "usage"):
    header += [f"{what} @{s}" for s in report_steps] + [f"{what} settled at"]
  return (
    f"## Validation during training\n\nEvery {eval_every} steps on the whole test split. Settled at: the"
    f" first validation after which all stay within {PSNR_TOLERANCE} dB (PSNR) or"
    f" {USAGE_TOLERANCE:.0%} of the codebook (usage) of the last; not by S: only the last validation (step"
    " S) is.\n\n" + markdown_table(header, rows)
  )


def figures(runs: Sequence[Run], results: Results, out_dir: Path) -> list[Path]:
  """None from results.json: ``settling_figure`` draws the validations from the runs' logs."""
  return []


def settling_figure(
  runs: Sequence[Run], run_dir: Path, out_dir: Path, filename: str = "settling.png"
) -> list[Path]:
  """``filename`` (a PNG): validation PSNR and usage (%) against step, one line per run. [] without
  validations."""
  lines = [(run.name, _validations(run, run_dir)) for run in runs]
  lines = [(name, found) for name, found in lines if found]
  if not lines:
    return []
  plt = pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
  for ax, (key, title, factor) in zip(
    axes,
    (("psnr", "validation PSNR (dB)", 1.0), ("codebook/usage", "codebook usage (%)", 100.0)),
    strict=True,
  ):
    for name, found in lines:
      if key in found:
        steps, values = found[key]
        ax.plot(steps, factor * values, marker=".", label=name)
    ax.set(title=title, xlabel="step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return [save_figure(fig, Path(out_dir) / filename)]
