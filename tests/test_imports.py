"""No import cycle in fsq/: the modules' imports, at import time or inside functions, form a DAG, and so do
its packages' (the layers: quantizers < models < data < train < evals < tasks; the loop imports no task
module, the config check and post-hoc evaluation live with the tasks they read)."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _module_names() -> dict[str, Path]:
  names = {}
  for path in (REPO / "fsq").rglob("*.py"):
    parts = path.relative_to(REPO).with_suffix("").parts
    names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return names


def _imports(body):
  """A module's import statements, at its top level or inside functions, classes, ifs and trys; not those
  under ``if TYPE_CHECKING`` (annotations only)."""
  for node in body:
    if isinstance(node, ast.Import | ast.ImportFrom):
      yield node
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.With | ast.For):
      yield from _imports(node.body)
    elif isinstance(node, ast.If):
      if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
        yield from _imports(node.body)
      yield from _imports(node.orelse)
    elif isinstance(node, ast.Try):
      for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
        yield from _imports(block)


def import_graph() -> dict[str, set[str]]:
  """Module -> the fsq modules it imports (importing a.b.c runs the packages a and a.b too)."""
  modules = _module_names()
  graph = {}
  for name, path in modules.items():
    targets = set()
    for node in _imports(ast.parse(path.read_text()).body):
      imported = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
      if isinstance(node, ast.ImportFrom):
        imported += [f"{node.module}.{a.name}" for a in node.names]
      for target in imported:
        parts = target.split(".")
        # Importing a.b.c runs a, a.b and a.b.c; a package's own modules do not re-run its __init__.
        for i in range(1, len(parts) + 1):
          prefix = ".".join(parts[:i])
          if prefix in modules and prefix != name and not name.startswith(prefix + "."):
            targets.add(prefix)
    graph[name] = targets
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of ``graph`` as a path that returns to its start, or None for a DAG."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        return [*stack[stack.index(nxt) :], nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_the_cycle_finder_finds_a_planted_cycle_and_accepts_a_dag():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
  """``graph`` with each module replaced by its top-level unit under fsq (``fsq.train.loop`` ->
  ``fsq.train``, ``fsq.quantizers`` -> itself); a unit's imports of itself dropped."""

  def unit(module):
    return ".".join(module.split(".")[:2])

  units = {}
  for module, targets in graph.items():
    units.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
  return units


def test_fsq_has_no_import_cycle_between_modules_or_packages():
  graph = import_graph()
  assert "fsq.tasks.base" in graph["fsq.tasks.validate"]  # the config check reads the task families
  assert not {m for m in graph["fsq.train.loop"] if m.startswith("fsq.tasks")}  # the loop: none
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
  packages = package_graph(graph)
  assert packages["fsq.tasks"] >= {"fsq.train", "fsq.evals", "fsq.models"}
  assert not packages["fsq.train"] & {"fsq.tasks", "fsq.evals", "fsq.models"}
  assert not packages["fsq.data"] & {"fsq.train", "fsq.tasks"}
  assert not packages["fsq.evals"] & {"fsq.tasks"}
  assert find_cycle(packages) is None, " -> ".join(find_cycle(packages))
  planted = {**packages, "fsq.train": packages["fsq.train"] | {"fsq.tasks"}}
  assert find_cycle(planted) is not None


def test_benchmark_suites_sit_on_the_harness_without_a_circle():
  """scripts/benchmark.py picks a suite module of scripts/bench; a suite imports at most the harness of
  scripts/, never another suite; the harness imports neither."""
  from scripts import benchmark

  bench = REPO / "scripts" / "bench"
  suites = sorted(p.stem for p in bench.glob("*.py") if p.stem not in ("__init__", "harness"))
  assert sorted(module for module, _ in benchmark.SUITES.values()) == suites
  for name in ["harness", *suites]:
    imported = set()
    for node in _imports(ast.parse((bench / f"{name}.py").read_text()).body):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scripts"):
        imported.add(node.module)
    assert imported <= (set() if name == "harness" else {"scripts.bench.harness"}), (name, imported)
