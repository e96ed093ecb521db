"""The request-field audit's checks for OpenAI's Responses API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.serve.field_audit import RESPONSES_PATH, TOOL, Post, base, refused, text


def check_input_of_responses(post: Post, path: str) -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}]
    assert text(path, post(path, base(path) | {"input": items})) == text(path, post(path, base(path)))
    assert text(path, post(path, base(path) | {"input": "Something else, at length"})) != \
        text(path, post(path, base(path)))


def check_instructions(post: Post, path: str) -> None:
    plain, told = post(path, base(path)).json(), post(path, base(path) | {"instructions": "Be brief."}).json()
    assert told["usage"]["input_tokens"] > plain["usage"]["input_tokens"] and told["instructions"] == "Be brief."


def check_responses_stream(post: Post, path: str) -> None:
    answer = post(path, base(path) | {"stream": True})
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.incomplete"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == \
        text(path, post(path, base(path)))


def responses_call(post: Post, **fields: Any) -> dict[str, Any]:
    tool = {"type": "function", "name": "get_weather", "parameters": TOOL["function"]["parameters"]}  # type: ignore[index]
    answer = post(RESPONSES_PATH, base(RESPONSES_PATH) | {"max_output_tokens": 100, "tools": [tool]} | fields)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def check_responses_tools(post: Post, path: str) -> None:
    [call] = responses_call(post, tool_choice="required")["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"


def check_responses_tool_choice(post: Post, path: str) -> None:
    assert responses_call(post, tool_choice="none", max_output_tokens=12)["output"][0]["type"] == "message"
    named = responses_call(post, tool_choice={"type": "function", "name": "get_weather"})
    assert named["output"][0]["name"] == "get_weather"


def check_responses_parallel(post: Post, path: str) -> None:
    assert len(responses_call(post, tool_choice="required", parallel_tool_calls=False)["output"]) == 1
    refused(post, path, base(path) | {"parallel_tool_calls": "no"}, "parallel_tool_calls")


def check_text_format(post: Post, path: str) -> None:
    answer = text(path, post(path, base(path) | {"max_output_tokens": 60, "text": {"format": {
        "type": "json_schema", "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "integer"}},
                                                       "required": ["a"]}}}}))
    assert isinstance(json.loads(answer)["a"], int)


def check_responses_temperature(post: Post, path: str) -> None:
    greedy = text(path, post(path, base(path)))
    assert any(text(path, post(path, base(path) | {"temperature": 2})) != greedy for _ in range(3))


def check_responses_top_p(post: Post, path: str) -> None:
    greedy = text(path, post(path, base(path)))
    assert text(path, post(path, base(path) | {"temperature": 1, "top_p": 0.001})) == greedy


def check_previous_response_id(post: Post, path: str) -> None:
    first = post(path, base(path)).json()
    second = post(path, base(path) | {"previous_response_id": first["id"]}).json()
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"] + 12
    refused(post, path, base(path) | {"previous_response_id": "resp_unknown"}, "is not kept here")


def check_store(post: Post, path: str) -> None:
    unstored = post(path, base(path) | {"store": False}).json()
    assert unstored["store"] is False
    refused(post, path, base(path) | {"previous_response_id": unstored["id"]}, "is not kept here")


def check_metadata(post: Post, path: str) -> None:
    assert post(path, base(path) | {"metadata": {"who": "me"}}).json()["metadata"] == {"who": "me"}
    refused(post, path, base(path) | {"metadata": {"who": 3}}, "metadata")


def check_responses_identifier(name: str) -> Callable[[Post, str], None]:
    def check(post: Post, path: str) -> None:
        assert text(path, post(path, base(path) | {name: "someone"})) == text(path, post(path, base(path)))
        refused(post, path, base(path) | {name: 3}, name)
    return check
