"""A problem in a YAML file (manifest or agent config), placed where a user can find it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXCERPT_CHARS = 60
"""The most of a file's own text an error quotes (a key, a value): enough to find it, never the file."""


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` cut to `limit` characters, marking the cut."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


@dataclass(frozen=True)
class ManifestError:
    """One problem in a manifest, where a user can find it."""

    file: str
    line: int
    column: int
    path: str
    """Dotted field path (`spec.targets.0.alias`); empty for errors above the fields (syntax, IO)."""
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column, "path": self.path, "message": self.message}
