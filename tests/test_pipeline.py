"""The Fashion-MNIST TFDS builder and the Grain pipeline, checked against numpy on the idx files."""

import collections
import dataclasses

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from fsq.data import builders, fashion_mnist, pipeline, scenes
from fsq.data.dense_targets import canonical_instances

tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def builder(tfds_data_dir):
  return builders.prepare("fashion_mnist_local", tfds_data_dir)


@pytest.fixture(scope="module")
def test_source(builder):
  return pipeline.tfds_source(builder, "test")


@pytest.fixture(scope="module")
def reference():
  """Test images (10000, 28, 28, 1) uint8 and labels, read straight from the idx files."""
  images, labels = fashion_mnist.load("test")
  return images[..., None], labels


def make(source, **overrides):
  args = dict(
    batch_size_per_process=500,
    seed=0,
    shuffle=False,
    num_epochs=1,
    image_size=None,
    resize_mode="pad",
    random_flip=False,
    worker_count=0,
    read_threads=0,
    prefetch_buffer_size=16,
    process_index=0,
    process_count=1,
  )
  return pipeline.make_loader(source, **{**args, **overrides})


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def scaled(images):
  """The expected model input: uint8 pixels mapped affinely onto [-1, 1], in float64."""
  return (images.astype(np.float64) - 127.5) / 127.5


def to_uint8(images):
  return np.rint(images * 127.5 + 127.5).astype(np.uint8)


def assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_builder_has_the_published_splits_in_file_order(builder, reference, tmp_path):
  assert builder.info.splits["train"].num_examples == 60000
  assert builder.info.splits["test"].num_examples == 10000
  assert builder.info.features["label"].names == list(fashion_mnist.CLASS_NAMES)
  data = builder.as_data_source(split="test")  # TFDS's own PNG decoding, independent of the pipeline.
  for k in (0, 1, 4321, 9999):
    np.testing.assert_array_equal(data[k]["image"], reference[0][k])
    assert data[k]["label"] == reference[1][k]
  assert builders.prepare("fashion_mnist_local", builder.data_dir_root).is_prepared()
  with pytest.raises(ValueError, match=r"'imagenet2012' is not prepared in data_dir .*never downloads"):
    builders.prepare("imagenet2012", tmp_path)


def test_one_epoch_is_the_scaled_test_split_in_order_with_1000_labels_per_class(test_source, reference):
  batches = list(make(test_source))
  assert (
    len(batches) == 20 and batches[0]["image"].dtype == np.float32 and batches[0]["label"].dtype == np.int32
  )
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_allclose(images, scaled(reference[0]), rtol=0, atol=1e-7)
  np.testing.assert_array_equal(labels, reference[1])
  np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)
  assert images.min() == -1.0 and images.max() == 1.0


def test_padding_to_32_centres_the_image_on_black(test_source, reference):
  (batch,) = take(iter(make(test_source, image_size=32, batch_size_per_process=8)), 1)
  expected = np.zeros((8, 32, 32, 1))
  expected[:, 2:30, 2:30] = reference[0][:8]
  np.testing.assert_allclose(batch["image"], scaled(expected), rtol=0, atol=1e-7)


def test_crop_resizes_the_shorter_side_and_keeps_the_centre():
  tall = np.zeros((60, 30, 3), np.uint8)
  tall[:, 15:] = 200  # Left half black, right half grey; 2:1 downscaling blurs 2 pixels either side.
  out = pipeline.resize_image(tall, 10, "crop")
  assert out.shape == (10, 10, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out[:, :4], 0)
  np.testing.assert_array_equal(out[:, 7:], 200)
  wide = np.zeros((20, 60, 1), np.uint8)
  wide[:, 20:40] = 255  # The centre square is white, the sides black.
  np.testing.assert_array_equal(pipeline.resize_image(wide, 10, "crop")[:, 2:8], 255)
  with pytest.raises(ValueError, match="at most 10"):
    pipeline.resize_image(tall, 10, "pad")


def test_shuffling_is_a_seeded_permutation_that_changes_each_epoch(test_source, reference):
  def images(seed, num_batches):
    iterator = iter(make(test_source, shuffle=True, seed=seed, num_epochs=2))
    return to_uint8(np.concatenate([b["image"] for b in take(iterator, num_batches)]))

  both = images(seed=3, num_batches=40)
  first, second = both[:10000], both[10000:]
  rows = collections.Counter(x.tobytes() for x in reference[0])
  assert collections.Counter(x.tobytes() for x in first) == rows
  assert collections.Counter(x.tobytes() for x in second) == rows
  assert not np.array_equal(first, second)
  assert not np.array_equal(first, reference[0])
  np.testing.assert_array_equal(images(seed=3, num_batches=1), first[:500])
  assert not np.array_equal(images(seed=4, num_batches=1), first[:500])


def test_process_shards_are_disjoint_and_cover_the_split(test_source, reference):
  shards = [
    to_uint8(
      np.concatenate([b["image"] for b in make(test_source, shuffle=True, process_index=p, process_count=2)])
    )
    for p in range(2)
  ]
  assert [len(s) for s in shards] == [5000, 5000]
  seen = collections.Counter(x.tobytes() for x in np.concatenate(shards))
  assert seen == collections.Counter(x.tobytes() for x in reference[0])


def test_random_flip_mirrors_about_half_the_images_the_same_way_for_the_same_seed(test_source, reference):
  def flipped(seed):
    (batch,) = take(iter(make(test_source, random_flip=True, seed=seed)), 1)
    images, original = to_uint8(batch["image"]), reference[0][:500]
    mirrored = np.all(images == original[:, :, ::-1], axis=(1, 2, 3))
    unchanged = np.all(images == original, axis=(1, 2, 3))
    assert np.all(mirrored | unchanged)
    return mirrored & ~unchanged  # Left-right symmetric images count as not flipped.

  flips = flipped(seed=0)
  assert 200 < flips.sum() < 300
  np.testing.assert_array_equal(flipped(seed=0), flips)
  assert not np.array_equal(flipped(seed=1), flips)


def small_source(reference, n):
  examples = [
    {"image": builders.png_bytes(image), "label": int(label)} for image, label in zip(*reference, strict=True)
  ]
  return pipeline.ImageSource(examples[:n], (28, 28, 1))


@pytest.mark.parametrize("worker_count", [0, 2])
def test_set_state_resumes_exactly_across_epochs(reference, worker_count):
  source = small_source(reference, 100)
  args = dict(
    batch_size_per_process=16, shuffle=True, num_epochs=None, image_size=32, random_flip=True, seed=5
  )
  iterator = iter(make(source, worker_count=worker_count, **args))
  take(iterator, 3)
  state = iterator.get_state()
  expected = take(iterator, 12)  # Crosses two epoch boundaries (6 batches of 16 per epoch).
  resumed = iter(make(source, worker_count=worker_count, **args))
  resumed.set_state(state)
  assert_same_batches(take(resumed, 12), expected)


def test_orbax_checkpoint_manager_restores_the_iterator(test_source, tmp_path):
  args = dict(batch_size_per_process=32, shuffle=True, num_epochs=None, image_size=32, random_flip=True)
  iterator = iter(make(test_source, **args))
  take(iterator, 4)
  step = np.array(4)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(
      4,
      args=ocp.args.Composite(
        step=ocp.args.StandardSave(step), data=grain.checkpoint.CheckpointSave(iterator)
      ),
    )
    manager.wait_until_finished()
  expected = take(iterator, 5)
  fresh = iter(make(test_source, **args))
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    restored = manager.restore(
      manager.latest_step(),
      args=ocp.args.Composite(
        step=ocp.args.StandardRestore(step), data=grain.checkpoint.CheckpointRestore(fresh)
      ),
    )
  assert restored["step"] == 4
  assert_same_batches(take(restored["data"], 5), expected)


def test_iterator_state_of_a_whole_source_restores_only_into_the_same_source(reference):
  """Grain checks repr(source) on restore: a whole source prints no record range (its state as saved before
  sources had ranges still restores), a shard prints its range, so one shard's state is refused by another."""
  source = small_source(reference, 10)
  assert repr(source) == "ImageSource(list of 10, image_shape=(28, 28, 1))"
  assert repr(source.shard(1, 2)) == "ImageSource(list of 10, image_shape=(28, 28, 1), records [5, 10))"
  args = dict(batch_size_per_process=2, shuffle=True, num_epochs=None, image_size=32, seed=1)
  iterator = iter(make(source, **args))
  take(iterator, 2)
  state = iterator.get_state()
  assert b'"data_source": "ImageSource(list of 10, image_shape=(28, 28, 1))"' in state
  expected = take(iterator, 3)
  resumed = iter(make(small_source(reference, 10), **args))
  resumed.set_state(state)
  assert_same_batches(take(resumed, 3), expected)
  with pytest.raises(ValueError, match="does not match"):
    iter(make(source.shard(0, 2), **args)).set_state(state)


def bad_source(reference):
  """Eight good examples (record keys 0, 1, 3, 5, 6, 8, 9, 10) and three bad ones (2, 4, 7)."""
  good = small_source(reference, 8).examples
  png = good[0]["image"]
  bad = [
    {"image": b"not an image", "label": 0},
    {"image": png[: len(png) // 2], "label": 0},  # A truncated PNG.
    {"image": np.zeros((27, 28), np.uint8), "label": 0},  # Decodes, but has the wrong shape.
  ]
  return pipeline.ImageSource(
    [*good[:2], bad[0], good[2], bad[1], *good[3:5], bad[2], *good[5:]], (28, 28, 1)
  )


@pytest.mark.parametrize("worker_count", [0, 1])
def test_bad_example_raises_with_its_record_key(reference, worker_count):
  with pytest.raises(ValueError, match="record_key 2: UnidentifiedImageError"):
    list(make(bad_source(reference), batch_size_per_process=4, worker_count=worker_count))


@pytest.mark.parametrize("worker_count", [0, 1])
def test_skipped_examples_are_logged_and_never_batched(reference, tmp_path, worker_count):
  skip_log = pipeline.SkipLog(tmp_path / "skipped.tsv")
  loader = make(bad_source(reference), batch_size_per_process=4, worker_count=worker_count, skip_log=skip_log)
  images = np.concatenate([b["image"] for b in loader])
  np.testing.assert_allclose(images, scaled(reference[0][:8]), rtol=0, atol=1e-7)
  assert sorted(skip_log.record_keys()) == [2, 4, 7] and len(skip_log) == 3


def test_imagenet_shaped_mock_data_goes_through_the_same_pipeline(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    data = tfds.data_source("imagenet2012", split="train", data_dir=tmp_path)
    source = pipeline.ImageSource(data, (None, None, 3))
    (batch,) = list(
      make(source, batch_size_per_process=3, image_size=64, resize_mode="crop", random_flip=True)
    )[:1]
  assert batch["image"].shape == (3, 64, 64, 3) and batch["image"].dtype == np.float32
  assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
  assert batch["label"].dtype == np.int32 and np.all((batch["label"] >= 0) & (batch["label"] < 1000))


def test_imagenet_like_is_jpeg_of_varied_sizes_that_the_imagenet_path_decodes_and_crops(tmp_path):
  """The ``imagenet_like`` builder: imagenet2012's features, JPEG bytes of the rendered photos (lossy:
  close to the rendering), sizes varying within 200-500 px, labels the seed mod 1000; the training
  pipeline's crop path makes uint8 256 px batches of them."""
  from fsq.data import imagenet_like

  builder = builders.prepare("imagenet_like/tiny", tmp_path)
  features = builder.info.features
  assert features["image"].shape == (None, None, 3) and features["label"].num_classes == 1000
  assert "file_name" in features
  train, validation = (pipeline.tfds_source(builder, split) for split in ("train", "validation"))
  assert (len(train), len(validation)) == (12, 4)
  shapes = set()
  for k in (0, 5, 11):
    item = train[k]
    assert item["image"][:2] == b"\xff\xd8" and item["label"] == k  # JPEG's start-of-image marker
    decoded = pipeline.decode_image(item["image"], 3)
    rendered, label = imagenet_like.render_photo(k)
    assert decoded.shape == rendered.shape and label == k
    # JPEG drops the pixel grain (about 9 levels per pixel) but keeps 8x8 block means within 1 level.
    h, w = (side // 8 * 8 for side in rendered.shape[:2])
    blocks = [
      a[:h, :w].astype(np.float64).reshape(h // 8, 8, w // 8, 8, 3).mean((1, 3)) for a in (decoded, rendered)
    ]
    assert (
      np.abs(blocks[0] - blocks[1]).mean() < 1 and np.abs(decoded - rendered.astype(np.float64)).mean() < 12
    )
    assert all(200 <= side <= 500 for side in decoded.shape[:2])
    shapes.add(decoded.shape)
  assert len(shapes) == 3
  assert validation[0]["label"] == imagenet_like.VALIDATION_FIRST_SEED % 1000
  batch = next(
    iter(make(train, batch_size_per_process=4, image_size=256, resize_mode="crop", image_dtype="uint8"))
  )
  assert batch["image"].shape == (4, 256, 256, 3) and batch["image"].dtype == np.uint8


@pytest.fixture(scope="module")
def scenes_builder(tmp_path_factory):
  return builders.prepare("synthetic_scenes/tiny", tmp_path_factory.mktemp("scenes"))


def test_dense_maps_travel_with_their_image_through_flips(scenes_builder):
  dense = ("depth", "semantic", "instance")
  source = pipeline.tfds_source(scenes_builder, "train", dense)
  (plain,) = list(make(source, batch_size_per_process=8))
  (flipped,) = list(make(source, batch_size_per_process=8, random_flip=True))
  assert np.all(plain["label"] == -1) and plain["semantic"].dtype == np.int32
  for i in range(8):  # Unshuffled: row i is scene seed i of the train split.
    scene = scenes.render_scene(i, size=64)
    np.testing.assert_array_equal(plain["image"][i], (scene["image"].astype(np.float32) - 127.5) / 127.5)
    mirrored = not np.array_equal(flipped["image"][i], plain["image"][i])
    for name in dense:
      # Instance ids are renumbered by centre of mass after the flip (canonical_instances).
      same = canonical_instances if name == "instance" else np.asarray
      np.testing.assert_array_equal(plain[name][i], same(scene[name]))
      np.testing.assert_array_equal(flipped[name][i], same(scene[name][:, ::-1] if mirrored else scene[name]))
  with pytest.raises(ValueError, match=r"dense features \['normals'\] are not in synthetic_scenes"):
    pipeline.tfds_source(scenes_builder, "train", ("normals",))


def test_dense_maps_resize_by_nearest_neighbour_like_their_image():
  values = np.arange(32, dtype=np.int32).reshape(4, 8)
  # 'crop' to 8: the short side 4 -> 8 doubles every pixel (8 x 16), then the centre columns 4..11.
  rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
  np.testing.assert_array_equal(pipeline.resize_map(values, 8, "crop"), values[rows // 2, (cols + 4) // 2])
  padded = pipeline.resize_map(values, 10, "pad")
  assert padded.shape == (10, 10) and padded[3:7, 1:9].tolist() == values.tolist() and padded.sum() == 496


def test_a_dense_map_of_the_wrong_shape_is_a_bad_example():
  image = builders.png_bytes(np.zeros((4, 4), np.uint8))
  examples = [{"image": image, "depth": np.zeros((4, 4), np.float32)}] * 3
  examples.append({"image": image, "depth": np.zeros((3, 4), np.float32)})
  source = pipeline.ImageSource(examples, (4, 4, 1), ("depth",))
  with pytest.raises(
    ValueError, match=r"record_key 3: ValueError: depth must have the image's shape \(4, 4\)"
  ):
    list(make(source, batch_size_per_process=2))


def test_eval_batches_pad_the_shards_that_run_out_keeping_every_dense_field():
  from configs.autoencoder import get_config
  from fsq.train.data import InputPipeline

  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (10, 4, 4), np.uint8)
  examples = [{"image": builders.png_bytes(x), "depth": x.astype(np.float32)} for x in images]
  source = pipeline.ImageSource(examples, (4, 4, 1), ("depth",))
  config = get_config().data
  config.image_size, config.num_shards = 4, 4
  sharded = InputPipeline(config, 8, 0, sources=(source, source))
  batches = list(sharded.eval_batches())
  # 10 records over 4 contiguous shards of 2 rows per batch: records [0, 2), [2, 5), [5, 7), [7, 10), so
  # two batches, the second holding the last record of shards 1 and 3 and padding elsewhere.
  assert [b["mask"].tolist() for b in batches] == [[1] * 8, [0, 0, 1, 0, 0, 0, 1, 0]]
  valid = np.concatenate([b["depth"][b["mask"] == 1] for b in batches])
  assert sorted(map(bytes, valid.astype(np.uint8))) == sorted(map(bytes, images))
  np.testing.assert_array_equal(batches[1]["depth"][batches[1]["mask"] == 0], 0)
  # The first rows are not the split's first records, so cached references tell the orders apart.
  assert sharded.eval_order == "4 contiguous shards interleaved 2 rows at a time"
  config.num_shards = 1
  assert InputPipeline(config, 8, 0, sources=(source, source)).eval_order is None


def test_instance_ids_are_canonical_after_the_flip_whatever_order_the_objects_were_drawn_in():
  """A scene rendered twice, its things listed in opposite orders (so the ids differ), gives the same
  instance map, numbered by centre of mass after the random flip (big_vision's ``make_canonical``)."""
  scene = scenes.random_scene(3)
  drawn = [scenes.render(s, 32) for s in (scene, dataclasses.replace(scene, things=scene.things[::-1]))]
  assert len(scene.things) > 2 and not np.array_equal(drawn[0]["instance"], drawn[1]["instance"])
  np.testing.assert_array_equal(drawn[0]["image"], drawn[1]["image"])
  examples = [{"image": d["image"], "semantic": d["semantic"], "instance": d["instance"]} for d in drawn * 8]
  source = pipeline.ImageSource(examples, (32, 32, 3), ("semantic", "instance"))
  (batch,) = make(source, batch_size_per_process=16, random_flip=True, seed=1)
  image, instance = drawn[0]["image"], drawn[0]["instance"]
  flipped = [bool(np.array_equal(to_uint8(x), image[:, ::-1])) for x in batch["image"]]
  assert 0 < sum(flipped) < 16
  for got, flip in zip(batch["instance"], flipped, strict=True):
    layout = instance[:, ::-1] if flip else instance
    # The same partition into objects, renumbered 1..K by row then column of the centre of mass.
    rows, cols = np.indices(layout.shape)
    ids = [i for i in np.unique(layout) if i > 0]
    order = sorted(ids, key=lambda i: cols[layout == i].mean() + 32 * rows[layout == i].mean())
    expected = np.zeros_like(layout)
    for rank, i in enumerate(order):
      expected[layout == i] = rank + 1
    np.testing.assert_array_equal(got, expected)


def test_inception_boxes_lie_inside_and_follow_big_vision_ranges():
  rng = np.random.default_rng(0)
  areas = []
  for _ in range(300):
    height, width = rng.integers(20, 200, 2)
    top, left, h, w = pipeline.inception_box(height, width, rng)
    assert top >= 0 and top + h <= height and left >= 0 and left + w <= width
    if (h, w) != (height, width):  # not the fallback: the drawn area and aspect ratio, up to rounding
      assert 0.05 * height * width - h - w <= h * w <= height * width
      assert 3 / 4 * (h - 0.5) / (h + 0.5) <= w / h <= 4 / 3 * (w + 0.5) / (w - 0.5)
    areas.append(h * w / (height * width))
  assert min(areas) < 0.15 and max(areas) > 0.9
  # A box that can never fit (aspect ratios outside what a 1-pixel-high image allows) is the whole image.
  assert pipeline.inception_box(1, 50, rng, aspect_range=(0.9, 1.1), attempts=5) == (0, 0, 1, 50)


def test_inception_crops_cut_image_and_dense_maps_alike_and_only_in_training():
  """Images are a smooth ramp of the source row (and column); the depth map holds the source row and the
  semantic map the column. After the crop and the squash resize (bicubic for images, nearest for maps)
  the two agree within a source pixel, and the crop is a function of the seed."""
  rows, cols = np.mgrid[:60, :80]
  image = np.stack([rows * 4, cols * 3, np.zeros_like(rows)], -1).astype(np.uint8)  # 0..236, 0..237
  examples = [{"image": image, "depth": rows.astype(np.float32), "semantic": cols} for _ in range(8)]
  source = pipeline.ImageSource(examples, (60, 80, 3), ("depth", "semantic"))
  args = dict(batch_size_per_process=8, image_size=16, resize_mode="squash", random_crop="inception")
  (batch,) = make(source, **args)
  pixels = to_uint8(batch["image"]).astype(np.float64)
  np.testing.assert_allclose(pixels[..., 0] / 4, batch["depth"], atol=1.5)
  np.testing.assert_allclose(pixels[..., 1] / 3, batch["semantic"], atol=1.5)
  spans = batch["depth"].max(axis=(1, 2)) - batch["depth"].min(axis=(1, 2))
  assert spans.min() < 50  # cropped, not the whole 60 rows squashed
  (again,) = make(source, **args)
  assert_same_batches([batch], [again])
  with pytest.raises(ValueError, match="random_crop is out of range, got 'center'"):
    make(source, **{**args, "random_crop": "center"})

  from configs.autoencoder import get_config
  from fsq.train.data import InputPipeline

  config = get_config().data
  config.image_size, config.resize_mode, config.channels, config.random_crop = 16, "squash", 3, "inception"
  inputs = InputPipeline(config, 8, 0, sources=(source, source))
  evaluation = next(inputs.eval_batches())["depth"]
  assert np.all(evaluation.max(axis=(1, 2)) - evaluation.min(axis=(1, 2)) >= 55)  # the whole image
  train = next(inputs.train_iterator())["depth"]
  assert (train.max(axis=(1, 2)) - train.min(axis=(1, 2))).min() < 50


def test_batch_spec_describes_the_batches_the_pipeline_makes():
  """``batch_spec`` (shapes for ahead-of-time compiles) against real training and evaluation batches."""
  from configs.autoencoder import get_config
  from fsq.train.data import InputPipeline, batch_spec

  rng = np.random.default_rng(0)
  maps = {"depth": np.float32, "semantic": np.int32, "instance": np.int32}
  examples = [
    {"image": rng.integers(0, 256, (6, 6, 3), np.uint8), **{k: np.ones((6, 6), t) for k, t in maps.items()}}
    for _ in range(8)
  ]
  source = pipeline.ImageSource(examples, (6, 6, 3), tuple(maps))
  config = get_config().data
  config.image_size, config.channels, config.dense, config.resize_mode = 4, 3, tuple(maps), "crop"
  inputs = InputPipeline(config, 4, 0, sources=(source, source))
  for batch, eval_batch in ((next(inputs.train_iterator()), False), (next(inputs.eval_batches()), True)):
    spec = batch_spec(config, 4, eval_batch)
    assert {k: (v.shape, np.dtype(v.dtype)) for k, v in batch.items()} == {
      k: (s.shape, np.dtype(s.dtype)) for k, s in spec.items()
    }
  config.dense = ("normals",)
  with pytest.raises(ValueError, match=r"config.data.dense names 'normals'; the dense maps are"):
    batch_spec(config, 4)


def test_uint8_batches_carry_the_pixels_and_the_device_scales_them_as_the_host_would(test_source, reference):
  """Training batches leave the host as uint8 (4x fewer bytes to the device); ``device_images``, run in
  the jitted train step, gives the float32 images of the host's scaling (float64 numpy reference)."""
  import jax

  from fsq.train.data import device_images

  def first(image_dtype):
    return next(iter(make(test_source, image_dtype=image_dtype)))

  pixels, scaled = first("uint8"), first("float32")
  assert pixels["image"].dtype == np.uint8 and pixels["image"].nbytes * 4 == scaled["image"].nbytes
  np.testing.assert_array_equal(pixels["image"], reference[0][: len(pixels["image"])])
  on_device = jax.jit(device_images)(pixels)
  expected = (pixels["image"].astype(np.float64) - 127.5) / 127.5
  np.testing.assert_allclose(np.asarray(on_device["image"]), expected, rtol=0, atol=1e-7)
  np.testing.assert_allclose(scaled["image"], expected, rtol=0, atol=1e-7)
  np.testing.assert_array_equal(on_device["label"], pixels["label"])
  assert device_images(scaled) is scaled  # evaluation batches are float already
  with pytest.raises(ValueError, match=r"image_dtype is out of range, got 'float16'"):
    make(test_source, image_dtype="float16")
