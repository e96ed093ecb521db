"""Structured output, tool calls, log probabilities and echo, through the official openai client and LangChain's
ChatOpenAI, against the tiny random-weight Llama: constrained decoding makes the answers parse anyway."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve

MESSAGES = [{"role": "user", "content": "Describe a city."}]
SEEDS = range(4)


class City(BaseModel):
    name: str = Field(max_length=12)
    size: Literal["small", "big"]
    capital: bool


class GetWeather(BaseModel):
    """The weather in a city."""

    city: str = Field(max_length=16)
    unit: Literal["c", "f"]


class Add(BaseModel):
    """Adds two small numbers."""

    a: int = Field(ge=0, le=99)
    b: int = Field(ge=0, le=99)


TOOLS = {"GetWeather": GetWeather, "Add": Add}


@pytest.fixture
def url(serve: Serve, tiny_llama: Callable[..., ServedModel]) -> str:
    return serve(tiny_llama()).url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def chat_model(url: str, seed: int) -> ChatOpenAI:
    return ChatOpenAI(base_url=f"{url}/v1", api_key="unused", model="tiny-llama", max_retries=0,  # type: ignore[arg-type]
                      temperature=1.0, seed=seed, max_completion_tokens=200)


def test_json_schema_answers_parse_as_the_schema(url: str) -> None:
    for seed in SEEDS:
        answer = client(url).chat.completions.parse(model="tiny-llama", messages=MESSAGES, response_format=City,
                                                    seed=seed, max_completion_tokens=200)
        assert isinstance(answer.choices[0].message.parsed, City), answer.choices[0].message.content


def test_json_object_answers_are_json_objects(url: str) -> None:
    finished = 0
    for seed in SEEDS:
        answer = client(url).chat.completions.create(model="tiny-llama", messages=MESSAGES, seed=seed,
                                                     response_format={"type": "json_object"}, max_tokens=300)
        text = answer.choices[0].message.content or ""
        assert text.startswith("{")
        if answer.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
            finished += 1
    assert finished, "no answer closed its object within 300 tokens"


def test_langchain_with_structured_output_in_both_methods(url: str) -> None:
    for seed in SEEDS:
        for method in ("json_schema", "function_calling"):
            city = chat_model(url, seed).with_structured_output(City, method=method).invoke("Describe a city.")
            assert isinstance(city, City), (method, city)


def test_langchain_bind_tools_with_a_named_and_a_required_tool(url: str) -> None:
    for seed in SEEDS:
        named = chat_model(url, seed).bind_tools([GetWeather, Add], tool_choice="GetWeather").invoke("Weather?")
        [call] = named.tool_calls
        assert call["name"] == "GetWeather"
        GetWeather.model_validate(call["args"])
        required = chat_model(url, seed).bind_tools([GetWeather, Add], tool_choice="required").invoke("Go.")
        [call] = required.tool_calls
        TOOLS[call["name"]].model_validate(call["args"])


def test_with_tool_choice_auto_the_answer_is_a_call_or_text(url: str) -> None:
    for seed in SEEDS:
        answer = chat_model(url, seed).bind_tools([Add]).invoke("Add 2 and 3.")
        if answer.tool_calls:
            Add.model_validate(answer.tool_calls[0]["args"])
        else:
            assert isinstance(answer.content, str) and not answer.content.startswith("{")


def test_a_streamed_tool_call_comes_whole_with_finish_reason_tool_calls(url: str) -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": Add.model_json_schema()}}]
    chunks = list(client(url).chat.completions.create(model="tiny-llama", messages=MESSAGES, tools=tools,  # type: ignore[arg-type]
                                                      tool_choice="required", stream=True, max_tokens=200))
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].function and calls[0].function.name == "add"
    assert set(json.loads(calls[0].function.arguments or "")) == {"a", "b"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_logprobs_are_the_models_own_with_the_greedy_choice_on_top(url: str) -> None:
    answer = client(url).chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=12,
                                                 temperature=0, logprobs=True, top_logprobs=3)
    choice = answer.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None and answer.usage is not None
    assert len(choice.logprobs.content) == answer.usage.completion_tokens
    for token in choice.logprobs.content:
        assert len(token.top_logprobs) == 3 and token.logprob <= 0
        assert token.logprob == pytest.approx(token.top_logprobs[0].logprob)
        assert [t.logprob for t in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs), reverse=True)


def test_completions_echo_the_prompt_and_give_legacy_logprobs(url: str) -> None:
    echoed = client(url).completions.create(model="tiny-llama", prompt="The quick brown fox", max_tokens=6,
                                            temperature=0, echo=True)
    plain = client(url).completions.create(model="tiny-llama", prompt="The quick brown fox", max_tokens=6,
                                           temperature=0)
    assert echoed.choices[0].text == "The quick brown fox" + plain.choices[0].text
    scored = client(url).completions.create(model="tiny-llama", prompt="The quick brown fox", max_tokens=6,
                                            temperature=0, logprobs=2)
    logprobs = scored.choices[0].logprobs
    assert logprobs is not None and logprobs.token_logprobs and scored.usage is not None
    assert len(logprobs.token_logprobs) == scored.usage.completion_tokens
    assert logprobs.top_logprobs and all(len(top) <= 2 for top in logprobs.top_logprobs)


@pytest.mark.parametrize(("path", "extra", "param"), [
    ("/v1/chat/completions", {"response_format": {"type": "yaml"}}, "response_format"),
    ("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)y"}}}}}},
     "response_format"),
    ("/v1/chat/completions", {"tool_choice": "required"}, "tool_choice"),
    ("/v1/chat/completions", {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
     "tools[0].function.name"),
    ("/v1/chat/completions", {"top_logprobs": 2}, "top_logprobs"),
    ("/v1/completions", {"echo": True, "logprobs": 1}, "echo"),
])
def test_what_cannot_be_honoured_is_a_400_naming_the_parameter(url: str, path: str, extra: dict[str, object],
                                                                param: str) -> None:
    body = {"model": "tiny-llama", "max_tokens": 4} | ({"messages": MESSAGES} if "chat" in path else
                                                     {"prompt": "hi"}) | extra
    answer = httpx.post(f"{url}{path}", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_a_forced_tool_call_cut_by_max_tokens_is_length_with_no_wrapper_text(url: str) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather",
                                               "parameters": GetWeather.model_json_schema()}}]
    request = {"model": "tiny-llama", "messages": MESSAGES, "tools": tools, "tool_choice": "required",
               "max_tokens": 10}
    whole = client(url).chat.completions.create(**request)  # type: ignore[call-overload]
    assert whole.choices[0].finish_reason == "length"
    assert not whole.choices[0].message.tool_calls and not whole.choices[0].message.content
    chunks = list(client(url).chat.completions.create(**request, stream=True))  # type: ignore[call-overload]
    assert not any(c.choices[0].delta.content or c.choices[0].delta.tool_calls for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "length"
    cut = ChatOpenAI(base_url=f"{url}/v1", api_key="unused", model="tiny-llama", max_retries=0,  # type: ignore[arg-type]
                     max_completion_tokens=10).bind_tools([GetWeather], tool_choice="any").invoke("Weather?")
    assert cut.response_metadata["finish_reason"] == "length" and not cut.content and not cut.tool_calls

