"""The lessons must run: every notebook in lessons/ is executed top to bottom, in fast mode.

A lesson that quietly stops matching the package (a renamed function, a changed shape, a gradient that
no longer checks) fails here instead of in front of a learner. Each notebook runs in a fresh Python 3
kernel with its working directory in lessons/ (where _check.py lives), HANDNST_LESSON_FAST=1 (small
sizes, few iterations: under a minute per notebook on a 2-core CPU) and the non-interactive Agg
backend for matplotlib. The real VGG19 weights are used; they are fetched on first use if missing.

The notebooks are stored without outputs, so that diffs show only what a person wrote; that, and the
presence of at least one automatic check per notebook, is tested too.
"""

import ast
import os
import re
import time

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSONS = os.path.join(REPO, "lessons")
NOTEBOOKS = sorted(name for name in os.listdir(LESSONS) if name.endswith(".ipynb")) if os.path.isdir(LESSONS) else []
CELL_TIMEOUT_S = 120


def _check_helpers():
    """Names of the public functions of lessons/_check.py (what a check cell calls)."""
    with open(os.path.join(LESSONS, "_check.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")}


def _all_repo_notebooks():
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("build", "dist", "__pycache__", "node_modules")]
        found += [os.path.join(root, f) for f in files if f.endswith(".ipynb")]
    return sorted(found)


def test_there_are_lessons():
    assert NOTEBOOKS, "no notebooks found in lessons/"
    assert all(re.match(r"\d\d_\w+\.ipynb$", name) for name in NOTEBOOKS), NOTEBOOKS


@pytest.mark.parametrize("path", _all_repo_notebooks(), ids=lambda p: os.path.relpath(p, REPO))
def test_notebook_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} of {path} has stored outputs: clear them before committing"
            assert cell.execution_count is None, f"cell {index} of {path} has an execution count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_lesson_has_a_check_cell(name):
    nb = nbformat.read(os.path.join(LESSONS, name), as_version=4)
    sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    assert any(re.search(r"(from _check import|import _check)", s) for s in sources), f"{name} does not import _check"
    calls = re.compile(r"\b(%s)\(" % "|".join(sorted(_check_helpers())))
    check_lines = [line for s in sources for line in s.splitlines()
                   if calls.search(line) and not line.lstrip().startswith(("def ", "#"))]
    assert check_lines, f"{name} has no cell that calls a check from _check.py"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_lesson_runs_top_to_bottom_in_fast_mode(name, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("HANDNST_LESSON_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(os.path.join(LESSONS, name), as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": LESSONS}})
    start = time.perf_counter()
    client.execute()          # raises CellExecutionError, with the failing cell's traceback, on any error
    print(f"{name}: {time.perf_counter() - start:.1f} s")
