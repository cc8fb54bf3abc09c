"""MaskGIT stage II: the class-conditional transformer on tokens of a frozen tokenizer.

Training batches are images, tokenised on the fly by the frozen tokenizer (its variables are task
constants), or tokens made once by ``scripts.pretokenize`` (``{"tokens", "label"}``: the encoder, about
a third of a paper-size step's FLOPs, never runs in training). Evaluation and sampling use the tokenizer.

Each step masks ``training_mask`` positions (cosine ratio, at least 0.45 of the tokens), replaces 10% of
the labels by the null class, and minimises label-smoothed (0.1) cross-entropy over the masked
positions only.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fsq.maskgit.decode import decode
from fsq.maskgit.schedule import training_mask
from fsq.maskgit.vocab import Vocabulary
from fsq.metrics import code_counts
from fsq.models.autoencoder import Autoencoder
from fsq.models.transformer import BidirectionalTransformer
from fsq.train.state import TrainState, apply_gradients


@dataclasses.dataclass(frozen=True)
class MaskGITTask:
  """Stage II. ``tokenizer_variables`` are the frozen tokenizer's variables (EMA parameters in stage I)."""

  tokenizer: Autoencoder
  tokenizer_variables: dict
  transformer: BidirectionalTransformer
  vocab: Vocabulary
  optimizer: optax.GradientTransformation
  min_mask_ratio: float = 0.45
  label_drop_rate: float = 0.1
  label_smoothing: float = 0.1
  num_sampling_steps: int = 12
  choice_temperature: float = 4.5
  guidance_scale: float = 0.0
  samples_per_class: int = 8
  max_grid_classes: int = 10
  # Gradient accumulation: the batch's gradient as the mean over this many micro-batches (less memory).
  accumulation_steps: int = dataclasses.field(default=1, kw_only=True)

  @property
  def image_columns(self) -> int:
    """Columns of the logged sample grid: one row per class, ``samples_per_class`` wide."""
    return self.samples_per_class

  def grid_labels(self) -> np.ndarray:
    """(R * samples_per_class,) labels, row r all of one class: every class when there are at most
    ``max_grid_classes``, else that many spread evenly over the classes."""
    num = self.vocab.num_classes
    classes = (
      np.arange(num) if num <= self.max_grid_classes else np.linspace(0, num - 1, self.max_grid_classes)
    )
    return np.repeat(classes.astype(np.int32), self.samples_per_class)

  @property
  def codebook_shape(self) -> tuple[int, int]:
    return self.vocab.codebook_size, 1

  def constants(self) -> dict:
    return {"tokenizer": self.tokenizer_variables}

  def tokens(self, constants: dict, images: jax.Array) -> jax.Array:
    """(B, H, W, C) images -> (B, S) int32 tokens of the frozen tokenizer."""
    indices = self.tokenizer.apply(constants["tokenizer"], images, method=Autoencoder.encode)
    return jax.lax.stop_gradient(indices.reshape(indices.shape[0], -1))

  def init(self, rng: jax.Array, batch: dict) -> TrainState:
    tokens = jnp.zeros((batch["image"].shape[0], self.transformer.seq_len), jnp.int32)
    params = self.transformer.init(rng, tokens)["params"]
    return TrainState.create(params, {}, self.optimizer)

  def masked_loss(self, params, tokens, labels, rng, train: bool):
    """Per example (B,): the label-smoothed cross-entropy averaged over its masked positions, and its
    masked-token accuracy. Each example weighs the same whatever its masking ratio, as MaskGIT's loss
    helper (``sum(loss * w, -1) / sum(w, -1)``, then the batch mean)."""
    mask_rng, drop_rng, dropout_rng = jax.random.split(rng, 3)
    masked = training_mask(mask_rng, tokens.shape[0], tokens.shape[1], self.min_mask_ratio)
    if train:
      labels = jnp.where(jax.random.uniform(drop_rng, labels.shape) < self.label_drop_rate, -1, labels)
    inputs = self.vocab.sequence(labels, jnp.where(masked, self.vocab.mask_id, tokens))
    logits = self.transformer.apply({"params": params}, inputs, train=train, rngs={"dropout": dropout_rng})
    logits = logits[:, 1:, : self.vocab.codebook_size]
    targets = optax.smooth_labels(jax.nn.one_hot(tokens, self.vocab.codebook_size), self.label_smoothing)
    per_token = optax.softmax_cross_entropy(logits, targets)
    weights = masked.astype(jnp.float32)
    count = jnp.sum(weights, -1)
    loss = jnp.sum(per_token * weights, -1) / count
    accuracy = jnp.sum((jnp.argmax(logits, -1) == tokens) * weights, -1) / count
    return loss, accuracy

  def train_step(self, state: TrainState, batch: dict, rng: jax.Array, constants: dict):
    """Images are tokenised inside each micro-batch (the frozen encoder's activations are a micro-batch's,
    and a step's FLOPs are its micro-batch's times accumulation_steps); tokens are used as they are."""
    inputs = {k: batch[k] for k in ("tokens", "image", "label") if k in batch}

    def loss_fn(params, model_state, inputs, rng):
      tokens = inputs["tokens"] if "tokens" in inputs else self.tokens(constants, inputs["image"])
      loss, accuracy = self.masked_loss(params, tokens, inputs["label"], rng, train=True)
      return jnp.mean(loss), ({"masked_accuracy": jnp.mean(accuracy)}, model_state)

    return apply_gradients(state, loss_fn, inputs, rng, self.accumulation_steps)

  def eval_step(self, state: TrainState, batch: dict, constants: dict) -> dict[str, jax.Array]:
    """Masked-token loss and accuracy (fixed masks) and code counts over the valid examples."""
    tokens = self.tokens(constants, batch["image"])
    loss, accuracy = self.masked_loss(state.params, tokens, batch["label"], jax.random.key(0), train=False)
    count = jnp.sum(batch["mask"])
    return {
      "loss_sum": jnp.sum(loss * batch["mask"]),
      "accuracy_sum": jnp.sum(accuracy * batch["mask"]),
      "count": count,
      "code_counts": code_counts(tokens, self.vocab.codebook_size, 1, weights=batch["mask"]),
    }

  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    count = max(float(sums["count"]), 1.0)
    return {
      "masked_loss": float(sums["loss_sum"]) / count,
      "masked_accuracy": float(sums["accuracy_sum"]) / count,
    }

  def log_images(self, state: TrainState, batch: dict, constants: dict) -> dict[str, jax.Array]:
    """Class-conditional samples, one row per class (``grid_labels``), with the task's sampling settings
    and a fixed key, so that evaluations along a run are comparable."""
    del batch
    return {"samples": self.sample(state, constants, jnp.asarray(self.grid_labels()), jax.random.key(0))}

  def sample(
    self,
    state: TrainState,
    constants: dict,
    labels: jax.Array,
    rng: jax.Array,
    *,
    num_steps: int | None = None,
    choice_temperature: float | None = None,
    guidance_scale: float | None = None,
  ) -> jax.Array:
    """Class-conditional images (B, H, W, C) in [-1, 1] for (B,) labels (-1: unconditional). Sampling
    settings left None are the task's."""

    def logits_fn(tokens, class_tokens):
      inputs = jnp.concatenate([class_tokens[:, None], tokens], axis=1)
      return self.transformer.apply({"params": state.params}, inputs)[:, 1:]

    seq_len = self.transformer.seq_len - 1
    tokens, _ = decode(
      rng,
      logits_fn,
      self.vocab.class_tokens(labels),
      seq_len=seq_len,
      mask_id=self.vocab.mask_id,
      codebook_size=self.vocab.codebook_size,
      num_steps=self.num_sampling_steps if num_steps is None else num_steps,
      choice_temperature=self.choice_temperature if choice_temperature is None else choice_temperature,
      guidance_scale=self.guidance_scale if guidance_scale is None else guidance_scale,
      null_class_id=self.vocab.mask_id,
    )
    side = math.isqrt(seq_len)
    images = self.tokenizer.apply(
      constants["tokenizer"], tokens.reshape(-1, side, side), method=Autoencoder.decode
    )
    return jnp.clip(images, -1, 1)
