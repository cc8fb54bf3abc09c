"""Files written whole or not at all: a reader, a crash or a preemption sees the old file or the new one."""

import os
from collections.abc import Callable
from pathlib import Path


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
