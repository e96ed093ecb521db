"""Chat messages, tools, response formats and OIP tensors are validated by the models /openapi.json is generated
from (issue 29): a body the description refuses is a 400 naming its place, and one it takes is taken. In-process:
the body models and the document, no server."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.validation import Body, parse
from npuctl.serve.oip.requests import IndexRequest, InferRequest
from npuctl.serve.ollama.bodies import OllamaChatRequest
from npuctl.serve.openai.requests import ChatRequest
from npuctl.serve.openapi.document import openapi

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
OLLAMA = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TENSOR = {"name": "x", "datatype": "FP32", "shape": [1, 2]}


def _tool(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "get_weather"} | function}


REFUSED: list[tuple[type[Body], dict[str, Any], str]] = [
    (ChatRequest, CHAT | {"tools": [_tool(description=5)]}, "tools[0].function.description"),
    (ChatRequest, CHAT | {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": "yes"}}},
     "response_format.json_schema.strict"),
    (ChatRequest, CHAT | {"tool_choice": {"type": "function", "function": {}}}, "tool_choice"),
    (ChatRequest, CHAT | {"messages": [{"role": "user"}]}, "messages[0].content"),
    (ChatRequest, CHAT | {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].type"),
    (OllamaChatRequest, OLLAMA | {"messages": [{"role": "assistant", "tool_calls": [{"function": {}}]}]},
     "messages[0].tool_calls[0].function.name"),
    (OllamaChatRequest, OLLAMA | {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
     "tools[0].function.name"),
    (InferRequest, {"inputs": [TENSOR | {"data": "1,2"}]}, "inputs[0].data"),
    (IndexRequest, {"ready": True, "models": ["x"]}, "models"),
]
TAKEN: list[tuple[type[Body], dict[str, Any]]] = [
    # A template's own keys on a tool and a message go to the chat template as sent.
    (ChatRequest, CHAT | {"tools": [_tool(description="Weather", strict=True, parameters={"type": "object"})],
                          "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    (ChatRequest, CHAT | {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                                       {"role": "assistant", "content": None, "tool_calls": []},
                                       {"role": "tool", "content": "12 C", "tool_call_id": "call_1"}]}),
    (ChatRequest, CHAT | {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True}}}),
    (OllamaChatRequest, OLLAMA | {"messages": [{"role": "assistant", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]}, {"role": "tool", "content": "12 C",
                                                                                 "tool_name": "get_weather"}]}),
    (InferRequest, {"inputs": [TENSOR | {"parameters": {"binary_data_size": 8}}]}),
    (IndexRequest, {"ready": True}),
]


def described(kind: type[Body], body: dict[str, Any]) -> bool:
    """Whether /openapi.json's schema for `kind` takes `body` (OpenAPI 3.0's `nullable` read as JSON Schema's)."""
    def schema(node: Any) -> Any:
        if isinstance(node, list):
            return [schema(item) for item in node]
        if not isinstance(node, dict):
            return node
        plain = {key: schema(value) for key, value in node.items() if key != "nullable"}
        return {"anyOf": [plain, {"type": "null"}]} if node.get("nullable") else plain

    components = schema(openapi()["components"])
    root = {"$ref": f"#/components/schemas/{kind.__name__}", "components": components}
    return bool(jsonschema.Draft4Validator(root).is_valid(body))


@pytest.mark.parametrize(("kind", "body", "place"), REFUSED, ids=[place for _, _, place in REFUSED])
def test_a_body_the_description_refuses_is_a_400_naming_its_place(kind: type[Body], body: dict[str, Any],
                                                                   place: str) -> None:
    assert not described(kind, body)
    with pytest.raises(ApiError) as caught:
        parse(kind, body)
    assert caught.value.status == 400 and caught.value.param == place, caught.value.message


@pytest.mark.parametrize(("kind", "body"), TAKEN)
def test_a_body_the_description_takes_is_taken(kind: type[Body], body: dict[str, Any]) -> None:
    assert described(kind, body)
    parse(kind, body)
