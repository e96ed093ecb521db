"""The request-field audit (issue 27): every field the OpenAPI description documents for the generation and
embedding APIs is sent to a real server, and each must change the answer in the way its documentation says, or be
refused with a 400 naming it. The fields OpenAI documents that npuctl cannot honour must be 400s naming them. A
field added to the description without a check here fails `test_every_documented_field_is_audited`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from npuctl.artifacts import BuildResult, artifacts_of
from npuctl.runtime.placement import Artifacts
from npuctl.serve.app import create_app
from npuctl.serve.http.server import BackgroundServer
from npuctl.serve.models import load_served
from npuctl.serve.openapi.document import openapi
from npuctl.serve.openai.fields import CHAT, COMPLETIONS
from npuctl.serve.openai.responses_request import REFUSED as RESPONSES_REFUSED
from npuctl.serve.registry import ModelRegistry
from tests.serve.conftest import deployment

Post = Callable[[str, dict[str, Any]], httpx.Response]
CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
RESPONSES_PATH = "/v1/responses"
OLLAMA_CHAT, OLLAMA_GENERATE, OLLAMA_EMBED, OLLAMA_EMBEDDINGS = "/api/chat", "/api/generate", "/api/embed", \
    "/api/embeddings"
EOS = 1
"""The tiny Llama's end-of-sequence token."""
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def post(tiny_llama_build: BuildResult, minilm_artifacts: Artifacts) -> Iterator[Post]:
    registry = ModelRegistry()
    registry.put(load_served(deployment("tiny-llama", model={"source": "file:unused", "task": "text-generation",
                                                             "format": "genai"}, runtime={"device": "cpu"}),
                             artifacts_of(tiny_llama_build)))
    registry.put(load_served(deployment("minilm", precision="fp32"), minilm_artifacts))
    server = BackgroundServer(create_app(registry)).start()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield lambda path, body: client.post(path, json=body)
    server.stop()
    registry.close()


def base(path: str) -> dict[str, Any]:
    """A greedy request of 12 tokens to the operation at `path` (or a one-sentence embedding)."""
    return {
        CHAT_PATH: {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 12,
                    "temperature": 0},
        COMPLETIONS_PATH: {"model": "tiny-llama", "prompt": "The quick brown", "max_tokens": 12, "temperature": 0},
        EMBEDDINGS_PATH: {"model": "minilm", "input": "a sentence"},
        RESPONSES_PATH: {"model": "tiny-llama", "input": "Hello there", "max_output_tokens": 12, "temperature": 0},
        OLLAMA_CHAT: {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hello there"}],
                      "stream": False, "options": {"temperature": 0, "num_predict": 12}},
        OLLAMA_GENERATE: {"model": "tiny-llama", "prompt": "The quick brown", "stream": False,
                          "options": {"temperature": 0, "num_predict": 12}},
        OLLAMA_EMBED: {"model": "minilm", "input": "a sentence"},
        OLLAMA_EMBEDDINGS: {"model": "minilm", "prompt": "a sentence"},
    }[path]


def text(path: str, answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    if path == CHAT_PATH:
        return str(body["choices"][0]["message"]["content"])
    if path == COMPLETIONS_PATH:
        return str(body["choices"][0]["text"])
    if path == RESPONSES_PATH:
        return "".join(part["text"] for item in body["output"] for part in item.get("content", []))
    return str(body["message"]["content"] if path == OLLAMA_CHAT else body["response"])


def tokens(path: str, answer: httpx.Response) -> int:
    body = answer.json()
    if path == RESPONSES_PATH:
        return int(body["usage"]["output_tokens"])
    return int(body["usage"]["completion_tokens"] if path.startswith("/v1") else body["eval_count"])


def with_option(path: str, **fields: Any) -> dict[str, Any]:
    """The base request with `fields` set (into `options` for Ollama's)."""
    request = base(path)
    if path.startswith("/api"):
        return request | {"options": request["options"] | fields}
    return request | fields


def refused(post: Post, path: str, request: dict[str, Any], name: str) -> None:
    answer = post(path, request)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert name in (error if isinstance(error, str) else error["message"]), error


# Each check sends one field and asserts what a user of it would see.

def check_model(post: Post, path: str) -> None:
    answer = post(path, base(path) | {"model": "no-such-model"})
    assert answer.status_code == 404 and "no-such-model" in answer.text


def check_messages(post: Post, path: str) -> None:
    other = base(path) | {"messages": [{"role": "user", "content": "Something else entirely, at length"}]}
    assert text(path, post(path, other)) != text(path, post(path, base(path)))


def check_prompt(post: Post, path: str) -> None:
    assert text(path, post(path, base(path) | {"prompt": "Once upon a time"})) != text(path, post(path, base(path)))


def check_max_tokens(name: str) -> Callable[[Post, str], None]:
    def check(post: Post, path: str) -> None:
        request = {k: v for k, v in base(path).items() if not k.startswith("max_")} | {name: 3}
        assert tokens(path, post(path, request)) == 3
    return check


def check_num_predict(post: Post, path: str) -> None:
    assert tokens(path, post(path, with_option(path, num_predict=3))) == 3


def check_temperature(post: Post, path: str) -> None:
    hot = [text(path, post(path, with_option(path, temperature=2, seed=seed))) for seed in range(3)]
    assert any(answer != text(path, post(path, base(path))) for answer in hot)


def check_narrowing(name: str, value: float) -> Callable[[Post, str], None]:
    """top_p/top_k so narrow that sampling at temperature 1 can only take the most likely token: the greedy answer."""
    def check(post: Post, path: str) -> None:
        greedy = text(path, post(path, base(path)))
        assert text(path, post(path, with_option(path, temperature=1, seed=7, **{name: value}))) == greedy
        assert any(text(path, post(path, with_option(path, temperature=1, seed=s))) != greedy for s in range(3))
    return check


def check_seed(post: Post, path: str) -> None:
    first = text(path, post(path, with_option(path, temperature=1, seed=11)))
    assert text(path, post(path, with_option(path, temperature=1, seed=11))) == first
    assert any(text(path, post(path, with_option(path, temperature=1, seed=s))) != first for s in (12, 13, 14))


def check_n(post: Post, path: str) -> None:
    refused(post, path, base(path) | {"n": 2}, "n=1")


def check_stream(post: Post, path: str) -> None:
    answer = post(path, base(path) | {"stream": True})
    if path.startswith("/v1"):
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.text.rstrip().endswith("data: [DONE]")
    else:
        lines = answer.text.splitlines()
        assert len(lines) > 2 and json.loads(lines[-1])["done"] is True


def check_stream_options(post: Post, path: str) -> None:
    answer = post(path, base(path) | {"stream": True, "stream_options": {"include_usage": True}})
    chunks = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12


def check_ignore_eos(post: Post, path: str) -> None:
    ended = post(path, base(path) | {"logit_bias": {str(EOS): 100}})
    assert tokens(path, ended) == 0 and ended.json()["choices"][0]["finish_reason"] == "stop"
    # Ignoring the end token as asked, the bias to end has no hold: the answer runs to max_tokens.
    kept = post(path, base(path) | {"logit_bias": {str(EOS): 100}, "ignore_eos": True})
    assert tokens(path, kept) == 12 and kept.json()["choices"][0]["finish_reason"] == "length"


def check_stop(post: Post, path: str) -> None:
    whole = text(path, post(path, base(path)))
    stop = whole[len(whole) // 2:][:3]
    request = with_option(path, stop=[stop]) if path.startswith("/api") else base(path) | {"stop": [stop]}
    assert text(path, post(path, request)) == whole[:whole.index(stop)]


def generated_tokens(post: Post, path: str, request: dict[str, Any]) -> list[str]:
    """The answer's tokens (as text), from its log probabilities."""
    answer = post(path, request | ({"logprobs": 0} if path == COMPLETIONS_PATH else {"logprobs": True}))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    if path == CHAT_PATH:
        return [entry["token"] for entry in body["choices"][0]["logprobs"]["content"]]
    if path == COMPLETIONS_PATH:
        return list(body["choices"][0]["logprobs"]["tokens"])
    return [entry["token"] for entry in body["logprobs"]]


def check_penalty(name: str) -> Callable[[Post, str], None]:
    """A penalty for repeating: the greedy answer of the random-weight model repeats tokens; penalised, it
    repeats less."""
    def check(post: Post, path: str) -> None:
        def most_repeated(request: dict[str, Any]) -> int:
            return max(Counter(generated_tokens(post, path, request)).values())

        value = 1.8 if name == "repeat_penalty" else 2
        longer = {"num_predict": 40} if path.startswith("/api") else {"max_tokens": 40}
        greedy = most_repeated(with_option(path, **longer))
        assert greedy >= 3, "the greedy answer has no repetition to penalise"
        assert most_repeated(with_option(path, **longer, **{name: value})) < greedy
        refused(post, path, with_option(path, **{name: 50}), name)
    return check


def check_repeat_last_n(post: Post, path: str) -> None:
    def answer(**options: Any) -> list[str]:
        return generated_tokens(post, path, with_option(path, num_predict=40, **options))

    # A window of 0 tokens turns the penalty off: the greedy answer again.
    assert answer(repeat_penalty=1.8, repeat_last_n=0) == answer() != answer(repeat_penalty=1.8)
    refused(post, path, with_option(path, repeat_last_n=-2), "repeat_last_n")


def check_logit_bias(post: Post, path: str) -> None:
    forced = post(path, base(path) | {"logit_bias": {"42": 100}})
    again = post(path, base(path) | {"prompt": "x", "max_tokens": 4, "logit_bias": {"42": 100}}
                 if path == COMPLETIONS_PATH else base(path) | {"max_tokens": 4, "logit_bias": {"42": 100}})
    assert tokens(path, forced) == 12 and text(path, forced) and text(path, again)
    assert set(text(path, forced)) == set(text(path, again))  # one token over and over, whatever the prompt
    refused(post, path, base(path) | {"logit_bias": {"99999999": 1}}, "logit_bias")
    refused(post, path, base(path) | {"logit_bias": {str(i): 1 for i in range(1025)}}, "limit is 1024")


def check_identifier(name: str) -> Callable[[Post, str], None]:
    """Identifiers for OpenAI's abuse monitoring and caching never change an answer (there either); they must be
    strings."""
    def check(post: Post, path: str) -> None:
        assert text(path, post(path, base(path) | {name: "someone"})) == text(path, post(path, base(path)))
        refused(post, path, base(path) | {name: 3}, name)
    return check


def check_response_format(post: Post, path: str) -> None:
    answer = text(path, post(path, base(path) | {"max_tokens": 60, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
            "a": {"type": "integer"}}, "required": ["a"]}}}}))
    assert isinstance(json.loads(answer)["a"], int)


def check_tools(post: Post, path: str) -> None:
    answer = post(path, base(path) | {"max_tokens": 100, "tools": [TOOL], "tool_choice": "required"}).json()
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def check_tool_choice(post: Post, path: str) -> None:
    answer = post(path, base(path) | {"tools": [TOOL], "tool_choice": "none"}).json()
    assert answer["choices"][0]["message"]["content"] == text(path, post(path, base(path)))


def check_parallel_tool_calls(post: Post, path: str) -> None:
    answer = post(path, base(path) | {"max_tokens": 100, "tools": [TOOL], "tool_choice": "required",
                                      "parallel_tool_calls": False}).json()
    assert len(answer["choices"][0]["message"]["tool_calls"]) == 1
    refused(post, path, base(path) | {"tools": [TOOL], "parallel_tool_calls": "no"}, "parallel_tool_calls")


def check_logprobs(post: Post, path: str) -> None:
    if path == CHAT_PATH:
        answer = post(path, base(path) | {"logprobs": True}).json()["choices"][0]["logprobs"]["content"]
        assert len(answer) == 12 and all(entry["logprob"] <= 0 for entry in answer)
    elif path == COMPLETIONS_PATH:
        answer = post(path, base(path) | {"logprobs": 2}).json()["choices"][0]["logprobs"]
        # Two alternatives each (fewer where two tokens decode to the same text, a key of the mapping).
        assert len(answer["tokens"]) == 12 and all(1 <= len(top) <= 2 for top in answer["top_logprobs"])
        assert any(len(top) == 2 for top in answer["top_logprobs"])
    else:
        answer = post(path, base(path) | {"logprobs": True}).json()
        assert len(answer["logprobs"]) == 12


def check_top_logprobs(post: Post, path: str) -> None:
    answer = post(path, base(path) | {"logprobs": True, "top_logprobs": 3}).json()
    entries = answer["choices"][0]["logprobs"]["content"] if path == CHAT_PATH else answer["logprobs"]
    assert all(len(entry["top_logprobs"]) == 3 for entry in entries)


def check_echo(post: Post, path: str) -> None:
    assert text(path, post(path, base(path) | {"echo": True})).startswith("The quick brown")


def check_input(post: Post, path: str) -> None:
    field = "prompt" if path == OLLAMA_EMBEDDINGS else "input"
    first, second = post(path, base(path)).json(), post(path, base(path) | {field: "other words"}).json()
    assert first != second


def check_dimensions(post: Post, path: str) -> None:
    """MiniLM's embeddings have 384 dimensions; it cannot shorten them (not trained for it), so fewer is a 400."""
    answer = post(path, base(path) | {"dimensions": 384}).json()
    assert len(answer["data"][0]["embedding"] if path == EMBEDDINGS_PATH else answer["embeddings"][0]) == 384
    refused(post, path, base(path) | {"dimensions": 8}, "384-dimensional")


def check_encoding_format(post: Post, path: str) -> None:
    assert isinstance(post(path, base(path) | {"encoding_format": "base64"}).json()["data"][0]["embedding"], str)


def check_truncate(post: Post, path: str) -> None:
    long = base(path) | {"input": "word " * 600}
    assert post(path, long | {"truncate": False}).status_code == 400
    assert post(path, long).status_code == 200  # Ollama truncates by default


def check_embedding_options(post: Post, path: str) -> None:
    refused(post, path, base(path) | {"options": {"temperature": 0.5}}, "temperature")


def check_keep_alive(post: Post, path: str) -> None:
    # Every deployed model stays loaded, which honours any keep_alive but 0 (unloading is issue 24's policy).
    assert post(path, base(path) | {"keep_alive": "5m"}).status_code == 200
    refused(post, path, base(path) | {"keep_alive": 0}, "keep_alive")


def check_format(post: Post, path: str) -> None:
    answer = text(path, post(path, base(path) | {"format": {"type": "object", "properties": {
        "a": {"type": "integer"}}, "required": ["a"]}, "options": {"temperature": 0, "num_predict": 60}}))
    assert isinstance(json.loads(answer)["a"], int)


def check_think(post: Post, path: str) -> None:
    assert post(path, base(path) | {"think": False}).status_code == 200
    refused(post, path, base(path) | {"think": True}, "think")


def check_ollama_tools(post: Post, path: str) -> None:
    answer = post(path, base(path) | {"tools": [TOOL]}).json()
    assert answer["message"]["content"] or answer["message"]["tool_calls"]  # the model chooses (no tool_choice)
    refused(post, path, base(path) | {"tools": "x"}, "tools")


def check_context(post: Post, path: str) -> None:
    first = post(path, base(path)).json()
    continued = post(path, base(path) | {"prompt": " and", "context": first["context"]}).json()
    assert continued["prompt_eval_count"] > first["prompt_eval_count"]


def check_raw(post: Post, path: str) -> None:
    templated, raw = post(path, base(path)).json(), post(path, base(path) | {"raw": True}).json()
    assert raw["prompt_eval_count"] < templated["prompt_eval_count"]


def check_system(post: Post, path: str) -> None:
    plain, told = post(path, base(path)).json(), post(path, base(path) | {"system": "Be brief."}).json()
    assert told["prompt_eval_count"] > plain["prompt_eval_count"]


def check_refused_unless_empty(name: str, value: Any) -> Callable[[Post, str], None]:
    def check(post: Post, path: str) -> None:
        refused(post, path, base(path) | {name: value}, name)
    return check


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


@dataclass(frozen=True)
class Audit:
    fields: dict[str, Callable[[Post, str], None]]
    options: dict[str, Callable[[Post, str], None]] | None = None
    """Ollama's `options` object, field by field."""


_GENERATION = {
    "model": check_model, "max_tokens": check_max_tokens("max_tokens"),
    "max_completion_tokens": check_max_tokens("max_completion_tokens"), "temperature": check_temperature,
    "top_p": check_narrowing("top_p", 0.001), "top_k": check_narrowing("top_k", 1), "seed": check_seed,
    "n": check_n, "stream": check_stream, "stream_options": check_stream_options, "ignore_eos": check_ignore_eos,
    "stop": check_stop, "frequency_penalty": check_penalty("frequency_penalty"),
    "presence_penalty": check_penalty("presence_penalty"), "logit_bias": check_logit_bias,
    "user": check_identifier("user"), "safety_identifier": check_identifier("safety_identifier"),
    "prompt_cache_key": check_identifier("prompt_cache_key"), "logprobs": check_logprobs,
}
_OLLAMA_OPTIONS = {
    "temperature": check_temperature, "top_p": check_narrowing("top_p", 0.001), "top_k": check_narrowing("top_k", 1),
    "seed": check_seed, "num_predict": check_num_predict, "num_ctx": lambda post, path: refused(
        post, path, with_option(path, num_ctx=4), "context is 4 tokens"),
    "stop": check_stop, "repeat_penalty": check_penalty("repeat_penalty"), "repeat_last_n": check_repeat_last_n,
    "presence_penalty": check_penalty("presence_penalty"), "frequency_penalty": check_penalty("frequency_penalty"),
}
_OLLAMA_TEXT = {"model": check_model, "stream": check_stream, "keep_alive": check_keep_alive,
                "format": check_format, "think": check_think, "logprobs": check_logprobs,
                "top_logprobs": check_top_logprobs}
AUDITS = {
    CHAT_PATH: Audit(_GENERATION | {
        "messages": check_messages, "response_format": check_response_format, "tools": check_tools,
        "tool_choice": check_tool_choice, "parallel_tool_calls": check_parallel_tool_calls,
        "top_logprobs": check_top_logprobs,
        **{name: check_refused_unless_empty(name, "x") for name in CHAT}}),
    COMPLETIONS_PATH: Audit(_GENERATION | {"prompt": check_prompt, "echo": check_echo,
                                           **{name: check_refused_unless_empty(name, "x") for name in COMPLETIONS}}),
    RESPONSES_PATH: Audit({
        "model": check_model, "input": check_input_of_responses, "instructions": check_instructions,
        "stream": check_responses_stream, "tools": check_responses_tools, "tool_choice": check_responses_tool_choice,
        "parallel_tool_calls": check_responses_parallel, "text": check_text_format,
        "max_output_tokens": check_max_tokens("max_output_tokens"), "temperature": check_responses_temperature,
        "top_p": check_responses_top_p, "previous_response_id": check_previous_response_id, "store": check_store,
        "metadata": check_metadata, "user": check_responses_identifier("user"),
        "safety_identifier": check_responses_identifier("safety_identifier"),
        "prompt_cache_key": check_responses_identifier("prompt_cache_key"),
        **{name: check_refused_unless_empty(name, "x") for name in RESPONSES_REFUSED}}),
    EMBEDDINGS_PATH: Audit({"model": check_model, "input": check_input, "dimensions": check_dimensions,
                            "encoding_format": check_encoding_format}),
    OLLAMA_CHAT: Audit(_OLLAMA_TEXT | {"messages": check_messages, "tools": check_ollama_tools}, _OLLAMA_OPTIONS),
    OLLAMA_GENERATE: Audit(_OLLAMA_TEXT | {
        "prompt": check_prompt, "context": check_context, "raw": check_raw, "system": check_system,
        "images": check_refused_unless_empty("images", ["aGk="]), "suffix": check_refused_unless_empty("suffix", "x"),
        "template": check_refused_unless_empty("template", "x")}, _OLLAMA_OPTIONS),
    OLLAMA_EMBED: Audit({"model": check_model, "input": check_input, "dimensions": check_dimensions,
                         "truncate": check_truncate, "keep_alive": check_keep_alive,
                         "options": check_embedding_options}),
    OLLAMA_EMBEDDINGS: Audit({"model": check_model, "prompt": check_input, "keep_alive": check_keep_alive,
                              "options": check_embedding_options}),
}
CASES = [(path, name) for path, audit in AUDITS.items() for name in audit.fields] + \
    [(path, f"options.{name}") for path, audit in AUDITS.items() for name in audit.options or {}]


def documented(path: str) -> tuple[set[str], set[str]]:
    """The body fields of POST `path` in the OpenAPI description, and those of its `options` object."""
    schema = openapi()["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    options = schema["properties"].get("options", {}).get("properties", {})
    return set(schema["properties"]), set(options) if path not in (OLLAMA_EMBED, OLLAMA_EMBEDDINGS) else set()


def test_every_documented_field_is_audited() -> None:
    for path, audit in AUDITS.items():
        fields, options = documented(path)
        refusals = set({CHAT_PATH: CHAT, COMPLETIONS_PATH: COMPLETIONS, RESPONSES_PATH: RESPONSES_REFUSED}.get(path, ()))
        assert set(audit.fields) == fields - ({"options"} if audit.options else set()) | refusals, path
        assert set(audit.options or {}) == options, path
        assert not fields & refusals, f"{path} documents a field it refuses"


@pytest.mark.parametrize(("path", "name"), CASES, ids=[f"{p}:{n}" for p, n in CASES])
def test_each_field_has_its_effect_or_is_a_400_naming_it(post: Post, path: str, name: str) -> None:
    audit = AUDITS[path]
    check = audit.options[name.removeprefix("options.")] if name.startswith("options.") and audit.options else \
        audit.fields[name]
    check(post, path)
