"""Sizes a training config for a slice before anyone rents it: compiles its train (and eval) step ahead of
time for N devices and prints per-device memory, FLOPs, collectives and compile time.

  python -m scripts.plan --config configs/maskgit.py:stage=tokenizer,run=imagenet256 --devices 32 \\
      --chip v4
  python -m scripts.plan --config configs/uvim.py:stage=lm,task=depth,run=paper --devices 64 \\
      --set mesh.fsdp=8 --set accumulation_steps=2

The devices are CPU devices (``--xla_force_host_platform_device_count``): the same SPMD partitioning as
on the accelerator, with the CPU backend's buffer assignment, which measured about 1.6x TPU's on this
project's stage II step, so the memory is an upper bound. With ``--topology v4:2x2x1`` (or ``v5e:2x2``,
``v5p:2x2x1``, ``v6e:2x2``) the devices are that TPU slice's, compile-only, from libtpu (``make
tpu-plan`` installs it; no TPU needed; libtpu logs warnings about the missing TPU metadata): the
memory and FLOPs are then XLA's TPU figures (FLOPs of the compiled per-chip program, which pads narrow
layers to the TPU's tiles), and the compile takes much longer on a CPU host (half a minute for a tiny
model, possibly an hour for a paper-size step). Nothing is allocated or run; stage II's frozen
stage I is abstract (its shapes), so no checkpoint is needed. The last line is one JSON object:
``bytes_per_device`` (peak of the train step on one device), ``flops_per_step`` (the whole global batch,
all devices together), ``flops_per_example``, ``platform``, ``fits`` (with --chip) and the rest of the
table. With --chip, a step that does not fit exits 1 naming the bytes needed and available.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import sys
import time
from pathlib import Path

from fsq.train.flops import CHIP_MEMORY, CHIP_PEAK, GIB, step_flops

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def parse_set(items: list[str]) -> dict:
  """['a.b=3', 'c=x'] -> {'a.b': 3, 'c': 'x'} (Python literals where they parse, strings otherwise)."""
  out = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def load_config(spec: str, overrides: dict):
  """The config of ``path.py[:args]`` with dotted overrides applied (and checked to exist)."""
  import importlib.util

  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("plan_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise ValueError(f"--set {key}: the config has no field {key!r}")
    node[leaf] = value
  return config


def per_device_bytes(tree, shardings) -> int:
  """Bytes one device holds of ``tree`` (ShapeDtypeStructs) placed as ``shardings``."""
  import jax

  sizes = jax.tree.map(lambda a, s: math.prod(s.shard_shape(a.shape)) * a.dtype.itemsize, tree, shardings)
  return int(sum(jax.tree.leaves(sizes)))


def collectives(hlo_text: str) -> dict[str, int]:
  """How many of each collective the compiled program runs."""
  return {name: len(re.findall(rf"\s{name}(?:-start)?\(", hlo_text)) for name in COLLECTIVES}


def compile_step(fn, args) -> tuple[object, float]:
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start


LIBTPU_DIR = "artifacts/libtpu"  # where `make tpu-plan` installs libtpu
# TPU generation -> jax's chip configuration for compile-only topologies (as MaxText's table).
TPU_CHIP_CONFIGS = {"v4": "megacore", "v5p": "megacore", "v5e": "default", "v6e": "default"}


def topology_devices(name: str) -> list:
  """The compile-only devices of a TPU slice named ``GENERATION:AxBxC`` (e.g. ``v4:2x2x1``, ``v5e:2x2``)
  from libtpu; a ValueError names the field when the name is malformed or libtpu is missing."""
  generation, _, shape = name.partition(":")
  if generation not in TPU_CHIP_CONFIGS or not re.fullmatch(r"\d+(x\d+){1,2}", shape):
    raise ValueError(
      f"--topology must be GENERATION:AxB[xC] with GENERATION in {sorted(TPU_CHIP_CONFIGS)}, got {name!r}"
    )
  # Compile-only devices touch no chip: let several plans (or a plan and a test) load libtpu at once,
  # which its lock file would otherwise refuse.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  folder = Path(os.environ.get("FSQ_LIBTPU_DIR", Path(__file__).resolve().parents[1] / LIBTPU_DIR))
  if folder.is_dir() and str(folder) not in sys.path:
    sys.path.append(str(folder))
  try:
    import libtpu  # noqa: F401
  except ImportError:
    raise ValueError(
      f"--topology {name} needs libtpu: run `make tpu-plan` (it installs into {LIBTPU_DIR}; "
      "FSQ_LIBTPU_DIR names another folder), or install libtpu"
    ) from None
  from jax.experimental import topologies

  dims = tuple(int(d) for d in shape.split("x"))
  per_host = (min(dims[0], 2), min(dims[1], 2), 1)  # a TPU VM host holds a 2x2x1 block of chips
  topology = topologies.get_topology_desc(
    platform="tpu",
    topology_name=name,
    chip_config_name=TPU_CHIP_CONFIGS[generation],
    chips_per_host_bounds=per_host,
    num_slices=1,
    wrap=(False,) * 3,
  )
  return list(topology.devices)


def plan(config, chip: str | None = None, train_only: bool = False, devices: list | None = None) -> dict:
  """Compiles ``config``'s steps for ``devices`` (default: this process's) and returns the plan's figures."""
  import jax

  from fsq.tasks import build_abstract_task
  from fsq.tasks.validate import validate_config
  from fsq.train import mesh as mesh_lib
  from fsq.train.data import batch_spec
  from fsq.train.loop import jit_train_step

  validate_config(config)
  task = build_abstract_task(config)
  mesh = mesh_lib.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.model, devices)
  # Stage II on a tokens folder trains on (B, seq_len) tokens (the folder need not exist to plan).
  seq_len = task.transformer.seq_len - 1 if config.task == "transformer" else 0
  batch = batch_spec(config.data, config.batch_size, seq_len=seq_len)
  image = batch_spec(config.data, config.batch_size, eval_batch=True)["image"]
  state = jax.eval_shape(task.init, jax.random.key(config.seed), {"image": image})
  rules = getattr(task, "sharding_rules", ())
  shardings = mesh_lib.state_shardings(state, mesh, rules, fsdp_min_size=config.mesh.fsdp_min_size)
  constants = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), task.constants())
  train_step = jit_train_step(task, shardings, mesh, config.seed)
  compiled, compile_s = compile_step(train_step, (state, batch, constants))
  memory = compiled.memory_analysis()
  peak = (
    memory.argument_size_in_bytes
    + memory.output_size_in_bytes
    - memory.alias_size_in_bytes
    + memory.temp_size_in_bytes
  )
  devices = mesh.size
  flops = step_flops(
    train_step, (state, batch, constants), devices, config.get("accumulation_steps", 1), compiled
  )
  params = per_device_bytes(state.params, shardings.params)
  optimizer = per_device_bytes(
    {k: getattr(state, k) for k in ("opt_state", "disc_opt_state") if hasattr(state, k)},
    {k: getattr(shardings, k) for k in ("opt_state", "disc_opt_state") if hasattr(state, k)},
  )
  result = {
    "task": config.task,
    "platform": mesh.devices.flat[0].platform,
    "devices": devices,
    "mesh": dict(mesh.shape),
    "global_batch": config.batch_size,
    "per_device_batch": config.batch_size // mesh_lib.batch_shards(mesh),
    "compute_dtype": config.get("compute_dtype", "float32"),
    "remat": bool(config.get("remat", False)),
    "accumulation_steps": int(config.get("accumulation_steps", 1)),
    "parameter_bytes_per_device": params,
    "optimizer_bytes_per_device": optimizer,
    "state_bytes_per_device": per_device_bytes(state, shardings),
    "temp_bytes_per_device": int(memory.temp_size_in_bytes),
    "bytes_per_device": int(peak),
    "flops_per_step": flops,
    "flops_per_example": flops / config.batch_size,
    "collectives": collectives(compiled.as_text()),
    "compile_s": round(compile_s, 1),
  }
  if not train_only:
    replicated = mesh_lib.replicated(mesh)
    eval_step = jax.jit(
      task.eval_step,
      in_shardings=(shardings, mesh_lib.batch_sharding(mesh), replicated),
      out_shardings=replicated,
    )
    eval_compiled, eval_s = compile_step(
      eval_step, (state, batch_spec(config.data, config.batch_size, eval_batch=True), constants)
    )
    eval_memory = eval_compiled.memory_analysis()
    result["eval_bytes_per_device"] = int(
      eval_memory.argument_size_in_bytes + eval_memory.output_size_in_bytes + eval_memory.temp_size_in_bytes
    )
    result["eval_compile_s"] = round(eval_s, 1)
  if chip is not None:
    result["chip"] = chip
    result["chip_bytes"] = int(CHIP_MEMORY[chip])
    result["fits"] = bool(peak <= CHIP_MEMORY[chip])
    result["step_s_at_peak"] = flops / devices / CHIP_PEAK[chip]
  return result


def format_table(r: dict) -> str:
  def gib(x):
    return f"{x / GIB:.2f} GiB"

  rows = [
    ("task", r["task"]),
    ("devices / mesh", f"{r['devices']} {r['mesh']} ({r['platform']})"),
    ("batch: global / per device", f"{r['global_batch']} / {r['per_device_batch']}"),
    ("compute dtype, remat, accumulation", f"{r['compute_dtype']}, {r['remat']}, {r['accumulation_steps']}"),
    ("parameters per device", gib(r["parameter_bytes_per_device"])),
    ("optimizer state per device", gib(r["optimizer_bytes_per_device"])),
    ("whole state per device", gib(r["state_bytes_per_device"])),
    ("temporaries per device", gib(r["temp_bytes_per_device"])),
    ("peak per device (train step)", gib(r["bytes_per_device"])),
    ("FLOPs per step / per example", f"{r['flops_per_step']:.3e} / {r['flops_per_example']:.3e}"),
    ("collectives", ", ".join(f"{k} {v}" for k, v in r["collectives"].items() if v) or "none"),
    ("compile", f"{r['compile_s']} s"),
  ]
  if "eval_bytes_per_device" in r:
    rows.append(("peak per device (eval step)", gib(r["eval_bytes_per_device"])))
  if "chip" in r:
    rows.append((f"{r['chip']}: memory, fits", f"{gib(r['chip_bytes'])}, {r['fits']}"))
    rows.append(("step time at the chip's peak", f"{r['step_s_at_peak'] * 1e3:.1f} ms"))
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="path.py[:args], as scripts.train's --config")
  parser.add_argument(
    "--devices", type=int, required=True, help="devices of the slice (chips, one per device)"
  )
  parser.add_argument("--chip", choices=sorted(CHIP_MEMORY), help="check the peak against this chip's memory")
  parser.add_argument("--memory_gib", type=float, help="check the peak against this much memory per device")
  parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE config overrides (repeatable)")
  parser.add_argument("--train_only", action="store_true", help="skip the eval step")
  parser.add_argument("--topology", help="compile for this TPU slice (e.g. v4:2x2x1) instead of CPU devices")
  args = parser.parse_args(argv)
  if args.devices < 1:
    parser.error(f"--devices must be >= 1, got {args.devices}")
  flags = os.environ.get("XLA_FLAGS", "")
  flags = " ".join(f for f in flags.split() if "device_count" not in f)
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if args.memory_gib is not None:
    CHIP_MEMORY["custom"], CHIP_PEAK["custom"] = args.memory_gib * GIB, CHIP_PEAK.get(args.chip, math.inf)
    args.chip = "custom"
  config = load_config(args.config, parse_set(args.set))
  devices = None
  if args.topology:
    try:
      devices = topology_devices(args.topology)
    except ValueError as e:
      parser.error(str(e))
    if len(devices) != args.devices:
      parser.error(f"--devices must be the topology's device count ({len(devices)}), got {args.devices}")
  result = plan(config, args.chip, args.train_only, devices)
  print(format_table(result))
  print(json.dumps(result))
  if result.get("fits") is False:
    need, have = result["bytes_per_device"] / GIB, result["chip_bytes"] / GIB
    print(
      f"does not fit: the train step needs {need:.2f} GiB per device, {args.chip} has {have:.2f} GiB",
      file=sys.stderr,
    )
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
