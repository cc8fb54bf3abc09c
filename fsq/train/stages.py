"""A run's config as it trains: a stage II run pinned to the stage I checkpoint it trains on."""

from __future__ import annotations

import copy
from pathlib import Path

import ml_collections

from fsq.data import tokens as tokens_lib
from fsq.files import run_path
from fsq.train.checkpoint import saved_step
from fsq.train.writers import read_config


def resolve(config: ml_collections.ConfigDict, workdir: str | Path) -> ml_collections.ConfigDict:
  """``config`` as the run in ``workdir`` trains on it (a copy; ``config`` is left as it is).

  A stage II run's ``tokenizer_step``, when 0, becomes the stage I checkpoint it trains on: the one
  ``workdir/config.json`` recorded when the run started (a resumed run keeps its tokenizer), else the
  one that made its tokens folder, else stage I's newest. The loop records the resolved config, from
  which evaluation restores the same stage I even after stage I has trained on.
  """
  config = copy.deepcopy(config)
  if not config.get("tokenizer_workdir") or config.tokenizer_step:
    return config
  recorded = (run_path(workdir, "workdir") / "config.json").exists()
  step = read_config(workdir).get("tokenizer_step", 0) if recorded else 0
  if not step and config.data.get("tokens_dir", ""):  # the checkpoint that made the tokens
    step = tokens_lib.read_manifest(config.data.tokens_dir)["tokenizer_step"]
  if not step:
    try:
      step = saved_step(run_path(config.tokenizer_workdir, "config.tokenizer_workdir") / "checkpoints", 0)
    except ValueError as e:
      raise ValueError(f"config.tokenizer_workdir = {config.tokenizer_workdir!r}: {e}") from None
  config.tokenizer_step = step
  return config
