"""The request-field audit's checks for the OpenAI chat, completions and embeddings APIs and Ollama's: each sends
one field and asserts what a user of it would see, or the 400 naming it."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.serve.field_audit import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    EOS,
    OLLAMA_EMBEDDINGS,
    TOOL,
    Post,
    base,
    refused,
    text,
    tokens,
    with_option,
)


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


def check_embedding_identifier(post: Post, path: str) -> None:
    assert post(path, base(path) | {"user": "someone"}).json()["data"] == post(path, base(path)).json()["data"]
    refused(post, path, base(path) | {"user": 3}, "user")


def check_encoding_format(post: Post, path: str) -> None:
    assert isinstance(post(path, base(path) | {"encoding_format": "base64"}).json()["data"][0]["embedding"], str)


def check_truncate(post: Post, path: str) -> None:
    long = base(path) | {"input": "word " * 600}
    assert post(path, long | {"truncate": False}).status_code == 400
    assert post(path, long).status_code == 200  # Ollama truncates by default


def check_embedding_options(post: Post, path: str) -> None:
    refused(post, path, base(path) | {"options": {"temperature": 0.5}}, "temperature")


def check_keep_alive(post: Post, path: str) -> None:
    # A model kept loaded while declared (residency: always, as here) honours any keep_alive but 0, which is a 400.
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
