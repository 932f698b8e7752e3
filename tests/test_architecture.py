"""The package's shape (docs/architecture.md): the import-linter layers of ``pyproject.toml`` hold (and catch an
upward import), no module imports itself back through others, and no module or folder outgrows what a reader takes
in at once."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.helpers.repo import REPO

PACKAGE = REPO / "hybrid_ir"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
MAX_MODULE_LINES = 400
MAX_FOLDER_MODULES = 10


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": str(LINT_IMPORTS.parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_are_kept() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward"),
    [
        ("utils/io.py", "hybrid_ir.data.corpus"),  # utils imports data
        ("data/formats/jsonl.py", "hybrid_ir.data.runtime.dataset"),  # a format imports the runtime
    ],
)
def test_an_upward_import_breaks_the_contracts(tmp_path: Path, module: str, upward: str) -> None:
    shutil.copytree(PACKAGE, tmp_path / "hybrid_ir", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "hybrid_ir" / module
    target.write_text(target.read_text() + f"\nimport {upward}  # noqa: E402\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and upward in result.stdout


def import_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph("hybrid_ir")
    return {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, as found by a depth-first search (one path per back edge)."""
    found, state, path = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back() -> None:
    sys.path.insert(0, str(REPO))
    assert cycles(import_graph()) == []


def test_no_module_is_longer_than_a_reader_takes_in() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_folder_holds_more_modules_than_a_reader_takes_in() -> None:
    crowded = {}
    for folder in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        if len(modules) > MAX_FOLDER_MODULES:
            crowded[str(folder.relative_to(REPO))] = len(modules)
    assert crowded == {}


def test_every_module_says_what_it_is_for_and_where_it_is_specified() -> None:
    """A module docstring says what the module is for and names the docs page that specifies it, which exists."""
    missing, unlinked, dead = [], [], []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text()))
        name = str(path.relative_to(REPO))
        if not doc:
            missing.append(name)
            continue
        pages = re.findall(r"docs/[\w-]+\.md", doc)
        if not pages:
            unlinked.append(name)
        dead += [f"{name}: {page}" for page in pages if not (REPO / page).is_file()]
    assert (missing, unlinked, dead) == ([], [], [])
