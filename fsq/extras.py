"""Which optional dependencies ("extras") each part of fsq needs, and a clear error when one is missing.

The core install (``pip install fsq``: jax, flax, chex, numpy) gives the quantizers: ``fsq.quantizers``,
``fsq.layers``, ``fsq.nnx``, ``fsq.vq`` and ``fsq.metrics``, which import nothing else. The packages that
train and evaluate check their extra when they are first imported.
"""

from __future__ import annotations

import importlib.util

# extra -> the top-level modules it installs (import names, not distribution names)
EXTRAS = {
  "train": (
    "optax",
    "orbax",
    "tensorflow_datasets",
    "grain",
    "ml_collections",
    "tensorboardX",
    "absl",
    "PIL",
    "importlib_resources",
    "etils",
  ),
  "eval": ("scipy", "constriction", "matplotlib"),
}


def _installed(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ImportError:
    return False


def require(extra: str, package: str) -> None:
  """An ImportError naming ``extra`` and how to install it when one of its modules is missing;
  ``package`` is the importing package's name, for the message."""
  missing = [m for m in EXTRAS[extra] if not _installed(m)]
  if missing:
    raise ImportError(
      f"{package} needs fsq's [{extra}] extra, which is not installed (missing: {', '.join(missing)}): "
      f"pip install 'fsq[{extra}]'"
    )
