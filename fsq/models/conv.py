"""A 2-D convolution whose kernel gradient is a sum of matrix products on CPU.

XLA's CPU backend computes the kernel gradient of a stride-1 NHWC convolution 5 to 15 times slower than
the forward convolution (measured on a 2-core AMD EPYC: 0.9 to 1.5 s against 0.1 to 0.17 s for a 3x3,
64-channel convolution of 64 images of 32x32; ``scripts/benchmark.py --suite conv``), which makes it
most of a CPU training step of the tokenizer. For a (kh, kw) kernel the gradient is kh * kw products

  dW[i, j] = sum over (b, y, x) of x_padded[b, y + i, x + j, :]^T dy[b, y, x, :]     (C_in, C_out)

which run at matrix-product speed. ``conv_general_dilated`` is a drop-in for
``jax.lax.conv_general_dilated`` that takes that route on CPU (chosen when the program is lowered, so a
program compiled for TPU or GPU keeps the native gradient) for the one case the models train:
NHWC images, HWIO kernels, unit strides and dilations, one feature group, and at least
``MIN_PRODUCT_ROWS`` output positions (batch x height x width). Anything else is
``jax.lax.conv_general_dilated`` itself: on small convolutions the two gradients take about the same time
and the products cost more to compile (the unit tests' tiny models compiled 25% slower with them). The
forward pass and the input gradient are XLA's own in every case. Being a ``jax.custom_vjp``, the product
route supports reverse-mode differentiation only (``jax.grad``, ``jax.vjp``, and so R1's gradient of a
gradient), not ``jax.jvp``. ``Conv`` is ``flax.linen.Conv`` with it
(the same parameters and names).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_NHWC = ("NHWC", "HWIO", "NHWC")
Padding = tuple[tuple[int, int], tuple[int, int]]
# Output positions from which the products are used: 16 images of 32x32, 64 of 16x16. At 8 images of
# 32x32 (64 channels) XLA's gradient took 36-40 ms and the products 27-37 ms, at 64 images 1.3-1.6 s
# against 0.4 s (tests' optimisation level 0; ``scripts/benchmark.py --suite conv`` at the default level).
MIN_PRODUCT_ROWS = 2**14


def _conv(x: jax.Array, w: jax.Array, padding: Padding, precision) -> jax.Array:
  return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_matmul_grad(x: jax.Array, w: jax.Array, padding: Padding, precision) -> jax.Array:
  return _conv(x, w, padding, precision)


def _forward(x, w, padding, precision):
  return _conv(x, w, padding, precision), (x, w)


def _kernel_grad_products(x: jax.Array, dy: jax.Array, w: jax.Array, padding: Padding) -> jax.Array:
  """The kernel gradient (kh, kw, C_in, C_out) as kh * kw products of (B*H'*W', C_in) and (.., C_out)."""
  kh, kw = w.shape[:2]
  (top, bottom), (left, right) = padding
  zero = jnp.zeros((), x.dtype)
  padded = jax.lax.pad(x, zero, ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))
  height, width = dy.shape[1:3]
  products = [
    jnp.einsum(
      "bhwc,bhwo->co",
      padded[:, i : i + height, j : j + width],
      dy,
      preferred_element_type=jnp.float32,
    )
    for i in range(kh)
    for j in range(kw)
  ]
  return jnp.stack(products).reshape(w.shape).astype(w.dtype)


def _backward(padding, precision, residuals, dy):
  x, w = residuals
  _, input_vjp = jax.vjp(lambda x: _conv(x, w, padding, precision), x)
  (dx,) = input_vjp(dy)

  def native(x, dy):
    _, kernel_vjp = jax.vjp(lambda w: _conv(x, w, padding, precision), w)
    return kernel_vjp(dy)[0]

  dw = jax.lax.platform_dependent(
    x, dy, cpu=lambda x, dy: _kernel_grad_products(x, dy, w, padding), default=native
  )
  return dx, dw


_conv_matmul_grad.defvjp(_forward, _backward)


def _explicit_padding(padding, x_shape: Sequence[int], w_shape: Sequence[int]) -> Padding:
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x_shape[1:3], w_shape[:2], (1, 1), padding)
  (top, bottom), (left, right) = padding
  return (int(top), int(bottom)), (int(left), int(right))


def _unit(dilation: Sequence[int] | None) -> bool:
  return dilation is None or tuple(dilation) == (1, 1)


def conv_general_dilated(
  lhs: jax.Array,
  rhs: jax.Array,
  window_strides: Sequence[int],
  padding,
  lhs_dilation: Sequence[int] | None = None,
  rhs_dilation: Sequence[int] | None = None,
  dimension_numbers=None,
  feature_group_count: int = 1,
  batch_group_count: int = 1,
  precision=None,
  preferred_element_type=None,
  min_product_rows: int = MIN_PRODUCT_ROWS,
) -> jax.Array:
  """``jax.lax.conv_general_dilated`` with the same arguments; see the module docstring for the case whose
  kernel gradient is computed as matrix products on CPU (from ``min_product_rows`` output positions)."""
  native = functools.partial(
    jax.lax.conv_general_dilated,
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=lhs_dilation,
    rhs_dilation=rhs_dilation,
    dimension_numbers=dimension_numbers,
    feature_group_count=feature_group_count,
    batch_group_count=batch_group_count,
    precision=precision,
    preferred_element_type=preferred_element_type,
  )
  if lhs.ndim != 4 or rhs.ndim != 4 or dimension_numbers is None:
    return native()
  nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  simple = (
    jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
    and tuple(window_strides) == (1, 1)
    and _unit(lhs_dilation)
    and _unit(rhs_dilation)
    and feature_group_count == 1
    and batch_group_count == 1
    and preferred_element_type is None
    and lhs.dtype == rhs.dtype
    and jnp.issubdtype(lhs.dtype, jnp.floating)
    and lhs.dtype.itemsize <= 4  # the products accumulate in float32
  )
  if not simple:
    return native()
  explicit = _explicit_padding(padding, lhs.shape, rhs.shape)
  (top, bottom), (left, right) = explicit
  rows = (
    lhs.shape[0]
    * (lhs.shape[1] + top + bottom - rhs.shape[0] + 1)
    * (lhs.shape[2] + left + right - rhs.shape[1] + 1)
  )
  if rows < min_product_rows:
    return native()
  return _conv_matmul_grad(lhs, rhs, explicit, precision)


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
