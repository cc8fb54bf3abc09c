"""Collects an experiment's results.json files into its table (Markdown) and figures (PNG).

  python -m scripts.make_tables codebook_size                 # runs/experiments/codebook_size/cpu/*
  python -m scripts.make_tables levels_sweep --levels 8-5-5-5 8-8-8
  python -m scripts.make_tables maskgit_imagenet256 --scale paper --root /shared/runs

Writes OUT/table.md (default OUT: experiments/results/EXPERIMENT/SCALE), the experiment's figures and
OUT/results.json (every run's results.json, by run name: the numbers behind the table) and prints the
table. Runs without results.json show as an en dash and are listed below the table. From the runs'
training logs (metrics.jsonl) it adds a convergence section to table.md and training_curves.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from configs.common import parse_levels
from experiments.convergence import convergence_table, curves_figure
from experiments.registry import (
  SCALES,
  experiment_dir,
  experiment_names,
  experiment_runs,
  load_experiment,
  load_results,
)
from fsq.files import write_text_atomically


def render(
  experiment: str,
  scale: str,
  summary: str,
  table: str,
  missing: Sequence[str],
  figures: Sequence[Path],
  appendix: str | None = None,
) -> str:
  """The Markdown document: title, table, the runs still missing, the figures (relative links), then
  the appendix (the convergence section) if any."""
  parts = [f"# {experiment} ({scale} scale)", summary, table]
  if missing:
    parts.append(f"Missing (no results.json yet, shown as \u2013): {', '.join(missing)}")
  parts += [f"![{path.stem}]({path.name})" for path in figures]
  parts += [appendix] if appendix else []
  return "\n\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("experiment", choices=experiment_names())
  parser.add_argument("--scale", choices=SCALES, default="cpu")
  parser.add_argument("--root", default="runs/experiments", help="a folder or gs:// URL")
  parser.add_argument("--out", type=Path, help="default: experiments/results/EXPERIMENT/SCALE")
  parser.add_argument("--levels", nargs="+", type=parse_levels, help="the level sets the sweep ran")
  args = parser.parse_args(argv)
  module = load_experiment(args.experiment)
  runs = experiment_runs(module, args.scale, args.levels)
  results = load_results(experiment_dir(args.root, args.experiment, args.scale), runs)
  out = args.out or Path("experiments/results") / args.experiment / args.scale
  out.mkdir(parents=True, exist_ok=True)

  table = module.table(runs, results)
  run_dir = experiment_dir(args.root, args.experiment, args.scale)
  missing = [run.name for run in runs if run.name not in results]
  figures = module.figures(runs, results, out)
  if callable(getattr(module, "from_logs", None)):  # from the runs' workdirs: logs, predictions
    section, more = module.from_logs(runs, run_dir, out)
    table = "\n\n".join(filter(None, [table, section]))
    figures += more
  figures += curves_figure(runs, run_dir, out)
  write_text_atomically(out / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n")
  summary = module.__doc__.strip().splitlines()[0]
  document = render(
    args.experiment, args.scale, summary, table, missing, figures, convergence_table(runs, run_dir)
  )
  write_text_atomically(out / "table.md", document)
  print(document)
  print(f"wrote {out / 'table.md'}" + "".join(f", {path}" for path in figures))
  return 0


if __name__ == "__main__":
  sys.exit(main())
