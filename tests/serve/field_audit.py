"""What the request-field audit (test_request_fields.py) sends and reads: the operations, a base request for each,
and the answer's text and token count as a user reads them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

Post = Callable[[str, dict[str, Any]], httpx.Response]
CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH = "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
RESPONSES_PATH = "/v1/responses"
OLLAMA_CHAT, OLLAMA_GENERATE, OLLAMA_EMBED, OLLAMA_EMBEDDINGS = "/api/chat", "/api/generate", "/api/embed", \
    "/api/embeddings"
EOS = 1
"""The tiny Llama's end-of-sequence token."""
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]}}}



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
