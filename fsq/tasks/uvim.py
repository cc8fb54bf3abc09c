"""UViM for the generic loop: stage I (restricted oracle + base model) and stage II (the VTT).

Stage I trains ``fsq.models.uvim.UViM`` on (x, y); stage II trains ``fsq.models.vtt.VisionToTextTransformer``
on the frozen stage I's codes of y given x, and evaluates greedy ``generate`` -> stage I ``decode`` -> metric.
The output representations of the three tasks (targets, losses, predictions, metrics) are in
``fsq.tasks.dense``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fsq.metrics import code_counts
from fsq.models.uvim import UViM
from fsq.models.vit_checkpoint import vit_params_from_checkpoint
from fsq.models.vtt import VisionToTextTransformer, generate
from fsq.tasks.dense import Representation, side_by_side
from fsq.train.state import TrainState, apply_gradients

_SCALAR_AUX = ("loss", "commitment_loss", "codebook_loss")


def _head(batch: dict, n: int) -> dict:
  return {k: v[:n] for k, v in batch.items()}


@dataclasses.dataclass(frozen=True)
class UViMStageOneTask:
  """Stage I: the restricted oracle and base model trained on (x, y). Batches carry ``image`` and the
  representation's dense maps, plus ``mask`` (B,) in evaluation. With UViM's VQ, the EMA statistics live
  in ``state.model_state["vq_stats"]`` (updated in training, read in evaluation)."""

  model: UViM
  representation: Representation
  optimizer: optax.GradientTransformation
  # Gradient accumulation: the batch's gradient as the mean over this many micro-batches (less memory).
  accumulation_steps: int = dataclasses.field(default=1, kw_only=True)
  num_log_images: ClassVar[int] = 8
  image_columns: ClassVar[int] = 2

  @property
  def codebook_shape(self) -> tuple[int, int]:
    return self.model.quantizer.codebook_shape

  def init(self, rng: jax.Array, batch: dict) -> TrainState:
    images = batch["image"]
    y = jnp.zeros((*images.shape[:3], self.representation.input_channels), jnp.float32)
    variables = dict(self.model.init({"params": rng}, self.representation.context(images), y, train=False))
    params = variables.pop("params")
    return TrainState.create(params, variables, self.optimizer)

  def constants(self) -> dict:
    return {}

  def eval_variables(self, state: TrainState) -> dict:
    return {"params": state.params, **state.model_state}

  def _loss(self, params, model_state, batch, rng):
    dropout_rng, vq_rng = jax.random.split(rng)
    x, y = self.representation.context(batch["image"]), self.representation.target(batch)
    (outputs, aux), new_model_state = self.model.apply(
      {"params": params, **model_state},
      x,
      y,
      train=True,
      mutable=list(model_state),
      rngs={"dropout": dropout_rng, "vq": vq_rng},
    )
    task_loss = jnp.mean(self.representation.loss(outputs, batch))
    loss = task_loss + aux.get("loss", 0.0)
    metrics = {"task_loss": task_loss, **{f"quantizer/{k}": aux[k] for k in _SCALAR_AUX if k in aux}}
    return loss, (metrics, dict(new_model_state))

  def train_step(
    self, state: TrainState, batch: dict, rng: jax.Array, constants: dict
  ) -> tuple[TrainState, dict]:
    del constants
    return apply_gradients(state, self._loss, batch, rng, self.accumulation_steps)

  def _outputs(self, state: TrainState, batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(x, outputs (B, H, W, C_out), indices (B, h, w)) in evaluation mode."""
    x, y = self.representation.context(batch["image"]), self.representation.target(batch)
    outputs, aux = self.model.apply(self.eval_variables(state), x, y, train=False)
    return x, outputs, aux["indices"]

  def eval_step(self, state: TrainState, batch: dict, constants: dict) -> dict[str, jax.Array]:
    """Sums over the valid examples: task loss, the task metric's statistics, count, code counts."""
    del constants
    mask = batch["mask"]
    _, outputs, indices = self._outputs(state, batch)
    size, groups = self.codebook_shape
    return {
      "loss_sum": jnp.sum(self.representation.loss(outputs, batch) * mask),
      **self.representation.eval_sums(outputs, batch, mask),
      "count": jnp.sum(mask),
      "code_counts": code_counts(indices, size, groups, weights=mask),
    }

  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    count = max(float(sums["count"]), 1.0)
    return {"task_loss": float(sums["loss_sum"]) / count, **self.representation.summarize(sums)}

  def log_images(self, state: TrainState, batch: dict, constants: dict) -> dict[str, jax.Array]:
    """``oracle``: (N, H, 3 W, 3) rows of image | target | stage I prediction, in [-1, 1]."""
    del constants
    batch = _head(batch, self.num_log_images)
    x, outputs, _ = self._outputs(state, batch)
    return {"oracle": side_by_side(self.representation, batch, outputs, x)}


@dataclasses.dataclass(frozen=True)
class UViMStageTwoTask:
  """Stage II: the VTT predicts the frozen stage I's codes of y from x (teacher forcing, cross-entropy);
  evaluation decodes greedily (``generate``, temperature 0) and scores stage I's ``decode`` of those codes.
  ``stage_one_variables`` are the frozen stage I's variables (parameters and, for VQ, ``vq_stats``).
  Code counts are of the generated codes. ``encoder_init``: a big_vision ViT ``.npz`` that the image
  encoder starts from (UViM: ImageNet-21k ViT-L/16), or "" to train it from scratch."""

  stage_one: UViM
  stage_one_variables: dict
  representation: Representation
  model: VisionToTextTransformer
  optimizer: optax.GradientTransformation
  encoder_init: str = ""
  # Gradient accumulation: the batch's gradient as the mean over this many micro-batches (less memory).
  accumulation_steps: int = dataclasses.field(default=1, kw_only=True)
  num_log_images: ClassVar[int] = 8
  image_columns: ClassVar[int] = 2

  def pretrained(self, params) -> dict | None:
    """The image encoder's parameters from ``encoder_init`` as host arrays shaped like ``params["encoder"]``
    (``params``: the model's parameters or their shapes), or None without ``encoder_init``."""
    if not self.encoder_init:
      return None
    return vit_params_from_checkpoint(self.encoder_init, params["encoder"])

  def with_pretrained(self, state: TrainState, pretrained: dict) -> TrainState:
    """``state`` with the image encoder's parameters replaced by ``pretrained`` (a fresh optimizer state)."""
    params = {**state.params, "encoder": pretrained}
    return state.replace(params=params, opt_state=self.optimizer.init(params))

  @property
  def codebook_shape(self) -> tuple[int, int]:
    return self.model.codebook_size, 1

  def constants(self) -> dict:
    return {"stage_one": self.stage_one_variables}

  def codes(self, constants: dict, batch: dict) -> jax.Array:
    """(B, S) int32 stage I codes of the batch's task output (and image, with oracle context)."""
    x, y = self.representation.context(batch["image"]), self.representation.target(batch)
    indices = self.stage_one.apply(constants["stage_one"], x, y, method=UViM.encode)
    return jax.lax.stop_gradient(indices.reshape(indices.shape[0], -1))

  def init(self, rng: jax.Array, batch: dict) -> TrainState:
    codes = jnp.zeros((batch["image"].shape[0], self.model.seq_len), jnp.int32)
    params = self.model.init(rng, self.representation.context(batch["image"]), codes)["params"]
    return TrainState.create(params, {}, self.optimizer)

  def _loss(self, params, codes, x, rng, train: bool) -> tuple[jax.Array, jax.Array]:
    """Per-example teacher-forcing cross-entropy and code accuracy, each (B,)."""
    logits = self.model.apply({"params": params}, x, codes, train=train, rngs={"dropout": rng})
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, codes)
    return jnp.mean(loss, -1), jnp.mean(jnp.argmax(logits, -1) == codes, -1)

  def train_step(self, state: TrainState, batch: dict, rng: jax.Array, constants: dict):
    """The frozen stage I codes each micro-batch (its activations are a micro-batch's, and a step's FLOPs
    are its micro-batch's times accumulation_steps)."""

    def loss_fn(params, model_state, micro, rng):
      codes, context = self.codes(constants, micro), self.representation.context(micro["image"])
      loss, accuracy = self._loss(params, codes, context, rng, train=True)
      return jnp.mean(loss), ({"code_accuracy": jnp.mean(accuracy)}, model_state)

    return apply_gradients(state, loss_fn, batch, rng, self.accumulation_steps)

  def predict_outputs(
    self, state: TrainState, constants: dict, images: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """Greedy codes (B, S) int32 from images (B, H, W, 3), and stage I's outputs (B, H, W, C_out) for them."""
    x = self.representation.context(images)
    codes = generate(self.model, state.params, x, jax.random.key(0))
    grid = self.stage_one.code_grid
    outputs = self.stage_one.apply(
      constants["stage_one"], x, codes.reshape(-1, grid, grid), method=UViM.decode
    )
    return outputs, codes

  def eval_step(self, state: TrainState, batch: dict, constants: dict) -> dict[str, jax.Array]:
    """Sums over the valid examples: teacher-forcing loss and accuracy, the task metric's statistics of
    the greedy predictions, count, counts of the generated codes."""
    mask = batch["mask"]
    x = self.representation.context(batch["image"])
    loss, accuracy = self._loss(state.params, self.codes(constants, batch), x, jax.random.key(0), train=False)
    outputs, codes = self.predict_outputs(state, constants, batch["image"])
    return {
      "loss_sum": jnp.sum(loss * mask),
      "accuracy_sum": jnp.sum(accuracy * mask),
      **self.representation.eval_sums(outputs, batch, mask),
      "count": jnp.sum(mask),
      "code_counts": code_counts(codes, self.model.codebook_size, 1, weights=mask),
    }

  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    count = max(float(sums["count"]), 1.0)
    return {
      "code_loss": float(sums["loss_sum"]) / count,
      "code_accuracy": float(sums["accuracy_sum"]) / count,
      **self.representation.summarize(sums),
    }

  def log_images(self, state: TrainState, batch: dict, constants: dict) -> dict[str, jax.Array]:
    """``predictions``: (N, H, 3 W, 3) rows of image | target | stage II prediction, in [-1, 1]."""
    batch = _head(batch, self.num_log_images)
    outputs, _ = self.predict_outputs(state, constants, batch["image"])
    x = self.representation.context(batch["image"])
    return {"predictions": side_by_side(self.representation, batch, outputs, x)}
