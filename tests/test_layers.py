"""The architecture as the layout states it: schema ← runtime ← artifacts ← serve ← agent ← cli, folders by concern
inside serve and artifacts with their own rules, and no import circle between any two modules."""

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
TOP = "<top>"
"""The modules directly in a layer's folder (and its __init__), as opposed to its subfolders."""
SUBPACKAGES = {
    "serve": {
        # Plumbing every API shares: it knows nothing of models, generation or any API.
        "http": set(),
        # The description's request bodies are the models each API validates them with.
        "openapi": {"openai", "ollama", "oip", "scoring", "tei"},
        "generation": {TOP, "http"},
        "openai": {TOP, "http", "generation"},
        "oip": {TOP, "http", "generation"},
        "scoring": {TOP, "http", "generation"},
        # Ollama's answers reuse OpenAI's embedding route and reply objects.
        "ollama": {TOP, "http", "generation", "openai"},
        # TEI/TGI answer with the other APIs' use cases; `/` answers as Ollama's root does for a plain GET.
        "tei": {TOP, "http", "generation", "openai", "scoring", "ollama"},
    },
    "artifacts": {
        "sources": {TOP},
        "encoder": {TOP},
        # T5's export reuses the encoder's export helpers and measurement.
        "seq2seq": {TOP, "encoder"},
        "llm": {TOP, "sources"},
        "published": {TOP, "oci"},
        "oci": {TOP},
    },
}
TOP_MAY_IMPORT = {
    # The app mounts every API; the build graph runs every kind of build; the package surfaces re-export.
    "serve": {"app.py", "__init__.py"},
    "artifacts": {"pipeline.py", "measure.py", "__init__.py"},
}
"""Top-level modules that may import the layer's subfolders; every other top-level module imports only `http` (serve)
or nothing below it (artifacts), so the folders can be read and tested on their own."""
TOP_ALLOWED = {"serve": {TOP, "http", "generation"}, "artifacts": {TOP, "sources", "published"}}


def module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(file: Path) -> set[str]:
    """The npuctl modules (or packages) a module imports, anywhere in it, lazy and TYPE_CHECKING imports included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("npuctl"):
            found |= {_existing(f"{node.module}.{alias.name}") for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {_existing(alias.name) for alias in node.names if alias.name.startswith("npuctl")}
    return found


def _existing(dotted: str) -> str:
    """The longest prefix of `dotted` that is a module or package of npuctl (`from a.b import Name` imports a.b)."""
    parts = dotted.split(".")
    while len(parts) > 1:
        path = PACKAGE.parent.joinpath(*parts)
        if path.is_dir() or path.with_suffix(".py").is_file():
            return ".".join(parts)
        parts.pop()
    return "npuctl"


def subpackage(module: str) -> str:
    """`npuctl.serve.openai.chat` -> `openai`; `npuctl.serve.models` and `npuctl.serve` -> TOP."""
    parts = module.split(".")
    return parts[2] if len(parts) > 3 or (len(parts) == 3 and (PACKAGE / parts[1] / parts[2]).is_dir()) else TOP


def test_every_layer_imports_only_itself_and_below() -> None:
    wrong = {}
    for layer, allowed in ALLOWED.items():
        for file in (PACKAGE / layer).rglob("*.py"):
            extra = {m.split(".")[1] for m in imported_modules(file) if m.count(".") >= 1} - allowed
            if extra:
                wrong[str(file.relative_to(PACKAGE))] = sorted(extra)
    assert not wrong, f"imports against the layering: {wrong}"


def test_folders_inside_a_layer_import_only_what_their_rule_allows() -> None:
    wrong = {}
    for layer, rules in SUBPACKAGES.items():
        for file in (PACKAGE / layer).rglob("*.py"):
            here = subpackage(module_name(file))
            if here == TOP:
                allowed = set(rules) | {TOP} if file.name in TOP_MAY_IMPORT[layer] else TOP_ALLOWED[layer]
            else:
                allowed = rules[here] | {here}
            reached = {subpackage(m) for m in imported_modules(file) if m.split(".")[1:2] == [layer]}
            if reached - allowed:
                wrong[str(file.relative_to(PACKAGE))] = sorted(reached - allowed)
    assert not wrong, f"imports against the folder rules: {wrong}"


def test_every_folder_of_a_layer_has_a_rule() -> None:
    for layer, rules in SUBPACKAGES.items():
        folders = {p.name for p in (PACKAGE / layer).iterdir() if (p / "__init__.py").is_file()}
        assert folders == set(rules), f"npuctl/{layer}: give each folder a rule in SUBPACKAGES"


def test_no_import_circles_between_modules() -> None:
    """Each module can be read and tested below the ones that use it. Imports of a package count as imports of its
    __init__, and TYPE_CHECKING imports count too: a circle of types is still a circle to the reader."""
    graph: dict[str, set[str]] = {}
    for file in PACKAGE.rglob("*.py"):
        name = module_name(file)
        graph[name] = {m for m in imported_modules(file) if m != name and not name.startswith(m + ".")}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join((*path[path.index(name):], name))}"
        if name not in done:
            for imported in sorted(graph.get(name, set())):
                visit(imported, (*path, name))
            done.add(name)

    for name in sorted(graph):
        visit(name, ())


def test_the_agents_main_module_is_on_top() -> None:
    """`npuctl.agent.main` wires the agent together; nothing of the agent imports it."""
    users = [module_name(f) for f in (PACKAGE / "agent").rglob("*.py")
             if "npuctl.agent.main" in imported_modules(f) and f.name != "main.py"]
    assert not users
