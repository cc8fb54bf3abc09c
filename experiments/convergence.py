"""Has each run settled? Its training curves from metrics.jsonl and how much its loss still moved at the end.

scripts/make_tables appends ``convergence_table`` to every experiment's table.md and writes
``training_curves.png`` beside it, from the workdirs of the runs that have a metrics.jsonl (the training
loop's log: one JSON record per line with "step", "split" ("train" or "eval") and the metrics).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from experiments.registry import Run
from experiments.report import markdown_table, pyplot, save_figure
from fsq.files import run_path
from fsq.train.writers import read_metrics

TRAIN_KEYS = ("mse", "loss")  # the reconstruction term of a tokenizer, else the whole objective
# The validation metric of each task family, first found: tokenizer, MaskGIT transformer, UViM II, UViM I.
EVAL_KEYS = ("psnr", "masked_loss", "code_loss", "task_loss")
TAIL = 0.2  # the last fifth of training, compared with the fifth before it
SPIKE_RATIO = 1.5  # a logged training loss above 1.5x the one logged before it is a spike
SETTLED = 0.02  # a run has settled when its loss moved less than 2% over the last fifth


def series(
  records: Sequence[dict], split: str, keys: Sequence[str]
) -> tuple[str, np.ndarray, np.ndarray] | None:
  """(key, steps [n], values [n]) of the first of ``keys`` that the ``split`` records carry, else None;
  steps ascending, one value each (a step logged twice, by a resumed run, keeps its last record)."""
  rows = [r for r in records if r.get("split") == split]
  for key in keys:
    # by step, the last record of a step kept: a resumed run logs the steps after its checkpoint again
    points = sorted({r["step"]: r[key] for r in rows if key in r}.items())
    if points:
      steps, values = np.asarray(points, dtype=np.float64).T
      return key, steps, values
  return None


def tail_change(steps: np.ndarray, values: np.ndarray, fraction: float = TAIL) -> float | None:
  """Relative change of the median value over the last ``fraction`` of the steps against the median over
  the ``fraction`` before it: (late - early) / |early|, with steps [n] and values [n]. The median ignores
  an isolated loss spike. Windows are half-open, (T(1-2f), T(1-f)] and (T(1-f), T] for the last step T.
  None if a window has under 2 points."""
  last = steps.max()
  late = values[steps > last * (1 - fraction)]
  early = values[(steps > last * (1 - 2 * fraction)) & (steps <= last * (1 - fraction))]
  if len(late) < 2 or len(early) < 2:
    return None
  return float((np.median(late) - np.median(early)) / abs(np.median(early)))


def spikes(steps: np.ndarray, values: np.ndarray, warmup_steps: int) -> int:
  """Loss spikes, with steps [n] ascending and values [n]: logged values (each the training loop's mean
  over the ``log_every_steps`` steps before it) more than SPIKE_RATIO times the value logged before them,
  at steps after the warm-up."""
  rising = values[1:] > SPIKE_RATIO * values[:-1]
  return int(np.sum(rising & (steps[1:] > warmup_steps)))


def warmup_steps(workdir: Path) -> int:
  """The learning-rate warm-up of the run in ``workdir`` (its config.json); 0 if it has none recorded."""
  path = run_path(workdir, "workdir") / "config.json"
  if not path.exists():
    return 0
  return int(json.loads(path.read_text()).get("optimizer", {}).get("warmup_steps", 0))


def _logged(runs: Sequence[Run], run_dir: Path) -> list[tuple[Run, list[dict]]]:
  paths = [(run, run_path(run_dir, "run_dir") / run.name / "metrics.jsonl") for run in runs]
  return [(run, read_metrics(path)) for run, path in paths if path.exists()]


def convergence_table(runs: Sequence[Run], run_dir: Path) -> str | None:
  """Markdown: per run with a metrics.jsonl, the steps trained, the final training loss, its change over
  the last fifth of training, and the validation metric at the last two evaluations. None if no run
  has a log."""
  rows = []
  for run, records in _logged(runs, run_dir):
    train, held_out = series(records, "train", TRAIN_KEYS), series(records, "eval", EVAL_KEYS)
    if train is None:
      continue
    key, steps, values = train
    change = tail_change(steps, values)
    count = spikes(steps, values, warmup_steps(run_path(run_dir, "run_dir") / run.name))
    evals = ""
    if held_out is not None:
      eval_key, eval_steps, eval_values = held_out
      evals = f"{eval_key} " + " \u2192 ".join(
        f"{v:.4g} ({s:.0f})" for s, v in zip(eval_steps[-2:], eval_values[-2:], strict=True)
      )
    rows.append(
      [
        run.name,
        f"{steps.max():.0f}",
        f"{key} {values[-1]:.4g}",
        "" if change is None else f"{change:+.1%}",
        "" if change is None else ("yes" if abs(change) < SETTLED and count == 0 else "no"),
        str(count),
        evals,
      ]
    )
  if not rows:
    return None
  header = ["run", "steps", "final train loss", f"change over the last {TAIL:.0%}", "settled", "spikes"]
  header.append("validation (step)")
  return (
    "## Convergence\n\nTraining loss: the median over the last fifth of the steps against the fifth"
    f" before it. Spikes: logged losses (each a mean over the log interval) above {SPIKE_RATIO}x the one"
    f" logged before, after the warm-up. Settled: under {SETTLED:.0%} change and no spike (with a learning"
    " rate that decays to zero at the budget a small change is expected; the validation columns say how"
    " much the model still moved). Validation: the last two evaluations.\n\n" + markdown_table(header, rows)
  )


def stage(run: Run) -> str:
  """The 'stage=' argument of the run's config spec (e.g. 'tokenizer'), else its config file's name."""
  match = re.search(r"[:,]stage=([^,]+)", run.config)
  return match.group(1) if match else Path(run.config.split(":")[0]).stem


def curves_figure(runs: Sequence[Run], run_dir: Path, out_dir: Path) -> list[Path]:
  """training_curves.png: training loss against step (log scale), one panel per stage (e.g. tokenizer,
  transformer) and loss key, one line per run. [] if no run has a log."""
  groups: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
  for run, records in _logged(runs, run_dir):
    train = series(records, "train", TRAIN_KEYS)
    if train is not None:
      key, steps, values = train
      groups.setdefault(f"{stage(run)}: train {key}", []).append((run.name, steps, values))
  if not groups:
    return []
  plt = pyplot()
  fig, axes = plt.subplots(
    1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False, constrained_layout=True
  )
  for ax, (title, lines) in zip(axes[0], sorted(groups.items()), strict=True):
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)  # 20 distinct colours, not 10
    for name, steps, values in lines:
      ax.plot(steps, values, label=name, linewidth=1)
    ax.set(title=title, xlabel="step", yscale="log" if all((v > 0).all() for _, _, v in lines) else "linear")
    ax.legend(fontsize=6, ncol=2)
  return [save_figure(fig, Path(out_dir) / "training_curves.png")]
