"""Real Fashion-MNIST from local idx files, verified by sha256 of their decompressed bytes.

The default folder is where the Debian package ``dataset-fashion-mnist`` puts the four files
(``apt-get install dataset-fashion-mnist``); any folder with the same four files (gzipped or not, as
distributed by Zalando) works. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install dataset-fashion-mnist"

# sha256 of the decompressed idx files (identical for Zalando's and Debian's archives).
FILES = {
  ("train", "images"): (
    "train-images-idx3-ubyte",
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
  ),
  ("train", "labels"): (
    "train-labels-idx1-ubyte",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
  ),
  ("test", "images"): (
    "t10k-images-idx3-ubyte",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
  ),
  ("test", "labels"): (
    "t10k-labels-idx1-ubyte",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
  ),
}
CLASS_NAMES = (
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
)

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, name: str = "idx data") -> np.ndarray:
  """Parses the bytes of an idx file (LeCun's MNIST format) into an array of its shape and dtype."""
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
    raise ValueError(f"{name} is not an idx file: header {data[:4].hex()}")
  ndim = data[3]
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"{name} is truncated: {len(data)} bytes, header needs {header}")
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  dtype = np.dtype(_DTYPES[data[2]])
  expected = header + int(np.prod(shape)) * dtype.itemsize
  if len(data) != expected:
    raise ValueError(f"{name} has {len(data)} bytes, its header {shape} needs {expected}")
  return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_file(folder: Path, stem: str) -> Path:
  for candidate in (folder / f"{stem}.gz", folder / stem):
    if candidate.exists():
      return candidate
  raise FileNotFoundError(
    f"Fashion-MNIST file {stem}(.gz) not found in {folder}; install it with `{INSTALL_HINT}` "
    "or pass the folder holding the four idx files"
  )


def read_verified(path: Path, sha256: str) -> bytes:
  """The decompressed bytes of path, checked against sha256."""
  raw = path.read_bytes()
  data = gzip.decompress(raw) if path.suffix == ".gz" else raw
  digest = hashlib.sha256(data).hexdigest()
  if digest != sha256:
    raise ValueError(f"{path} has sha256 {digest} after decompression, expected {sha256}")
  return data


def load(split: str, folder: Path | str = DEFAULT_DIR) -> tuple[np.ndarray, np.ndarray]:
  """Images (n, 28, 28) uint8 and labels (n,) uint8 of split 'train' (60k) or 'test' (10k)."""
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  folder = Path(folder)
  out = []
  for kind in ("images", "labels"):
    stem, sha = FILES[(split, kind)]
    path = find_file(folder, stem)
    out.append(parse_idx(read_verified(path, sha), str(path)))
  images, labels = out
  if images.shape[0] != labels.shape[0]:
    raise ValueError(f"{split}: {images.shape[0]} images but {labels.shape[0]} labels")
  return images, labels
