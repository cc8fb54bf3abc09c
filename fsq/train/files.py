"""Files written whole or not at all: a reader, a crash or a preemption sees the old file or the new one.
Local paths only, checked: a cloud URL refused by name (``local_path``), a multi-process job's workdir
checked to be one directory that every process sees (``check_shared``).
"""

import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def local_path(path: str | os.PathLike, name: str) -> Path:
  """``path`` as a ``Path``; a URL such as ``gs://bucket/run`` raises a ValueError naming the field (a
  ``Path`` would silently turn it into a local folder named ``gs:`` on every host)."""
  if _URL.match(str(path)):
    raise ValueError(
      f"{name} = {str(path)!r}: cloud storage URLs are not supported yet; use a directory that every "
      "host mounts (a shared file system such as Filestore or NFS, or a bucket mounted with gcsfuse)"
    )
  return Path(path)


def check_shared(workdir: Path, wait_s: float = 30.0) -> None:
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
  """Calls ``write(tmp)`` on a temporary path beside ``path``, then renames it onto ``path`` in one step.

  The temporary name keeps ``path``'s suffix (``np.savez`` would append ``.npz`` to another), its folder is
  created, and it is removed if ``write`` raises, leaving ``path`` as it was.
  """
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
