"""Atomic writes: the new file whole, or the old one untouched, and never a stray temporary."""

import subprocess
import sys

import numpy as np
import pytest

from configs.autoencoder import get_config
from fsq.train.files import local_path, write_atomically, write_text_atomically
from fsq.train.validate import validate_config
from scripts import sweep
from tests.test_train import REPO, run_cli, without_device_count


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


def test_cloud_urls_are_refused_by_name_instead_of_becoming_local_folders(tmp_path, capsys):
  for url in ("gs://bucket/run", "s3://b/r", "gs:/bucket/run"):  # the last: what Path("gs://...") makes
    with pytest.raises(ValueError, match=r"workdir = '.*': cloud storage URLs are not supported yet"):
      local_path(url, "workdir")
  assert local_path("runs/x", "workdir").as_posix() == "runs/x" and local_path("/a:b/c", "w").is_absolute()
  config = get_config()
  config.data.data_dir = "gs://bucket/tfds"
  with pytest.raises(ValueError, match=r"config.data.data_dir = 'gs://bucket/tfds': cloud storage URLs"):
    validate_config(config)
  with pytest.raises(SystemExit):
    sweep.parse_args(["tiny", "--root=gs://bucket/sweeps"])
  assert "--root = 'gs://bucket/sweeps': cloud storage URLs" in capsys.readouterr().err
  done = run_cli(["--config=configs/autoencoder.py", "--workdir=gs://bucket/run"])
  assert done.returncode != 0 and "workdir = 'gs://bucket/run': cloud storage URLs" in done.stderr
  assert not (REPO / "gs:").exists()


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
