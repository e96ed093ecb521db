"""Structured output and tool calls for chat, by constrained decoding: OpenAI's `response_format` (json_object,
json_schema) and `tools` / `tool_choice` become a grammar onnxruntime-genai's guidance holds the model to, so the
answer parses whatever the weights are. A tool call is generated as `{"name": ..., "arguments": {...}}` and
answered as OpenAI `tool_calls`."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from npuctl.runtime.generation import Guidance
from npuctl.serve.generation.forms import Form, JsonSchema, JsonSchemaFormat, PlainFormat, Tool, ToolChoice
from npuctl.serve.generation.schema_bounds import check_schema
from npuctl.serve.http.errors import ApiError

_COMPACT = {"x-guidance": {"whitespace_flexible": False}}
"""JSON without free whitespace: a small model cannot wander off into blank space."""


@dataclass(frozen=True)
class Structure:
    """What a chat request asks of the answer's form."""

    guidance: Guidance | None = None
    tools: tuple[dict[str, Any], ...] = ()
    """The tools offered, as the chat template takes them (OpenAI's `tools` entries)."""
    may_call: bool = False
    """The answer may be a tool call (tool_choice is not `none`)."""
    json_answer: bool = False
    """With `may_call`: the answer that is not a call is JSON too (response_format's), so `{` starts either."""

    @property
    def param(self) -> str | None:
        """The request parameter the grammar comes from."""
        if self.guidance is None:
            return None
        return "tools" if self.may_call else "response_format"

    def cut_call(self, text: str) -> bool:
        """Whether `text` is a tool call cut short (by max_tokens): a grammar that allows a call starts only a call
        with `{`, so it is no answer text either. Where the answer is JSON too, a call is told by its start (the
        grammar writes `name` first)."""
        if not self.may_call or not text.startswith("{") or self.tool_calls(text) is not None:
            return False
        if not self.json_answer:
            return True
        try:
            json.loads(text)
            return False  # whole: the answer in response_format's form
        except ValueError:
            pass
        heads = [f'{{"name":{json.dumps(tool["function"]["name"])}' for tool in self.tools]
        return any(head.startswith(text) or text.startswith(head) for head in heads)

    def tool_calls(self, text: str) -> list[dict[str, Any]] | None:
        """The answer as OpenAI tool calls, when it is one (None: it is text, or JSON in response_format's form)."""
        if not self.may_call or not text.startswith("{"):
            return None
        try:
            call = json.loads(text)
        except ValueError:
            return None  # cut short by max_tokens (see cut_call)
        names = {tool["function"]["name"] for tool in self.tools}
        name = call.get("name") if isinstance(call, dict) else None
        if not isinstance(name, str) or name not in names or not set(call) <= {"name", "arguments"}:
            return None
        arguments = json.dumps(call.get("arguments", {}), ensure_ascii=False)
        return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                 "function": {"name": call["name"], "arguments": arguments}}]


def structure(form: Form, guided: bool, *, schema_place: str = "response_format.json_schema.schema") -> Structure:
    """The grammar `form` asks for; 400 naming the parameter when what no type states is wrong (two tools of one
    name, a tool_choice naming no tool), when a schema passes the bounds of schema_bounds (naming its place:
    `schema_place` for response_format's), or when it needs guidance and this onnxruntime-genai has none
    (`guided` false)."""
    schema = _response_schema(form.response_format, schema_place)
    tools = _tools(form.tools)
    choice = form.tool_choice if form.tool_choice is not None else "auto" if tools else "none"
    calls = _chosen(choice, tools)
    guidance = None
    if calls:
        union = _call_schema(calls)
        if choice == "auto" and schema is not None:
            # A call or the answer in response_format's form (as OpenAI does; openai-agents asks this of an agent
            # with tools and an output_type): a call is told from the answer by its name (tool_calls).
            guidance = Guidance("lark_grammar", f"start: call | answer\ncall: %json {json.dumps(union)}\n"
                                                f"answer: %json {json.dumps(schema)}")
        elif choice == "auto":
            guidance = Guidance("lark_grammar", f"start: call | TEXT\ncall: %json {json.dumps(union)}\n"
                                                r"TEXT: /[^{](.|\n)*/")
        else:
            guidance = Guidance("json_schema", json.dumps(union))
    elif schema is not None:
        guidance = Guidance("json_schema", json.dumps(schema))
    if guidance is not None and not guided:
        param = "tools" if calls else "response_format"
        raise ApiError(400, f"'{param}' needs constrained decoding, which this server's onnxruntime-genai lacks",
                       param=param)
    return Structure(guidance, tuple(tools), bool(calls), bool(calls) and choice == "auto" and schema is not None)


def _response_schema(asked: PlainFormat | JsonSchemaFormat | None, place: str) -> JsonSchema | None:
    if isinstance(asked, JsonSchemaFormat):
        schema = asked.json_schema.schema_
        check_schema(schema, place)  # before anything walks it: _closed recurses, the compiler unrolls
        return {**_COMPACT, **_closed(schema)}
    if asked is not None and asked.type == "json_object":
        return {"type": "object"} | _COMPACT
    return None


def _tools(asked: tuple[Tool, ...]) -> list[dict[str, Any]]:
    """The tools as the chat template takes them, their schemas within one budget."""
    cost = 0
    for i, tool in enumerate(asked):
        cost = check_schema(tool.function.template()["parameters"], f"tools[{i}].function.parameters", cost)
    names = [tool.function.name for tool in asked]
    if len(set(names)) != len(names):
        raise ApiError(400, "'tools' names a function twice", param="tools")
    return [{"type": "function", "function": tool.function.template()} for tool in asked]


def _chosen(choice: ToolChoice, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools the answer may call."""
    if choice == "none":
        return []
    if not tools:
        raise ApiError(400, "'tool_choice' needs 'tools'", param="tool_choice")
    if isinstance(choice, str):
        return tools
    name = choice.function.name
    named = [t for t in tools if t["function"]["name"] == name]
    if not named:
        raise ApiError(400, f"'tool_choice' names {name!r}, which is not in 'tools'", param="tool_choice")
    return named


def _call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """One JSON Schema for a call of any of `tools`. Their `$defs` move to the top, where their `$ref`s point."""
    definitions: dict[str, Any] = {}
    calls = []
    for tool in tools:
        function = tool["function"]
        parameters = dict(function["parameters"])
        for key, definition in parameters.pop("$defs", {}).items():
            if definitions.setdefault(key, definition) != definition:
                raise ApiError(400, f"two tools define ${key} differently in their parameters' $defs", param="tools")
        calls.append({"type": "object", "properties": {"name": {"const": function["name"]},
                                                       "arguments": _closed(parameters)},
                      "required": ["name", "arguments"], "additionalProperties": False})
    schema: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if definitions:
        schema = schema | {"$defs": definitions}
    return schema | _COMPACT


def _closed(schema: Any) -> Any:
    """`schema` with no properties beyond those it names, where it does not say: every answer still validates
    against the original, and a model cannot run on adding keys until max_tokens cuts it."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed
