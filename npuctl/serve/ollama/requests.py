"""Ollama's request fields read for generation: the model name, `options`, `keep_alive`, messages, format. The
bodies' form (every field Ollama documents, and no other) is the models' in npuctl/serve/ollama/bodies.py; these
checks name the place of what only they can judge."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from npuctl.runtime.generation import Sampling
from npuctl.serve.generation.penalties import ollama_penalties
from npuctl.serve.generation.structured import Structure, structure
from npuctl.serve.http.errors import ApiError

LATEST = ":latest"
"""Ollama's default tag: `name:latest` is the same model as `name`."""
ROLES = frozenset({"system", "user", "assistant", "tool"})
MAX_STOP = 16
_DURATION = re.compile(r"^-?\d+(\.\d+)?(ns|us|µs|ms|s|m|h)?$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Options:
    max_tokens: int | None
    """num_predict; None: until the end of the context (Ollama's -1 and -2)."""
    context: int | None
    """num_ctx: a smaller context than the model's."""
    sampling: Sampling
    stop: tuple[str, ...]


def model_name(name: Any, names: Collection[str]) -> str:
    """The `model` field, with Ollama's `:latest` tag dropped when the bare name is served."""
    if not isinstance(name, str) or not name:
        raise ApiError(400, "'model' must be a non-empty string")
    if name.endswith(LATEST) and name not in names and name[: -len(LATEST)] in names:
        return name[: -len(LATEST)]
    return name


def stream_flag(body: dict[str, Any]) -> bool:
    """Ollama streams unless told not to."""
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false")
    return stream


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


def refuse(body: dict[str, Any], name: str, why: str, empty: object) -> None:
    """400 when `name` is set to anything but null or `empty` (what clients send for "not set": "", false, [])."""
    value = body.get(name)
    if value is not None and (type(value) is not type(empty) or value != empty):
        raise ApiError(400, f"'{name}' is not supported: {why}")


def form(body: dict[str, Any], guided: bool) -> Structure:
    """`format` ("json" or a JSON Schema) and `tools`, as the grammar the answer is held to."""
    value = body.get("format")
    response_format: dict[str, Any] | None = None
    if value == "json":
        response_format = {"type": "json_object"}
    elif isinstance(value, dict):
        response_format = {"type": "json_schema", "json_schema": {"name": "format", "schema": value}}
    elif value not in (None, ""):
        raise ApiError(400, "'format' must be \"json\" or a JSON Schema object")
    tools = body.get("tools") or None
    asked = {"response_format": response_format, "tools": tools} | ({"tool_choice": "auto"} if tools else {})
    try:
        return structure(asked, guided, schema_place="format")
    except ApiError as exc:  # named as Ollama names it
        raise ApiError(400, exc.message.replace("'response_format'", "'format'")) from exc


def no_options(value: Any) -> None:
    """An embedding's `options`: none of Ollama's options changes an embedding here, so any one set is refused
    (Ollama's num_ctx would truncate: here `truncate` and the model's limit do)."""
    value = value or {}
    if not isinstance(value, dict):
        raise ApiError(400, "'options' must be an object")
    named = sorted(name for name, setting in value.items() if setting is not None)
    if named:
        raise ApiError(400, f"options.{named[0]} does not change an embedding; leave it out")


def options(body: dict[str, Any]) -> Options:
    value = body.get("options") or {}
    if not isinstance(value, dict):
        raise ApiError(400, "'options' must be an object")
    predict = _integer(value, "num_predict")
    if predict is not None and predict not in (-1, -2) and predict < 1:
        raise ApiError(400, f"options.num_predict must be a positive integer, or -1 or -2 (to the context's end), "
                       f"not {predict}")
    context = _integer(value, "num_ctx")
    if context is not None and context < 2:
        raise ApiError(400, f"options.num_ctx must be an integer of at least 2, not {context}")
    top_k = _integer(value, "top_k")
    if top_k is not None and top_k < 0:
        raise ApiError(400, f"options.top_k must be a non-negative integer, not {top_k}")
    temperature = _number(value, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(value, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise ApiError(400, "options.top_p must be above 0")
    sampling = Sampling(0, temperature, top_p, top_k or None, _integer(value, "seed"),
                        penalties=ollama_penalties(value))
    return Options(predict if predict and predict > 0 else None, context, sampling, _stop(value.get("stop")))


def messages(value: Any) -> list[dict[str, Any]]:
    """Ollama's messages as the chat template takes them (a tool's answer carries the tool's name)."""
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'messages' must be a non-empty array of messages")
    checked = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise ApiError(400, f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content", "")
        if not isinstance(role, str) or role not in ROLES:
            raise ApiError(400, f"messages[{i}].role is {role!r}; expected one of {', '.join(sorted(ROLES))}")
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string")
        if message.get("images") not in (None, []):
            raise ApiError(400, f"messages[{i}].images: this model takes text only")
        entry: dict[str, Any] = {"role": role, "content": content}
        tool_name = message.get("tool_name")
        if tool_name is not None:
            if not isinstance(tool_name, str):
                raise ApiError(400, f"messages[{i}].tool_name must be a string")
            entry["name"] = tool_name
        calls = message.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list) or not all(isinstance(call, dict) for call in calls):
                raise ApiError(400, f"messages[{i}].tool_calls must be a list of calls")
            if calls and role != "assistant":
                raise ApiError(400, f"messages[{i}].tool_calls: only an assistant message calls tools")
            entry["tool_calls"] = [{"type": "function", "function": call.get("function")} for call in calls]
        checked.append(entry)
    return checked


def _stop(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOP or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"options.stop must be a non-empty string or a list of at most {MAX_STOP} of them")
    return tuple(stops)


def _integer(options: dict[str, Any], name: str) -> int | None:
    value = options.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ApiError(400, f"options.{name} must be an integer, not {value!r}")
    return value


def _number(options: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = options.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ApiError(400, f"options.{name} must be a number from {low:g} to {high:g}, not {value!r}")
    return float(value)
