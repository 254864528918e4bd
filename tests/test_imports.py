"""The package imports in one direction: cli -> stages -> api -> library -> base.

An AST scan of every module of carcli/ (imports at the top of a module and inside functions
alike: a lazy import is still a dependency) checks two things:

* **no cycle** between modules (e.g. `api` importing `predict.run` while `predict.run`
  imports `api`, the cycle this test was written against);
* **no upward import**: every module belongs to one of the layers below and imports only
  from its own layer or lower ones. Skipping a layer downwards is allowed (the CLI calls the
  `run_*` functions of `training`, `bundle`, `predict` and `data` directly).

The layers, bottom to top:

1. ``base``: `_version`, `errors`, `threads`, `ui`: imported by everything, import nothing
   of carcli.
2. ``library``: the packages that do the work: `recipe`, `artefacts`, `distributed`, `data`,
   `models`, `losses`, `metrics`, `runtime`, `sampling`, `plots`, `training`, `bundle`,
   `predict`. Some of them read a recipe (`runtime.speed`, `training`, `bundle`, `distributed`);
   they may import each other, without cycles between packages (checked separately, so the
   package map in docs/development.md stays a graph with a direction).
3. ``api``: `carcli.api` (`load_model`, `Model`, `Prediction`) and the package's top
   (`carcli/__init__.py`, which only re-exports `load_model` and `__version__`).
4. ``stages``: one module per pipeline command (`prepare`, `sample`, `evaluate`,
   `plot-reliability`, `import-samples`, `predict`): read a recipe or the command's
   arguments and call the library or the API.
5. ``cli``: `carcli.cli` (Typer app, help, the `validate` command) and `carcli.__main__`.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "carcli"

BASE = {"_version", "errors", "threads", "ui"}
LIBRARY = {
    "recipe",
    "artefacts",
    "distributed",
    "data",
    "models",
    "losses",
    "metrics",
    "runtime",
    "sampling",
    "plots",
    "training",
    "bundle",
    "predict",
}
LAYERS = {
    **{name: 0 for name in BASE},
    **{name: 1 for name in LIBRARY},
    "api": 2,
    "": 2,  # carcli/__init__.py
    "stages": 3,
    "cli": 4,
    "__main__": 4,
}
LAYER_NAMES = ("base", "library", "api", "stages", "cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The carcli modules `name` imports (anywhere in its body), resolved to module names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "carcli")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "carcli":
                continue
            for alias in node.names:  # `from carcli import distributed` names a module
                full = f"{source}.{alias.name}"
                found.add(full if full in modules else source)
    out = set()
    for target in found:
        while target not in modules and "." in target:
            target = target.rpartition(".")[0]
        if target in modules and target != name:
            out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _unit(module: str) -> str:
    """The layer key of a module: its first name under carcli ('' for carcli itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_every_module_has_a_layer() -> None:
    unknown = sorted({_unit(m) for m in _modules()} - set(LAYERS))
    assert not unknown, f"add these to a layer in tests/test_imports.py: {unknown}"


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(_graph()) == []


def test_no_cycle_between_library_packages() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        if _unit(module) in LIBRARY:
            packages[_unit(module)] |= {
                _unit(t) for t in targets if _unit(t) in LIBRARY and _unit(t) != _unit(module)
            }
    graph = {p: packages.get(p, set()) for p in LIBRARY}
    assert _cycles(graph) == []


def test_no_upward_import() -> None:
    upward = []
    for module, targets in _graph().items():
        here = LAYERS[_unit(module)]
        for target in sorted(targets):
            there = LAYERS[_unit(target)]
            if there > here:
                upward.append(
                    f"{module} ({LAYER_NAMES[here]}) imports {target} ({LAYER_NAMES[there]})"
                )
    assert not upward, "\n".join(upward)


def test_the_scan_sees_imports() -> None:
    """The scan itself: a known lazy import and a known `from carcli import module`."""
    graph = _graph()
    assert "carcli.api" in graph["carcli.stages.predict"]
    assert "carcli.distributed" in graph["carcli.stages.sample"]
    assert "carcli.api" in graph["carcli"]  # lazy, inside __getattr__


def test_package_map_in_the_docs_is_the_real_one() -> None:
    """docs/development.md's package map lists what each package imports (base modules left
    out); the list is the one the code has."""
    text = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
    section = text.split("## Map of the package", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, set[str]] = {}
    for line in section.splitlines():
        m = re.match(r"^\| `carcli/([a-z_]+)(?:/|\.py)` \|.*\| ([^|]*) \|$", line)
        if m:
            names = m.group(2).strip()
            documented[m.group(1)] = set() if names == "—" else set(names.split(", "))
    real: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        unit = _unit(module)
        real[unit] |= {_unit(t) for t in targets if _unit(t) not in BASE and _unit(t) != unit}
    expected = {u: real.get(u, set()) for u in LIBRARY | {"api", "stages", "cli"}}
    assert documented == expected
