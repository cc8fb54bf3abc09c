"""A run's records: its config (``config.json``), and metric writers for JSON lines (machine-readable) and
TensorBoard event files, written without TensorFlow.

Only process 0 writes. ``metrics.jsonl`` holds one object per call:
``{"step": s, "split": ..., name: value}``; ``tensorboard/`` holds event files (scalars and image
grids) through tensorboardX; ``images/`` the grids as PNGs. A cloud workdir (``gs://``) cannot be appended
to: the writer keeps these files in a local folder and uploads the changed ones whole (``sync``) at most
every ``sync_every_s`` seconds, on ``flush`` and on ``close``; a resumed run first downloads
``metrics.jsonl`` and appends to it.
"""

from __future__ import annotations

import json
import math
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from fsq.files import is_cloud, run_path, write_text_atomically


def write_config(workdir: str | Path, config: ml_collections.ConfigDict) -> None:
  """Records ``config`` as ``workdir/config.json`` (atomically), from which evaluation rebuilds the run."""
  write_text_atomically(run_path(workdir, "workdir") / "config.json", config.to_json_best_effort(indent=2))


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
  """The config a training run recorded in ``workdir/config.json``."""
  path = run_path(workdir, "workdir") / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing: is {workdir} a training workdir?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def read_metrics(path: str | Path) -> list[dict]:
  """The records of a metrics.jsonl file (as MetricWriter writes it), in order."""
  return [json.loads(line) for line in run_path(path, "path").read_text().splitlines() if line.strip()]


def image_grid(images: np.ndarray, columns: int = 8, pad: int = 1) -> np.ndarray:
  """(N, H, W, C) floats in [-1, 1] -> one (rows*(H+pad)+pad, columns*(W+pad)+pad, C) uint8 grid."""
  images = np.asarray(images, np.float32)
  assert images.ndim == 4, f"expected (N, H, W, C) images, got {images.shape}"
  n, h, w, c = images.shape
  columns = min(columns, n)
  rows = math.ceil(n / columns)
  grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.uint8)
  pixels = np.clip(np.round((images + 1) * 127.5), 0, 255).astype(np.uint8)
  for i in range(n):
    r, col = divmod(i, columns)
    grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = (
      pixels[i]
    )
  return grid


class MetricWriter:
  """Writes scalars and images to ``workdir`` (JSON lines + TensorBoard) from process 0 only."""

  def __init__(self, workdir, enabled: bool | None = None, sync_every_s: float = 30.0):
    self.workdir = run_path(workdir, "workdir")
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.sync_every_s = sync_every_s
    self._tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter

      self.workdir.mkdir(parents=True, exist_ok=True)
      self._staging = None
      local = Path(self.workdir)
      if is_cloud(self.workdir):
        self._staging = local = Path(tempfile.mkdtemp(prefix="fsq_metrics_"))
        if (self.workdir / "metrics.jsonl").exists():
          (local / "metrics.jsonl").write_bytes((self.workdir / "metrics.jsonl").read_bytes())
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._synced_at = time.monotonic()
      self.local = local
      self._jsonl = open(local / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
      # A name of its own (tensorboardX names files by the second and host): a run resumed within the
      # same second must not overwrite the uploaded events of the one before.
      suffix = f".{secrets.token_hex(4)}"
      self._tb = SummaryWriter(str(local / "tensorboard"), flush_secs=30, filename_suffix=suffix)

  def write_scalars(self, step: int, scalars: dict[str, float], split: str = "train") -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      self._tb.add_scalar(f"{split}/{name}", value, int(step))
    self._sync_if_due()

  def write_images(
    self, step: int, images: dict[str, np.ndarray], split: str = "train", columns: int = 8
  ) -> dict:
    """Writes each (N, H, W, C) batch in [-1, 1] as a grid ``columns`` wide to TensorBoard and as a PNG;
    returns the PNGs' paths in the workdir."""
    if not self.enabled:
      return {}
    from PIL import Image

    paths = {}
    folder = self.local / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in images.items():
      grid = image_grid(batch, columns)
      self._tb.add_image(f"{split}/{name}", grid, int(step), dataformats="HWC")
      filename = f"{split}_{name}_{int(step):08d}.png"
      Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(folder / filename)
      paths[name] = self.workdir / "images" / filename
    self._sync_if_due()
    return paths

  def _sync_if_due(self) -> None:
    if self._staging is not None and time.monotonic() - self._synced_at >= self.sync_every_s:
      self.sync()

  def sync(self) -> None:
    """Uploads the local files that changed since the last upload to the cloud workdir, each whole."""
    if not self.enabled or self._staging is None:
      return
    for path in sorted(p for p in self._staging.rglob("*") if p.is_file()):
      stat = path.stat()
      name = path.relative_to(self._staging).as_posix()
      if self._uploaded.get(name) != (stat.st_size, stat.st_mtime_ns):
        target = self.workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        self._uploaded[name] = (stat.st_size, stat.st_mtime_ns)
    self._synced_at = time.monotonic()

  def flush(self) -> None:
    if self.enabled:
      self._jsonl.flush()
      self._tb.flush()
      self.sync()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
      self.sync()
      if self._staging is not None:
        shutil.rmtree(self._staging, ignore_errors=True)
