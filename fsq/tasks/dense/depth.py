"""UViM's depth task, as big_vision's ``depth_task.py``.

y = one-hot of ``floor((d - min_depth) / (max_depth - min_depth) * num_bins)`` clipped to
[0, num_bins - 1] (256 bins); the base model outputs num_bins logits per pixel; loss = per-pixel
softmax cross-entropy, zero on pixels of bin 0 (big_vision: "do not train on the closest class", where
NYU stores missing depth as 0), averaged over all pixels. Prediction = the centre of the argmax bin
(big_vision: ``argmax + 0.5``, not the expectation). Metric: ``DepthMetrics``' per-image RMSE, abs-rel,
delta_k over ``min_depth < gt < max_depth``, without crop (``depth_metric_sums``, inside jit).
big_vision (NYU): [1e-3, 10] m. The synthetic scenes' z-depths lie in about [1.5, 10.8] m (camera
1.2-2 m high, wall 7-10 m away, pitch up to 25 degrees), so their configs use [1e-3, 12] m: 4.7 cm bins.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fsq.evals.dense_metrics import depth_metric_sums


def depth_to_bins(depth: jax.Array, num_bins: int, min_depth: float, max_depth: float) -> jax.Array:
  """Depth (...) float metres -> int32 bins ``floor((d - min) / (max - min) * num_bins)`` in [0, num_bins)."""
  scaled = (depth - min_depth) / (max_depth - min_depth) * num_bins
  return jnp.clip(jnp.floor(scaled), 0, num_bins - 1).astype(jnp.int32)


def bins_to_depth(bins: jax.Array, num_bins: int, min_depth: float, max_depth: float) -> jax.Array:
  """Int bins (...) -> float32 bin centres ``(b + 0.5) / num_bins * (max - min) + min`` in metres."""
  return (bins.astype(jnp.float32) + 0.5) / num_bins * (max_depth - min_depth) + min_depth


def depth_loss(logits: jax.Array, bins: jax.Array) -> jax.Array:
  """Per-example loss (B,): cross-entropy of logits (B, H, W, K) against bins (B, H, W), zero where the
  bin is 0 (big_vision), averaged over all H * W pixels."""
  per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), bins)
  return jnp.mean(per_pixel * (bins != 0), axis=(1, 2))


def jet(values: jax.Array) -> jax.Array:
  """The jet colour map: values (...) in [0, 1] -> RGB (..., 3) in [-1, 1] (blue near 0, red near 1)."""
  t = jnp.clip(values, 0.0, 1.0)[..., None]
  centres = jnp.array([0.75, 0.5, 0.25])  # red, green, blue peaks
  return jnp.clip(1.5 - jnp.abs(4.0 * (t - centres)), 0.0, 1.0) * 2.0 - 1.0


@dataclasses.dataclass(frozen=True)
class DepthRepresentation:
  """Depth as ``num_bins`` classes over [min_depth, max_depth] (see the module docstring)."""

  num_bins: int = 256
  min_depth: float = 1e-3
  max_depth: float = 10.0

  @property
  def input_channels(self) -> int:
    return self.num_bins

  @property
  def output_channels(self) -> int:
    return self.num_bins

  def context(self, images: jax.Array) -> jax.Array:
    """The model's image input x: the image itself, (B, H, W, 3)."""
    return images

  def target(self, batch: dict) -> jax.Array:
    """y for the oracle: (B, H, W, num_bins) float32 one-hot bins of ``batch["depth"]`` (B, H, W)."""
    return jax.nn.one_hot(self._bins(batch), self.num_bins)

  def _bins(self, batch: dict) -> jax.Array:
    return depth_to_bins(batch["depth"], self.num_bins, self.min_depth, self.max_depth)

  def loss(self, outputs: jax.Array, batch: dict) -> jax.Array:
    """Per-example loss (B,) of outputs (B, H, W, num_bins)."""
    return depth_loss(outputs, self._bins(batch))

  def predict(self, outputs: jax.Array) -> jax.Array:
    """Depth (B, H, W) float32 metres: the centre of the argmax bin."""
    return bins_to_depth(jnp.argmax(outputs, -1), self.num_bins, self.min_depth, self.max_depth)

  def eval_sums(self, outputs: jax.Array, batch: dict, mask: jax.Array) -> dict[str, jax.Array]:
    """``depth_sums`` (7,): ``depth_metric_sums`` of the argmax-bin prediction."""
    sums = depth_metric_sums(self.predict(outputs), batch["depth"], mask, self.min_depth, self.max_depth)
    return {"depth_sums": sums}

  def summarize(self, sums: dict[str, np.ndarray]) -> dict[str, float]:
    s = np.asarray(sums["depth_sums"], np.float64)
    n = max(s[5], 1.0)
    names = ("rmse", "abs_rel", "delta1", "delta2", "delta3")
    return {
      **{f"depth/{k}": float(v / n) for k, v in zip(names, s[:5], strict=True)},
      "depth/skipped": float(s[6]),
    }

  def visualize(self, values: jax.Array) -> jax.Array:
    """Depth (B, H, W) metres -> (B, H, W, 3) jet colours in [-1, 1] over [min_depth, max_depth]."""
    return jet((values - self.min_depth) / (self.max_depth - self.min_depth))

  def ground_truth(self, batch: dict) -> jax.Array:
    return batch["depth"]
