"""The suite's persistent compilation cache (tests/conftest.py): where it lives, and that it can only
return an executable for the very same program, whose result equals a fresh compile's."""

import os
import random

import jax
import jax.numpy as jnp
import numpy as np
from jax import monitoring

from tests.conftest import compile_cache_dir, cpu_fingerprint


def test_the_cache_folder_names_jaxlib_and_the_cpu():
  if os.environ["JAX_COMPILATION_CACHE_DIR"] != str(compile_cache_dir()):
    return  # the user chose another folder
  assert jax.config.jax_compilation_cache_dir == str(compile_cache_dir())
  assert compile_cache_dir().name == f"jaxlib-{jax.lib.__version__}-cpu-{cpu_fingerprint()}"
  assert len(cpu_fingerprint()) == 12 and cpu_fingerprint() == cpu_fingerprint()


def test_a_cached_executable_equals_a_fresh_compile_and_a_changed_program_misses():
  events = []

  def listener(event, **kwargs):
    if event.startswith("/jax/compilation_cache/cache_"):
      events.append(event.rsplit("_", 1)[-1])

  monitoring.register_event_listener(listener)
  try:
    scale = random.Random().uniform(1, 2)  # a program no earlier run has put in the cache
    x = np.linspace(-3, 3, 4096, dtype=np.float32)
    fresh = np.asarray(jax.jit(lambda v: jnp.tanh(v * scale) ** 3)(x))
    assert events == ["misses"]
    jax.clear_caches()  # forget the in-memory executable: the next call reads the persistent cache
    cached = np.asarray(jax.jit(lambda v: jnp.tanh(v * scale) ** 3)(x))
    assert events == ["misses", "hits"]
    np.testing.assert_array_equal(cached, fresh)
    other = np.asarray(jax.jit(lambda v: jnp.tanh(v * (scale + 0.5)) ** 3)(x))  # one constant differs
    assert events == ["misses", "hits", "misses"]
    np.testing.assert_allclose(
      other, np.tanh(x.astype(np.float64) * (scale + 0.5)) ** 3, rtol=1e-5, atol=1e-6
    )
  finally:
    monitoring.unregister_event_listener(listener)
