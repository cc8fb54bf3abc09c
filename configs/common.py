"""The config-argument parser every config of this folder uses: ``--config configs/X.py:a=1,b=x``.

Each config declares its arguments once, as a default per name, and optionally the values each may take;
``parse_arg`` returns them typed like their defaults (an int default parses an int, a tuple of ints
parses FSQ levels joined by '-') and refuses unknown names, malformed items and values out of their
choices, naming the argument and the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any


def parse_levels(text: str) -> tuple[int, ...]:
  """'8-5-5-5' -> (8, 5, 5, 5); anything else is a ValueError naming the text."""
  if not re.fullmatch(r"\d+(-\d+)*", text):
    raise ValueError(f"levels must be integers joined by '-', e.g. 8-5-5-5, got {text!r}")
  return tuple(int(v) for v in text.split("-"))


def _typed(name: str, text: str, default: Any) -> Any:
  if isinstance(default, bool):
    if text not in ("true", "false"):
      raise ValueError(f"{name} must be true or false, got {text!r}")
    return text == "true"
  if isinstance(default, int):
    if not re.fullmatch(r"-?\d+", text):
      raise ValueError(f"{name} must be an integer, got {text!r}")
    return int(text)
  if isinstance(default, float):
    try:
      return float(text)
    except ValueError:
      raise ValueError(f"{name} must be a number, got {text!r}") from None
  if isinstance(default, tuple):
    return parse_levels(text)
  if default is None or isinstance(default, str):
    return text
  raise TypeError(f"config argument {name}: no parser for defaults of type {type(default).__name__}")


def parse_arg(
  arg: str | None, defaults: Mapping[str, Any], choices: Mapping[str, Sequence[Any]] | None = None
) -> dict[str, Any]:
  """'a=1,b=x' -> every name of ``defaults`` with its value: the argument's, typed like its default (None:
  the text as given), else the default.

  Args:
    arg: the text after ':' in ``--config``, or None.
    defaults: name -> default value (str, int, float, bool, a tuple of ints for levels, or None).
    choices: name -> the values it may take.

  Raises:
    ValueError: an item that is not key=value, a name not in ``defaults``, a value of the wrong type or
      outside its choices.
  """
  given = {}
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"config argument items must be key=value, got {item!r} in {arg!r}")
    given[key.strip()] = value.strip()
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f"unknown config arguments {unknown} in {arg!r}; known: {sorted(defaults)}")
  values = {k: _typed(k, given[k], v) if k in given else v for k, v in defaults.items()}
  for name, allowed in (choices or {}).items():
    if values[name] not in allowed:
      raise ValueError(f"{name} must be one of {list(allowed)}, got {values[name]!r}")
  return values


def given(arg: str | None) -> set[str]:
  """The names an argument text sets (to tell a default from an explicit value)."""
  return {item.partition("=")[0].strip() for item in filter(None, (arg or "").split(","))}
