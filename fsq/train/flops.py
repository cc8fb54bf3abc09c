"""FLOPs of a step and model FLOP utilisation (MFU): the FLOP/s a run achieves over its devices' peak.

The chips' figures are for sizing (``scripts.plan``) and for MFU in the training logs: high-bandwidth
memory per chip (per TensorCore pair on v4, which JAX shows as one megacore device) and peak dense
bfloat16 FLOP/s per chip, from the vendors' specification sheets.
"""

from __future__ import annotations

GIB = 2**30
CHIP_MEMORY = {
  "v4": 32 * GIB,
  "v5e": 16 * GIB,
  "v5p": 95 * GIB,
  "v6e": 32 * GIB,
  "h100": 80e9,
  "h100_pcie": 80e9,
  "h200": 141e9,
}
CHIP_PEAK = {
  "v4": 275e12,
  "v5e": 197e12,
  "v5p": 459e12,
  "v6e": 918e12,
  "h100": 989e12,
  "h100_pcie": 756e12,
  "h200": 989e12,
}
# jax's device_kind -> chip (the first key that the device kind starts with).
DEVICE_KINDS = {
  "TPU v4": "v4",
  "TPU v5 lite": "v5e",
  "TPU v5e": "v5e",
  "TPU v5p": "v5p",
  "TPU v5": "v5p",
  "TPU v6 lite": "v6e",
  "TPU v6e": "v6e",
  "NVIDIA H100 PCIe": "h100_pcie",
  "NVIDIA H100": "h100",
  "NVIDIA H200": "h200",
}


def chip_of(device_kind: str) -> str | None:
  """The chip of ``jax.Device.device_kind`` (e.g. "TPU v5 lite" -> "v5e"), None when not listed."""
  for prefix, chip in DEVICE_KINDS.items():
    if device_kind.startswith(prefix):
      return chip
  return None


def step_flops(step, args, num_devices: int, accumulation_steps: int = 1, compiled=None) -> float:
  """FLOPs of one call of the jitted ``step`` on ``args`` (arrays or ShapeDtypeStructs), all devices
  together: XLA's cost analysis of the program before partitioning, or, where that has none, of one
  device's compiled program (``compiled``, compiled here if None) times ``num_devices``.

  XLA counts a loop's body once, so a step that scans over ``accumulation_steps`` micro-batches counts
  as its micro-batch times ``accumulation_steps`` (the optimizer update, then counted k times, is
  negligible beside the model). The count is always of the step's own program: nothing larger than
  what the run compiles anyway (on a TPU, where cost analysis needs a compile, a whole-batch program
  without accumulation could exceed the chip's memory)."""
  cost = step.lower(*args).cost_analysis()
  if cost and cost.get("flops"):
    return float(cost["flops"]) * accumulation_steps
  if compiled is None:
    compiled = step.lower(*args).compile()
  per_device = compiled.cost_analysis()
  per_device = per_device[0] if isinstance(per_device, list) else per_device
  return float(per_device["flops"]) * num_devices * accumulation_steps


def peak_flops_per_device(override: float = 0.0) -> float:
  """``override`` when > 0, else the peak of this job's chip, 0.0 when unknown (a CPU: no MFU)."""
  import jax  # here: scripts.plan imports the tables before it sets up its devices

  if override > 0:
    return float(override)
  chip = chip_of(jax.devices()[0].device_kind)
  return CHIP_PEAK.get(chip, 0.0) if chip else 0.0


def mfu(flops_per_step: float, steps_per_second: float, num_devices: int, peak_per_device: float) -> float:
  """Achieved FLOP/s over the devices' peak FLOP/s."""
  return flops_per_step * steps_per_second / (num_devices * peak_per_device)
