"""ImageNet ResNet-50 features and MaskGIT's perceptual loss on them, as pure functions of the weights.

MaskGIT's VQGAN config asks for a perceptual loss on a pretrained classifier (``pretrained_image_model``,
``perceptual_loss_on_logit=False``); MAGVIT's trainer, the same group's released code, defines it as the
mean squared difference of the ResNet-50 final feature maps (B, 7, 7, 2048) of the two images, each
resized (bilinear) to 224 x 224. Its checkpoint is not public; the weights here are Keras's ImageNet
ResNet-50 (``scripts/fetch_weights.py resnet50_imagenet``), whose names the functions read:

* v1 blocks: 1x1 (stride s) -> 3x3 -> 1x1 with BatchNorm (inference statistics, epsilon 1e-3) and ReLU,
  the shortcut a strided 1x1 convolution + BatchNorm in the first block of each stage; every convolution
  has a bias. (MAGVIT's is v1.5, the stride on the 3x3, without biases.)
* Stem: zero-pad 3, 7x7 stride 2, BatchNorm, ReLU, zero-pad 1, 3x3 max-pool stride 2. Stages of 3, 4, 6
  and 3 blocks, 256 to 2048 wide; head: global mean, Dense 1000 (``fc1000``).
* Input: Caffe's convention: BGR pixels in [0, 255] minus the ImageNet channel means (103.939, 116.779,
  123.68), no scaling; ``caffe_input`` maps this project's [-1, 1] RGB images to it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BGR_MEAN = (103.939, 116.779, 123.68)
STAGES = ((2, 3, 1), (3, 4, 2), (4, 6, 2), (5, 3, 2))  # (Keras stage number, blocks, first stride)
IMAGE_SIZE = 224


def caffe_input(images: jax.Array) -> jax.Array:
  """(B, H, W, 3) RGB in [-1, 1] (or (B, H, W, 1) grey, repeated) -> BGR in [0, 255] minus the means."""
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  pixels = (images.astype(jnp.float32) + 1.0) * 127.5
  return pixels[..., ::-1] - jnp.asarray(BGR_MEAN, jnp.float32)


def _conv(weights, name, x, stride, padding):
  """In x's dtype (the float32 weights cast to it)."""
  kernel, bias = (weights[f"{name}/{k}"].astype(x.dtype) for k in ("kernel", "bias"))
  y = jax.lax.conv_general_dilated(
    x, kernel, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  return y + bias


def _batch_norm(weights, name, x):
  """Inference BatchNorm folded into a scale and shift computed in float32, applied in x's dtype."""
  scale = weights[f"{name}/gamma"] * jax.lax.rsqrt(weights[f"{name}/moving_variance"] + 1e-3)
  shift = weights[f"{name}/beta"] - weights[f"{name}/moving_mean"] * scale
  return x * scale.astype(x.dtype) + shift.astype(x.dtype)


def _block(weights, x, stage, block, stride):
  res, bn = f"res{stage}{block}_branch", f"bn{stage}{block}_branch"
  y = jax.nn.relu(_batch_norm(weights, f"{bn}2a", _conv(weights, f"{res}2a", x, stride, "VALID")))
  y = jax.nn.relu(_batch_norm(weights, f"{bn}2b", _conv(weights, f"{res}2b", y, 1, "SAME")))
  y = _batch_norm(weights, f"{bn}2c", _conv(weights, f"{res}2c", y, 1, "VALID"))
  if f"{res}1/kernel" in weights:
    x = _batch_norm(weights, f"{bn}1", _conv(weights, f"{res}1", x, stride, "VALID"))
  return jax.nn.relu(x + y)


def resnet50(weights: dict[str, jax.Array], x: jax.Array, dtype=None) -> tuple[jax.Array, jax.Array]:
  """Caffe-convention input (B, H, W, 3) -> final feature map (B, H/32, W/32, 2048) and logits (B, 1000).
  The stem convolution runs in x's dtype (float32 keeps the input's fine differences); the rest in
  ``dtype`` (default x's)."""
  x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
  x = jax.nn.relu(_batch_norm(weights, "bn_conv1", _conv(weights, "conv1", x, 2, "VALID")))
  x = x.astype(dtype or x.dtype)
  x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # zeros: the input is a ReLU output, >= 0
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
  for stage, blocks, stride in STAGES:
    for i in range(blocks):
      x = _block(weights, x, stage, "abcdef"[i], stride if i == 0 else 1)
  logits = jnp.mean(x, axis=(1, 2)) @ weights["fc1000/kernel"] + weights["fc1000/bias"]
  return x, logits


def perceptual_loss(
  weights: dict[str, jax.Array], images: jax.Array, targets: jax.Array, dtype=jnp.float32
) -> jax.Array:
  """MAGVIT's perceptual loss, a float32 scalar: the mean over (B, 7, 7, 2048) of the squared difference
  of the ResNet-50 feature maps of ``images`` and ``targets`` (B, H, W, C) in [-1, 1], each resized
  bilinearly to 224 x 224 first. The network after its stem runs in ``dtype`` (bfloat16 on accelerators;
  BatchNorm folded in float32); the difference and its mean are float32."""
  both = jnp.concatenate([images, targets]).astype(jnp.float32)
  both = jax.image.resize(both, (both.shape[0], IMAGE_SIZE, IMAGE_SIZE, both.shape[-1]), "bilinear")
  features, _ = resnet50(weights, caffe_input(both), jnp.dtype(dtype))
  a, b = jnp.split(features.astype(jnp.float32), 2)
  return jnp.mean(jnp.square(a - b))
