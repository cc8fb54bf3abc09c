"""The core install: the quantizer modules import no extra, a package without its extra says which one to
install, and the wheel installed with the core dependencies alone runs the README's API examples."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from fsq.extras import EXTRAS

REPO = Path(__file__).resolve().parents[1]
CORE = ("fsq.quantizers", "fsq.layers", "fsq.nnx", "fsq.vq", "fsq.metrics")


def python(code: str, executable: str = sys.executable, cwd: Path = REPO) -> subprocess.CompletedProcess:
  return subprocess.run(
    [executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=600
  )


def readme_examples() -> str:
  """The Python blocks of the README's API section, as one script."""
  text = (REPO / "README.md").read_text()
  section = text[text.index("## The API in a few lines") :]
  section = section[: section.index("\n## ", 1)]
  return "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))


def test_core_modules_import_no_extra():
  # What jax, flax, chex and numpy import themselves does not count; what fsq's core adds must not be
  # an extra's.
  done = python(f"""
    import sys
    import chex, flax.linen, flax.nnx, jax, numpy
    before = set(sys.modules)
    import {", ".join(CORE)}
    print(sorted({{m.split(".")[0] for m in set(sys.modules) - before}}))
  """)
  assert done.returncode == 0, done.stderr
  added = set(eval(done.stdout.strip().splitlines()[-1]))
  extras = {m for modules in EXTRAS.values() for m in modules}
  assert not added & extras, added & extras
  assert "fsq" in added


@pytest.mark.parametrize(
  "package, extra, blocked", [("fsq.train", "train", "optax"), ("fsq.evals", "eval", "constriction")]
)
def test_a_package_without_its_extra_names_it(package, extra, blocked):
  done = python(f"""
    import importlib.abc, sys

    class Missing(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path, target=None):
        if name.split(".")[0] == {blocked!r}:
          raise ModuleNotFoundError(f"No module named {{name!r}}")

    sys.meta_path.insert(0, Missing())
    import {package}
  """)
  assert done.returncode != 0
  message = f"{package} needs fsq's [{extra}] extra, which is not installed (missing: {blocked}): "
  message += f"pip install 'fsq[{extra}]'"
  assert message in done.stderr, done.stderr


@pytest.mark.slow
def test_the_wheel_with_core_dependencies_only_runs_the_readme_examples(tmp_path):
  """pip builds the wheel (py.typed, the license and the README inside), installs it into a fresh virtual
  environment with its core dependencies from the package index, and the README's examples run there."""
  source, wheels = tmp_path / "source", tmp_path / "wheels"  # a copy: setuptools builds inside the tree
  shutil.copytree(REPO / "fsq", source / "fsq", ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(REPO / name, source / name)
  build = subprocess.run(
    [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert build.returncode == 0, build.stderr
  (wheel,) = wheels.glob("fsq-*.whl")
  with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
    metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
  assert "fsq/py.typed" in names and any(n.endswith("LICENSE") for n in names)
  assert "## The API in a few lines" in metadata  # the README as the long description
  requires = sorted(
    line.split()[1]
    for line in metadata.splitlines()
    if line.startswith("Requires-Dist:") and "extra ==" not in line
  )
  assert requires == ["chex>=0.1.92", "flax>=0.12.8", "jax>=0.10.2", "numpy>=2.4"]

  env = tmp_path / "env"
  subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
  install = subprocess.run(
    [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile", str(wheel)],
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert install.returncode == 0, install.stderr
  listing = (
    "import importlib.metadata as m; print(sorted(d.metadata['Name'].lower() for d in m.distributions()))"
  )
  installed = python(listing, str(env / "bin" / "python"), tmp_path)
  names = set(eval(installed.stdout.strip().splitlines()[-1]))
  # flax brings optax and orbax itself; none of the extras' own packages may come with the core
  assert (
    not {"tensorflow-datasets", "grain", "constriction", "matplotlib", "ml-collections", "tensorboardx"}
    & names
  )
  done = python(readme_examples(), str(env / "bin" / "python"), tmp_path)
  assert done.returncode == 0, done.stderr
