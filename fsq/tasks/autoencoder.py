"""The autoencoder task: L2 reconstruction through any quantizer, for the generic training loop.

A task is what a model family gives the loop (fsq/train/loop.py): ``init`` (a state from an rng and an
example batch), ``constants`` (frozen arrays the steps read, e.g. LPIPS weights, passed to every
train step as an argument rather than baked into the program), ``train_step``, ``eval_step``
(per-batch sums over valid examples, plus code counts), ``summarize`` (sums -> scalars),
``log_images`` (named image batches to log), and the codebook shape.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fsq.metrics import code_counts
from fsq.models.autoencoder import Autoencoder
from fsq.train.state import TrainState, apply_gradients

_SCALAR_AUX = (
  "loss",
  "codebook_loss",
  "commitment_loss",
  "entropy_loss",
  "per_sample_entropy",
  "codebook_entropy",
)


@dataclasses.dataclass(frozen=True)
class AutoencoderTask:
  """L2 autoencoder training. Batches are dicts with ``image`` float32 (B, H, W, C) in [-1, 1] and,
  in evaluation, ``mask`` float32 (B,) (1 for real examples, 0 for padding)."""

  model: Autoencoder
  optimizer: optax.GradientTransformation
  # Gradient accumulation: the batch's gradient as the mean over this many micro-batches (less memory).
  accumulation_steps: int = dataclasses.field(default=1, kw_only=True)
  num_log_images: ClassVar[int] = 16

  @property
  def codebook_shape(self) -> tuple[int, int]:
    return self.model.quantizer.codebook_shape

  def init(self, rng: jax.Array, batch: dict) -> TrainState:
    variables = dict(self.model.init({"params": rng}, batch["image"], train=False))
    params = variables.pop("params")
    return TrainState.create(params, variables, self.optimizer)

  def _loss(self, params, model_state, batch, rng):
    images = batch["image"]
    (recon, aux), new_model_state = self.model.apply(
      {"params": params, **model_state},
      images,
      train=True,
      mutable=list(model_state),
      rngs={"vq": rng},
    )
    mse = jnp.mean(jnp.square(recon.astype(jnp.float32) - images))
    loss = mse + aux.get("loss", 0.0)
    metrics = {"mse": mse, **{f"quantizer/{k}": aux[k] for k in _SCALAR_AUX if k in aux}}
    return loss, (metrics, dict(new_model_state))

  def constants(self) -> dict:
    return {}

  def eval_variables(self, state) -> dict:
    """The variables evaluation and reconstructions use."""
    return {"params": state.params, **state.model_state}

  def train_step(
    self, state: TrainState, batch: dict, rng: jax.Array, constants: dict
  ) -> tuple[TrainState, dict]:
    del constants
    return apply_gradients(state, self._loss, batch, rng, self.accumulation_steps)

  def eval_step(self, state: TrainState, batch: dict, constants: dict) -> dict[str, jax.Array]:
    """Sums over the valid examples of the batch: squared error, example count, code counts."""
    del constants
    images, mask = batch["image"], batch["mask"]
    recon, aux = self.model.apply(self.eval_variables(state), images, train=False)
    per_example = jnp.mean(jnp.square(jnp.clip(recon, -1, 1) - images), axis=(1, 2, 3))
    size, groups = self.codebook_shape
    return {
      "squared_error": jnp.sum(per_example * mask),
      "count": jnp.sum(mask),
      "code_counts": code_counts(aux["indices"], size, groups, weights=mask),
    }

  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    mse = float(sums["squared_error"] / max(float(sums["count"]), 1.0))
    # Images live in [-1, 1]: the peak-to-peak range is 2.
    return {"mse": mse, "psnr": float(10 * np.log10(4.0 / max(mse, 1e-12)))}

  def log_images(self, state: TrainState, batch: dict, constants: dict) -> dict[str, jax.Array]:
    """The batch's first ``num_log_images`` images and their reconstructions (N, H, W, C) in [-1, 1]."""
    del constants
    images = batch["image"][: self.num_log_images]
    recon, _ = self.model.apply(self.eval_variables(state), images, train=False)
    return {"originals": images, "reconstructions": jnp.clip(recon, -1, 1)}
