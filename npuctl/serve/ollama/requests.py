"""Ollama's request fields that the body models (bodies.py) and the routes share: the model name with Ollama's
`:latest` tag, `keep_alive`'s durations, and an embedding's `options`."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from npuctl.serve.http.errors import ApiError

LATEST = ":latest"
"""Ollama's default tag: `name:latest` is the same model as `name`."""
_DURATION = re.compile(r"^-?\d+(\.\d+)?(ns|us|µs|ms|s|m|h)?$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def model_name(name: Any, names: Collection[str]) -> str:
    """The `model` field, with Ollama's `:latest` tag dropped when the bare name is served."""
    if not isinstance(name, str) or not name:
        raise ApiError(400, "'model' must be a non-empty string")
    if name.endswith(LATEST) and name not in names and name[: -len(LATEST)] in names:
        return name[: -len(LATEST)]
    return name


def keep_alive(value: Any) -> float | None:
    """The idle time asked for, in seconds (infinite for a negative one, as Ollama reads it); None when not set.
    Whether the model may be unloaded that soon is its manifest's business (see ModelRegistry.keep_alive)."""
    if value is None:
        return None
    parsed = _DURATION.match(value) if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float | str) or (isinstance(value, str) and not parsed):
        raise ApiError(400, f"'keep_alive' must be a duration ('5m', '1h', -1) or a number of seconds, not {value!r}")
    if isinstance(value, str) and parsed is not None:
        amount = float(value.removesuffix(parsed.group(2) or "")) * _UNITS[parsed.group(2) or "s"]
    else:
        amount = float(value)
    return float("inf") if amount < 0 else amount


def no_options(value: Any) -> None:
    """An embedding's `options`: none of Ollama's options changes an embedding here, so any one set is refused
    (Ollama's num_ctx would truncate: here `truncate` and the model's limit do)."""
    value = value or {}
    if not isinstance(value, dict):
        raise ApiError(400, "'options' must be an object")
    named = sorted(name for name, setting in value.items() if setting is not None)
    if named:
        raise ApiError(400, f"options.{named[0]} does not change an embedding; leave it out")
