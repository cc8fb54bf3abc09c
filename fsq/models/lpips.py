"""LPIPS perceptual distance (Zhang et al., 2018) on VGG16 features, with the real pretrained weights.

Images in [-1, 1] are shifted and scaled by LPIPS's constants, passed through VGG16's convolutions,
and compared at the outputs of the ReLUs after conv 2, 4, 7, 10 and 13 (0-based conv indices 1, 3, 6,
9, 12): each feature map is unit-normalised over channels, the squared difference is weighted by a
learned 1x1 convolution (``lin_j``), averaged over space and summed over the five layers. Weights come
from ``fsq.weights.load("lpips_vgg16")`` (fetched by ``scripts/fetch_weights.py``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fsq import weights

VGG16_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (1, 3, 6, 9, 12)  # convolutions whose ReLU outputs are compared
SHIFT = np.asarray([-0.030, -0.088, -0.188], np.float32)
SCALE = np.asarray([0.458, 0.448, 0.450], np.float32)


class VGG16Features(nn.Module):
  """(B, H, W, 3) -> the five tapped ReLU feature maps, computed in ``dtype`` (float32 parameters)."""

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps, conv = [], 0
    for v in VGG16_CHANNELS:
      if v == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      x = nn.relu(nn.Conv(v, (3, 3), padding=1, dtype=self.dtype, name=f"conv_{conv}")(x))
      if conv in TAPS:
        taps.append(x)
      conv += 1
    return taps


def _unit(feature: jax.Array, eps: float = 1e-10) -> jax.Array:
  return feature / (jnp.sqrt(jnp.sum(feature**2, axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
  """Perceptual distance: two (B, H, W, C) batches in [-1, 1], C = 1 or 3 -> (B,) float32. The VGG runs
  in ``dtype`` (bfloat16 on accelerators); the normalised differences and their weighting are float32."""

  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    assert x.shape == y.shape and x.ndim == 4 and x.shape[-1] in (1, 3), (
      f"expected equal (B, H, W, 1|3), got {x.shape}, {y.shape}"
    )
    if x.shape[-1] == 1:
      x, y = jnp.repeat(x, 3, axis=-1), jnp.repeat(y, 3, axis=-1)
    vgg = VGG16Features(self.dtype, name="vgg")
    both = vgg((jnp.concatenate([x, y]).astype(jnp.float32) - SHIFT) / SCALE)
    total = 0.0
    for j, feature in enumerate(both):
      fx, fy = jnp.split(feature.astype(jnp.float32), 2)
      diff = jnp.square(_unit(fx) - _unit(fy))
      weighted = nn.Conv(1, (1, 1), use_bias=False, name=f"lin_{j}")(diff)
      total = total + jnp.mean(weighted, axis=(1, 2, 3))
    return total


def pretrained_params() -> dict:
  """LPIPS parameters from the verified ``lpips_vgg16`` weights."""
  params: dict = {}
  for name, array in weights.load("lpips_vgg16").items():
    node = params
    *scopes, leaf = name.split("/")
    for scope in scopes:
      node = node.setdefault(scope, {})
    node[leaf] = jnp.asarray(array)
  return params
