"""Test setup: 8 host CPU devices, so that sharded code paths run on one machine, XLA's backend
optimisation level 0 (faster compiles of the same programs), and JAX's persistent compilation cache,
shared by the test processes and the training processes they start.

The cache lives in ``artifacts/jax_cache/<jaxlib version>-<CPU fingerprint>``. JAX keys each entry by the
program, the compile options, the XLA flags, the jaxlib version and the devices; the folder adds the CPU's
model and instruction-set flags, so that executables compiled for one CPU (say with AVX-512) are never
loaded on another. A stale entry therefore cannot be hit: it can only be unused. ``make clean-cache``
removes the folder.
"""

import fcntl
import hashlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cpu_info() -> str:
  """The text of /proc/cpuinfo ('' where there is none)."""
  try:
    return Path("/proc/cpuinfo").read_text()
  except OSError:
    return ""


def cpu_fingerprint() -> str:
  """A short digest of what compiled CPU code depends on: the architecture, the CPU model and its flags."""
  keys = ("model name", "flags", "Features", "CPU part")
  lines = sorted({line for line in cpu_info().splitlines() if line.startswith(keys)})
  lines = lines or [platform.processor()]
  return hashlib.sha256("\n".join([platform.machine(), *lines]).encode()).hexdigest()[:12]


def compile_cache_dir() -> Path:
  from importlib.metadata import version

  return REPO / "artifacts" / "jax_cache" / f"jaxlib-{version('jaxlib')}-cpu-{cpu_fingerprint()}"


# Backend optimisation level 0: XLA's HLO passes (fusion, layout, sharding) all run, LLVM does not optimise
# the machine code. The tests' models are tiny, so compiling is most of their time, and this halves it.
os.environ.setdefault(
  "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Environment variables (not jax.config) so that subprocesses (scripts.train, launch_local) share the cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(compile_cache_dir()))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


def made_once(tmp_path_factory, name: str, make) -> Path:
  """A folder that ``make(folder)`` fills once for the whole test run, shared by every pytest-xdist worker
  (the first to need it makes it while the others wait on a lock; all then read it). Only for folders the
  tests read and never change."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the workers' base folders share this parent
  folder, done = root / name, root / f"{name}.done"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(folder, ignore_errors=True)
      folder.mkdir()
      make(folder)
      done.touch()
  return folder


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
  """A TFDS data_dir with the real Fashion-MNIST, prepared once for the whole test run."""
  from fsq.data import builders

  return made_once(tmp_path_factory, "tfds", lambda folder: builders.prepare("fashion_mnist_local", folder))


@pytest.fixture(scope="session")
def tiny_tokenizer(tfds_data_dir, tmp_path_factory):
  """The workdir of ``tests.helpers.tiny_maskgit_config``'s tokenizer trained 2 steps with checkpoints at
  steps 1 and 2, once for the whole test run (tests read it, or copy it before they change it)."""
  from fsq.tasks import train_and_evaluate
  from tests.helpers import tiny_maskgit_config

  config = tiny_maskgit_config(tfds_data_dir, "tokenizer", checkpoint_every_steps=1)
  return made_once(tmp_path_factory, "tiny_tokenizer", lambda folder: train_and_evaluate(config, folder))


@pytest.fixture(scope="session")
def gcs_bucket(tmp_path_factory):
  """``gs://fsq-test`` on a real Cloud Storage emulator (``tests.gcs_emulator``: gcp-storage-emulator's
  HTTP server, started here as a process on localhost): gs:// URLs under it work in this process and in
  the processes its tests start (gcsfs reads ``STORAGE_EMULATOR_HOST``, orbax's tensorstore
  ``TENSORSTORE_GCS_HTTP_URL``).
  Anonymous access, and not gcsfs's experimental bucket-type probe (gRPC, which no emulator speaks)."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  command = [sys.executable, "-m", "tests.gcs_emulator", f"--port={port}", "--bucket=fsq-test"]
  log = tmp_path_factory.mktemp("gcs") / "emulator.log"
  with open(log, "w") as out:
    server = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
  deadline = time.monotonic() + 60
  while True:
    try:
      urllib.request.urlopen(f"{url}/storage/v1/b/fsq-test", timeout=5).close()
      break
    except OSError:
      if server.poll() is not None or time.monotonic() > deadline:
        server.kill()
        raise RuntimeError(f"the GCS emulator did not start: {log.read_text()}") from None
      time.sleep(0.2)
  env = {
    "STORAGE_EMULATOR_HOST": url,
    "TENSORSTORE_GCS_HTTP_URL": url,
    "FSSPEC_GCS_TOKEN": "anon",
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
  }
  os.environ.update(env)
  import fsspec

  fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
  yield "gs://fsq-test"
  server.terminate()
  server.wait(timeout=30)
  for name in env:
    os.environ.pop(name, None)


def pytest_collection_modifyitems(config, items):
  """Files with tests marked slow run first (in file order otherwise), so that the two workers of
  ``make test`` (``--dist loadfile`` hands out whole files in this order) finish at about the same time."""
  slow_files = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in slow_files)


def pytest_terminal_summary(terminalreporter):
  """Names the machine under the durations, so that every CI log shows what its times were measured on."""
  info = cpu_info()
  names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
  model = names[0] if names else platform.processor()
  avx512 = "yes" if " avx512f" in info else "no"
  terminalreporter.write_line(f"machine: {os.cpu_count()} cores, {model}, AVX-512 {avx512}")
