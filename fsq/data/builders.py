"""TFDS builders that prepare from local files, and `prepare` for any builder without downloading.

`FashionMnistLocal` (registered as ``fashion_mnist_local``) writes real Fashion-MNIST, read and
sha256-verified by `fsq.data.fashion_mnist`, to array_record files that `tfds.data_source` reads by
random access. Records keep the order of the idx files: record k of a split is image k there.
Building needs neither TensorFlow nor a network (about 8 s and 42 MB on a 2-core machine).
`scenes_builder.SyntheticScenes` (``synthetic_scenes``, rendered scenes) and `imagenet_like.ImagenetLike`
(``imagenet_like``, rendered JPEGs shaped as ImageNet) are registered here too.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from fsq.data import fashion_mnist, imagenet_like, scenes_builder

FILE_FORMAT = "array_record"


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST (60k train, 10k test, 28x28 grey, 10 classes) from local idx files.

  The files come from the builder's ``manual_dir`` when it holds files (any folder with the four idx
  files, gzipped or not), else from `fashion_mnist.DEFAULT_DIR` (Debian's ``dataset-fashion-mnist``).
  """

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
    f"Install the files with `{fashion_mnist.INSTALL_HINT}` (used by default), or pass manual_dir: "
    "a folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte (each optionally .gz)."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description="Fashion-MNIST (Xiao et al., 2017): 28x28 grey images of 10 kinds of clothing.",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(28, 28, 1), dtype=np.uint8, encoding_format="png"),
          "label": tfds.features.ClassLabel(names=fashion_mnist.CLASS_NAMES),
        }
      ),
      supervised_keys=("image", "label"),
      disable_shuffling=True,
      homepage="https://github.com/zalandoresearch/fashion-mnist",
      license="MIT",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    try:
      folder = dl_manager.manual_dir
    except AssertionError:  # TFDS's way of saying that manual_dir is unset, missing or empty.
      folder = fashion_mnist.DEFAULT_DIR
    return {split: self._generate_examples(split, Path(folder)) for split in ("train", "test")}

  def _generate_examples(self, split: str, folder: Path):
    images, labels = fashion_mnist.load(split, folder)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
      yield index, {"image": png_bytes(image), "label": int(label)}


def png_bytes(image: np.ndarray) -> bytes:
  """PNG encoding of a uint8 image (H, W) or (H, W, 1); TFDS cannot encode numpy arrays without TF."""
  buffer = io.BytesIO()
  Image.fromarray(image.reshape(image.shape[:2])).save(buffer, format="PNG")
  return buffer.getvalue()


# The datasets that `prepare` builds itself (the others must be prepared beforehand).
BUILT_HERE = (FashionMnistLocal.name, scenes_builder.SyntheticScenes.name, imagenet_like.ImagenetLike.name)


def prepare(
  name: str, data_dir: str | Path, manual_dir: str | Path | None = None
) -> tfds.core.DatasetBuilder:
  """The builder of dataset `name` in `data_dir`, prepared as array_record; never downloads.

  ``fashion_mnist_local`` is built on the first call (from `manual_dir`, default
  `fashion_mnist.DEFAULT_DIR`) and reused afterwards, and so are ``synthetic_scenes`` (any config, e.g.
  ``synthetic_scenes/128``) and ``imagenet_like``. Any other registered TFDS name (e.g. ``imagenet2012`` or
  ``imagenet2012:5.1.0``) must already be prepared in `data_dir` in array_record format; otherwise
  this raises ValueError saying how to prepare it. In a multi-process job, call this on one process
  first (or prepare before the job) so that processes do not build concurrently.
  """
  if manual_dir is not None and not Path(manual_dir).is_dir():
    raise ValueError(f"manual_dir must be an existing folder, got {str(manual_dir)!r}")
  builder = tfds.builder(name, data_dir=data_dir)
  if not builder.is_prepared():
    if builder.name not in BUILT_HERE:
      raise ValueError(
        f"dataset {name!r} is not prepared in data_dir {str(data_dir)!r}, and this code never downloads. "
        f"Prepare it once with `tfds build {name} --data_dir={data_dir} --file_format={FILE_FORMAT}` "
        "(the tfds CLI needs TensorFlow; add --manual_dir=FOLDER for datasets such as imagenet2012 "
        "whose files you download yourself)."
      )
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(file_format=FILE_FORMAT, download_config=config)
  if FILE_FORMAT not in {f.value for f in builder.info.available_file_formats()}:
    raise ValueError(
      f"dataset {name!r} in {str(data_dir)!r} is stored as {builder.info.file_format.value}, "
      f"random access needs {FILE_FORMAT}: rebuild it with --file_format={FILE_FORMAT}"
    )
  return builder
