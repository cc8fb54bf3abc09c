"""Training state, optimizers from explicit hyperparameters, and the common update step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly: the step, parameters, optimizer state and the
  model's other variable collections (for example ``vq_stats``). Randomness is derived from the
  run's seed and the step, so it needs no state of its own."""

  step: jax.Array
  params: Any
  opt_state: Any
  model_state: Any
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, params, model_state, tx: optax.GradientTransformation) -> TrainState:
    return cls(jnp.zeros((), jnp.int32), params, tx.init(params), model_state, tx)


def make_optimizer(
  learning_rate: float,
  warmup_steps: int,
  total_steps: int,
  b1: float = 0.9,
  b2: float = 0.99,
  weight_decay: float = 0.0,
  grad_clip_norm: float | None = 1.0,
  schedule: str = "cosine",
) -> optax.GradientTransformation:
  """Adam(W) with linear warm-up then a cosine or constant schedule, and optional global-norm clipping."""
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(f"warmup_steps must be in [0, total_steps = {total_steps}], got {warmup_steps}")
  if schedule == "cosine":
    lr = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, max(warmup_steps, 1), max(total_steps, warmup_steps + 1, 2)
    )
  elif schedule == "constant":
    lr = optax.join_schedules(
      [
        optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1)),
        optax.constant_schedule(learning_rate),
      ],
      [max(warmup_steps, 1)],
    )
  else:
    raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
  parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
  parts.append(optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay))
  return optax.chain(*parts)


LossFn = Callable[[Any, Any, dict, jax.Array], tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]


def apply_gradients(state: TrainState, loss_fn: LossFn, batch: dict, rng: jax.Array):
  """One optimizer step on ``loss_fn(params, model_state, batch, rng) -> (loss, (metrics, model_state))``.

  Returns the new state and the metrics plus ``loss``, ``l2_grads`` and ``l2_params``.
  """
  (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    state.params, state.model_state, batch, rng
  )
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
    **metrics,
    "loss": loss,
    "l2_grads": optax.tree.norm(grads),
    "l2_params": optax.tree.norm(params),
  }
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
  return new_state, metrics
