"""The architecture as the layout states it: schema ← artifacts/runtime ← serve ← agent ← cli. A module may
import its own layer and those below, never above (runtime sits below artifacts: artifacts reuses its QNN helpers)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "npuctl"
# npuctl.errors (the NpuctlError base class) sits below every layer.
ALLOWED = {
    "schema": {"errors", "schema"},
    "runtime": {"errors", "schema", "runtime"},
    "artifacts": {"errors", "schema", "runtime", "artifacts"},
    "serve": {"errors", "schema", "runtime", "artifacts", "serve"},
    "agent": {"errors", "schema", "runtime", "artifacts", "serve", "agent"},
    "cli": {"errors", "schema", "runtime", "artifacts", "serve", "agent", "cli"},
}


def npuctl_imports(file: Path) -> set[str]:
    """The npuctl subpackages a module imports (anywhere in it, lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        found |= {name.split(".")[1] for name in names if name.startswith("npuctl.") and name.count(".") >= 1}
    return found


def test_every_layer_imports_only_itself_and_below() -> None:
    wrong = {}
    for layer, allowed in ALLOWED.items():
        for file in (PACKAGE / layer).rglob("*.py"):
            extra = npuctl_imports(file) - allowed
            if extra:
                wrong[str(file.relative_to(PACKAGE))] = sorted(extra)
    assert not wrong, f"imports against the layering: {wrong}"


def agent_graph() -> dict[str, set[str]]:
    """Each module of npuctl.agent -> the npuctl.agent modules it imports."""
    graph: dict[str, set[str]] = {}
    for file in (PACKAGE / "agent").glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "npuctl.agent":
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("npuctl.agent."):
                found.add((node.module or "").split(".")[2])
        graph[file.stem] = found - {file.stem}
    return graph


def test_the_agent_package_has_no_import_cycles_and_main_on_top() -> None:
    """Inside the agent: a module's imports form no cycle (each piece can be read and tested below the ones
    that use it), and `main`, which wires them together, is imported by none of them."""
    graph = agent_graph()
    assert not [name for name, imports in graph.items() if "main" in imports]
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name not in done:
            for imported in graph.get(name, set()):
                visit(imported, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())
