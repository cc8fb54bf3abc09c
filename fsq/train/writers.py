"""A run's records: its config (``config.json``), and metric writers for JSON lines (machine-readable) and
TensorBoard event files, written without TensorFlow.

Only process 0 writes. ``metrics.jsonl`` holds one object per call:
``{"step": s, "split": ..., name: value}``; ``tensorboard/`` holds event files (scalars and image
grids) through tensorboardX.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import ml_collections
import numpy as np

from fsq.train.files import write_text_atomically


def write_config(workdir: str | Path, config: ml_collections.ConfigDict) -> None:
  """Records ``config`` as ``workdir/config.json`` (atomically), from which evaluation rebuilds the run."""
  write_text_atomically(Path(workdir) / "config.json", config.to_json_best_effort(indent=2))


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
  """The config a training run recorded in ``workdir/config.json``."""
  path = Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing: is {workdir} a training workdir?")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def read_metrics(path: str | Path) -> list[dict]:
  """The records of a metrics.jsonl file (as MetricWriter writes it), in order."""
  return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


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

  def __init__(self, workdir: str | Path, enabled: bool | None = None):
    self.workdir = Path(workdir)
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    if self.enabled:
      from tensorboardX import SummaryWriter

      self.workdir.mkdir(parents=True, exist_ok=True)
      self._jsonl = open(self.workdir / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
      self._tb = SummaryWriter(str(self.workdir / "tensorboard"), flush_secs=30)

  def write_scalars(self, step: int, scalars: dict[str, float], split: str = "train") -> None:
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    self._jsonl.flush()
    for name, value in values.items():
      self._tb.add_scalar(f"{split}/{name}", value, int(step))

  def write_images(
    self, step: int, images: dict[str, np.ndarray], split: str = "train", columns: int = 8
  ) -> dict[str, Path]:
    """Writes each (N, H, W, C) batch in [-1, 1] as a grid ``columns`` wide to TensorBoard and as a PNG;
    returns the PNGs."""
    if not self.enabled:
      return {}
    from PIL import Image

    paths = {}
    folder = self.workdir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in images.items():
      grid = image_grid(batch, columns)
      self._tb.add_image(f"{split}/{name}", grid, int(step), dataformats="HWC")
      path = folder / f"{split}_{name}_{int(step):08d}.png"
      Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
      paths[name] = path
    return paths

  def flush(self) -> None:
    if self.enabled:
      self._jsonl.flush()
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
