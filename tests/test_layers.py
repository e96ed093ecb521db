"""The architecture as the layout states it: schema ← build/runtime ← serve ← agent ← cli. A module may
import its own layer and those below, never above (runtime sits below build: build reuses its QNN helpers)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "npuctl"
ALLOWED = {
    "schema": {"schema"},
    "runtime": {"schema", "runtime"},
    "build": {"schema", "runtime", "build"},
    "serve": {"schema", "runtime", "build", "serve"},
    "agent": {"schema", "runtime", "build", "serve", "agent"},
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
