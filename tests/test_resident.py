"""The device-resident training set: batches drawn on the devices cover each shard once per epoch, flip
half the images, depend on the step alone, gather without moving data between devices, and a run on
them resumes bit-identically."""

import functools

import jax
import numpy as np
import pytest

from fsq.data import pipeline
from fsq.tasks import train_and_evaluate
from fsq.train import mesh as mesh_lib
from fsq.train import resident
from tests.helpers import read_metrics, restore_params, tiny_autoencoder_config


def _dataset(n=24, size=4):
  """Images whose pixels identify their record (an asymmetric ramp plus the index) and labels = index."""
  ramp = np.arange(size * size).reshape(size, size, 1)
  images = np.stack([(ramp + 10 * i) % 256 for i in range(n)]).astype(np.uint8)
  return images, np.arange(n, dtype=np.int32)


def test_draws_cover_each_shard_once_per_epoch_flip_half_and_depend_on_the_step_alone():
  images, labels = _dataset()
  mesh = mesh_lib.make_mesh(4, 1, 1, devices=jax.devices()[:4])
  data = resident.place(images, labels, mesh)
  assert data["image"].shape == (4, 6, 4, 4, 1) and data["label"].shape == (4, 6)
  draw = jax.jit(
    functools.partial(resident.draw, seed=3, batch_size=8, random_flip=False),
    out_shardings=mesh_lib.batch_sharding(mesh),
  )
  # Each device gathers from its own shard: no collective moves the dataset.
  program = draw.lower(data, np.int32(0)).compile().as_text()
  assert not any(c in program for c in ("all-gather", "all-to-all", "collective-permute", "all-reduce"))
  # 6 records per shard, 2 rows each step: 3 steps per epoch, each record of the shard once.
  epoch = [np.asarray(draw(data, np.int32(s))["label"]) for s in range(3)]
  assert sorted(np.concatenate(epoch)) == list(range(24))
  for batch in epoch:
    assert all(6 * d <= label < 6 * (d + 1) for d in range(4) for label in batch[2 * d : 2 * d + 2])
  second = np.concatenate([np.asarray(draw(data, np.int32(s))["label"]) for s in range(3, 6)])
  assert sorted(second) == list(range(24)) and list(second) != list(np.concatenate(epoch))
  again = draw(data, np.int32(4))
  np.testing.assert_array_equal(again["label"], draw(data, np.int32(4))["label"])
  np.testing.assert_array_equal(np.asarray(again["image"]), images[np.asarray(again["label"])])

  flipping = jax.jit(functools.partial(resident.draw, seed=3, batch_size=8, random_flip=True))
  mirrored = []
  for s in range(50):
    batch = jax.device_get(flipping(data, np.int32(s)))
    stored = images[batch["label"]]
    same, mirror = ((batch["image"] == x).all(axis=(1, 2, 3)) for x in (stored, stored[:, :, ::-1]))
    assert (same ^ mirror).all()  # each row is its record, mirrored or not (the ramp is asymmetric)
    mirrored.append(mirror)
    np.testing.assert_array_equal(batch["label"], draw(data, np.int32(s))["label"])  # flips move nothing
  assert 0.4 < np.mean(mirrored) < 0.6
  with pytest.raises(ValueError, match="batch_size 6 must split into 4 shards"):
    resident.draw(data, np.int32(0), seed=0, batch_size=6, random_flip=False)


def test_decode_all_is_the_pipeline_s_images_in_record_order():
  rng = np.random.default_rng(0)
  examples = [{"image": rng.integers(0, 256, (6, 5, 3), np.uint8), "label": i} for i in range(5)]
  images, labels = resident.decode_all(pipeline.ImageSource(examples, (6, 5, 3)), 8, "pad")
  assert images.dtype == np.uint8 and images.shape == (5, 8, 8, 3)
  np.testing.assert_array_equal(labels, np.arange(5))
  for image, example in zip(images, examples, strict=True):
    np.testing.assert_array_equal(image[1:7, 1:6], example["image"])  # centred on zeros (pad mode)
    assert image.sum() == example["image"].astype(np.int64).sum()


@pytest.mark.slow
def test_a_resident_run_trains_and_resumes_bit_identically(tfds_data_dir, tmp_path):
  """The loop with ``data.resident``: 4 steps straight equal 2 steps, a restart and 2 more (the batches
  are a function of the step; no data state is saved), on 512 real Fashion-MNIST images."""

  def run(workdir, steps):
    config = tiny_autoencoder_config(tfds_data_dir, "steps=4", checkpoint_every_steps=2, num_eval_batches=1)
    config.data.resident, config.data.random_flip, config.data.train_split = True, True, "train[:512]"
    config.num_train_steps, config.optimizer.schedule = steps, "constant"
    return train_and_evaluate(config, workdir)

  run(tmp_path / "straight", 4)
  run(tmp_path / "resumed", 2)
  run(tmp_path / "resumed", 4)
  straight, resumed = ([m["loss"] for m in read_metrics(tmp_path / w)] for w in ("straight", "resumed"))
  assert straight == resumed and len(straight) == 4
  for a, b in zip(*(restore_params(tmp_path / w, 4)[0] for w in ("straight", "resumed")), strict=True):
    np.testing.assert_array_equal(a, b)
