"""Helpers shared by the tests."""

from collections.abc import Mapping

import ml_collections

from fsq.train.validate import validate_config


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
