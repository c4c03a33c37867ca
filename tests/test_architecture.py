"""The package layout's rules, checked on the source: no import cycle between our modules, and the ML package
never imports the gateway (``service`` depends on ``router_models``, not the reverse).

The graph has one node per module of ``router_models`` and ``service`` and an edge for every import statement
that runs, at module level or inside a function (a function-level import hides a cycle, it does not remove it).
Imports under ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("router_models", "service")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module → the modules of ours it imports. ``from pkg import name`` points at ``pkg.name`` when that is a
    module, else at ``pkg``; relative imports are resolved against the importing module."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start)):
            return cycle
    return None


def test_the_graph_sees_function_level_imports_and_skips_type_checking_ones() -> None:
    graph = import_graph(_modules())
    assert "router_models.artifact.save" in graph["router_models.router"]  # imported inside TrainedRouter.version
    assert "router_models.router" not in graph["router_models.artifact.save"]  # only under TYPE_CHECKING
    assert "router_models.scorers.registry" in graph["router_models.scorers.knn"]


def test_find_cycle_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph(_modules()))
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_router_models_never_imports_service() -> None:
    graph = import_graph(_modules())
    bad = {m: sorted(t for t in ts if t.split(".")[0] == "service") for m, ts in graph.items()}
    bad = {m: ts for m, ts in bad.items() if m.startswith("router_models") and ts}
    assert not bad, f"router_models imports service: {bad}"
    # also a bare `import service` (not in the graph when it names no module of ours)
    for name, path in _modules().items():
        if name.startswith("router_models"):
            text = path.read_text()
            assert "import service" not in text and "from service" not in text, name


@pytest.mark.parametrize("stage", ["features", "scorers", "decide", "train", "evaluate", "artifact"])
def test_every_stage_is_a_package_with_a_docstring(stage: str) -> None:
    init = ROOT / "router_models" / stage / "__init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init} should say what the stage does"


def test_only_the_settings_read_the_environment() -> None:
    """``os.environ`` / ``os.getenv`` appear in the two Settings modules only; values are passed down."""
    allowed = {"router_models.settings", "service.core.config"}
    readers = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and name not in allowed:
                readers.append(f"{name}:{node.lineno}")
    assert not readers, f"read the environment outside the Settings: {readers}"
