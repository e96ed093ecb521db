"""Read manifest files into `ModelDeployment`s, with every error placed at its file, line and column.

YAML is composed into nodes (never constructed into arbitrary objects), so positions survive,
unknown tags and duplicate keys are refused, and alias expansion is bounded.
"""

from __future__ import annotations

import difflib
import io
import re
import types
import typing
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import ReusedAnchorWarning, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from npuctl.schema.errors import ManifestError, excerpt
from npuctl.schema.models import API_VERSION, KIND, ModelDeployment
from npuctl.schema.opening import Unreadable, read_capped
from npuctl.schema.reading import MAX_DEPTH, MAX_NODES, TooBig, bounded_yaml, yaml_error

MAX_FILE_BYTES = 1 << 20
MANIFEST_SUFFIXES = (".yaml", ".yml")

Loc = tuple[str | int, ...]
_STANDARD_TAG = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_STANDARD_TAG + name for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")}


@dataclass(frozen=True)
class LoadedDeployment:
    """A valid deployment and where it was declared."""

    deployment: ModelDeployment
    file: Path
    line: int
    positions: dict[Loc, tuple[int, int]] = field(repr=False, compare=False, default_factory=dict)
    """(line, column) of every value in the document, by field path: for errors found later (builds)."""

    @property
    def name(self) -> str:
        return self.deployment.name

    def where(self, loc: Loc = ()) -> str:
        """`file:line:col` of a field, or of the nearest enclosing one that exists."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.positions:
                line, column = self.positions[loc[:end]]
                return f"{self.file}:{line}:{column}"
        return f"{self.file}:{self.line}:1"


@dataclass
class LoadResult:
    deployments: list[LoadedDeployment] = field(default_factory=list)
    errors: list[ManifestError] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def manifest_files(path: Path) -> list[Path]:
    """The manifest files under `path`: itself if a file; else its YAML files, hidden and editor files skipped.
    Names that are not regular files (links, FIFOs, devices, sockets) are listed too: reading them is refused
    with the reason, which a user should see rather than nothing."""
    if path.is_file():
        return [path]
    if path.exists() and not path.is_dir():
        raise FileNotFoundError(f"{path}: not a regular file or a folder (a device, pipe or socket)")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory")
    return sorted(
        file
        for file in path.rglob("*")
        if file.suffix in MANIFEST_SUFFIXES
        and (file.is_symlink() or not file.is_dir())  # a folder named x.yaml is searched, not read
        and not any(part.startswith((".", "~")) for part in file.relative_to(path).parts)
    )


def load_file(file: Path, within: Path | None = None) -> LoadResult:
    """Read and validate one manifest file. With `within` (the folder it was found in), a link out of that
    folder is refused unread (npuctl.schema.opening)."""
    try:
        raw = read_capped(file, MAX_FILE_BYTES, within)
    except Unreadable as exc:
        return _fail(file, str(exc))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _fail(file, f"not UTF-8 text (byte {exc.start})")
    result = load_text(text, file)
    result.files.append(file)
    return result


def load_text(text: str, file: Path | str = "<string>") -> LoadResult:
    """Parse and validate every document of one YAML text."""
    file = Path(file)
    result = LoadResult()
    if len(text) > MAX_FILE_BYTES:
        return _fail(file, f"text is {len(text)} characters; manifests are limited to {MAX_FILE_BYTES} bytes")
    yaml = bounded_yaml()
    try:
        with warnings.catch_warnings():
            # YAML 1.2 lets an anchor be defined again (the latest one wins); that is no reason to print.
            warnings.simplefilter("ignore", ReusedAnchorWarning)
            for node in yaml.compose_all(io.StringIO(text)):
                if node is None or is_empty(node):
                    continue
                _load_document(node, file, yaml, result)
    except (YAMLError, RecursionError) as exc:
        result.errors.append(yaml_error(exc, file))
    return result


def _fail(file: Path, message: str) -> LoadResult:
    return LoadResult(errors=[ManifestError(str(file), 1, 1, "", message)], files=[file])


def is_empty(node: Node) -> bool:
    return isinstance(node, ScalarNode) and str(node.tag) == _STANDARD_TAG + "null" and node.value in ("", "~", "null")


def _load_document(node: Node, file: Path, yaml: YAML, result: LoadResult) -> None:
    tree = Tree(file, yaml)
    data = tree.build(node)
    line = node.start_mark.line + 1
    if tree.errors:
        result.errors.extend(tree.errors)
        return
    if not isinstance(data, dict):
        result.errors.append(
            ManifestError(str(file), line, node.start_mark.column + 1, "",
                          f"a manifest is a mapping with apiVersion: {API_VERSION}, kind: {KIND}, metadata and spec")
        )
        return
    try:
        deployment = ModelDeployment.model_validate(data)
    except ValidationError as exc:
        result.errors.extend(tree.error(err) for err in exc.errors())
        return
    positions = {loc: tree.value_position(loc) for loc in tree.values}
    result.deployments.append(LoadedDeployment(deployment, file, line, positions))


class Tree:
    """Turns a composed YAML node into plain data, remembering where every key and value was, and places
    the errors of validating that data as a `root` model."""

    def __init__(self, file: Path, yaml: YAML, root: type[BaseModel] = ModelDeployment) -> None:
        self.file = file
        self.root = root
        self.constructor = yaml.constructor
        self.keys: dict[Loc, Node] = {}
        self.values: dict[Loc, Node] = {}
        self.errors: list[ManifestError] = []
        self._nodes = 0

    def build(self, node: Node, loc: Loc = ()) -> Any:
        self.values[loc] = node
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise TooBig(f"document expands to more than {MAX_NODES} nodes (aliases included)")
        if len(loc) > MAX_DEPTH:
            raise TooBig(f"nesting is deeper than {MAX_DEPTH} levels")
        tag = str(node.tag)
        if tag not in _PLAIN_TAGS:
            self._add(node, loc, f"tag {tag!r} is not allowed; manifests use plain YAML values")
            return None
        if isinstance(node, MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*loc, index)) for index, item in enumerate(node.value)]
        return self._scalar(node, loc)

    def _scalar(self, node: Node, loc: Loc) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except (YAMLError, ValueError, OverflowError) as exc:
            # ValueError: a timestamp like 2001-13-45, an int past Python's 4300-digit conversion limit.
            self._add(node, loc, f"bad value: {excerpt(str(exc), 200)}")
            return None

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in self._merged_pairs(node, loc):
            key = self._key(key_node)
            if not isinstance(key, str | int | float | bool):
                self._add(key_node, loc, "mapping keys must be plain scalars")
                continue
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                first = self.keys[(*loc, key)].start_mark
                self._add(key_node, (*loc, key), f"duplicate key {excerpt(key)!r} (first at line {first.line + 1})")
                continue
            self.keys[(*loc, key)] = key_node
            out[key] = self.build(value_node, (*loc, key))
        return out

    def _key(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode) or str(node.tag) not in _PLAIN_TAGS:
            return None
        return node.value if str(node.tag) == _STANDARD_TAG + "str" else self._scalar(node, ())

    def _merged_pairs(self, node: MappingNode, loc: Loc) -> Iterator[tuple[Node, Node]]:
        """The mapping's pairs, with `<<: *anchor` merges expanded (explicit keys win)."""
        merged: list[tuple[Node, Node]] = []
        own: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if str(key_node.tag) == _STANDARD_TAG + "merge":
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if isinstance(source, MappingNode):
                        merged.extend(source.value)
                    else:
                        self._add(value_node, loc, "'<<' merges only mappings")
            else:
                own.append((key_node, value_node))
        own_keys = {k.value for k, _ in own if isinstance(k, ScalarNode)}
        seen: set[Any] = set()
        for key_node, value_node in merged:
            if not isinstance(key_node, ScalarNode):
                yield key_node, value_node  # refused as a key by the caller
            elif key_node.value not in own_keys and key_node.value not in seen:
                seen.add(key_node.value)
                yield key_node, value_node
        yield from own

    def _add(self, node: Node, loc: Loc, message: str) -> None:
        mark = node.start_mark
        self.errors.append(ManifestError(str(self.file), mark.line + 1, mark.column + 1, _dotted(loc), message))

    def value_position(self, loc: Loc) -> tuple[int, int]:
        mark = self.values[loc].start_mark
        return mark.line + 1, mark.column + 1

    def error(self, err: Any) -> ManifestError:
        """A pydantic error, placed and worded for people."""
        loc: Loc = tuple(err["loc"])
        kind = err["type"]
        node = None
        if kind == "extra_forbidden" and loc in self.keys:
            node = self.keys[loc]
        elif kind == "missing":
            node = self.keys.get(loc[:-1]) or self._nearest(loc[:-1])
        if node is None:
            node = self._nearest(loc)
        mark = node.start_mark
        return ManifestError(str(self.file), mark.line + 1, mark.column + 1, _dotted(loc), _message(err, loc, self.root))

    def _nearest(self, loc: Loc) -> Node:
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.values:
                return self.values[loc[:end]]
        return self.values[()]


def _dotted(loc: Loc) -> str:
    return ".".join(excerpt(str(part)) for part in loc)


def _message(err: Any, loc: Loc, root: type[BaseModel]) -> str:
    kind, value = err["type"], err.get("input")
    if kind in ("enum", "literal_error"):
        allowed = re.findall(r"'([^']*)'", err["ctx"]["expected"])
        shown = repr(excerpt(value)) if isinstance(value, str) else excerpt(repr(value))
        return f"{shown} is not one of {', '.join(allowed)}"
    if kind == "extra_forbidden":
        known = _field_names(loc[:-1], root)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(known)}"
        return f"unknown field {excerpt(str(loc[-1]))!r}{hint}"
    if kind == "missing":
        return f"required field {loc[-1]!r} is missing"
    if kind.startswith("value_error") or kind == "assertion_error":
        return excerpt(str(err["msg"]).removeprefix("Value error, "), 200)
    if isinstance(value, str | int | float | bool) and len(repr(value)) < 80:
        return f"{err['msg']} (got {value!r})"
    return str(err["msg"])


def _field_names(loc: Loc, root: type[BaseModel]) -> list[str]:
    """The YAML keys valid at `loc`, for did-you-mean hints."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        info = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        model = _inner_model(info.annotation) if info else None
    return [f.alias or n for n, f in model.model_fields.items()] if model else []


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found:
                return found
    return None
