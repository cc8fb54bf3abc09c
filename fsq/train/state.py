"""Training state, optimizers from explicit hyperparameters, and the common update step."""

from __future__ import annotations

import re
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


def kernels_only(params: Any) -> Any:
  """The weight-decay mask: True on kernels (leaves named ``kernel``: dense, convolution and attention
  weights), False on biases, norm scales, embeddings, position embeddings and codebooks, as magvit's
  MaskGIT trainer (``decay_list=['kernel']``) and big_vision (``wd_mults`` ``.*/kernel$``) decay."""
  return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def learning_rate_schedule(
  learning_rate: float, warmup_steps: int, total_steps: int, schedule: str = "cosine"
) -> optax.Schedule:
  """The rate of update t = 0 .. total_steps - 1:
  ``learning_rate * min(1, (t + 1) / warmup_steps) * c(t)``, with c = 1 ('constant') or
  ``(1 + cos(pi * clip((t - warmup_steps) / (total_steps - warmup_steps), 0, 1))) / 2`` ('cosine').

  No update has rate 0: warm-up reaches lr / warmup_steps at the first step (optax's and big_vision's
  start at exactly 0, a wasted step), warmup_steps = 0 means the full rate from the first step, and the
  cosine reaches 0 only at t = total_steps, one past the last update.
  """
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  if not 0 <= warmup_steps <= total_steps:
    raise ValueError(f"warmup_steps must be in [0, total_steps = {total_steps}], got {warmup_steps}")
  if schedule not in ("cosine", "constant"):
    raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")

  def rate(count: jax.Array) -> jax.Array:
    t = jnp.asarray(count, jnp.float32)
    lr = learning_rate * jnp.minimum(1.0, (t + 1) / max(warmup_steps, 1))
    if schedule == "cosine":
      progress = jnp.clip((t - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
      lr = lr * 0.5 * (1 + jnp.cos(jnp.pi * progress))
    return lr

  return rate


def path_name(path) -> str:
  """A tree path as the ``/``-joined names of its keys, e.g. ``encoder/Transformer/encoder_norm/scale``."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def scale_by_multipliers(multipliers: tuple[tuple[str, float], ...]) -> optax.GradientTransformation:
  """Multiplies each parameter's update by the factor of the first (regex, factor) whose regex matches the
  whole ``path_name`` of the parameter (1 if none does): per-parameter learning-rate multipliers of the
  optimizer's step, as big_vision's ``lr_mults`` (UViM's stage II trains its pretrained encoder at 0.1)."""
  patterns = [(re.compile(regex), float(factor)) for regex, factor in multipliers]

  def factor(path) -> float:
    name = path_name(path)
    return next((f for pattern, f in patterns if pattern.fullmatch(name)), 1.0)

  def update(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(lambda path, u: u * factor(path), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(
  learning_rate: float,
  warmup_steps: int,
  total_steps: int,
  b1: float = 0.9,
  b2: float = 0.99,
  weight_decay: float = 0.0,
  grad_clip_norm: float | None = 1.0,
  schedule: str = "cosine",
  lr_multipliers: tuple[tuple[str, float], ...] = (),
) -> optax.GradientTransformation:
  """AdamW at ``learning_rate_schedule``: optional global-norm clipping of the gradients, Adam's step,
  optional per-parameter multipliers of that step (``scale_by_multipliers``), decoupled weight decay on
  kernels only (``kernels_only``), all times the rate (optax's ``adamw`` in pieces: the decay is
  multiplied by the rate, not by the multipliers, as big_vision's ``lr_mults`` leave decay alone)."""
  lr = learning_rate_schedule(learning_rate, warmup_steps, total_steps, schedule)
  parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
  parts.append(optax.scale_by_adam(b1=b1, b2=b2))
  if lr_multipliers:  # on Adam's step only, before the decay, as big_vision orders its lr_mults
    parts.append(scale_by_multipliers(tuple(lr_multipliers)))
  parts += [optax.add_decayed_weights(weight_decay, mask=kernels_only), optax.scale_by_learning_rate(lr)]
  return optax.chain(*parts)


LossFn = Callable[[Any, Any, dict, jax.Array], tuple[jax.Array, tuple[dict[str, jax.Array], Any]]]


def micro_batches(batch: dict, steps: int) -> dict:
  """(B, ...) -> (steps, B / steps, ...): micro-batch i holds rows i, i + steps, i + 2 steps, ..., so that
  with the batch split over devices in contiguous blocks every micro-batch stays spread over all of them."""

  def split(x):
    if x.shape[0] % steps:
      raise ValueError(f"a batch of {x.shape[0]} does not split into {steps} micro-batches")
    return jnp.moveaxis(x.reshape(x.shape[0] // steps, steps, *x.shape[1:]), 1, 0)

  return jax.tree.map(split, batch)


def accumulate(fn: Callable, carry: Any, batch: dict, rng: jax.Array, steps: int = 1):
  """Gradient accumulation: ``fn(carry, micro_batch, rng) -> (sums, carry)`` over ``steps`` micro-batches
  of ``batch`` (``micro_batches``), the carry (e.g. a model's running statistics) threaded through them,
  the mean of the ``sums`` trees returned. Micro-batch i gets ``fold_in(rng, i)``; one step is ``fn``
  itself. With losses that are means over examples, the mean of the micro-batch gradients is the
  gradient of the whole batch, at 1 / steps of the activation memory."""
  if steps == 1:
    return fn(carry, batch, rng)
  micro = micro_batches(batch, steps)
  first = jax.tree.map(lambda x: x[0], micro)
  shapes = jax.eval_shape(lambda: fn(carry, first, rng)[0])

  def body(state, xs):
    total, carry = state
    i, mb = xs
    out, carry = fn(carry, mb, jax.random.fold_in(rng, i))
    return (jax.tree.map(jnp.add, total, out), carry), None

  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  (total, carry), _ = jax.lax.scan(body, (zeros, carry), (jnp.arange(steps), micro))
  return jax.tree.map(lambda t: t / steps, total), carry


def apply_gradients(
  state: TrainState, loss_fn: LossFn, batch: dict, rng: jax.Array, accumulation_steps: int = 1
):
  """One optimizer step on ``loss_fn(params, model_state, batch, rng) -> (loss, (metrics, model_state))``,
  its gradient averaged over ``accumulation_steps`` micro-batches of ``batch`` (``accumulate``).

  Returns the new state and the metrics plus ``loss``, ``l2_grads`` and ``l2_params``.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def one(model_state, micro, micro_rng):
    (loss, (metrics, model_state)), grads = grad_fn(state.params, model_state, micro, micro_rng)
    return (grads, {**metrics, "loss": loss}), model_state

  (grads, metrics), model_state = accumulate(one, state.model_state, batch, rng, accumulation_steps)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
    **metrics,
    "l2_grads": optax.tree.norm(grads),
    "l2_params": optax.tree.norm(params),
  }
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
  return new_state, metrics
