"""The experiments and their runs: the Run record, the CPU-scale budget, finding experiments, results on disk.

An experiment is a module of this package that defines
  runs(scale) -> list[Run]                        its training runs at scale "cpu" (Fashion-MNIST, minutes
                                                  to an hour each on 2 cores) or "paper" (TPU pods)
  table(runs, results) -> str                     Markdown in the paper's layout
  figures(runs, results, out_dir) -> list[Path]   PNG files (an empty list if the paper has no figure)
and optionally
  from_logs(runs, run_dir, out_dir) -> (str | None, list[Path])
                                                  a Markdown section and PNG files made from what the runs'
                                                  workdirs hold besides results.json (logs, pictures)
and, where the paper prints numbers, PAPER. ``results`` maps run name -> the run's results.json (metric ->
float) and holds only the runs that have one. scripts/sweep.py runs an experiment; scripts/make_tables.py
renders its table and figures (with experiments.report). A run's workdir is ROOT/EXPERIMENT/SCALE/RUN.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from fsq.files import run_path
from fsq.tasks.base import METRICS

SCALES = ("cpu", "paper")
NOT_EXPERIMENTS = ("registry", "report", "convergence")  # the helper modules of this package

# The CPU-scale budget, the one place to tune it: training steps of each stage, and the images (stage I)
# or samples (stage II) that FID and compression are measured on.
# The recipe (configs/maskgit.py, run=cpu, with CPU_STAGE_1_OVERRIDES): stage I warms up over 100 steps,
# clips the gradient norm at 1, decays the learning rate (1e-3) along a cosine to zero at the last step and
# uses Adam with b1 = 0.9;
# stage II does the same (its paper recipe). With 1000 steps at a constant rate and no clipping, stage I's
# loss still fell 6 to 24% over the last fifth and 12 of 14 runs had loss spikes (experiments/results/
# settling: 3000 to 4000 steps to settle at a constant rate). A schedule that ends at the budget settles by
# construction; the convergence table of each experiment checks it (spikes, and the change over the last
# fifth). With MaskGIT's b1 = 0 (no momentum; a GAN's choice, and these runs have no GAN) FSQ 2^16 still
# spiked at step 350 (50-step mean MSE 0.051 -> 0.103); with b1 = 0.9, the same run and seed did not, and
# reached at step 500 the train MSE (0.019) and test PSNR (23.3 dB) that b1 = 0 reached at step 1000.
CPU_STEPS_STAGE_1 = 2000
CPU_STEPS_STAGE_2 = 1000
CPU_NUM_IMAGES = 1000
# Stage I at CPU scale trains on L2 and the quantizer's own losses only: the GAN (off already for LPIPS in
# the cpu config) would double each run's time, and the studies compare usage, reconstruction and
# compression across quantizers, which the adversarial term does not decide. Without the GAN, Adam keeps
# its momentum (b1 = 0.9; MaskGIT's b1 = 0 is for its adversarial training; measurements above).
CPU_STAGE_1_OVERRIDES = ("gan.adversarial_weight=0", "optimizer.b1=0.9")
PAPER_NUM_IMAGES = 50_000  # the paper's 50k samples (ADM evaluation suite)

Results = Mapping[str, Mapping[str, float]]


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run and its evaluation.

  Attributes:
    name: the run's directory name, unique in its experiment (letters, digits, '_', '-', '.').
    config: the config spec of scripts/train, e.g. 'configs/maskgit.py:stage=tokenizer,run=cpu'.
    overrides: 'FIELD=VALUE' items, passed to scripts/train as --config.FIELD=VALUE.
    depends_on: name of the stage I run whose workdir becomes --config.tokenizer_workdir.
    metrics: what scripts/evaluate computes after training (METRICS); () merges final_metrics only.
    num_images: images or samples for those metrics; None for evaluate's default.
  """

  name: str
  config: str
  overrides: tuple[str, ...] = ()
  depends_on: str | None = None
  metrics: tuple[str, ...] = ()
  num_images: int | None = None

  def __post_init__(self):
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
      raise ValueError(f"run name must be letters, digits, '_', '-' or '.', got {self.name!r}")
    bad = [o for o in self.overrides if not re.fullmatch(r"[A-Za-z0-9_.]+=.*", o)]
    if bad:
      raise ValueError(f"overrides of run {self.name} must be FIELD=VALUE, got {bad}")
    unknown = sorted(set(self.metrics) - set(METRICS))
    if unknown:
      raise ValueError(f"metrics of run {self.name} must be among {METRICS}, got {unknown}")


def check_runs(runs: Sequence[Run]) -> None:
  """Names are unique and every run comes after the run it depends on; otherwise a ValueError."""
  seen: set[str] = set()
  for run in runs:
    if run.name in seen:
      raise ValueError(f"run name {run.name!r} appears twice")
    if run.depends_on is not None and run.depends_on not in seen:
      raise ValueError(f"run {run.name} depends on {run.depends_on!r}, which is not an earlier run")
    seen.add(run.name)


def maskgit_runs(
  name: str,
  args: str,
  scale: str,
  paper_run: str,
  stage_1_metrics: tuple[str, ...],
  stage_2_metrics: tuple[str, ...] | None,
) -> list[Run]:
  """Runs '{name}_stage1' (the tokenizer) and, unless stage_2_metrics is None, '{name}_stage2' (the
  transformer on its tokens) of configs/maskgit.py with ``args`` (e.g. 'quantizer=fsq,codebook=12').

  ``paper_run`` is the config's run at paper scale (imagenet128 or imagenet256); the CPU scale takes
  run=cpu with CPU_STEPS_STAGE_1/2 and CPU_NUM_IMAGES.
  """
  check_scale(scale)
  run = "cpu" if scale == "cpu" else paper_run
  num_images = CPU_NUM_IMAGES if scale == "cpu" else PAPER_NUM_IMAGES
  steps_1 = (f"num_train_steps={CPU_STEPS_STAGE_1}", *CPU_STAGE_1_OVERRIDES) if scale == "cpu" else ()
  steps_2 = (f"num_train_steps={CPU_STEPS_STAGE_2}",) if scale == "cpu" else ()
  spec = f"configs/maskgit.py:stage={{}},run={run},{args}"
  stage_1 = Run(f"{name}_stage1", spec.format("tokenizer"), steps_1, None, stage_1_metrics, num_images)
  if stage_2_metrics is None:
    return [stage_1]
  return [
    stage_1,
    Run(f"{name}_stage2", spec.format("transformer"), steps_2, stage_1.name, stage_2_metrics, num_images),
  ]


def check_scale(scale: str) -> None:
  if scale not in SCALES:
    raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


def experiment_names() -> list[str]:
  """The experiment modules of this package."""
  here = Path(__file__).parent
  return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name not in NOT_EXPERIMENTS)


def load_experiment(name: str) -> ModuleType:
  """The module experiments.<name>, checked to define runs, table and figures."""
  if name not in experiment_names():
    raise ValueError(f"experiment must be one of {experiment_names()}, got {name!r}")
  module = importlib.import_module(f"experiments.{name}")
  missing = [f for f in ("runs", "table", "figures") if not callable(getattr(module, f, None))]
  if missing:
    raise ValueError(f"experiments/{name}.py must define {missing}")
  return module


def experiment_runs(module: ModuleType, scale: str, levels: Sequence[tuple[int, ...]] | None) -> list[Run]:
  """``module.runs(scale)``, or ``module.runs(scale, levels=levels)`` when level sets are given."""
  check_scale(scale)
  if levels is None:
    runs = module.runs(scale)
  elif "levels" in inspect.signature(module.runs).parameters:
    runs = module.runs(scale, levels=levels)
  else:
    raise ValueError(f"--levels is an option of experiments that sweep levels, not of {module.__name__}")
  check_runs(runs)
  return runs


def experiment_dir(root, experiment: str, scale: str):
  """ROOT/EXPERIMENT/SCALE: the parent of the experiment's run workdirs (ROOT a local path or gs:// URL)."""
  return run_path(root, "root") / experiment / scale


def load_results(directory: Path, runs: Sequence[Run]) -> dict[str, dict[str, float]]:
  """{run name: contents of directory/RUN/results.json} for the runs that have one."""
  results = {}
  for run in runs:
    path = run_path(directory, "directory") / run.name / "results.json"
    if path.exists():
      results[run.name] = json.loads(path.read_text())
  return results


MISSING_FIELD = "(absent)"  # a field that one of two compared configs lacks

# Fields a run may change between its start and a resume without changing what it trains: where its
# folders are (an experiment folder moved), the stage I checkpoint pinned at its start, how it reads its
# data, how often it evaluates, checkpoints and logs, and what it profiles or reports.
RESUME_FREE = (
  "tokenizer_workdir",
  "tokenizer_step",
  "data.data_dir",
  "data.manual_dir",
  "data.tokens_dir",
  "data.worker_count",
  "data.prefetch_buffer_size",
  "eval_every_steps",
  "checkpoint_every_steps",
  "log_every_steps",
  "max_to_keep",
  "preemption_check_every_steps",
  "profile_steps",
  "peak_flops_per_device",
  "debug_nan_at_step",
)


def recipe_changes(recorded: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
  """The dotted fields (but RESUME_FREE) whose values differ between a run's recorded config.json and the
  config the sweep would give it now, or that only one of them has: a run started under another recipe,
  which resuming or tabulating would pass off as this one's."""
  changed = []
  for key in sorted(set(recorded) | set(current)):
    name = prefix + key
    if name in RESUME_FREE:
      continue
    old, new = recorded.get(key, MISSING_FIELD), current.get(key, MISSING_FIELD)
    if isinstance(old, Mapping) and isinstance(new, Mapping):
      changed += recipe_changes(old, new, name + ".")
    elif old != new:
      changed.append(f"{name}: {old!r} recorded, {new!r} now")
  return changed


def stale_runs(
  runs: Sequence[Run], directory: Path, configs: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
  """Run name -> why its workdir holds another run than the sweep would start now: its recorded config
  differs (``recipe_changes``), or the stage I it was trained on is stale or gone (a stage II run keeps
  the stage I it started on; a retrained stage I would not be it). ``runs`` in experiment order."""
  stale = {}
  for run in runs:
    recorded = directory / run.name / "config.json"
    if not recorded.exists():
      continue
    changes = recipe_changes(json.loads(recorded.read_text()), configs[run.name])
    dependency = run.depends_on
    if changes:
      stale[run.name] = "; ".join(changes)
    elif dependency in stale:
      stale[run.name] = f"its stage I {dependency} is stale"
    elif dependency is not None and not (directory / dependency / "config.json").exists():
      stale[run.name] = f"its stage I {dependency} is gone"
  return stale
