"""Reading YAML as composed nodes, within limits: how many nodes a text may hold and how deep it may nest,
and YAML errors placed at their line and column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError, MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from npuctl.schema.errors import ManifestError, excerpt

MAX_NODES = 100_000
"""Nodes one document may expand to (aliases count each time they are used): stops billion-laughs."""
MAX_DEPTH = 64


def bounded_yaml() -> YAML:
    """A YAML reader that composes nodes only, within the node and depth limits."""
    yaml = YAML(typ="safe", pure=True)
    yaml.Composer = BoundedComposer
    # The composer recurses per nesting level: stop it at the limit, before Python's recursion limit
    # (reaching that took ~30 s on `[[[[...`).
    yaml.max_depth = MAX_DEPTH + 1
    return yaml


def yaml_error(exc: YAMLError | RecursionError, file: Path) -> ManifestError:
    """A YAML reading error, placed."""
    if not isinstance(exc, MarkedYAMLError):
        return ManifestError(str(file), 1, 1, "", f"YAML: {excerpt(str(exc), 200)}")
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    if isinstance(exc, MaxDepthExceededError):
        problem = f"nesting is deeper than {MAX_DEPTH} levels"
    else:
        problem = "YAML syntax: " + excerpt(" ".join(str(p) for p in (exc.context, exc.problem) if p), 200)
    return ManifestError(str(file), line, column, "", problem)


class TooBig(YAMLError):
    """More nodes or deeper nesting than a document may have."""


class BoundedComposer(Composer):
    """Stops at MAX_NODES nodes in the text, before building them all: a 1 MB flat list of 300,000
    items took ~10 s to compose."""

    _count = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._count += 1
        if self._count > MAX_NODES:
            raise ComposerError(None, None, f"the text holds more than {MAX_NODES} YAML nodes",
                                self.parser.peek_event().start_mark)
        return super().compose_node(parent, index)
