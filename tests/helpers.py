"""Helpers shared by the tests."""

import functools
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np

from fsq.evals import inception
from fsq.evals.features import to_inception_input
from fsq.tasks.validate import validate_config


def patched(config: ml_collections.ConfigDict, overrides: Mapping[str, object]) -> ml_collections.ConfigDict:
  """``config`` with each dotted FIELD of ``overrides`` (e.g. 'model.filters') set to its value, validated."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  validate_config(config)
  return config


@functools.cache
def _inception():
  """The pretrained Inception parameters on the default device and the jitted pool3 features."""
  params = jax.device_put(inception.inception_params(), jax.devices()[0])
  return params, jax.jit(lambda p, x: inception.features(p, to_inception_input(x))["pool"])


def inception_pool(images: np.ndarray) -> np.ndarray:
  """(B, H, W, C) images in [-1, 1] -> (B, 2048) float64 pool3 features of the pretrained network, applied
  directly on one device: the reference for the sharded, batched FeatureExtractor."""
  params, features = _inception()
  return np.asarray(features(params, np.asarray(images)), np.float64)


def flat_params(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
  """A parameter tree as big_vision saves it: one array per "/"-joined path."""
  out = {}
  for name, value in tree.items():
    if isinstance(value, dict):
      out.update(flat_params(value, f"{prefix}{name}/"))
    else:
      out[f"{prefix}{name}"] = np.asarray(value)
  return out
