"""TFDS builder ``synthetic_scenes``: ray-cast scenes of `fsq.data.scenes` with depth and panoptic labels.

Build it with ``builders.prepare("synthetic_scenes", data_dir)`` (the default config, ``64``) or e.g.
``builders.prepare("synthetic_scenes/128", data_dir)``. Each example is `scenes.render_scene(seed, size)`
without its scene metadata, plus its seed: record k of ``train`` has seed k and record k of ``test`` has
seed `TEST_FIRST_SEED` + k, so the splits never share a scene. Building needs neither TensorFlow nor a
network. The data are a function of the renderer: bump `SyntheticScenes.VERSION` whenever the output of
`scenes.render_scene` changes.
"""

from __future__ import annotations

import dataclasses
import io
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from fsq.data import scenes

TEST_FIRST_SEED = 1_000_000


@dataclasses.dataclass(eq=False)
class ScenesConfig(tfds.core.BuilderConfig):
  """Square images of side `size` pixels; `num_train` and `num_test` examples in the two splits."""

  size: int = 64
  num_train: int = 5000
  num_test: int = 500


class SyntheticScenes(tfds.core.GeneratorBasedBuilder):
  """Synthetic scenes for monocular depth, panoptic segmentation and colorization (see `fsq.data.scenes`)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
    ScenesConfig(name="64", description="64x64 pixels, 5000 train and 500 test scenes."),
    ScenesConfig(name="128", size=128, description="128x128 pixels, 5000 train and 500 test scenes."),
    ScenesConfig(name="256", size=256, description="256x256 pixels, 5000 train and 500 test scenes."),
    ScenesConfig(name="tiny", num_train=8, num_test=4, description="64x64 pixels, 8 train, 4 test (tests)."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.size
    return tfds.core.DatasetInfo(
      builder=self,
      description=(
        "Synthetic 3-D scenes (floor, back wall, spheres, boxes, cylinders) ray cast with numpy: the image, "
        "z-depth in metres, semantic classes (0 floor, 1 wall, 2 sphere, 3 box, 4 cylinder) and instance "
        "ids (0 on stuff, 1..N on things)."
      ),
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(size, size, 3), dtype=np.uint8, encoding_format="png"),
          "depth": tfds.features.Tensor(shape=(size, size), dtype=np.float32, encoding="zlib"),
          "semantic": tfds.features.Tensor(shape=(size, size), dtype=np.int32, encoding="zlib"),
          "instance": tfds.features.Tensor(shape=(size, size), dtype=np.int32, encoding="zlib"),
          "seed": tfds.features.Scalar(dtype=np.int64),
        }
      ),
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    del dl_manager  # Nothing to download or read.
    config = self.builder_config
    if config.num_train > TEST_FIRST_SEED:
      raise ValueError(f"num_train must be at most {TEST_FIRST_SEED} for the splits to stay disjoint")
    return {
      "train": self._generate_examples(range(config.num_train)),
      "test": self._generate_examples(range(TEST_FIRST_SEED, TEST_FIRST_SEED + config.num_test)),
    }

  def _generate_examples(self, seeds: range):
    for seed in seeds:
      example = scenes.render_scene(seed, self.builder_config.size)
      yield (
        seed,
        {
          "image": _png_bytes(example["image"]),
          "depth": example["depth"],
          "semantic": example["semantic"],
          "instance": example["instance"],
          "seed": seed,
        },
      )


def _png_bytes(image: np.ndarray) -> bytes:
  """PNG encoding of a uint8 RGB image (H, W, 3); TFDS cannot encode numpy images without TensorFlow."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  return buffer.getvalue()
