"""UViM's colorization task, as big_vision's ``colorization_task.py``.

x = the grey image (luma 0.299 R + 0.587 G + 0.114 B, as ``tf.image.rgb_to_grayscale``, repeated to 3
channels), y = the colour image in [-1, 1]; output 3 channels; loss = squared error averaged over pixels
and channels (big_vision); prediction = output clipped to [-1, 1]. Metric here: MSE and the mean
per-image PSNR (big_vision); the paper's FID-5k needs the samples and ``fsq.evals`` (``predict`` is the
hook).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

LUMA = (0.299, 0.587, 0.114)


def to_grey(images: jax.Array) -> jax.Array:
  """(B, H, W, 3) RGB in [-1, 1] -> (B, H, W, 3) luma repeated in the 3 channels."""
  luma = images @ jnp.asarray(LUMA, images.dtype)
  return jnp.repeat(luma[..., None], 3, axis=-1)


@dataclasses.dataclass(frozen=True)
class ColorizationRepresentation:
  """Colour from grey: x = grey image, y = colour image, L2 loss."""

  input_channels: ClassVar[int] = 3
  output_channels: ClassVar[int] = 3

  def context(self, images: jax.Array) -> jax.Array:
    return to_grey(images)

  def target(self, batch: dict) -> jax.Array:
    return batch["image"]

  def loss(self, outputs: jax.Array, batch: dict) -> jax.Array:
    return jnp.mean(jnp.square(outputs.astype(jnp.float32) - batch["image"]), axis=(1, 2, 3))

  def predict(self, outputs: jax.Array) -> jax.Array:
    """(B, H, W, 3) colours in [-1, 1]: the hook for FID on the predictions."""
    return jnp.clip(outputs, -1.0, 1.0)

  def eval_sums(self, outputs: jax.Array, batch: dict, mask: jax.Array) -> dict[str, jax.Array]:
    """Sums over the valid images of each image's squared error and PSNR (peak-to-peak 2 in [-1, 1])."""
    per_example = jnp.mean(jnp.square(self.predict(outputs) - batch["image"]), axis=(1, 2, 3))
    psnr = 10 * jnp.log10(4.0 / jnp.maximum(per_example, 1e-12))
    return {"color_squared_error": jnp.sum(per_example * mask), "color_psnr": jnp.sum(psnr * mask)}

  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    """``color/mse``: the mean squared error; ``color/psnr``: the mean of the images' PSNRs (big_vision's
    PSNR evaluator), not the PSNR of the mean error."""
    count = max(float(sums["count"]), 1.0)
    return {
      "color/mse": float(sums["color_squared_error"]) / count,
      "color/psnr": float(sums["color_psnr"]) / count,
    }

  def visualize(self, values: jax.Array) -> jax.Array:
    return values

  def ground_truth(self, batch: dict) -> jax.Array:
    return batch["image"]
