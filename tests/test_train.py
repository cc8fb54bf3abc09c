"""The training system end to end: real data, mock data, exact resume, preemption, NaN, multi-process."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from fsq.data import pipeline
from fsq.files import run_path
from fsq.tasks import train_and_evaluate
from fsq.train.checkpoint import Checkpointer
from fsq.train.loop import NonFiniteLossError
from tests.helpers import (
  AUTOENCODER_TINY,
  REPO,
  read_metrics,
  restore_params,
  restore_state,
  run_cli,
  tiny_autoencoder_config,
)


def cli_args(workdir, data_dir, steps, **overrides):
  args = [f"--config={REPO}/configs/autoencoder.py:steps={steps}", f"--workdir={workdir}"]
  for key, value in {**AUTOENCODER_TINY, "data.data_dir": str(data_dir), **overrides}.items():
    args.append(f"--config.{key}={value}")
  return args


def test_train_and_evaluate_fsq_on_fashion_mnist(tfds_data_dir, tmp_path):
  config = tiny_autoencoder_config(tfds_data_dir, "steps=6", profile_steps=(2, 3), peak_flops_per_device=1e9)
  final = train_and_evaluate(config, tmp_path)
  train = read_metrics(tmp_path)
  assert [m["step"] for m in train] == [1, 2, 3, 4, 5, 6]
  for m in train:
    assert {"loss", "mse", "l2_grads", "l2_params", "steps_per_second", "images_per_second"} <= set(m)
    assert np.isfinite(m["loss"]) and m["l2_params"] > 0
  # MFU = FLOPs per step x steps/s / (8 devices x the given peak): FLOPs per step is one number.
  per_step = [m["mfu"] * 8 * 1e9 / m["steps_per_second"] for m in train]
  assert per_step[0] > 0 and np.allclose(per_step, per_step[0], rtol=1e-9)
  # Two eval batches of 8 images, each 32x32 -> 16x16 tokens: every token is counted.
  assert final["codebook/count"] == 2 * 8 * 16 * 16
  assert 0 < final["codebook/usage"] <= 1 and final["codebook/usage"] == pytest.approx(
    1 - final["codebook/zeros_ratio"]
  )
  assert 1 <= final["codebook/perplexity"] <= 1000 and np.isfinite(final["psnr"])
  assert read_metrics(tmp_path, "eval")[-1]["step"] == 6
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert (tmp_path / "images" / "eval_reconstructions_00000006.png").exists()
  assert json.loads((tmp_path / "config.json").read_text())["quantizer"]["levels"] == [8, 5, 5, 5]
  assert Checkpointer(tmp_path / "checkpoints").all_steps() == [2, 4, 6]
  # The profile window (steps 2-3): one jax.profiler trace that TensorBoard's profile plugin reads.
  assert len(list((tmp_path / "profile" / "plugins" / "profile").glob("*/*.xplane.pb"))) == 1
  for bad in ((3, 2), (0, 1), (2,)):
    with pytest.raises(ValueError, match=r"config.profile_steps must be \(\) or \(first, last\)"):
      tiny_autoencoder_config(tfds_data_dir, profile_steps=bad)
  with pytest.raises(ValueError, match=r"config.peak_flops_per_device must be a number >= 0"):
    tiny_autoencoder_config(tfds_data_dir, peak_flops_per_device=-1.0)


@pytest.mark.slow
def test_vq_autoencoder_with_ema_statistics_trains_and_resumes(tfds_data_dir, tmp_path):
  config = tiny_autoencoder_config(
    tfds_data_dir, "quantizer=vq_uvim,steps=2", **{"quantizer.codebook_size": 64}
  )
  train_and_evaluate(config, tmp_path)
  counts = restore_state(tmp_path, 2)["model_state"]
  assert counts["vq_stats"]["quantizer"]["counts"].shape == (64,)
  config.num_train_steps = 4
  final = train_and_evaluate(config, tmp_path)
  assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3, 4]
  assert final["codebook/count"] == 2 * 8 * 16 * 16


def test_train_and_evaluate_on_tfds_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=32):
    sources = tuple(
      pipeline.ImageSource(
        tfds.data_source("mnist", split=split, data_dir=str(tmp_path / "none")), (28, 28, 1)
      )
      for split in ("train", "test")
    )
    final = train_and_evaluate(
      tiny_autoencoder_config(tmp_path, "steps=2"), tmp_path / "run", sources=sources
    )
  assert final["codebook/count"] == 2 * 8 * 16 * 16 and np.isfinite(final["mse"])


@pytest.mark.slow
def test_resume_on_a_different_mesh(tfds_data_dir, tmp_path):
  config = tiny_autoencoder_config(tfds_data_dir, "steps=2")
  train_and_evaluate(config, tmp_path)
  config.num_train_steps = 4
  config.mesh.data, config.mesh.fsdp, config.mesh.fsdp_min_size = 4, 2, 64
  train_and_evaluate(config, tmp_path)
  assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3, 4]
  metadata = (
    ocp.StandardCheckpointer().metadata(tmp_path.absolute() / "checkpoints" / "4" / "state").item_metadata
  )
  specs = [m.sharding.partition_spec for m in jax.tree.leaves(metadata["params"])]
  assert any("fsdp" in tuple(spec) for spec in specs), specs


def test_non_finite_loss_stops_within_a_step_and_keeps_the_last_checkpoint(tfds_data_dir, tmp_path):
  config = tiny_autoencoder_config(tfds_data_dir, "steps=6", debug_nan_at_step=3)
  with pytest.raises(NonFiniteLossError, match=r"step 3: metric \w+ is nan"):
    train_and_evaluate(config, tmp_path)
  assert Checkpointer(tmp_path / "checkpoints").all_steps() == [2]
  params, _ = restore_params(tmp_path, 2)
  assert all(np.all(np.isfinite(p)) for p in params)


def _metric_lines(workdir) -> list[dict]:
  path = run_path(workdir, "workdir") / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _start(args) -> tuple[subprocess.Popen, int]:
  """Starts a training process; returns it and how many metric lines earlier runs left."""
  workdir = run_path(next(a.split("=", 1)[1] for a in args if a.startswith("--workdir=")), "workdir")
  before = len(_metric_lines(workdir))
  proc = subprocess.Popen(
    [sys.executable, "-m", "scripts.train", *args],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  return proc, before


def _wait_for_step(workdir, step: int, proc: subprocess.Popen, skip: int, timeout: float = 300) -> None:
  """Waits until this process (the metric lines after the first ``skip``) has logged ``step`` or later."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f"training exited early: {proc.stdout.read() if proc.stdout else ''}")
    if any(m["step"] >= step for m in _metric_lines(workdir)[skip:]):
      return
    time.sleep(0.05)
  raise AssertionError(f"step {step} not reached in {timeout}s")


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical_and_sigterm_saves(tfds_data_dir, tmp_path, gcs_bucket):
  """The interrupted run lives in a gs:// bucket (a real Cloud Storage emulator): checkpoints, logs and
  the data iterator's state there; it ends bit-identical to an uninterrupted run on local disk."""
  steps = 12
  full = tmp_path / "full"
  assert run_cli(cli_args(full, tfds_data_dir, steps, checkpoint_every_steps=1)).returncode == 0

  killed = run_path(f"{gcs_bucket}/killed", "workdir")
  args = cli_args(killed, tfds_data_dir, steps, checkpoint_every_steps=1)
  proc, skip = _start(args)
  kill_at = random.Random().randint(2, 5)  # any step must do; printed for reproduction
  print(f"SIGKILL after step {kill_at}")
  _wait_for_step(killed, kill_at, proc, skip)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  saved = Checkpointer(killed / "checkpoints").latest_step()  # None if killed before the first save ended
  assert saved is None or saved < steps

  # SIGTERM (preemption) in the resumed run, once it is training: it saves its step and exits cleanly.
  proc, skip = _start(args)
  _wait_for_step(killed, 1, proc, skip)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  assert "SIGTERM" in out and (saved is None or f"resumed from step {saved}" in out), out
  preempted_at = Checkpointer(killed / "checkpoints").latest_step()
  assert preempted_at < steps

  result = run_cli(args)
  assert result.returncode == 0, result.stdout + result.stderr
  assert f"resumed from step {preempted_at}" in result.stdout
  for a, b in zip(restore_params(full, steps), restore_params(killed, steps), strict=True):
    for x, y in zip(a, b, strict=True):
      np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_a_save_interrupted_midway_is_ignored_on_resume(tfds_data_dir, tmp_path):
  config = tiny_autoencoder_config(tfds_data_dir, "steps=4")
  train_and_evaluate(config, tmp_path)
  # What a kill during the save of step 6 leaves: orbax's temporary directory, half written.
  partial = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp"
  partial.mkdir()
  (partial / "state").mkdir()
  (partial / "state" / "garbage").write_bytes(b"\0" * 10)
  config.num_train_steps = 6
  train_and_evaluate(config, tmp_path)
  assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
  params, _ = restore_params(tmp_path, 6)
  assert all(np.all(np.isfinite(p)) for p in params)


def test_replicated_arrays_are_saved_in_replica_slices_only_when_a_slice_holds_1_mib(tmp_path, caplog):
  """Small replicated arrays go whole from one replica (no slice program compiled); an array of 8 MiB
  over 8 devices still goes in 1 MiB slices, one per replica; both restore exactly."""
  from fsq.train.checkpoint import MIN_REPLICA_SLICE_BYTES

  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  rng = np.random.default_rng(0)
  small = {"a": rng.normal(size=(24, 3)).astype(np.float32), "b": np.arange(40, dtype=np.int32)}
  large = {"w": rng.normal(size=(8 * MIN_REPLICA_SLICE_BYTES // 4,)).astype(np.float32)}
  assert len(jax.devices()) == 8
  for name, state, sliced in (("small", small, False), ("large", large, True)):
    placed = jax.device_put(state, replicated)
    checkpointer = Checkpointer(tmp_path / name, async_save=False)
    caplog.clear()
    with jax.log_compiles(True), caplog.at_level("WARNING"):
      checkpointer.save(1, placed)
    assert any("jit(slice)" in r.getMessage() for r in caplog.records) == sliced, name
    assert (tmp_path / name / "1" / "state" / "array_metadatas").is_dir()  # orbax's per-host metadata
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), placed)
    restored = checkpointer.restore(1, target)
    checkpointer.close()
    for key, value in state.items():
      np.testing.assert_array_equal(np.asarray(restored[key]), value)
      assert restored[key].sharding == replicated


@pytest.mark.slow
def test_bad_config_fails_before_compiling(tfds_data_dir, tmp_path):
  result = run_cli([*cli_args(tmp_path / "a", tfds_data_dir, 2), "--config.model.filterz=3"])
  assert result.returncode != 0 and "filterz" in result.stderr
  result = run_cli(cli_args(tmp_path / "b", tfds_data_dir, 2, batch_size=7))
  assert result.returncode != 0 and "config.batch_size = 7" in result.stderr
  result = run_cli(cli_args(tmp_path / "c", tfds_data_dir, 2, **{"quantizer.levels": "(8, 1)"}))
  assert result.returncode != 0 and "config.quantizer.levels" in result.stderr
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_sighup_and_sigterm_ask_the_loop_to_save_and_stop_and_the_handlers_are_restored():
  from fsq.train.loop import _Preemption

  before = {s: signal.getsignal(s) for s in _Preemption.SIGNALS}
  for sig in (signal.SIGHUP, signal.SIGTERM):
    with _Preemption() as preemption:
      assert not preemption.agreed(1, 10)
      os.kill(os.getpid(), sig)
      time.sleep(0.05)  # Python runs the handler between bytecodes of the main thread
      assert preemption.agreed(1, 10) and preemption.signal_name == sig.name
    assert {s: signal.getsignal(s) for s in _Preemption.SIGNALS} == before


def _fake_checkout(root: Path, exit_code: int) -> Path:
  """A checkout whose .venv/bin/python echoes its arguments, runs until a file named ``stop`` appears in
  the checkout, then exits with ``exit_code``: a stand-in for a long training, to test how
  launch_tpu.sh starts, detaches, attaches and waits."""
  python = root / ".venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text(
    f'#!/bin/bash\necho "args: $*"\nwhile [ ! -f stop ]; do sleep 0.1; done\nexit {exit_code}\n'
  )
  python.chmod(0o755)
  return root


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  return True


def test_tpu_launcher_detaches_the_training_from_the_session_and_reattaches(tmp_path):
  """launch_tpu.sh with its remote commands run by a local bash (FSQ_TPU_SSH=local): the training
  outlives the launcher's session (a dropped SSH connection, SIGHUP to its process group), launching
  again attaches to it instead of starting a second copy, and the launcher exits with its status."""
  repo = _fake_checkout(tmp_path / "repo", exit_code=3)
  env = dict(os.environ, FSQ_TPU_SSH="local", FSQ_TPU_POLL_S="0.1")
  launch = [
    "bash",
    f"{REPO}/scripts/launch_tpu.sh",
    "--tpu",
    "x",
    "--zone",
    "z",
    "--repo",
    str(repo),
    "--name",
    "tok",
  ]
  args = ["--", "--workdir", "/w", "--config.quantizer.levels=(8, 5)"]
  first = subprocess.Popen(
    [*launch, *args], env=env, start_new_session=True, stdout=subprocess.PIPE, text=True
  )
  deadline = time.time() + 30
  while not (repo / "logs" / "tok.log").exists() or "args" not in (repo / "logs" / "tok.log").read_text():
    assert time.time() < deadline and first.poll() is None
    time.sleep(0.05)
  os.killpg(first.pid, signal.SIGHUP)  # the session that launched it goes away
  first.wait(timeout=30)
  pid = int((repo / "logs" / "tok.pid").read_text())
  assert _alive(pid)
  again = subprocess.run([*launch, "--detach", *args], env=env, capture_output=True, text=True, timeout=30)
  assert again.returncode == 0 and f"tok is running (pid {pid}): attaching" in again.stdout
  (repo / "stop").touch()
  waited = subprocess.run([*launch, *args], env=env, capture_output=True, text=True, timeout=60)
  assert waited.returncode == 3, waited.stdout + waited.stderr
  assert not _alive(pid) and (repo / "logs" / "tok.rc").read_text().strip() == "3"
  log = (repo / "logs" / "tok.log").read_text()
  assert log.count("args: -m scripts.train --workdir /w --config.quantizer.levels=(8, 5)") == 1
  # The job ended: the next launch starts a new one.
  fresh = subprocess.run([*launch, *args], env=env, capture_output=True, text=True, timeout=60)
  assert fresh.returncode == 3 and "started tok" in fresh.stdout


LAUNCH = ("bash", "scripts/launch_tpu.sh")


def test_tpu_launcher_dry_run_prints_one_command_for_all_workers():
  result = subprocess.run(
    [
      "bash",
      "scripts/launch_tpu.sh",
      "--dry-run",
      "--tpu",
      "pod",
      "--zone",
      "z",
      "--",
      "--config",
      "configs/a.py:x=1",
      "--workdir",
      "gs://b/run",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("gcloud compute tpus tpu-vm ssh pod --zone z --worker=all --command ")
  assert "scripts.train" in result.stdout and "gs://b/run" in result.stdout
  missing = subprocess.run(
    ["bash", "scripts/launch_tpu.sh", "--dry-run", "--zone", "z", "--", "x"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert missing.returncode == 2 and "--tpu" in missing.stderr
  other = subprocess.run(
    [*LAUNCH, "--dry-run", "--tpu", "p", "--zone", "z", "--module", "scripts.pretokenize", "--", "--x"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert "scripts.pretokenize" in other.stdout and "scripts.train" not in other.stdout
  wrong = subprocess.run(
    [*LAUNCH, "--tpu", "p", "--zone", "z", "--module", "os; rm", "--", "x"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert wrong.returncode == 2 and "--module must be scripts.NAME, got 'os; rm'" in wrong.stderr
