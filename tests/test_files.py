"""Atomic writes: the new file whole, or the old one untouched, and never a stray temporary."""

import subprocess
import sys

import numpy as np
import pytest

from configs.autoencoder import get_config
from fsq.files import local_path, run_path, write_atomically, write_text_atomically
from fsq.tasks.validate import validate_config
from scripts import sweep
from tests.helpers import REPO, run_cli, without_device_count


def test_write_replaces_whole_and_creates_the_folder(tmp_path):
  path = tmp_path / "new" / "results.json"
  write_text_atomically(path, '{"a": 1}')
  write_text_atomically(path, '{"a": 2}')
  assert path.read_text() == '{"a": 2}' and sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "final_metrics.json"
  path.write_text("old")

  def torn(tmp):
    tmp.write_text("half of the ne")
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    write_atomically(path, torn)
  assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["final_metrics.json"]


def test_npz_keeps_its_name(tmp_path):
  path = tmp_path / "features.npz"
  write_atomically(path, lambda tmp: np.savez(tmp, x=np.arange(3)))
  with np.load(path, allow_pickle=False) as data:
    np.testing.assert_array_equal(data["x"], [0, 1, 2])
  assert [p.name for p in tmp_path.iterdir()] == ["features.npz"]


def test_urls_other_than_gs_are_refused_by_name_instead_of_becoming_local_folders(tmp_path, capsys):
  for url in ("s3://b/r", "gs:/bucket/run", "http://host/run"):  # gs:/: what Path("gs://...") makes
    with pytest.raises(ValueError, match=r"workdir = '.*': only local paths and gs:// URLs are supported"):
      run_path(url, "workdir")
  for url in ("gs://", "gs://B/run", "gs:///run"):
    with pytest.raises(ValueError, match=r"workdir = '.*': not a gs://BUCKET/PATH URL"):
      run_path(url, "workdir")
  assert str(run_path("gs://bucket/run", "workdir")) == "gs://bucket/run"
  assert run_path("runs/x", "workdir").as_posix() == "runs/x" and run_path("/a:b/c", "w").is_absolute()
  with pytest.raises(ValueError, match=r"--log_dir = 'gs://bucket/logs': must be a local path"):
    local_path("gs://bucket/logs", "--log_dir")
  config = get_config()
  config.data.data_dir = "gs://bucket/tfds"
  with pytest.raises(ValueError, match=r"config.data.data_dir = 'gs://bucket/tfds': must be a local path"):
    validate_config(config)
  config.data.data_dir = "s3://bucket/tfds"
  with pytest.raises(ValueError, match=r"config.data.data_dir = 's3://bucket/tfds': only local paths"):
    validate_config(config)
  with pytest.raises(SystemExit):
    sweep.parse_args(["tiny", "--root=s3://bucket/sweeps"])
  assert "--root = 's3://bucket/sweeps': only local paths and gs:// URLs" in capsys.readouterr().err
  done = run_cli(["--config=configs/autoencoder.py", "--workdir=gs:/bucket/run"])
  assert done.returncode != 0 and "workdir = 'gs:/bucket/run': only local paths" in done.stderr
  assert not (REPO / "gs:").exists()


def test_atomic_writes_and_logs_on_cloud_storage(gcs_bucket):
  """On the emulator: ``write_atomically`` uploads whole objects, and the metric writer, which cannot
  append there, uploads its files whole and continues a resumed run's metrics.jsonl."""
  from fsq.train.writers import MetricWriter, read_metrics

  path = run_path(f"{gcs_bucket}/files/a/features.npz", "path")
  write_atomically(path, lambda tmp: np.savez(tmp, x=np.arange(3)))
  with path.open("rb") as f, np.load(f, allow_pickle=False) as data:
    np.testing.assert_array_equal(data["x"], [0, 1, 2])
  with pytest.raises(OSError, match="disk full"):
    write_atomically(
      path, lambda tmp: (tmp.write_bytes(b"half"), (_ for _ in ()).throw(OSError("disk full")))
    )
  assert [p.name for p in path.parent.iterdir()] == ["features.npz"] and path.read_bytes()[:2] == b"PK"

  workdir = run_path(f"{gcs_bucket}/files/run", "workdir")
  for steps in ((1, 2), (3,)):  # a run, then its resumption
    writer = MetricWriter(workdir, enabled=True, sync_every_s=3600)
    for step in steps:
      writer.write_scalars(step, {"loss": 1.0 / step})
    writer.write_images(steps[-1], {"x": np.zeros((2, 4, 4, 1))})
    assert not (workdir / "images").exists() or steps == (3,)  # nothing uploaded before a sync
    writer.close()
  assert [(m["step"], m["loss"]) for m in read_metrics(workdir / "metrics.jsonl")] == [
    (1, 1.0),
    (2, 0.5),
    (3, 1 / 3),
  ]
  assert sorted(p.name for p in (workdir / "images").iterdir()) == [
    "train_x_00000002.png",
    "train_x_00000003.png",
  ]
  assert len(list((workdir / "tensorboard").iterdir())) == 2  # one event file per run


@pytest.mark.slow
def test_a_multi_process_workdir_must_be_one_directory_every_process_sees(tmp_path):
  """Two processes (scripts.launch_local): one shared directory passes; a directory per process, as
  per-host local disks give, is refused before any training, naming the processes that cannot see it."""
  import os

  env = dict(os.environ, XLA_FLAGS=without_device_count(os.environ["XLA_FLAGS"]))

  def launch(*probe_args, log_dir):
    launcher = ["--num_processes=2", "--devices_per_process=1", "--module=tests.shared_workdir_probe"]
    command = [sys.executable, "-m", "scripts.launch_local", *launcher, f"--log_dir={log_dir}", "--"]
    done = subprocess.run(
      [*command, f"--workdir={tmp_path / 'w'}", *probe_args], cwd=REPO, env=env, timeout=300
    )
    return done.returncode, [(log_dir / f"process_{i}.log").read_text() for i in range(2)]

  code, logs = launch(log_dir=tmp_path / "shared")
  assert code == 0 and all("shared" in log for log in logs), logs
  assert not list((tmp_path / "w").glob(".shared_check_*"))  # the probe file is removed
  code, logs = launch("--per_process", log_dir=tmp_path / "local")
  assert code == 3, logs
  assert "is not shared: processes [1] do not see the file process 0 wrote" in logs[0]
