"""The ``conv`` benchmark suite: the convolution kernel gradient, XLA's own against ``fsq.models.conv``'s.

On the default backend, measured side by side:
  * one 3x3 convolution, 64 -> 64 channels, on (batch, 32, 32, 64): its forward pass, its input gradient,
    its kernel gradient as XLA computes it (``jax.lax.conv_general_dilated``'s VJP) and as
    ``fsq.models.conv`` does (nine matrix products on CPU; on other backends the same XLA gradient);
  * the CPU tokenizer's encoder and decoder (``configs/autoencoder.py`` size cpu: 32 filters, 1-2-2,
    on (batch, 32, 32, 1)), one loss-and-gradient, with ``flax.linen.Conv`` and with ``fsq.models.conv.Conv``.
Ratios: each kernel gradient / the forward pass, and the tokenizer's gradient time with XLA's kernel
gradient / with ours.
"""

from __future__ import annotations

import functools
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp

from fsq.models import conv, vqgan
from scripts.bench.harness import time_calls

NHWC = ("NHWC", "HWIO", "NHWC")


def _tokenizer_gradient(conv_class, batch_size: int):
  """The CPU tokenizer's encoder + decoder loss-and-gradient, compiled with conv_class as its convolution
  (``vqgan``'s ``Conv`` is swapped while the step is traced and compiled)."""
  images = jax.random.uniform(jax.random.key(0), (batch_size, 32, 32, 1), minval=-1, maxval=1)
  encoder = vqgan.Encoder(32, (1, 2, 2), 1, latent_dim=8, norm_groups=8)
  decoder = vqgan.Decoder(32, (1, 2, 2), 1, out_channels=1, norm_groups=8)
  encoder_params = encoder.init(jax.random.key(1), images)
  params = (encoder_params, decoder.init(jax.random.key(2), encoder.apply(encoder_params, images)))

  def loss(params):
    return jnp.mean((decoder.apply(params[1], encoder.apply(params[0], images)) - images) ** 2)

  with mock.patch.object(vqgan, "Conv", conv_class):
    step = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
  return lambda: step(params)


def conv_suite(batch_size: int) -> dict[str, object]:

  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (batch_size, 32, 32, 64))
  w = jax.random.normal(keys[1], (3, 3, 64, 64))
  dy = jax.random.normal(keys[2], (batch_size, 32, 32, 64))

  def vjp(fn, wrt):
    def run(x, w, dy):
      _, pullback = jax.vjp(lambda x, w: fn(x, w, (1, 1), "SAME", dimension_numbers=NHWC), x, w)
      return pullback(dy)[wrt]

    return jax.jit(run)

  forward = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC))
  input_gradient = vjp(jax.lax.conv_general_dilated, 0)
  xla_kernel_gradient = vjp(jax.lax.conv_general_dilated, 1)
  # whatever the batch: below conv.MIN_PRODUCT_ROWS the layers would time XLA's gradient again
  our_kernel_gradient = vjp(functools.partial(conv.conv_general_dilated, min_product_rows=0), 1)
  cases = {
    "forward": lambda: forward(x, w),
    "input gradient": lambda: input_gradient(x, w, dy),
    "kernel gradient, XLA": lambda: xla_kernel_gradient(x, w, dy),
    "kernel gradient, fsq.models.conv": lambda: our_kernel_gradient(x, w, dy),
    "tokenizer gradient, flax Conv": _tokenizer_gradient(nn.Conv, batch_size),
    "tokenizer gradient, fsq Conv": _tokenizer_gradient(conv.Conv, batch_size),
  }
  seconds = time_calls(cases, repeats=5, min_seconds=0)
  rows = [
    {"name": name, "shape": [batch_size, 32, 32, 1 if name.startswith("tokenizer") else 64], "seconds": t}
    for name, t in seconds.items()
  ]
  for row in rows:
    row["us_per_vector"] = row["seconds"] / batch_size * 1e6
  forward = seconds["forward"]
  return {
    "rows": rows,
    "ratios": {
      "kernel gradient / forward, XLA": seconds["kernel gradient, XLA"] / forward,
      "kernel gradient / forward, fsq.models.conv": seconds["kernel gradient, fsq.models.conv"] / forward,
      "tokenizer gradient: flax Conv / fsq Conv": seconds["tokenizer gradient, flax Conv"]
      / seconds["tokenizer gradient, fsq Conv"],
    },
    "targets": {},
  }
