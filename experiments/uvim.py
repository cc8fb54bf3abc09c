"""Table 2: UViM with FSQ or VQ on depth, panoptic segmentation and colorization, stage I and stage II.

  python -m scripts.sweep uvim [--scale paper]   # then: python -m scripts.make_tables uvim

For each task, stage I (restricted oracle + base model: the task metric with oracle codes, codebook usage
over the evaluation split) and stage II (the VTT's greedy codes decoded by stage I: the task metric, and
the usage of the generated codes) for FSQ, UViM's VQ with splitting, and VQ without splitting (the
paper's ablation); panoptic also without context (oracle and base model without the image). Stage II
runs three times per arm (seeds 0, 1, 2: ``{arm}_lm``, ``{arm}_lm_seed1``, ``{arm}_lm_seed2``) on the same
stage I, and the table shows the mean and standard deviation over the seeds, as the paper reports the
mean of three stage II runs. At CPU scale
the runs are configs/uvim.py's run=cpu twins on the synthetic scenes (64 px, 8x8 codes, 2000 steps each);
colorization is scored with FID between the stage II colourings and the real images of the evaluation
split (all 500 test scenes at CPU scale, 5000 images at paper scale) on the standard Inception network.

The paper's findings (NYU depth RMSE, COCO PQ, ImageNet colorization FID-5k; mean over three stage II
runs): FSQ is close to VQ on all three tasks (0.473 vs 0.468, 43.2 vs 43.4, 17.55 vs 16.90), both using
99-100% of their codes; VQ without splitting uses 0.78% of its codebook and loses depth accuracy (0.490);
without context, FSQ loses less PQ than VQ (40.2 vs 39.0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.registry import Results, Run, check_scale
from experiments.report import MISSING, PERCENT, cell, formatted, markdown_table, pyplot, save_figure, value
from fsq.files import run_path

SEEDS = (0, 1, 2)  # stage II runs per arm, as the paper's three (Table 2 reports their mean)
CPU_COLOR_FID_IMAGES = 500  # the whole test split of synthetic_scenes/64
PAPER_COLOR_FID_IMAGES = 5000  # FID-5k


@dataclasses.dataclass(frozen=True)
class Task:
  """A row group of Table 2: configs/uvim.py task, the metric key of the stage I and II evaluations (or
  of scripts/evaluate for colorization), how to show it, and whether lower is better."""

  key: str
  label: str
  metric: str
  metric_label: str
  spec: str
  lower_is_better: bool


TASKS = (
  Task("depth", "depth", "depth/rmse", "RMSE (m)", ".3f", True),
  Task("panoptic", "panoptic", "pq/all_pq", "PQ", ".1%", False),
  Task("colorization", "colorization", "color_fid", "FID", ".2f", True),
)
QUANTIZERS = (("fsq", "FSQ"), ("vq", "VQ"), ("vq_nosplit", "VQ without splitting"))
NO_CONTEXT = ("panoptic", ("fsq", "vq"))  # the "without context" ablation: task and quantizers

# Table 2 (stage II metric, stage I usage) by (task, quantizer, context); PQ as a fraction.
PAPER = {
  ("depth", "vq", "on"): (0.468, 0.99),
  ("depth", "fsq", "on"): (0.473, 0.99),
  ("depth", "vq_nosplit", "on"): (0.490, 0.0078),
  ("panoptic", "vq", "on"): (0.434, 1.0),
  ("panoptic", "fsq", "on"): (0.432, 1.0),
  ("panoptic", "vq", "off"): (0.390, None),
  ("panoptic", "fsq", "off"): (0.402, None),
  ("colorization", "vq", "on"): (16.90, 1.0),
  ("colorization", "fsq", "on"): (17.55, 1.0),
}


def arms() -> list[tuple[Task, str, str]]:
  """(task, quantizer, context) of every row, in table order."""
  out = [(task, q, "on") for task in TASKS for q, _ in QUANTIZERS]
  task = next(t for t in TASKS if t.key == NO_CONTEXT[0])
  return out + [(task, q, "off") for q in NO_CONTEXT[1]]


def run_name(task: Task, quantizer: str, context: str, stage: str) -> str:
  return f"{task.key}_{quantizer}{'_nocontext' if context == 'off' else ''}_{stage}"


def runs(scale: str) -> list[Run]:
  check_scale(scale)
  run = "cpu" if scale == "cpu" else "paper"
  images = CPU_COLOR_FID_IMAGES if scale == "cpu" else PAPER_COLOR_FID_IMAGES
  out = []
  for task, quantizer, context in arms():
    spec = f"configs/uvim.py:stage={{}},task={task.key},quantizer={quantizer},context={context},run={run}"
    oracle = Run(run_name(task, quantizer, context, "oracle"), spec.format("oracle"))
    color = task.key == "colorization"
    lms = [
      Run(
        seed_name(run_name(task, quantizer, context, "lm"), seed),
        spec.format("lm"),
        (f"seed={seed}",) if seed else (),
        depends_on=oracle.name,
        metrics=("color_fid",) if color else (),
        num_images=images if color else None,
      )
      for seed in SEEDS
    ]
    out += [oracle, *lms]
  return out


def seed_name(name: str, seed: int) -> str:
  """The run of stage II with ``seed``: seed 0 keeps the name, the others add '_seed{seed}'."""
  return name if seed == 0 else f"{name}_seed{seed}"


def over_seeds(results: Results, name: str, key: str, spec: str) -> str:
  """A stage II cell over the seeds that have ``key``: 'mean ± standard deviation (n)' from two seeds,
  'value (1)' from one; blank when seed runs have results without ``key``, MISSING when none has."""
  values = [value(results, seed_name(name, seed), key) for seed in SEEDS]
  values = [v for v in values if v is not None]
  if not values:
    return "" if any(seed_name(name, seed) in results for seed in SEEDS) else MISSING
  if len(values) == 1:
    return f"{formatted(values[0], spec)} (1)"
  mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
  return f"{formatted(mean, spec)} \u00b1 {formatted(std, spec)} ({len(values)})"


def seed_mean(results: Results, name: str, key: str) -> float | None:
  """The mean of ``key`` over the seeds of stage II run ``name`` that have it; None if none has."""
  values = [value(results, seed_name(name, seed), key) for seed in SEEDS]
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def _stage_one_metric(task: Task) -> str:
  """Stage I has no colorization FID (it needs stage II's sampler): its PSNR stands in."""
  return "color/psnr" if task.key == "colorization" else task.metric


HEADER = [
  "task",
  "quantizer",
  "context",
  "stage I metric",
  "stage I usage",
  "stage II metric",
  "stage II code usage",
  "paper stage II metric",
  "paper usage",
]


def table(runs: Sequence[Run], results: Results) -> str:
  """One row per (task, quantizer, context). Stage I's metric uses the oracle's own codes (colorization:
  PSNR in dB); stage II's uses the VTT's greedy codes, over the seeds that have results (``over_seeds``);
  usage is over the evaluation split."""
  rows = []
  for task, quantizer, context in arms():
    one, two = run_name(task, quantizer, context, "oracle"), run_name(task, quantizer, context, "lm")
    paper_metric, paper_usage = PAPER.get((task.key, quantizer, context), (None, None))
    stage_one_spec = ".2f" if task.key == "colorization" else task.spec
    rows.append(
      [
        task.label,
        dict(QUANTIZERS)[quantizer],
        context,
        f"{task.metric_label if task.key != 'colorization' else 'PSNR (dB)'}: "
        + cell(results, one, _stage_one_metric(task), stage_one_spec),
        cell(results, one, "codebook/usage", PERCENT),
        f"{task.metric_label}: " + over_seeds(results, two, task.metric, task.spec),
        over_seeds(results, two, "codebook/usage", PERCENT),
        "" if paper_metric is None else format(paper_metric, task.spec),
        "" if paper_usage is None else format(paper_usage, ".2%"),
      ]
    )
  return markdown_table(HEADER, rows)


def figures(runs: Sequence[Run], results: Results, out_dir: Path) -> list[Path]:
  """uvim.png: per task, stage I and stage II metric and stage I usage of each quantizer (with context)."""
  plt = pyplot()
  fig, axes = plt.subplots(2, len(TASKS), figsize=(4.2 * len(TASKS), 6.4), constrained_layout=True)
  labels = [label for _, label in QUANTIZERS]
  for column, task in enumerate(TASKS):
    metric_ax, usage_ax = axes[0, column], axes[1, column]
    stage_two = [seed_mean(results, run_name(task, q, "on", "lm"), task.metric) for q, _ in QUANTIZERS]
    usage = [value(results, run_name(task, q, "on", "oracle"), "codebook/usage") for q, _ in QUANTIZERS]
    scale = 100.0 if task.key == "panoptic" else 1.0
    metric_ax.bar(labels, [scale * (v if v is not None else float("nan")) for v in stage_two])
    unit = " (%)" if task.key == "panoptic" else ""
    metric_ax.set(title=f"{task.label}: stage II {task.metric_label}{unit}")
    usage_ax.bar(labels, [100.0 * (v if v is not None else float("nan")) for v in usage])
    usage_ax.set(title=f"{task.label}: stage I codebook usage (%)", ylim=(0, 105))
    for ax in (metric_ax, usage_ax):
      ax.tick_params(axis="x", labelrotation=15)
      ax.grid(alpha=0.3, axis="y")
  return [save_figure(fig, Path(out_dir) / "uvim.png")]


def from_logs(runs: Sequence[Run], run_dir: Path, out_dir: Path) -> tuple[None, list[Path]]:
  """No section; ``predictions_figure``."""
  return None, predictions_figure(runs, run_dir, out_dir)


def predictions_figure(runs: Sequence[Run], run_dir: Path, out_dir: Path) -> list[Path]:
  """uvim_predictions.png: the last evaluation's stage II predictions (rows of input | target |
  prediction, as the loop writes them) of each task (rows) and quantizer (columns), with context."""
  plt = pyplot()
  names = {r.name for r in runs}
  fig, axes = plt.subplots(
    len(TASKS), len(QUANTIZERS), figsize=(4 * len(QUANTIZERS), 5.5 * len(TASKS)), constrained_layout=True
  )
  found = False
  for row, task in enumerate(TASKS):
    for col, (quantizer, label) in enumerate(QUANTIZERS):
      ax, name = axes[row, col], run_name(task, quantizer, "on", "lm")
      images = run_path(run_dir, "run_dir") / name / "images"
      pngs = sorted(images.glob("eval_predictions_*.png")) if name in names else []
      if pngs:
        with pngs[-1].open("rb") as f:
          ax.imshow(plt.imread(f, format="png"))
        found = True
      ax.set(title=f"{task.label}, {label}", xticks=[], yticks=[])
  if not found:
    plt.close(fig)
    return []
  return [save_figure(fig, Path(out_dir) / "uvim_predictions.png")]
