"""Distinct token footprints (fsq/evals/footprints.py) against Python sets and a hand-counted image."""

import numpy as np
import pytest

from fsq.evals.footprints import blocks, count_distinct, footprint_stats


def test_hand_counted_image():
  # One 4x4 grey image in 2x2 blocks: a black block, a white one, a second black one, a black one with one
  # grey pixel (constant: the two black blocks and the white one).
  image = np.zeros((1, 4, 4, 1), np.uint8)
  image[0, :2, 2:] = 255
  image[0, 3, 3] = 70
  stats = footprint_stats(image, 2)
  assert stats == {"tokens": 4.0, "distinct": 3.0, "distinct_coarse": 3.0, "constant_fraction": 0.75}
  # At 1 bit per value the grey pixel (70 < 128) reads as black: the last block merges with the first.
  assert footprint_stats(image, 2, coarse_bits=1)["distinct_coarse"] == 2.0
  np.testing.assert_array_equal(blocks(image, 2)[1], [255, 255, 255, 255])  # row-major token order


@pytest.mark.parametrize("seed", range(3))
def test_counts_match_python_sets_on_random_images(seed):
  rng = np.random.default_rng(seed)
  # Few values so that blocks repeat; some images all zero, so that constant blocks occur. At 2 bits 0 and
  # 30 read alike (both >> 6 are 0): the coarse count merges blocks that differ only there.
  images = rng.choice(np.array([0, 30, 100, 200], np.uint8), size=(20, 8, 12, 1))
  images[:5] = 0
  patch = 2
  expected = set()
  coarse = set()
  constant = 0
  for img in images:
    for i in range(0, 8, patch):
      for j in range(0, 12, patch):
        block = img[i : i + patch, j : j + patch]
        expected.add(block.tobytes())
        coarse.add((block >> 6).tobytes())
        constant += int((block == block.flat[0]).all())
  stats = footprint_stats(images, patch)
  assert stats["tokens"] == 20 * 4 * 6
  assert stats["distinct"] == len(expected)
  assert stats["distinct_coarse"] == len(coarse) < len(expected)
  assert stats["constant_fraction"] == pytest.approx(constant / (20 * 4 * 6))
  assert count_distinct(blocks(images, patch)) == len(expected)


def test_bad_input_names_the_field():
  with pytest.raises(ValueError, match="patch 3 must divide the image size 4x4"):
    footprint_stats(np.zeros((1, 4, 4, 1), np.uint8), 3)
  with pytest.raises(ValueError, match="images must be uint8, got float32"):
    footprint_stats(np.zeros((1, 4, 4, 1), np.float32), 2)
  with pytest.raises(ValueError, match=r"coarse_bits must be in \[1, 8\], got 0"):
    footprint_stats(np.zeros((1, 4, 4, 1), np.uint8), 2, coarse_bits=0)


def test_data_ceiling_counts_the_runs_splits_as_read_from_the_idx_files(tfds_data_dir, tmp_path):
  """scripts.data_ceiling on a recorded stage I config: both splits, read through the input pipeline and
  returned to uint8, count as the raw idx files padded to 32x32 do, in 4x4 blocks (two downsamplings)."""
  import gzip
  import json

  from configs.maskgit import get_config
  from fsq.data import fashion_mnist
  from fsq.train.writers import write_config
  from scripts import data_ceiling

  config = get_config("stage=tokenizer,run=cpu,quantizer=fsq")
  config.data.data_dir = str(tfds_data_dir)
  config.data.eval_split, config.data.train_split = "test[:30]", "train[:50]"
  config.batch_size = 8  # the last evaluation batch is partial: its padding rows are not counted
  write_config(tmp_path, config)
  assert len(config.model.channel_multipliers) == 3
  result = data_ceiling.main([f"--workdir={tmp_path}", f"--out={tmp_path / 'ceiling.json'}"])

  for name, split, count in (("eval", "test", 30), ("train", "train", 50)):
    path = fashion_mnist.DEFAULT_DIR / f"{fashion_mnist.FILES[(split, 'images')][0]}.gz"
    with gzip.open(path) as f:
      raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    padded = np.pad(raw, ((0, 0), (2, 2), (2, 2)))
    seen = {
      padded[n, i : i + 4, j : j + 4].tobytes()
      for n in range(count)
      for i in range(0, 32, 4)
      for j in range(0, 32, 4)
    }
    assert result[name]["tokens"] == count * 64 and result[name]["patch"] == 4
    assert result[name]["distinct"] == len(seen)
  assert json.loads((tmp_path / "ceiling.json").read_text()) == result
