"""Finite scalar quantization (FSQ) as pure functions; the Linen modules on top are in fsq/layers.py.

FSQ (Mentzer et al., 2023) bounds each of d channels, rounds channel i to one of ``levels[i]`` values
and passes gradients straight through. The implicit codebook is the grid of all combinations, so
there are no codebook parameters, no auxiliary losses, no EMA and nothing that can collapse.

Conventions (all tested in tests/test_quantizers.py):

* Bound. ``half_l = (L - 1) * (1 + eps) / 2``, ``offset = 0.5 if L is even else 0``,
  ``shift = arctanh(offset / half_l)``, ``bound(z) = tanh(z + shift) * half_l - offset``.
  The official code writes ``tan`` for the shift (a bug its first author confirmed) and ``(1 - eps)``
  for the scale, which makes ``arctanh`` return NaN at L = 2 (``offset / half_l > 1``). ``(1 + eps)``
  keeps every L >= 2 finite, and the shift makes ``z = 0`` map to the code 0 for every L.
* Codes. The rounded value is divided by ``L // 2``: odd L gives a symmetric grid on [-1, 1], even L an
  asymmetric one (L = 8: -1, -0.75, ..., 0.75; L = 2: {-1, 0}), as in the paper. For L = 2 the shift
  puts z = 0 at the top of the range (the -1 | 0 threshold sits at z = -3.8); prefer the symmetric
  variant there, whose threshold is z = 0.
* Symmetric variant (``symmetric=True``). No offset and no shift: the bounded value is rounded to the
  half-integer grid for even L, and codes are ``2 * digit / (L - 1) - 1``, symmetric around 0 and
  spanning exactly [-1, 1] (L = 4: -1, -1/3, 1/3, 1; L = 2: {-1, 1}, the LFQ grid). Odd L gives the same
  codes as the default. What changes for even L: 0 is no longer a code, and the grid spacing is
  ``2 / (L - 1)`` instead of ``1 / (L // 2)``.
* Digits and indices. The digit of channel i is the integer in [0, L_i) of its code; the index is the
  mixed-radix number with basis ``cumprod([1, L_0, L_1, ...])`` (channel 0 least significant),
  computed in int32 from rounded digits, never in floating point.
* Precision. Arithmetic runs in (at least) float32 whatever the input dtype, so bf16 and f16 inputs
  give exactly the indices of the same values in float32; codes come back in the input dtype.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

Levels = Sequence[int]

INT32_MAX = 2**31 - 1

# Table 1 of the paper plus the appendix sizes (the appendix's 2^12 entry [7,5,5,5] is a typo).
PAPER_LEVELS: dict[int, tuple[int, ...]] = {
  2**4: (5, 3),
  2**6: (8, 8),
  2**8: (8, 6, 5),
  2**9: (8, 8, 8),
  2**10: (8, 5, 5, 5),
  2**11: (8, 8, 6, 5),
  2**12: (7, 5, 5, 5, 5),
  2**14: (8, 8, 8, 6, 5),
  2**16: (8, 8, 8, 5, 5, 5),
}


def check_levels(levels: Levels, name: str = "levels") -> tuple[int, ...]:
  """Validates ``levels`` eagerly and returns them as a tuple of Python ints.

  Raises ValueError naming ``name`` and the value unless levels is a non-empty sequence of integers
  >= 2 whose product fits in int32.
  """
  if isinstance(levels, str | bytes) or not isinstance(levels, Sequence | np.ndarray):
    raise ValueError(f"{name} must be a non-empty sequence of integers >= 2, got {levels!r}")
  values = list(levels)
  ok = len(values) > 0 and all(
    isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 2 for v in values
  )
  if not ok:
    raise ValueError(f"{name} must be a non-empty sequence of integers >= 2, got {levels!r}")
  values = [int(v) for v in values]
  if math.prod(values) > INT32_MAX:
    raise ValueError(
      f"{name} = {values} give {math.prod(values)} codes, more than int32 indices hold ({INT32_MAX})"
    )
  return tuple(values)


def check_eps(eps: float) -> float:
  if not isinstance(eps, int | float) or not 0.0 < eps < 1.0:
    raise ValueError(f"eps must be a float in (0, 1), got {eps!r}")
  return float(eps)


def _check_width(x: jax.Array, levels: tuple[int, ...], name: str) -> None:
  if x.ndim == 0 or x.shape[-1] != len(levels):
    raise ValueError(
      f"{name} has shape {tuple(x.shape)}: its last axis must have len(levels) = {len(levels)} "
      f"entries for levels {list(levels)} (levels shape ({len(levels)},))"
    )


def codebook_size(levels: Levels) -> int:
  """Number of codes in the implicit FSQ codebook: the product of the levels."""
  return math.prod(check_levels(levels))


def levels_for_codebook_size(target: int) -> tuple[int, ...]:
  """Levels giving an implicit codebook of about ``target`` codes.

  Sizes listed in the paper (2^4, 2^6, 2^8 ... 2^12, 2^14, 2^16) return the paper's levels. Any other
  target follows this rule:

  1. target <= 8: one channel with ``target`` levels.
  2. Otherwise, among non-increasing tuples with every level in [5, 8] (the paper: L_i >= 5, smaller
     is subpar), take the product closest to target in log scale; ties go to fewer channels, then to
     the larger product.
  3. If that product is more than 10% off, also consider tuples whose last level is in [2, 4] and take
     the closest of all (same tie-breaks).

  Args:
    target: desired codebook size, an integer in [2, 2^31 - 1].

  Returns:
    levels, non-increasing.
  """
  if not isinstance(target, int | np.integer) or isinstance(target, bool) or not (2 <= target <= INT32_MAX):
    raise ValueError(f"target must be an integer in [2, {INT32_MAX}], got {target!r}")
  target = int(target)
  if target in PAPER_LEVELS:
    return PAPER_LEVELS[target]
  if target <= 8:
    return (target,)

  def best(candidates):
    def key(levels):
      return (abs(math.log(math.prod(levels) / target)), len(levels), -math.prod(levels))

    return min(candidates, key=key)

  max_len = math.ceil(math.log(target, 5)) + 1
  large = [
    c
    for n in range(1, max_len + 1)
    for c in itertools.combinations_with_replacement(range(8, 4, -1), n)
    if math.prod(c) <= INT32_MAX
  ]
  choice = best(large)
  if abs(math.prod(choice) / target - 1) <= 0.1:
    return choice
  with_small = [(*c, s) for c in large for s in (4, 3, 2) if math.prod(c) * s <= INT32_MAX]
  return best([*large, *with_small])


def _constants(levels: tuple[int, ...], eps: float, symmetric: bool, dtype) -> dict[str, jax.Array]:
  """Per-channel constants of the bound and the grid, computed in float64 then cast to dtype.

  ``center`` is both the digit of code 0 and the divisor that maps rounded values to [-1, 1]:
  L // 2 by default, (L - 1) / 2 for the symmetric grid.
  """
  L = np.asarray(levels, np.float64)
  half_l = (L - 1) * (1 + eps) / 2
  if symmetric:
    offset = np.zeros_like(L)
    center = (L - 1) / 2
  else:
    offset = np.where(np.asarray(levels) % 2 == 0, 0.5, 0.0)
    center = np.floor(L / 2)
  shift = np.arctanh(offset / half_l)
  return {
    "half_l": jnp.asarray(half_l, dtype),
    "offset": jnp.asarray(offset, dtype),
    "shift": jnp.asarray(shift, dtype),
    "center": jnp.asarray(center, dtype),
    "max_digit": jnp.asarray(L - 1, dtype),
  }


def compute_dtype(dtype) -> jnp.dtype:
  return jnp.promote_types(dtype, jnp.float32)


def bound(z: jax.Array, levels: Levels, eps: float = 1e-3, *, symmetric: bool = False) -> jax.Array:
  """Bounds each channel to the range that rounds to ``levels[i]`` values.

  Args:
    z: (..., d) float array, d = len(levels).
    levels: number of values per channel.
    eps: widens the range by (1 + eps) so that L = 2 stays finite (see the module docstring).
    symmetric: use the symmetric grid for even levels (no offset, no shift).

  Returns:
    (..., d) float32 (or wider, for float64 input): ``tanh(z + shift) * half_l - offset``.
  """
  levels = check_levels(levels)
  eps = check_eps(eps)
  _check_width(z, levels, "z")
  _check_float(z, "z")
  dtype = compute_dtype(z.dtype)
  c = _constants(levels, eps, symmetric, dtype)
  return jnp.tanh(z.astype(dtype) + c["shift"]) * c["half_l"] - c["offset"]


def _check_float(x: jax.Array, name: str) -> None:
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must be a floating-point array, got dtype {x.dtype}")


def _check_integer(x, name: str) -> None:
  if not jnp.issubdtype(np.asarray(x).dtype if _is_concrete(x) else x.dtype, jnp.integer):
    raise ValueError(f"{name} must be an integer array, got dtype {getattr(x, 'dtype', type(x))}")


def _quantize(z: jax.Array, levels: Levels, eps: float, symmetric: bool) -> tuple[jax.Array, jax.Array]:
  """Codes (straight-through, compute dtype) and their digits as floats (NaN where z is NaN)."""
  bounded = bound(z, levels, eps, symmetric=symmetric)
  levels = check_levels(levels)
  c = _constants(levels, eps, symmetric, bounded.dtype)
  digits = jnp.round(bounded + c["center"])
  if eps * (max(levels) - 1) > 0.5:
    # The largest |bounded| overshoots the outermost grid point by eps * (L - 1) / 2, which can
    # round off the grid only when that nears 0.5. Below this margin (float32 error included) no
    # clip is needed, and skipping it saves ~40% of the forward time on CPU.
    digits = jnp.clip(digits, 0, c["max_digit"])
  rounded = bounded + jax.lax.stop_gradient(digits - c["center"] - bounded)
  return rounded / c["center"], digits


def quantize(z: jax.Array, levels: Levels, eps: float = 1e-3, *, symmetric: bool = False) -> jax.Array:
  """Quantizes z to FSQ codes with straight-through gradients.

  The forward value is the nearest grid point of ``bound(z)``, normalised to [-1, 1]; the gradient
  with respect to z is ``bound'(z) / scale`` (scale = L // 2, or (L - 1) / 2 when symmetric).

  Args:
    z: (..., d) float array of any float dtype, d = len(levels).
    levels: number of values per channel.
    eps: see ``bound``.
    symmetric: use the symmetric grid for even levels.

  Returns:
    codes: (..., d) in z's dtype, on the grid described in the module docstring.
  """
  return _quantize(z, levels, eps, symmetric)[0].astype(z.dtype)


def quantize_with_indices(
  z: jax.Array, levels: Levels, eps: float = 1e-3, *, symmetric: bool = False
) -> tuple[jax.Array, jax.Array]:
  """``quantize`` plus the indices of the codes, computed from the float32 digits.

  Prefer this over ``codes_to_indices(quantize(z))`` for bf16/f16 inputs: a code cast to a low
  precision dtype (k / 500 in bf16, say) may no longer round back to its digit, the float32 digit does.

  Returns:
    codes: (..., d) in z's dtype; indices: (...) int32, -1 where z is not finite.
  """
  codes, digits = _quantize(z, levels, eps, symmetric)
  digits = jnp.where(jnp.isfinite(digits), digits, -1).astype(jnp.int32)
  return codes.astype(z.dtype), digits_to_indices(digits, levels, check=False)


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_in_range(values, high, name: str, what: str) -> None:
  """Checks 0 <= values < high: eagerly for concrete input, with a checkify check when traced.

  Concrete values are checked as given (numpy int64 included, before any cast to int32). Under
  ``jax.jit`` the check is a no-op unless the function is wrapped in ``checkify.checkify``, which then
  reports the first offending value; the functions of this module also return invalid markers then
  (index -1, NaN codes), never a valid-looking result.
  """
  if _is_concrete(values) and _is_concrete(high):
    v = np.asarray(values)
    h = np.broadcast_to(np.asarray(high), v.shape)
    bad = (v < 0) | (v >= h)
    if bad.any():
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f"{name} must be {what}, got {v[first]} at position {first} (limit {h[first]})")
    return
  bad = (values < 0) | (values >= high)
  first = jnp.argmax(bad.reshape(-1))
  checkify.check(
    ~jnp.any(bad),
    f"{name} must be {what}, got {{value}} at flat position {{pos}}",
    value=values.reshape(-1)[first],
    pos=first,
    debug=True,
  )


def _valid_digits(digits: jax.Array, levels: tuple[int, ...]) -> jax.Array:
  return (digits >= 0) & (digits < np.asarray(levels, np.int32))


def codes_to_digits(codes: jax.Array, levels: Levels, *, symmetric: bool = False) -> jax.Array:
  """Per-channel integer digits of FSQ codes.

  Args:
    codes: (..., d) codes on the grid of ``quantize`` (any float dtype).
    levels: number of values per channel.
    symmetric: the grid convention the codes were made with.

  Returns:
    (..., d) int32, digit i in [0, levels[i]). Codes off the grid round to the nearest digit; NaN
    codes and codes more than half a grid step outside [-1, 1] raise ValueError (eagerly), or fail a
    checkify check and give digit -1 (under jit).
  """
  levels = check_levels(levels)
  _check_width(codes, levels, "codes")
  _check_float(codes, "codes")
  dtype = compute_dtype(codes.dtype)
  c = _constants(levels, 1e-3, symmetric, dtype)
  x = codes.astype(dtype) * c["center"] + c["center"]
  valid = jnp.isfinite(x) & (x > -0.5) & (x < c["max_digit"] + 0.5)
  digits = jnp.where(valid, jnp.round(x), -1).astype(jnp.int32)
  check_in_range(digits, jnp.asarray(levels, jnp.int32), "codes", "finite and on the FSQ grid in [-1, 1]")
  return digits


def digits_to_codes(
  digits: jax.Array, levels: Levels, *, symmetric: bool = False, dtype=jnp.float32
) -> jax.Array:
  """Codes of integer digits: (..., d) int -> (..., d) ``dtype`` in [-1, 1] (NaN for invalid digits)."""
  levels = check_levels(levels)
  _check_width(digits, levels, "digits")
  _check_integer(digits, "digits")
  check_in_range(digits, np.asarray(levels), "digits", "in [0, levels[i])")
  c = _constants(levels, 1e-3, symmetric, jnp.float32)
  codes = (jnp.asarray(digits).astype(jnp.float32) - c["center"]) / c["center"]
  return jnp.where(_valid_digits(jnp.asarray(digits), levels), codes, jnp.nan).astype(dtype)


def _basis(levels: tuple[int, ...]) -> np.ndarray:
  return np.cumprod((1, *levels[:-1])).astype(np.int32)


def digits_to_indices(digits: jax.Array, levels: Levels, *, check: bool = True) -> jax.Array:
  """Mixed-radix indices of digits: (..., d) int -> (...) int32 in [0, codebook_size), -1 where a
  digit is out of range (after the eager or checkify check; ``check=False`` skips it)."""
  levels = check_levels(levels)
  _check_width(digits, levels, "digits")
  _check_integer(digits, "digits")
  if check:
    check_in_range(digits, np.asarray(levels), "digits", "in [0, levels[i])")
  digits = jnp.asarray(digits).astype(jnp.int32)
  indices = jnp.sum(digits * _basis(levels), axis=-1, dtype=jnp.int32)
  return jnp.where(jnp.all(_valid_digits(digits, levels), axis=-1), indices, -1)


def indices_to_digits(indices: jax.Array, levels: Levels) -> jax.Array:
  """Digits of mixed-radix indices: (...) int in [0, codebook_size) -> (..., d) int32.

  Out-of-range indices raise ValueError when the input is concrete (checked before any cast); under
  jit the check is a checkify check (``checkify.checkify(fn)(...)`` reports it) and the digits of an
  out-of-range index are -1, never a silent wrap-around.
  """
  levels = check_levels(levels)
  _check_integer(indices, "indices")
  size = math.prod(levels)
  check_in_range(indices, size, "indices", f"in [0, {size})")
  indices = jnp.asarray(indices).astype(jnp.int32)[..., None]
  digits = (indices // _basis(levels)) % np.asarray(levels, np.int32)
  return jnp.where((indices >= 0) & (indices < size), digits, -1)


def codes_to_indices(codes: jax.Array, levels: Levels, *, symmetric: bool = False) -> jax.Array:
  """Indices of FSQ codes: (..., d) codes -> (...) int32 in [0, codebook_size) (-1 if invalid)."""
  return digits_to_indices(codes_to_digits(codes, levels, symmetric=symmetric), levels, check=False)


def indices_to_codes(
  indices: jax.Array, levels: Levels, *, symmetric: bool = False, dtype=jnp.float32
) -> jax.Array:
  """Codes of indices: (...) int -> (..., d) ``dtype``; out-of-range indices are an error (NaN codes
  under jit)."""
  digits = indices_to_digits(indices, levels)
  return digits_to_codes(digits, levels, symmetric=symmetric, dtype=dtype)


def implicit_codebook(
  levels: Levels, *, symmetric: bool = False, dtype=jnp.float32, max_codes: int = 2**24
) -> jax.Array:
  """The whole implicit codebook, built only when asked for: (codebook_size, d) ``dtype``.

  Row i holds the codes of index i. Raises ValueError when the codebook has more than ``max_codes``
  rows (2^24 rows of 8 channels are 512 MiB); raise the limit explicitly if that is what you want.
  """
  size = codebook_size(levels)
  if size > max_codes:
    raise ValueError(
      f"levels = {list(levels)} give {size} codes, more than max_codes = {max_codes}; "
      "pass a larger max_codes to build it anyway"
    )
  return indices_to_codes(jnp.arange(size, dtype=jnp.int32), levels, symmetric=symmetric, dtype=dtype)


def entropy_nats(p: jax.Array, axis: int = -1) -> jax.Array:
  """Entropy in nats of distributions along ``axis``, with finite gradients where p = 0."""
  tiny = jnp.finfo(p.dtype).tiny
  return -jnp.sum(p * jnp.log(jnp.maximum(p, tiny)), axis=axis)
