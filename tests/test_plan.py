"""scripts.plan: ahead-of-time compiles of a config's steps for N devices, without data or checkpoints."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from scripts import plan as plan_lib
from tests.helpers import REPO


def _plan(*args):
  done = subprocess.run(
    [sys.executable, "-m", "scripts.plan", *args], cwd=REPO, capture_output=True, text=True, timeout=600
  )
  return done, (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode in (0, 1) else None)


def _plan_here(train_only=True, **overrides):
  """scripts.plan's figures for the tiny FSQ autoencoder on this process's 8 CPU devices."""
  tiny = {"model.filters": 16, "model.norm_groups": 8, **overrides}
  return plan_lib.plan(
    plan_lib.load_config("configs/autoencoder.py:quantizer=fsq", tiny), train_only=train_only
  )


@pytest.mark.slow
def test_plan_scales_flops_with_the_batch_and_shards_the_state_with_fsdp():
  """The tiny autoencoder on 8 devices: twice the batch is twice the FLOPs, the same parameters; so is
  the batch in 2 accumulated micro-batches; FSDP over 2 devices holds about half the parameters per
  device; the eval step compiles too."""
  a = _plan_here(train_only=False, batch_size=16)
  b = _plan_here(batch_size=32)
  np.testing.assert_allclose(b["flops_per_step"] / a["flops_per_step"], 2.0, rtol=0.05)
  assert a["per_device_batch"] == 2 and b["per_device_batch"] == 4
  assert a["parameter_bytes_per_device"] == b["parameter_bytes_per_device"] > 0
  assert a["eval_bytes_per_device"] > 0 and "eval_bytes_per_device" not in b
  assert a["bytes_per_device"] >= a["state_bytes_per_device"] + a["temp_bytes_per_device"] // 2
  # Accumulating 2 micro-batches: the same FLOPs per step (XLA counts a scan's body once; plan counts
  # the step without it), the same state.
  d = _plan_here(batch_size=32, accumulation_steps=2)
  np.testing.assert_allclose(d["flops_per_step"], b["flops_per_step"], rtol=0.01)
  assert d["state_bytes_per_device"] == b["state_bytes_per_device"] and d["accumulation_steps"] == 2
  # Parameters sharded over fsdp = 2 where they are large enough (the 2^18-element threshold lowered).
  c = _plan_here(batch_size=16, **{"mesh.fsdp": 2, "mesh.fsdp_min_size": 1024})
  assert c["mesh"] == {"data": 4, "fsdp": 2, "model": 1}
  assert 0.5 < c["parameter_bytes_per_device"] / a["parameter_bytes_per_device"] < 0.7
  assert c["collectives"]["all-gather"] > 0  # FSDP gathers parameters; pure data parallelism does not
  assert a["collectives"]["all-gather"] == 0


@pytest.mark.slow
def test_plan_sizes_stage_two_without_a_checkpoint_and_refuses_what_does_not_fit():
  done, result = _plan(
    "--config",
    "configs/maskgit.py:stage=transformer,run=cpu",
    "--devices",
    "2",
    "--set",
    "transformer.num_layers=1",
    "--train_only",
    "--memory_gib",
    "0.001",
  )
  assert done.returncode == 1 and result["task"] == "transformer" and result["fits"] is False
  need = result["bytes_per_device"] / 2**30
  assert f"does not fit: the train step needs {need:.2f} GiB per device, custom has 0.00 GiB" in done.stderr


def test_plan_arguments_are_checked_before_compiling():
  assert plan_lib.parse_set(["a.b=3", "c=x", "d=(1, 2)"]) == {"a.b": 3, "c": "x", "d": (1, 2)}
  with pytest.raises(ValueError, match="--set takes FIELD=VALUE, got 'a'"):
    plan_lib.parse_set(["a"])
  with pytest.raises(ValueError, match=r"--set model.filterz: the config has no field 'model.filterz'"):
    plan_lib.load_config("configs/autoencoder.py", {"model.filterz": 3})
  assert jax.device_count() == 8  # the tests' own devices are untouched by a plan in a subprocess


def test_step_flops_count_a_matmul_by_hand_and_mfu_follows_its_definition():
  """(m, k) @ (k, n) is 2 m k n FLOPs, whether jax gets arrays or shapes; MFU is achieved over peak."""
  from fsq.train import flops

  m, k, n = 32, 48, 16
  matmul = jax.jit(lambda a, b: a @ b)
  shapes = (jax.ShapeDtypeStruct((m, k), np.float32), jax.ShapeDtypeStruct((k, n), np.float32))
  assert flops.step_flops(matmul, shapes, num_devices=1) == 2 * m * k * n
  arrays = (np.ones((m, k), np.float32), np.ones((k, n), np.float32))
  assert flops.step_flops(matmul, arrays, num_devices=1) == 2 * m * k * n
  # 1e12 FLOP per step at 3 steps/s on 8 devices of 1e12 FLOP/s peak: 3/8 of the peak.
  assert flops.mfu(1e12, 3.0, 8, 1e12) == pytest.approx(0.375)
  assert flops.chip_of("TPU v4") == "v4" and flops.chip_of("TPU v5 lite") == "v5e"
  assert flops.chip_of("TPU v5p") == "v5p" and flops.chip_of("NVIDIA H200") == "h200"
  assert flops.chip_of("NVIDIA H100 80GB HBM3") == "h100" and flops.chip_of("NVIDIA H100 PCIe") == "h100_pcie"
  assert flops.chip_of("cpu") is None and flops.peak_flops_per_device() == 0.0  # a CPU: no MFU
  assert flops.peak_flops_per_device(2e9) == 2e9


@pytest.mark.slow
def test_plan_compiles_for_a_tpu_topology_on_this_cpu_host():
  """``--topology v4:2x2x1``: libtpu's compile-only devices (``make tpu-plan``) give a TPU program for 4
  chips, with XLA's TPU memory analysis; its FLOPs (of the compiled per-chip program, padded) are at least
  the CPU plan's and exactly 2mkn on a matmul; names that libtpu cannot serve are refused."""
  tiny = ["--set", "model.filters=8", "--set", "model.norm_groups=4", "--set", "batch_size=16"]
  tiny.append("--train_only")
  config = ["--config", "configs/autoencoder.py:quantizer=fsq", "--devices", "4"]
  done, tpu = _plan(*config, "--topology", "v4:2x2x1", "--chip", "v4", *tiny)
  assert done.returncode == 0, done.stderr[-3000:]
  assert tpu["platform"] == "tpu" and tpu["devices"] == 4 and tpu["per_device_batch"] == 4 and tpu["fits"]
  assert tpu["collectives"]["all-reduce"] >= 1 and 0 < tpu["bytes_per_device"] < 2**30
  done, cpu = _plan(*config, *tiny)
  assert cpu["platform"] == "cpu"
  # TPU FLOPs are those of the compiled per-chip program: convolutions of 8 channels padded to the TPU's
  # tiles count more than the unpadded program's on CPU devices, never less.
  assert cpu["flops_per_step"] <= tpu["flops_per_step"] < 2 * cpu["flops_per_step"]
  done, _ = _plan(*config, "--topology", "v9:2x2", *tiny)
  assert done.returncode == 2 and "--topology must be GENERATION:AxB[xC]" in done.stderr
  done, _ = _plan("--config", "configs/autoencoder.py", "--devices", "8", "--topology", "v4:2x2x1")
  assert done.returncode == 2 and "--devices must be the topology's device count (4), got 8" in done.stderr
  # Unpadded, the TPU count is exact: a (512, 256) @ (256, 128) matmul over the 4 chips is 2 m k n FLOPs.
  from fsq.train import flops

  mesh = jax.sharding.Mesh(np.asarray(plan_lib.topology_devices("v4:2x2x1")), ("data",))
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  matmul = jax.jit(lambda a, b: a @ b, in_shardings=(sharded, replicated))
  shapes = (jax.ShapeDtypeStruct((512, 256), np.float32), jax.ShapeDtypeStruct((256, 128), np.float32))
  cache = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)  # compile-only programs cannot be cached
  try:
    assert flops.step_flops(matmul, shapes, num_devices=4) == 2 * 512 * 256 * 128
  finally:
    jax.config.update("jax_enable_compilation_cache", cache)
