"""The layers hold: the library imports nothing of Dagster or of the application, and has no import
cycle; the application is thin."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent.parent / "semindex"


def library_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(LIBRARY.rglob("*.py")):
        parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Library modules `name` imports anywhere in its file (lazy imports count too), with the package
    __init__ each import runs first when it reaches into another package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if not target or target == name:
                continue
            found.add(target)
            # Importing semindex.a.b runs semindex.a first, unless we are inside semindex.a already.
            parent = target.rpartition(".")[0]
            while parent and parent in known and not (name == parent or name.startswith(parent + ".")):
                found.add(parent)
                parent = parent.rpartition(".")[0]
    return found


def test_the_library_has_no_import_cycle():
    modules = library_modules()
    graph = {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}
    graph = {name: {target for target in targets if target != "semindex"} for name, targets in graph.items()}
    cycles, index, low, stack, on_stack, counter = [], {}, {}, [], set(), [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for name in graph:
        if name not in index:
            visit(name)
    assert not cycles, f"import cycles in the library: {cycles}"
    assert len(graph) > 40  # the walk really saw the library


BLOCKER = """
import importlib.abc, pkgutil, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("dagster", "dagster_postgres", "dagster_webserver", "semindex_app"):
            raise ImportError(f"the library imported {name}")
        return None

sys.meta_path.insert(0, Refuse())
import semindex
names = [m.name for m in pkgutil.walk_packages(semindex.__path__, "semindex.")]
for name in names:
    __import__(name)
assert not any(n.split(".")[0] in ("dagster", "semindex_app") for n in sys.modules)
print(len(names))
"""


def test_every_library_module_imports_without_dagster_or_the_application():
    result = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.split()[-1]) >= 40


def test_assets_are_thin_calls_into_the_library():
    """Every asset body is one statement that hands a library stage report to the metadata helper."""
    assets = Path(__file__).resolve().parent.parent / "assets"
    for path in sorted(assets.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            decorated = isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "attr", None) == "asset" for d in node.decorator_list
            )
            if decorated:
                body = [stmt for stmt in node.body if not isinstance(stmt, ast.Expr)]  # docstrings aside
                assert len(body) <= 2 and isinstance(body[-1], ast.Return), f"{path.name}:{node.name} is not thin"
