"""fsq.models.conv: the same convolution and gradients as jax.lax, a matrix-product kernel gradient on CPU
only, and the same parameters as flax.linen.Conv."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsq.models.conv import MIN_PRODUCT_ROWS, Conv, conv_general_dilated

NHWC = ("NHWC", "HWIO", "NHWC")
HIGHEST = jax.lax.Precision.HIGHEST


def products(*args, **kwargs):
  """conv_general_dilated taking the matrix-product route whatever the size."""
  return conv_general_dilated(*args, **kwargs, min_product_rows=0)


def kernel_grad_float64(x: np.ndarray, dy: np.ndarray, kernel: tuple[int, int], padding) -> np.ndarray:
  """dW[i, j, c, o] = sum_{b, y, x} x_padded[b, y + i, x + j, c] dy[b, y, x, o], by loops in float64."""
  (top, bottom), (left, right) = padding
  padded = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
  out = np.zeros((*kernel, x.shape[-1], dy.shape[-1]))
  for i in range(kernel[0]):
    for j in range(kernel[1]):
      window = padded[:, i : i + dy.shape[1], j : j + dy.shape[2]]
      out[i, j] = np.tensordot(window, dy.astype(np.float64), axes=([0, 1, 2], [0, 1, 2]))
  return out


def grads(conv, x, w, dy, padding, strides=(1, 1)):
  def f(x, w):
    return conv(x, w, strides, padding, dimension_numbers=NHWC, precision=HIGHEST)

  y, vjp = jax.vjp(f, x, w)
  return (y, *vjp(dy))


@pytest.mark.parametrize(
  "kernel, padding, explicit",
  [
    ((3, 3), "SAME", ((1, 1), (1, 1))),
    ((3, 3), "VALID", ((0, 0), (0, 0))),
    ((1, 1), "SAME", ((0, 0), (0, 0))),
    ((2, 3), ((0, 1), (2, 0)), ((0, 1), (2, 0))),
  ],
)
def test_values_and_gradients_match_lax_and_float64(kernel, padding, explicit):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 7, 6, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(*kernel, 4, 5)), jnp.float32)
  out_shape = jax.eval_shape(
    lambda: jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC)
  )
  dy = jnp.asarray(rng.normal(size=out_shape.shape), jnp.float32)
  ours = jax.jit(lambda x, w, dy: grads(products, x, w, dy, padding))(x, w, dy)
  lax = grads(jax.lax.conv_general_dilated, x, w, dy, padding)
  for a, b in zip(ours, lax, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  reference = kernel_grad_float64(np.asarray(x), np.asarray(dy), kernel, explicit)
  np.testing.assert_allclose(ours[2], reference, rtol=1e-5, atol=1e-4)


def test_bfloat16_kernel_gradient_keeps_the_dtype_and_accumulates_in_float32():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(8, 16, 16, 8))
  w = rng.normal(size=(3, 3, 8, 8))
  dy = rng.normal(size=(8, 16, 16, 8))
  bf16 = [jnp.asarray(a, jnp.bfloat16) for a in (x, w, dy)]
  _, dx, dw = grads(products, *bf16, "SAME")
  assert dx.dtype == dw.dtype == jnp.bfloat16
  reference = kernel_grad_float64(
    np.asarray(bf16[0], np.float64), np.asarray(bf16[2], np.float64), (3, 3), ((1, 1),) * 2
  )
  # float32 accumulation of 2048 products: only the final rounding to bfloat16 (2^-8 relative) remains
  np.testing.assert_allclose(np.asarray(dw, np.float64), reference, rtol=2**-8, atol=0.05)


def convolutions(lowered_text: str) -> int:
  return lowered_text.count("stablehlo.convolution")


def test_the_matrix_product_route_is_cpu_only_from_min_product_rows_and_other_cases_stay_native():
  w = jax.ShapeDtypeStruct((3, 3, 3, 4), jnp.float32)

  def text(images, strides, platform):
    x = jax.ShapeDtypeStruct((images, 8, 8, 3), jnp.float32)  # "SAME": 64 output positions an image

    def loss(x, w):
      return (conv_general_dilated(x, w, strides, "SAME", dimension_numbers=NHWC) ** 2).sum()

    return jax.export.export(jax.jit(jax.grad(loss, (0, 1))), platforms=[platform])(x, w).mlir_module()

  # forward, input gradient, kernel gradient: the kernel gradient is products on CPU, a convolution elsewhere
  enough = MIN_PRODUCT_ROWS // 64
  assert convolutions(text(enough, (1, 1), "cpu")) == 2
  assert convolutions(text(enough, (1, 1), "tpu")) == 3
  assert convolutions(text(enough, (1, 1), "cuda")) == 3
  assert convolutions(text(enough - 1, (1, 1), "cpu")) == 3  # a small convolution: XLA's own gradient
  assert convolutions(text(enough, (2, 2), "cpu")) == 3  # strided: XLA's own gradient


def test_module_has_flax_conv_parameters_and_outputs():
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 6, 3)), jnp.float32)
  ours, theirs = Conv(5, (3, 3)), nn.Conv(5, (3, 3))
  params = theirs.init(jax.random.key(0), x)
  chex.assert_trees_all_equal_shapes(ours.init(jax.random.key(0), x), params)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-6, atol=1e-6)


def test_gradient_of_a_gradient_matches_lax():
  """R1 differentiates a gradient: reverse over reverse through the product route equals lax's."""
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(2, 6, 5, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)

  def penalty(conv):
    def loss(w, x):
      return jnp.sum(jnp.tanh(conv(x, w, (1, 1), "SAME", dimension_numbers=NHWC, precision=HIGHEST)))

    return lambda x: jnp.sum(jax.grad(loss)(w, x) ** 2) + jnp.sum(jax.grad(loss, 1)(w, x) ** 2)

  ours = jax.jit(jax.grad(penalty(products)))(x)
  np.testing.assert_allclose(ours, jax.grad(penalty(jax.lax.conv_general_dilated))(x), rtol=1e-4, atol=1e-4)
