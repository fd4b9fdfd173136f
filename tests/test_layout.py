"""The package's architecture, checked: every import points down, no module imports itself back in a
circle, and no module grows past the size one concept needs.

The layers, from the bottom:

    0  errors, fileio, backend          exceptions, atomic writes, NumPy/CuPy and BLAS
    1  layers/                          forward and backward passes
    2  weights/                         VGG19 weight files: layout, HDF5, readers, importers, fetching
    3  image/, networks/                pictures and the network's input space; VGG19 built from layers
    4  losses                           the objectives and their gradients
    5  runs: optimize, options, memory, transfer, gradcheck, bench, ...
    6  cli/                             the command line

A module may import from its own rank or below, never above. Imports inside functions count too
(they are how a cycle hides). The check reads the source with `ast`; nothing is imported.
"""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "handnst")
MAX_LINES = 600

RANKS = {
    "handnst.errors": 0, "handnst.fileio": 0, "handnst.backend": 0,
    "handnst.layers": 1,
    "handnst.weights": 2,
    "handnst.image": 3, "handnst.networks": 3,
    "handnst.losses": 4,
    "handnst.cli": 6,
}
RUNS_RANK = 5          # every other module of the package: the runs and the tools built on them
TOP = ("handnst", "handnst.__main__")   # the lazy public API and `python -m handnst` sit above everything


def _modules():
    found = {}
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return found


MODULES = _modules()


def _rank(module):
    if module in TOP:
        return 7
    for prefix, rank in RANKS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return RUNS_RANK


def _imports(module, path):
    """handnst modules named by every import statement of `module` (the longest name that exists)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    is_package = path.endswith("__init__.py")
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts[:len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    targets = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module and not module.startswith(name + "."):   # a package's own __init__
            targets.add(name)
    return targets


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def test_the_package_is_found():
    assert "handnst.layers.conv" in MODULES and "handnst.cli" in MODULES and "handnst.networks.vgg" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = sorted(t for t in GRAPH[module] if _rank(t) > _rank(module) and t not in TOP)
    assert not upward, f"{module} (rank {_rank(module)}) imports from higher layers: " + \
        ", ".join(f"{t} (rank {_rank(t)})" for t in upward)


def test_no_import_cycle():
    # Depth-first search over the whole graph; a back edge is a cycle. Package __init__ files that only
    # re-export their own submodules are edges downwards into the package, never back up.
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(GRAPH.get(node, ())):
            if target.startswith(node + ".") and node in MODULES and MODULES[node].endswith("__init__.py"):
                continue   # a package importing its own submodules to re-export them
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_too_long(module):
    with open(MODULES[module], encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}): split it by concept"
