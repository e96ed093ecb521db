"""One YAML document read into any pydantic model (the agent config, for one) with the manifests' care:
composed within limits, and every error placed at file:line:col with the field and a did-you-mean."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml.error import YAMLError

from npuctl.schema.errors import ManifestError
from npuctl.schema.loader import MAX_FILE_BYTES, Tree, is_empty
from npuctl.schema.reading import bounded_yaml, yaml_error

M = TypeVar("M", bound=BaseModel)


def load_document(file: Path, model: type[M]) -> tuple[M | None, list[ManifestError]]:
    """The file's one YAML document as `model` (an empty file gives the model's defaults), or the placed errors."""
    try:
        if not file.is_file():
            return None, [ManifestError(str(file), 1, 1, "", "not a regular file")]
        raw = file.read_bytes()
    except OSError as exc:
        return None, [ManifestError(str(file), 1, 1, "", f"cannot read: {exc.strerror or exc}")]
    if len(raw) > MAX_FILE_BYTES:
        return None, [ManifestError(str(file), 1, 1, "", f"file is {len(raw)} bytes; the limit is {MAX_FILE_BYTES}")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, [ManifestError(str(file), 1, 1, "", f"not UTF-8 text (byte {exc.start})")]
    yaml = bounded_yaml()
    tree = Tree(file, yaml, model)
    try:
        node = yaml.compose(io.StringIO(text))
        data = {} if node is None or is_empty(node) else tree.build(node)
    except (YAMLError, RecursionError) as exc:
        return None, [yaml_error(exc, file)]
    if tree.errors:
        return None, tree.errors
    if not isinstance(data, dict):
        mark = node.start_mark
        return None, [ManifestError(str(file), mark.line + 1, mark.column + 1, "", "expected a mapping of settings")]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, [tree.error(err) for err in exc.errors()]
