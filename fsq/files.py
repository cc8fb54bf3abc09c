"""Where runs live, and files written whole or not at all.

Run paths are ``etils.epath`` paths: a local path, or a ``gs://bucket/...`` URL (Google Cloud Storage,
read and written through gcsfs: ``pip install 'fsq[gcs]'``; orbax writes checkpoints there through
tensorstore). ``run_path`` checks one, naming the field; ``check_shared`` checks that a multi-process job's
workdir is one directory every process sees; ``write_atomically`` writes so that a reader, a crash or a
preemption sees the old file or the new one (a cloud object is uploaded whole or not at all).
"""

# ruff: noqa: E402 (the [train] extra is checked before the imports that need it)
from fsq.extras import require

require("train", "fsq.files")

import importlib.util
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from etils import epath

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")
_GCS = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/|$)")


def is_cloud(path: str | os.PathLike) -> bool:
  """Whether ``path`` is a cloud URL (``gs://...``) rather than a local path."""
  return str(path).startswith("gs://")


def _fresh_gcs_listings() -> None:
  """gcsfs caches folder listings, so a file another host wrote (a checkpoint, the shared-workdir probe)
  could stay invisible here; every listing is asked afresh (before the first gcsfs filesystem exists)."""
  import fsspec

  fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)


def run_path(path: str | os.PathLike, name: str) -> epath.Path:
  """``path`` (a local path or a ``gs://bucket/...`` URL) as an ``epath.Path``; anything else that looks
  like a URL (``s3://``, ``gs:/bucket``: what ``pathlib`` makes of ``gs://bucket``) raises a ValueError
  naming the field, as does ``gs://`` without gcsfs installed."""
  text = os.fspath(path) if isinstance(path, os.PathLike) and not isinstance(path, epath.Path) else str(path)
  if is_cloud(text):
    if not _GCS.match(text):
      raise ValueError(f"{name} = {text!r}: not a gs://BUCKET/PATH URL")
    if importlib.util.find_spec("gcsfs") is None:
      raise ValueError(f"{name} = {text!r}: gs:// paths need gcsfs (pip install 'fsq[gcs]')")
    _fresh_gcs_listings()
  elif _URL.match(text):
    raise ValueError(f"{name} = {text!r}: only local paths and gs:// URLs are supported")
  return epath.Path(text)


def local_path(path: str | os.PathLike, name: str) -> Path:
  """``path`` as a local ``Path``, for what must live on this machine; a URL raises a ValueError naming
  the field."""
  checked = run_path(path, name)
  if is_cloud(checked):
    raise ValueError(
      f"{name} = {str(checked)!r}: must be a local path (copy it to local disk, or mount the bucket with "
      "gcsfuse)"
    )
  return Path(checked)


def check_shared(workdir: epath.Path, wait_s: float = 30.0) -> None:
  """In a multi-process job, raises ValueError unless every process sees the file process 0 writes into
  ``workdir``: a per-host local directory (each worker writing its own checkpoints, lost with the VM,
  resuming from different steps) fails here, before any training. Waits up to ``wait_s`` for a shared
  file system that shows new files late. Every process must call it."""
  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  if jax.process_count() == 1:
    return
  token = np.frombuffer(secrets.token_bytes(8), np.uint32)
  token = "".join(f"{x:08x}" for x in multihost_utils.broadcast_one_to_all(token))
  probe = workdir / f".shared_check_{token}"
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    probe.write_text(token)
  multihost_utils.sync_global_devices("shared workdir: written")
  deadline = time.monotonic() + wait_s
  while not probe.exists() and time.monotonic() < deadline:
    time.sleep(0.5)
  seen = multihost_utils.process_allgather(np.int32(probe.exists()))
  multihost_utils.sync_global_devices("shared workdir: checked")
  if jax.process_index() == 0:
    probe.unlink(missing_ok=True)
  if not np.all(seen):
    blind = [int(i) for i in np.flatnonzero(np.asarray(seen) == 0)]
    raise ValueError(
      f"workdir {str(workdir)!r} is not shared: processes {blind} do not see the file process 0 wrote "
      "there; every host must see one directory (a shared file system), not its own local disk"
    )


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
  """Calls ``write(tmp)`` on a temporary local path, then puts it onto ``path`` in one step: a rename
  beside ``path``, or for a cloud ``path`` one upload (an object appears whole or not at all).

  The temporary name keeps ``path``'s suffix (``np.savez`` would append ``.npz`` to another), the folder is
  created, and the temporary is removed if ``write`` raises, leaving ``path`` as it was.
  """
  path = run_path(path, "path")
  if is_cloud(path):
    with tempfile.TemporaryDirectory() as folder:
      tmp = Path(folder) / path.name
      write(tmp)
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_bytes(tmp.read_bytes())
    return
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
  try:
    write(tmp)
    tmp.replace(path)
  finally:
    tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
  """``path`` holds ``text`` (written with ``write_atomically``)."""
  write_atomically(path, lambda tmp: tmp.write_text(text))


def report_json(result: object, out: str | os.PathLike | None) -> None:
  """Prints ``result`` as indented JSON and, when ``out`` is given, writes the same text there atomically."""
  text = json.dumps(result, indent=2)
  print(text)
  if out is not None:
    write_text_atomically(out, text + "\n")
