"""Renders synthetic scenes as one PNG grid: a row per scene, image | depth | panoptic.

  python -m scripts.show_scenes OUT.png [--num 6] [--first-seed 0] [--size 64] [--zoom 2]

Depth is coloured with matplotlib's "turbo" map, near blue to far red, scaled per scene. The panoptic
column gives each class a hue (floor grey, wall beige, sphere red, box green, cylinder blue), each
thing of a class its own shade, and draws segment boundaries in black.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from fsq.data import scenes

CLASS_COLOURS = np.array(
  [[0.55, 0.55, 0.55], [0.85, 0.8, 0.65], [0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.25, 0.4, 0.95]]
)


def colour_depth(depth: np.ndarray) -> np.ndarray:
  """float (H, W) depth -> uint8 (H, W, 3), the turbo colour map from its minimum to its maximum."""
  scaled = (depth - depth.min()) / max(float(depth.max() - depth.min()), 1e-6)
  return np.round(255 * matplotlib.colormaps["turbo"](scaled)[..., :3]).astype(np.uint8)


def colour_panoptic(semantic: np.ndarray, instance: np.ndarray) -> np.ndarray:
  """int (H, W) class ids and instance ids -> uint8 (H, W, 3) with black segment boundaries."""
  shade = np.where(instance > 0, 0.45 + 0.55 * ((instance * 0.618) % 1), 1.0)
  rgb = CLASS_COLOURS[semantic] * shade[..., None]
  segment = semantic * 1000 + instance
  boundary = np.zeros(segment.shape, bool)
  boundary[:-1] |= segment[:-1] != segment[1:]
  boundary[:, :-1] |= segment[:, :-1] != segment[:, 1:]
  return np.round(255 * np.where(boundary[..., None], 0.0, rgb)).astype(np.uint8)


def grid(seeds: range, size: int) -> np.ndarray:
  """uint8 (len(seeds) * size, 3 * size, 3): for each seed a row image | depth | panoptic."""
  rows = []
  for seed in seeds:
    example = scenes.render_scene(seed, size)
    panoptic = colour_panoptic(example["semantic"], example["instance"])
    rows.append(np.concatenate([example["image"], colour_depth(example["depth"]), panoptic], axis=1))
  return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("out", type=Path, help="the PNG file to write")
  parser.add_argument("--num", type=int, default=6, help="number of scenes (rows)")
  parser.add_argument("--first-seed", type=int, default=0, help="seed of the first scene")
  parser.add_argument("--size", type=int, default=64, help="image side in pixels")
  parser.add_argument("--zoom", type=int, default=2, help="nearest-neighbour upscaling of the grid")
  args = parser.parse_args(argv)
  pixels = grid(range(args.first_seed, args.first_seed + args.num), args.size)
  pixels = pixels.repeat(args.zoom, axis=0).repeat(args.zoom, axis=1)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pixels).save(args.out)
  print(f"wrote {args.out} ({pixels.shape[1]}x{pixels.shape[0]})")


if __name__ == "__main__":
  main()
