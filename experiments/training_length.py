"""Does training longer close FSQ's usage gap at 2^16? The codebook study's FSQ 2^16 stage I at 2x and 4x
its budget.

  python -m scripts.sweep training_length && python -m scripts.make_tables training_length

With the study's budget (``CPU_STEPS_STAGE_1`` = 2000 steps) and recipe, FSQ 2^16 used 44.9% of its
64,000 codes on the test split (codebook_size/cpu), where the paper reports more than half of 2^16 in
use; the data allows far more distinct encoder inputs than that (codebook_size/cpu/data_ceiling.json).
Its training loss was still falling (6.7% over the last fifth), and in the settling runs FSQ 2^14's usage
rose from 60% to 83% between steps 1000 and 4000. These runs train the same tokenizer, recipe and seed
for ``MULTIPLES`` times the budget, each with its cosine schedule ending at its own last step, validated
every ``EVAL_EVERY`` steps on the whole test split and scored as the study scores stage I (rFID, usage
on the train split). If usage keeps rising with the budget, the study's shortfall at 2^16 is (at least
in part) training length; if it levels off well under the paper's, it is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from experiments import settling
from experiments.registry import CPU_NUM_IMAGES, CPU_STAGE_1_OVERRIDES, CPU_STEPS_STAGE_1, Results, Run
from experiments.report import PERCENT, runs_table

MULTIPLES = (4, 2)  # of the study's stage I budget; the longest first: it answers the question
EVAL_EVERY = 500
SPEC = "configs/maskgit.py:stage=tokenizer,run=cpu,quantizer=fsq,codebook=16"


def runs(scale: str) -> list[Run]:
  if scale != "cpu":
    raise ValueError(f"training_length studies the cpu scale's budget; it has no {scale!r} scale")
  out = []
  for multiple in MULTIPLES:
    steps = multiple * CPU_STEPS_STAGE_1
    overrides = (f"num_train_steps={steps}", f"eval_every_steps={EVAL_EVERY}", *CPU_STAGE_1_OVERRIDES)
    metrics = ("rfid", "train_usage")
    out.append(Run(f"fsq_16_{multiple}x_stage1", SPEC, overrides, None, metrics, CPU_NUM_IMAGES))
  return out


COLUMNS = (
  ("PSNR (dB)", "psnr", ".2f"),
  ("usage", "codebook/usage", PERCENT),
  ("usage (train)", "codebook/usage_train", PERCENT),
  ("perplexity", "codebook/perplexity", ".4g"),
  ("rFID", "rfid", ".2f"),
)


def table(runs: Sequence[Run], results: Results) -> str:
  """The final numbers of each run (results.json)."""
  return runs_table(runs, results, COLUMNS)


def figures(runs: Sequence[Run], results: Results, out_dir: Path) -> list[Path]:
  """None from results.json: ``from_logs`` draws the validations."""
  return []


def from_logs(runs: Sequence[Run], run_dir: Path, out_dir: Path) -> tuple[str | None, list[Path]]:
  """The validations at every 1000 steps, when each settled, and training_length.png."""
  longest = max(MULTIPLES) * CPU_STEPS_STAGE_1
  report = tuple(range(1000, longest + 1, 1000))
  section = settling.log_table(runs, run_dir, report, EVAL_EVERY)
  return section, settling.settling_figure(runs, run_dir, out_dir, "training_length.png")
