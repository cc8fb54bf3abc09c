"""Quantizer demo on real Fashion-MNIST: FSQ at the paper's codebook sizes, usage and speed.

  python -m scripts.quantizer_demo [--data-dir DIR] [--out artifacts/quantizer_demo]

Each 28x28 image is cut into 49 patches of 4x4 pixels. A PCA encoder (fit on the training split)
maps a patch to its top d whitened coefficients, d = len(levels); FSQ quantizes them with the paper's
levels for 2^8 ... 2^16 codes; a linear decoder fit by least squares maps codes back to pixels. On the
test split it reports codebook usage, perplexity and reconstruction PSNR, writes a PNG of
reconstructions and a JSON of the numbers, and finally prints the quantizer speed table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from fsq import quantizers
from fsq.data import fashion_mnist
from fsq.metrics import CodebookUsage
from scripts import benchmark

PATCH = 4
TARGETS = (2**8, 2**10, 2**12, 2**14, 2**16)


def to_patches(images: np.ndarray) -> np.ndarray:
  """(n, 28, 28) uint8 -> (n * 49, 16) float32 in [0, 1]."""
  n, h, w = images.shape
  x = images.reshape(n, h // PATCH, PATCH, w // PATCH, PATCH).transpose(0, 1, 3, 2, 4)
  return x.reshape(-1, PATCH * PATCH).astype(np.float32) / 255.0


def from_patches(patches: np.ndarray, n: int) -> np.ndarray:
  """Inverse of to_patches: (n * 49, 16) -> (n, 28, 28)."""
  g = 28 // PATCH
  x = patches.reshape(n, g, g, PATCH, PATCH).transpose(0, 1, 3, 2, 4)
  return x.reshape(n, 28, 28)


def fit_pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean (16,), components (16, 16) by decreasing variance, and their variances (16,)."""
  mean = x.mean(0)
  cov = np.cov((x - mean).T.astype(np.float64))
  variances, vectors = np.linalg.eigh(cov)
  order = np.argsort(variances)[::-1]
  return mean, vectors[:, order], variances[order]


def run_target(target, train, test, pca, quantize) -> tuple[dict[str, object], np.ndarray]:
  """Quantizes whitened PCA coefficients with FSQ, fits a linear decoder, evaluates on test."""
  levels = quantizers.levels_for_codebook_size(target)
  mean, vectors, variances = pca
  d = len(levels)

  def encode(x):
    z = (x - mean) @ vectors[:, :d] / np.sqrt(variances[:d])
    return np.asarray(quantize(jnp.asarray(z, jnp.float32), levels))

  codes_train, codes_test = encode(train), encode(test)
  design = np.c_[codes_train, np.ones(len(codes_train))]
  decoder, *_ = np.linalg.lstsq(design, train, rcond=None)
  recon = np.clip(np.c_[codes_test, np.ones(len(codes_test))] @ decoder, 0, 1)
  mse = float(np.mean((recon - test) ** 2))
  usage = CodebookUsage.create(quantizers.codebook_size(levels))
  usage.add(quantizers.codes_to_indices(jnp.asarray(codes_test), levels))
  stats = usage.summary()
  row = {
    "target": target,
    "levels": list(levels),
    "codebook_size": quantizers.codebook_size(levels),
    "usage": stats["usage"],
    "perplexity": stats["perplexity"],
    "entropy_bits": stats["entropy_bits"],
    "psnr_db": float(10 * np.log10(1.0 / mse)),
  }
  return row, recon


def save_grid(rows: list[np.ndarray], path: Path, scale: int = 3) -> None:
  """Saves rows of (k, 28, 28) images in [0, 1] as one PNG."""
  grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
  image = Image.fromarray((grid * 255).round().astype(np.uint8), mode="L")
  image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir", type=Path, default=fashion_mnist.DEFAULT_DIR)
  parser.add_argument("--out", type=Path, default=Path("artifacts/quantizer_demo"))
  parser.add_argument("--train-images", type=int, default=20000)
  args = parser.parse_args(argv)
  if args.train_images < 100:
    parser.error(f"--train-images must be >= 100, got {args.train_images}")
  args.out.mkdir(parents=True, exist_ok=True)

  train_images, _ = fashion_mnist.load("train", args.data_dir)
  test_images, _ = fashion_mnist.load("test", args.data_dir)
  train = to_patches(train_images[: args.train_images])
  test = to_patches(test_images)
  pca = fit_pca(train)
  quantize = jax.jit(quantizers.quantize, static_argnums=1)
  print(f"Fashion-MNIST: {len(train)} train and {len(test)} test patches of {PATCH}x{PATCH} pixels")
  header = ("target", "levels", "codes", "usage", "perplexity", "bits", "PSNR dB")
  print(" ".join(f"{h:>{w}s}" for h, w in zip(header, (8, 20, 7, 7, 11, 6, 8), strict=True)))
  results, shown = [], [test_images[:10] / 255.0]
  for target in TARGETS:
    row, recon = run_target(target, train, test, pca, quantize)
    results.append(row)
    shown.append(from_patches(recon[: 10 * 49], 10))
    print(
      f"{f'2^{int(np.log2(target))}':>8s} {row['levels']!s:>20s} {row['codebook_size']:7d} "
      f"{row['usage']:7.1%} {row['perplexity']:11.1f} {row['entropy_bits']:6.2f} {row['psnr_db']:8.2f}"
    )
  save_grid(shown, args.out / "reconstructions.png")
  (args.out / "fsq_usage.json").write_text(json.dumps(results, indent=2))
  print(
    f"\nwrote {args.out / 'reconstructions.png'} (rows: originals, then 2^8 ... 2^16) and fsq_usage.json\n"
  )
  benchmark.main(["--suite", "quantizers", "--vq-rows", "4096", "--out", str(args.out / "benchmark.json")])


if __name__ == "__main__":
  main()
