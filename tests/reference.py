"""Independent float64 numpy reference of FSQ, written from the paper's formulas."""

import numpy as np


def bound(z, levels, eps=1e-3, symmetric=False):
  """The bounded value of every channel, in float64."""
  L = np.asarray(levels, np.float64)
  half_l = (L - 1) * (1 + eps) / 2
  offset = np.zeros_like(L) if symmetric else np.where(L % 2 == 0, 0.5, 0.0)
  shift = np.arctanh(offset / half_l)
  return np.tanh(np.asarray(z, np.float64) + shift) * half_l - offset


def grid_step_divisor(levels, symmetric=False):
  L = np.asarray(levels, np.float64)
  return (L - 1) / 2 if symmetric else np.floor(L / 2)


def quantize(z, levels, eps=1e-3, symmetric=False):
  """Codes in float64: round the bounded value to the grid, then normalise."""
  b = bound(z, levels, eps, symmetric)
  L = np.asarray(levels, np.float64)
  if symmetric:
    # Integer grid for odd L, half-integer grid for even L.
    half = np.where(L % 2 == 0, 0.5, 0.0)
    rounded = np.round(b - half) + half
  else:
    rounded = np.round(b)
  return rounded / grid_step_divisor(levels, symmetric)


def bound_derivative(z, levels, eps=1e-3, symmetric=False):
  """d bound / d z in float64."""
  L = np.asarray(levels, np.float64)
  half_l = (L - 1) * (1 + eps) / 2
  offset = np.zeros_like(L) if symmetric else np.where(L % 2 == 0, 0.5, 0.0)
  shift = np.arctanh(offset / half_l)
  return (1 - np.tanh(np.asarray(z, np.float64) + shift) ** 2) * half_l


def all_codes(levels, symmetric=False):
  """(prod(levels), d) codes of every index; channel 0 is the least significant digit."""
  size = int(np.prod(levels))
  digits = np.stack(np.unravel_index(np.arange(size), levels, order="F"), axis=-1)
  L = np.asarray(levels, np.float64)
  center = (L - 1) / 2 if symmetric else np.floor(L / 2)
  return (digits - center) / center
