"""The task contract of the generic loop, and the one registry of task families.

A task is what the loop (``fsq.train.loop``) and evaluation (``fsq.tasks.evaluate``) know of a model
family: a frozen dataclass holding its modules and optimizer, whose methods are pure functions of the
training state, a batch and the task's constants (``Task``). A task family is the entry that builds such
a task from a config and says what applies to it (``TaskFamily``); ``config.task`` names one. Adding a
family is one ``register`` call in ``fsq/tasks/__init__.py`` and its own module: the config check,
training, evaluation and the sweeps read this registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax
import ml_collections
import numpy as np

# The post-hoc metrics of scripts.evaluate (fsq.tasks.evaluate computes each); a family says which apply.
METRICS = ("rfid", "fid", "compression", "color_fid", "dense_native", "train_usage")


@runtime_checkable
class Task(Protocol):
  """What the loop calls. ``state`` is a ``fsq.train.state.TrainState``; ``batch`` a dict of global arrays
  (``image`` (B, H, W, C) in [-1, 1], ``label``, ``mask`` for evaluation, and the task's own fields);
  ``constants`` the arrays ``constants()`` returned, placed on the mesh (frozen networks, tables).

  Optional attributes the loop reads with defaults: ``sharding_rules`` ((regex, PartitionSpec) pairs
  for model parallelism; none), ``image_columns`` (columns of the logged image grids; 8),
  ``accumulation_steps`` (micro-batches per step; 1).
  """

  @property
  def codebook_shape(self) -> tuple[int, int]:
    """(codes per group, groups) of the tokens whose usage the loop counts."""
    ...

  def init(self, rng: jax.Array, batch: dict) -> Any:
    """The initial training state for batches shaped like ``batch``."""
    ...

  def constants(self) -> dict:
    """Arrays every step needs and no step changes (placed once, replicated)."""
    ...

  def train_step(self, state: Any, batch: dict, rng: jax.Array, constants: dict) -> tuple[Any, dict]:
    """One optimizer step: (new state, scalar metrics)."""
    ...

  def eval_step(self, state: Any, batch: dict, constants: dict) -> dict[str, jax.Array]:
    """Sums over the batch's real rows (``mask``), for ``summarize``; ``indices`` for usage counts."""
    ...

  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    """The evaluation's metrics from the sums of every batch."""
    ...

  def log_images(self, state: Any, batch: dict, constants: dict) -> dict[str, jax.Array]:
    """Image grids to log: name -> (N, H, W, C) in [-1, 1]."""
    ...


@dataclasses.dataclass(frozen=True)
class TaskFamily:
  """One value of ``config.task``.

  Attributes:
    name: the value of ``config.task``.
    build: config -> Task; a stage II family also takes its frozen stage I variables (None: restored from
      ``config.tokenizer_workdir``; shapes only for plans).
    check_model: raises ValueError, naming the field, for a config its models cannot be built from.
    metrics: config -> the METRICS that apply to the run (scripts.evaluate refuses the others).
    stage_one: the family of the frozen stage I a stage II family trains on, else None.
    frozen_params: of a stage I family, the entry of its training state whose parameters a stage II
      family freezes (the tokenizer's EMA parameters); None: no stage II trains on it.
  """

  name: str
  build: Callable[..., Task]
  check_model: Callable[[ml_collections.ConfigDict], None]
  metrics: Callable[[ml_collections.ConfigDict], tuple[str, ...]] = lambda config: ()
  stage_one: str | None = None
  frozen_params: str | None = None


FAMILIES: dict[str, TaskFamily] = {}


def register(family: TaskFamily) -> TaskFamily:
  """Adds ``family`` to FAMILIES."""
  if family.name in FAMILIES:
    raise ValueError(f"task family {family.name!r} is registered already")
  if family.stage_one is not None and (
    family.stage_one not in FAMILIES or FAMILIES[family.stage_one].frozen_params is None
  ):
    raise ValueError(
      f"task family {family.name!r}: its stage I {family.stage_one!r} must be a registered family "
      "with frozen_params"
    )
  FAMILIES[family.name] = family
  return family


def family_of(config: ml_collections.ConfigDict) -> TaskFamily:
  """The family ``config.task`` names; a ValueError naming the field and value otherwise."""
  name = config.get("task", None)
  if name not in FAMILIES:
    raise ValueError(f"config.task must be one of {tuple(FAMILIES)}, got {name!r}")
  return FAMILIES[name]
