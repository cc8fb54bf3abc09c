"""The ``quantizers`` benchmark suite. It times, on the default JAX device:
  * an elementwise copy of a 2^20 x 4 float32 array (``x -> -x``: one read and one write, the memory
    floor any elementwise quantizer must pay);
  * FSQ forward (codes) and forward + backward on the same array, levels [8, 5, 5, 5];
  * VQ forward (nearest codeword and lookup) with 2^10 and 2^16 codes on 2^16 vectors;
  * if torch and vector-quantize-pytorch are installed, that library's FSQ on the same shapes.
Ratios: FSQ / copy, and VQ / FSQ per vector. Targets on a 2-core CPU: FSQ forward <= 2x the copy,
FSQ >= 100x faster than VQ with 2^16 codes.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from fsq import quantizers, vq
from scripts.bench.harness import time_calls

LEVELS = (8, 5, 5, 5)


def _torch_fsq(rows: int) -> dict[str, Callable[[], object]]:
  """vector-quantize-pytorch's FSQ on the same shape, when torch and that library are installed."""
  try:
    import torch
    from vector_quantize_pytorch import FSQ as TorchFSQ  # noqa: N811
  except ImportError:
    return {}
  torch.manual_seed(0)
  layer = TorchFSQ(levels=list(LEVELS))
  z = torch.randn(1, rows, len(LEVELS))
  zg = z.clone().requires_grad_(True)

  def forward():
    with torch.no_grad():
      return layer(z)[0]

  def forward_backward():
    zg.grad = None
    layer(zg)[0].sum().backward()
    return zg.grad

  return {"torch FSQ forward": forward, "torch FSQ forward+backward": forward_backward}


def quantizers_suite(repeats: int, fsq_rows: int, vq_rows: int, vq_dim: int) -> dict[str, object]:
  """Times copy, FSQ (and torch FSQ) interleaved, then VQ; returns rows and ratios."""
  z = jax.random.normal(jax.random.key(0), (fsq_rows, len(LEVELS)), jnp.float32) * 2
  cotangent = jax.random.normal(jax.random.key(1), z.shape, jnp.float32)
  copy = jax.jit(lambda x: -x)
  fsq_fwd = jax.jit(lambda x: quantizers.quantize(x, LEVELS))
  fsq_idx = jax.jit(lambda x: quantizers.codes_to_indices(quantizers.quantize(x, LEVELS), LEVELS))
  fsq_bwd = jax.jit(jax.grad(lambda x: jnp.vdot(quantizers.quantize(x, LEVELS), cotangent)))
  fns = {
    "copy (x -> -x)": lambda: copy(z),
    "FSQ forward": lambda: fsq_fwd(z),
    "FSQ forward + indices": lambda: fsq_idx(z),
    "FSQ forward+backward": lambda: fsq_bwd(z),
  }
  seconds = time_calls(fns, repeats)
  # Timed apart: torch's idle worker threads would slow the JAX calls interleaved with them.
  seconds.update(time_calls(_torch_fsq(fsq_rows), repeats))
  rows = [{"name": name, "shape": list(z.shape), "seconds": s} for name, s in seconds.items()]
  x = jax.random.normal(jax.random.key(2), (vq_rows, vq_dim), jnp.float32)
  for bits in (10, 16):
    module = vq.VectorQuantizer(codebook_size=2**bits, dim=vq_dim)
    variables = module.init(jax.random.key(3), x[:1])
    fwd = jax.jit(lambda v, x, module=module: module.apply(v, x)[0])
    s = time_calls({"vq": lambda v=variables, f=fwd: f(v, x)}, max(2, repeats // 10), min_seconds=0)["vq"]
    rows.append({"name": f"VQ forward, 2^{bits} codes", "shape": [vq_rows, vq_dim], "seconds": s})
  for row in rows:
    row["us_per_vector"] = row["seconds"] / row["shape"][0] * 1e6
  by_name = {row["name"]: row for row in rows}
  copy_s = by_name["copy (x -> -x)"]["seconds"]
  fsq_vec = by_name["FSQ forward"]["us_per_vector"]
  ratios = {
    "FSQ forward / copy": by_name["FSQ forward"]["seconds"] / copy_s,
    "FSQ forward+backward / copy": by_name["FSQ forward+backward"]["seconds"] / copy_s,
    "VQ 2^10 / FSQ, per vector": by_name["VQ forward, 2^10 codes"]["us_per_vector"] / fsq_vec,
    "VQ 2^16 / FSQ, per vector": by_name["VQ forward, 2^16 codes"]["us_per_vector"] / fsq_vec,
  }
  for kind in ("forward", "forward+backward"):
    if f"torch FSQ {kind}" in by_name:
      ratios[f"torch FSQ / FSQ, {kind}"] = (
        by_name[f"torch FSQ {kind}"]["seconds"] / by_name[f"FSQ {kind}"]["seconds"]
      )
  targets = {
    "FSQ forward / copy <= 2": ratios["FSQ forward / copy"] <= 2,
    "VQ 2^16 / FSQ, per vector >= 100": ratios["VQ 2^16 / FSQ, per vector"] >= 100,
  }
  return {"rows": rows, "ratios": ratios, "targets": targets}
