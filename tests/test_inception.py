"""FID's InceptionV3 in Flax: equal to the TorchScript original (stored reference and, with torch, live),
the shapes, and the restricted reader of TorchScript archives refusing foreign globals."""

import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsq import weights
from fsq.evals import inception
from scripts import fetch_weights

REFERENCE = Path(__file__).parent / "data" / "inception_reference.npz"
# relative tolerance on each (2048,) feature vector, ||ours - torch|| / ||torch|| (measured: 2e-5 at most)
RTOL = 1e-4


def _assert_close(ours, theirs) -> None:
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert ours.shape == theirs.shape
  error = np.linalg.norm(ours - theirs, axis=-1) / np.linalg.norm(theirs, axis=-1)
  assert error.max() < RTOL, f"relative errors {error}"
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=RTOL * np.abs(theirs).max())


@pytest.fixture(scope="module")
def params():
  try:
    return inception.inception_params()
  except FileNotFoundError as e:
    pytest.skip(f"no Inception weights ({e})")


@pytest.fixture(scope="module")
def features():
  return jax.jit(inception.features)


def test_matches_the_stored_torchscript_reference(params, features):
  with np.load(REFERENCE, allow_pickle=False) as data:
    reference = {k: data[k] for k in data.files}
  assert str(reference["archive_sha256"]) == fetch_weights.INCEPTION_MEMBER[1]
  for i in range(3):
    images = reference[f"pixels_{i}"].astype(np.float32) / 127.5 - 1
    _assert_close(features(params, images)["pool"], reference[f"pool_{i}"])


def test_matches_torchscript_live(params, features):
  torch = pytest.importorskip("torch")
  from scripts import make_inception_reference

  path = fetch_weights.inception_archive_path()
  if not path.exists():
    pytest.skip(f"{path} is missing; `python -m scripts.fetch_weights inception_fid` keeps it")
  archive = path.read_bytes()
  assert hashlib.sha256(archive).hexdigest() == fetch_weights.INCEPTION_MEMBER[1]
  torch.set_num_threads(2)
  model = make_inception_reference.load_torchscript(archive)
  images = np.random.default_rng(7).uniform(-1.1, 1.1, (2, 40, 56, 3)).astype(np.float32)  # out of range too
  _assert_close(features(params, images)["pool"], make_inception_reference.torch_features(model, images))


def test_shapes():
  images = jax.ShapeDtypeStruct((5, inception.SIZE, inception.SIZE, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: inception.InceptionV3().init(jax.random.key(0), x), images)["params"]
  assert shapes["mixed_10"]["tower_2_conv"]["kernel"].shape == (1, 1, 2048, 192)
  assert shapes["mixed_4"]["tower_1"]["conv_4"]["kernel"].shape == (1, 7, 128, 192)
  out = jax.eval_shape(inception.features, shapes, images)
  assert out["pool"].shape == (5, 2048) and out["pool"].dtype == jnp.float32
  small = jax.ShapeDtypeStruct((2, 32, 24, 3), jnp.float32)
  assert jax.eval_shape(inception.preprocess, small).shape == (2, inception.SIZE, inception.SIZE, 3)
  assert jax.eval_shape(inception.features, shapes, small)["pool"].shape == (2, 2048)


def test_params_cover_the_weights_file():
  path = weights.path_of("inception_fid")
  if not path.exists():
    pytest.skip(f"{path} is missing")
  arrays = weights.load("inception_fid")
  assert len(arrays) == 4 * 94 and sum(a.size for a in arrays.values()) == 21_802_784
  images = jax.ShapeDtypeStruct((1, inception.SIZE, inception.SIZE, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: inception.InceptionV3().init(jax.random.key(0), x), images)["params"]
  ours = inception.inception_params(arrays)
  chex.assert_trees_all_equal_shapes(ours, shapes)


def test_resize_is_tf1_bilinear():
  matrix = inception._resize_matrix(4, 6)  # output j samples input j * 4 / 6, edge clamped
  src = np.arange(6) * 4 / 6
  np.testing.assert_allclose(matrix @ np.arange(4.0), np.minimum(src, 3), atol=1e-6)
  np.testing.assert_allclose(matrix.sum(axis=1), 1, atol=1e-6)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 7, 5, 3)), jnp.float32)
  assert inception.resize(x[:, :, :, :], 7).shape == (2, 7, 7, 3)
  same = jnp.asarray(np.random.default_rng(0).uniform(size=(1, 9, 9, 3)), jnp.float32)
  np.testing.assert_array_equal(inception.resize(same, 9), same)


EVIL = b"cos\nsystem\n(S'echo pwned'\ntR."  # protocol 0: os.system("echo pwned")


def test_reader_refuses_foreign_globals(capfd):
  with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle os\.system"):
    fetch_weights.TorchScriptUnpickler(io.BytesIO(EVIL), lambda key: b"").load()
  archive = io.BytesIO()
  with zipfile.ZipFile(archive, "w") as zf:
    zf.writestr("evil/data.pkl", EVIL)
  with pytest.raises(pickle.UnpicklingError, match="refusing"):
    fetch_weights.read_torchscript(archive.getvalue())
  for module, name in [("builtins", "eval"), ("torch", "load"), ("numpy", "load"), ("__torch__.x", "a.b")]:
    evil = pickle.dumps(0).replace(b"K\x00", f"c{module}\n{name}\n".encode())
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
      fetch_weights.TorchScriptUnpickler(io.BytesIO(evil), lambda key: b"").load()
  assert "pwned" not in capfd.readouterr().out


def test_reader_reads_a_torchscript_archive():
  torch = pytest.importorskip("torch")

  class Small(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.lin = torch.nn.Linear(3, 4)
      self.register_buffer("transposed", torch.arange(12.0).reshape(3, 4).t())  # non-contiguous
      self.float64 = torch.nn.Parameter(torch.randn(2, 3, dtype=torch.float64))

    def forward(self, x):
      return self.lin(x)

  buffer = io.BytesIO()
  torch.jit.save(torch.jit.script(Small()), buffer)
  arrays = fetch_weights.module_arrays(fetch_weights.read_torchscript(buffer.getvalue()))
  expected = torch.jit.load(io.BytesIO(buffer.getvalue())).state_dict()
  assert set(arrays) == {k.replace(".", "/") for k in expected}
  for name, tensor in expected.items():
    np.testing.assert_array_equal(arrays[name.replace(".", "/")], tensor.numpy())
    assert arrays[name.replace(".", "/")].dtype == tensor.numpy().dtype
