"""big_vision ViT checkpoints: written here in big_vision's old and current layouts, read back into ViT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fsq.models.vit import ViT
from fsq.models.vit_checkpoint import read_vit_npz, vit_params_from_checkpoint
from tests.helpers import flat_params

# big_vision's pre-Linen block layout (the "How to train your ViT" checkpoints): one counter across classes.
OLD_BLOCK_NAMES = {
  "LayerNorm_0": "LayerNorm_0",
  "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
  "LayerNorm_1": "LayerNorm_2",
  "MlpBlock_0": "MlpBlock_3",
}


def _vit_params(image_size, seed=0):
  model = ViT(width=8, depth=2, num_heads=2, mlp_dim=16, patch_size=4)
  images = jnp.zeros((1, image_size, image_size, 3))
  return jax.device_get(jax.jit(model.init)(jax.random.key(seed), images)["params"])


def _write_old_layout(path, params, cls_posemb):
  """``params`` as big_vision's old checkpoints store them: pre-Linen block names, the position
  embedding in Transformer/posembed_input with the class token's slot first, plus cls and a head."""
  flat = {}
  for key, value in flat_params(params).items():
    parts = key.split("/")
    if parts[0] == "Transformer" and parts[1].startswith("encoderblock_"):
      parts[2] = OLD_BLOCK_NAMES[parts[2]]
    flat["/".join(parts)] = value
  posemb = flat.pop("pos_embedding")
  flat["Transformer/posembed_input/pos_embedding"] = np.concatenate([cls_posemb, posemb], axis=1)
  flat["cls"] = np.ones((1, 1, 8), np.float32)
  flat["head/kernel"], flat["head/bias"] = np.ones((8, 5), np.float32), np.zeros(5, np.float32)
  np.savez(path, **flat)


def test_an_old_layout_checkpoint_loads_into_vit_exactly(tmp_path):
  params = _vit_params(16)
  _write_old_layout(tmp_path / "old.npz", params, np.full((1, 1, 8), 7.0, np.float32))
  loaded = vit_params_from_checkpoint(tmp_path / "old.npz", jax.eval_shape(lambda: params))
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params), strict=True):
    np.testing.assert_array_equal(a, b)
  assert "cls" not in read_vit_npz(tmp_path / "old.npz")


def test_position_embeddings_are_resampled_bilinearly_to_a_larger_grid(tmp_path):
  """A linear function of the grid position is reproduced exactly by corner-aligned bilinear resampling:
  a 4x4 grid of a * row + b * col becomes the 8x8 grid of the same function at rows r * 3/7."""
  small, large = _vit_params(16), _vit_params(32, seed=1)
  rows, cols = np.mgrid[:4, :4]
  a, b = np.linspace(1, 2, 8), np.linspace(-1, 0.5, 8)
  small["pos_embedding"] = (rows.reshape(1, 16, 1) * a + cols.reshape(1, 16, 1) * b).astype(np.float32)
  np.savez(tmp_path / "new.npz", **flat_params(small))
  loaded = vit_params_from_checkpoint(tmp_path / "new.npz", jax.eval_shape(lambda: large))
  rows, cols = np.mgrid[:8, :8] * 3 / 7
  expected = rows.reshape(1, 64, 1) * a + cols.reshape(1, 64, 1) * b
  np.testing.assert_allclose(loaded["pos_embedding"], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(loaded["embedding"]["kernel"], small["embedding"]["kernel"])


def test_a_checkpoint_that_does_not_fit_names_each_parameter(tmp_path):
  params = _vit_params(16)
  flat = flat_params(params)
  del flat["Transformer/encoder_norm/scale"]
  flat["embedding/kernel"] = np.zeros((4, 4, 1, 8), np.float32)
  np.savez(tmp_path / "bad.npz", **flat)
  with pytest.raises(ValueError) as error:
    vit_params_from_checkpoint(tmp_path / "bad.npz", jax.eval_shape(lambda: params))
  assert "Transformer/encoder_norm/scale: missing" in str(error.value)
  assert "embedding/kernel: shape (4, 4, 1, 8) in the checkpoint, (4, 4, 3, 8) here" in str(error.value)
  with pytest.raises(FileNotFoundError, match=r"nowhere\.npz does not exist"):
    read_vit_npz(tmp_path / "nowhere.npz")
