"""Atomic writes: the new file whole, or the old one untouched, and never a stray temporary."""

import numpy as np
import pytest

from fsq.train.files import write_atomically, write_text_atomically


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
