"""Rendering an experiment's results: table cells, Markdown tables, the studies' figure panels, PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from experiments.registry import Results, Run
from fsq.files import write_atomically

MISSING = "\u2013"  # an en dash: the cell of a run that has no results.json yet
PERCENT = "percent"  # the spec of a cell that shows a fraction with ``percent``


def value(results: Results, run: str, key: str) -> float | None:
  """results[run][key], or None when the run has no results yet (or lacks the metric)."""
  return results.get(run, {}).get(key)


def percent(x: float) -> str:
  """A fraction as a percentage: one decimal from 1% up, else two significant digits, so that a small
  codebook usage keeps its value (0.00052 -> '0.052%', not '0.1%')."""
  return f"{x:.1%}" if abs(x) >= 0.01 else f"{100 * x:.2g}%"


def formatted(x: float, spec: str) -> str:
  """``x`` formatted with ``spec`` (e.g. '.2f'), or with ``percent`` when ``spec`` is PERCENT."""
  return percent(x) if spec == PERCENT else format(x, spec)


def cell(results: Results, run: str, key: str, spec: str = ".3g") -> str:
  """A table cell: MISSING when ``run`` has no results yet, '' when its results lack ``key``, else the
  value ``formatted`` with ``spec``."""
  if run not in results:
    return MISSING
  x = results[run].get(key)
  return "" if x is None else formatted(x, spec)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A Markdown table; the first column left-aligned, the others right-aligned (numbers)."""
  if any(len(row) != len(header) for row in rows):
    raise ValueError(f"every row needs {len(header)} cells, got {[len(r) for r in rows]}")
  lines = [
    "| " + " | ".join(header) + " |",
    "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
  ]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def runs_table(runs: Sequence[Run], results: Results, columns: Sequence[tuple[str, str, str]]) -> str:
  """One row per run: its name, then (header, metric key, format spec) columns."""
  rows = [[run.name] + [cell(results, run.name, key, spec) for _, key, spec in columns] for run in runs]
  return markdown_table(["run"] + [h for h, _, _ in columns], rows)


# Figure panels of the MaskGIT studies: (title, run-name suffix, metric key, scale factor) by name.
PANELS = {
  "rfid": ("reconstruction FID", "stage1", "rfid", 1.0),
  "psnr": ("PSNR (dB)", "stage1", "psnr", 1.0),
  "usage": ("codebook usage (%)", "stage1", "codebook/usage", 100.0),
  "compression": ("compression cost (bits/token)", "stage2", "compression/coded_bits_per_token", 1.0),
  "fid": ("sampling FID", "stage2", "fid", 1.0),
}


def save_figure(fig, path: Path) -> Path:
  """Writes a matplotlib figure to ``path`` (PNG; atomically, its folder created) and closes it."""
  write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120))
  pyplot().close(fig)
  return path


def pyplot():
  """matplotlib.pyplot on the Agg backend (files only); imported on first use."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt
