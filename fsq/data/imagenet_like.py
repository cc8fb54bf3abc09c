"""TFDS builder ``imagenet_like``: a dataset shaped as ``imagenet2012`` (JPEG photos of varied sizes, 1000
classes, ``train`` and ``validation``), rendered here, so that ImageNet's input path (JPEG decode, crop,
resize) runs and is measured on a machine without ImageNet.

Build it with ``builders.prepare("imagenet_like", data_dir)`` (config ``small``: 2000 train and 500
validation images) or ``imagenet_like/tiny`` (tests). Image k of a split is ``render_photo(seed)`` with
seed k (train) or `VALIDATION_FIRST_SEED` + k: a smooth field of class-coloured blobs with texture at
three scales and grain, between 200 and 500 pixels on each side, encoded as JPEG at quality 90 (about
0.45 bytes per pixel; 34 ms to render and encode one on a 2-core EPYC). Its label is the seed's class,
k mod 1000, so every class has images. Features are ``imagenet2012``'s (``image``, ``label``,
``file_name``), so a config that reads one reads the other. Building needs neither TensorFlow nor a
network. The data are a function of the renderer: bump `ImagenetLike.VERSION` whenever ``render_photo``
changes.
"""

from __future__ import annotations

import dataclasses
import io
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

NUM_CLASSES = 1000
VALIDATION_FIRST_SEED = 10_000_000
SIDES = (200, 500)  # each side uniform in this range, inclusive


def render_photo(seed: int) -> tuple[np.ndarray, int]:
  """A uint8 (H, W, 3) image and its label (seed mod 1000): colours of the label's palette mixed by a
  field upsampled from 4x4, with texture from 32x32 and 128x128 noise and fine grain."""
  label = seed % NUM_CLASSES
  rng = np.random.default_rng(seed)
  height, width = (int(s) for s in rng.integers(SIDES[0], SIDES[1] + 1, 2))
  palette = np.random.default_rng(label).integers(0, 256, (3, 3)).astype(np.float32)  # 3 colours per class

  def field(cells: int, channels: int) -> np.ndarray:
    small = rng.random((cells, cells, channels), dtype=np.float32)
    layers = [
      np.asarray(Image.fromarray(small[..., c]).resize((width, height), Image.Resampling.BICUBIC))
      for c in range(channels)
    ]
    return np.stack(layers, -1)

  weights = np.exp(4 * field(4, 3))
  image = (weights / weights.sum(-1, keepdims=True)) @ palette
  image += 50 * (field(32, 1) - 0.5) + 40 * (field(128, 3) - 0.5)
  image += rng.normal(0, 12, image.shape).astype(np.float32)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


@dataclasses.dataclass(eq=False)
class ImagenetLikeConfig(tfds.core.BuilderConfig):
  num_train: int = 2000
  num_validation: int = 500


class ImagenetLike(tfds.core.GeneratorBasedBuilder):
  """ImageNet-shaped rendered JPEGs (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
    ImagenetLikeConfig(name="small", description="2000 train and 500 validation images."),
    ImagenetLikeConfig(name="tiny", num_train=12, num_validation=4, description="12 train, 4 validation."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description="Rendered JPEG photos shaped as imagenet2012 (varied sizes, 1000 classes).",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8, encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
          "file_name": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "label"),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    del dl_manager  # Nothing to download or read.
    config = self.builder_config
    return {
      "train": self._generate_examples(range(config.num_train)),
      "validation": self._generate_examples(
        range(VALIDATION_FIRST_SEED, VALIDATION_FIRST_SEED + config.num_validation)
      ),
    }

  def _generate_examples(self, seeds: range):
    for seed in seeds:
      image, label = render_photo(seed)
      yield seed, {"image": jpeg_bytes(image), "label": label, "file_name": f"render_{seed:08d}.JPEG"}
