"""big_vision ViT checkpoints (``.npz``) as parameters of ``fsq.models.vit.ViT``.

big_vision saves parameters flat, one array per ``/``-joined path. UViM initialises its stage II image
encoder from the "How to train your ViT" ImageNet-21k ViT-L/16 (big_vision's ``howto-i21k-L/16``), a
checkpoint of the older layout, which ``read_vit_npz`` brings to the current one as big_vision's
``vit.load`` does:

* pre-Linen names: submodules were numbered across classes (``LayerNorm_0``,
  ``MultiHeadDotProductAttention_1``, ``LayerNorm_2``, ``MlpBlock_3``); Linen numbers them per class
  (``LayerNorm_0``, ``MultiHeadDotProductAttention_0``, ``LayerNorm_1``, ``MlpBlock_0``), as
  ``fsq.models.vit`` names them;
* the position embedding lived in ``Transformer/posembed_input`` (or ``Transformer``); it is moved to the
  top level;
* it had a slot for the class token (``1 + g * g`` rows); ``ViT`` has no class token, so the slot is
  dropped, with the ``cls`` and ``head`` parameters (UViM drops them too).

``vit_params_from_checkpoint`` then fits the result to a model's parameters: the position-embedding grid
is resampled bilinearly (corner-aligned, as big_vision's ``resample_posemb`` with
``scipy.ndimage.zoom(order=1)``) when the image or patch grid differs, and every other array must match
the model's shape. The file is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import collections
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage

from fsq.files import run_path

DROPPED = ("cls", "head", "pre_logits")


def _linen_names(tree: dict[str, Any]) -> dict[str, Any]:
  """Renumbers pre-Linen submodule names ``Class_i`` per class, in the order of their global index."""
  numbered = collections.defaultdict(list)
  for name in tree:
    match = re.fullmatch(r"(.+)_(\d+)", name)
    if match and isinstance(tree[name], dict) and not name.startswith("encoderblock_"):
      numbered[match[1]].append((int(match[2]), name))
  renamed = {}
  for cls, entries in numbered.items():
    for new_index, (_, name) in enumerate(sorted(entries)):
      renamed[name] = f"{cls}_{new_index}"
  return {
    renamed.get(name, name): _linen_names(value) if isinstance(value, dict) else value
    for name, value in tree.items()
  }


def read_vit_npz(path: str | Path) -> dict[str, Any]:
  """A big_vision ViT ``.npz`` -> nested dict of numpy arrays in ``fsq.models.vit.ViT``'s layout
  (``embedding``, ``pos_embedding`` (1, g * g, width), ``Transformer``), without class token or head."""
  path = run_path(os.path.expanduser(path), "ViT checkpoint")  # big_vision's live in gs:// buckets
  if not path.is_file():
    raise FileNotFoundError(f"ViT checkpoint {path} does not exist")
  tree: dict[str, Any] = {}
  with path.open("rb") as f, np.load(f, allow_pickle=False) as flat:
    for key in flat.files:
      *parents, leaf = key.split("/")
      node = tree
      for parent in parents:
        node = node.setdefault(parent, {})
      node[leaf] = flat[key]
  for name in DROPPED:
    tree.pop(name, None)
  tree = _linen_names(tree)
  transformer = tree.get("Transformer", {})
  if "posembed_input" in transformer:
    tree["pos_embedding"] = transformer.pop("posembed_input")["pos_embedding"]
  elif "pos_embedding" in transformer:
    tree["pos_embedding"] = transformer.pop("pos_embedding")
  if "pos_embedding" in tree:
    posemb = tree["pos_embedding"]
    side = int(np.sqrt(posemb.shape[1]))
    if side * side + 1 == posemb.shape[1]:  # the class token's slot comes first
      tree["pos_embedding"] = posemb[:, 1:]
  return tree


def resample_pos_embedding(posemb: np.ndarray, num_tokens: int) -> np.ndarray:
  """(1, g * g, width) -> (1, num_tokens, width), num_tokens = n * n: bilinear, corner-aligned."""
  old, new = int(np.sqrt(posemb.shape[1])), int(np.sqrt(num_tokens))
  if old * old != posemb.shape[1] or new * new != num_tokens:
    raise ValueError(f"position embeddings need square grids, got {posemb.shape[1]} -> {num_tokens} tokens")
  if old == new:
    return posemb
  grid = posemb.reshape(old, old, -1).astype(np.float64)
  grid = scipy.ndimage.zoom(grid, (new / old, new / old, 1), order=1)
  return grid.reshape(1, num_tokens, -1).astype(posemb.dtype)


def vit_params_from_checkpoint(path: str | Path, target: Any) -> dict[str, Any]:
  """The checkpoint at ``path`` as a tree with ``target``'s structure, shapes and dtypes.

  Args:
    path: a big_vision ViT ``.npz``.
    target: the model's ViT parameters (arrays or ``jax.ShapeDtypeStruct``), e.g. the ``encoder`` subtree
      of ``jax.eval_shape`` of the model's init.

  Raises a ValueError naming every parameter that is missing from the checkpoint or has another shape.
  """
  loaded = read_vit_npz(path)
  if "pos_embedding" in target and "pos_embedding" in loaded:
    loaded["pos_embedding"] = resample_pos_embedding(
      loaded["pos_embedding"], target["pos_embedding"].shape[1]
    )
  problems: list[str] = []

  def fit(target_node, loaded_node, prefix):
    out = {}
    for name, value in target_node.items():
      key = f"{prefix}{name}"
      if not isinstance(loaded_node, dict) or name not in loaded_node:
        problems.append(f"{key}: missing")
      elif isinstance(value, dict):
        out[name] = fit(value, loaded_node[name], f"{key}/")
      elif np.shape(loaded_node[name]) != tuple(value.shape):
        problems.append(
          f"{key}: shape {np.shape(loaded_node[name])} in the checkpoint, {tuple(value.shape)} here"
        )
      else:
        out[name] = np.asarray(loaded_node[name], value.dtype)
    return out

  params = fit(dict(target), loaded, "")
  if problems:
    raise ValueError(f"ViT checkpoint {path} does not fit the model: " + "; ".join(problems))
  return params
