"""Ollama's API through the official `ollama` Python client, against a real server holding the tiny Llama
(chat, generate) and MiniLM (embeddings) on the CPU."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import numpy as np
import ollama
import pytest
from pydantic import BaseModel, Field

from npuctl.artifacts import BuildResult
from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve

MESSAGES = [{"role": "system", "content": "You are tiny."}, {"role": "user", "content": "Hello world, how are you?"}]


@pytest.fixture
def server_url(serve: Serve, tiny_llama: Callable[..., ServedModel], minilm: Callable[..., ServedModel]) -> str:
    return serve(tiny_llama(), minilm()).url


def test_list_show_ps_and_version_describe_the_served_models(server_url: str) -> None:
    client = ollama.Client(host=server_url)
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"tiny-llama", "minilm"}
    assert listed["tiny-llama"].details is not None and listed["tiny-llama"].details.family == "llama"
    shown = client.show("tiny-llama:latest")  # Ollama's default tag names the same model
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 8192
    assert client.show("minilm").capabilities == ["embedding"]
    running = {m.model: m for m in client.ps().models}
    assert running["tiny-llama"].context_length == 8192 and running["tiny-llama"].expires_at is not None
    assert httpx.get(f"{server_url}/api/version").json()["version"]
    assert httpx.get(server_url).text == "Ollama is running"


def test_chat_whole_and_streamed_give_the_same_greedy_answer(server_url: str) -> None:
    client = ollama.Client(host=server_url)
    options = {"temperature": 0, "num_predict": 24}
    whole = client.chat(model="tiny-llama", messages=MESSAGES, options=options)
    assert whole.done and whole.done_reason == "length" and whole.eval_count == 24
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.prompt_eval_count and whole.prompt_eval_count > 5 and whole.total_duration
    parts = list(client.chat(model="tiny-llama", messages=MESSAGES, options=options, stream=True))
    assert len(parts) > 3 and not any(p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == 24


def test_generate_returns_a_context_that_continues_the_conversation(server_url: str) -> None:
    client = ollama.Client(host=server_url)
    first = client.generate(model="tiny-llama", prompt="The quick brown fox", options={"temperature": 0,
                                                                                      "num_predict": 8})
    assert first.done and first.response and first.context and first.eval_count
    assert len(first.context) == first.prompt_eval_count + first.eval_count
    second = client.generate(model="tiny-llama", prompt=" and", context=first.context,
                             options={"temperature": 0, "num_predict": 4})
    assert second.prompt_eval_count is not None and second.prompt_eval_count > len(first.context)
    streamed = list(client.generate(model="tiny-llama", prompt="The quick brown fox", stream=True,
                                    options={"temperature": 0, "num_predict": 8}))
    assert "".join(p.response or "" for p in streamed) == first.response
    loaded = client.generate(model="tiny-llama")  # no prompt: Ollama's way of loading a model
    assert loaded.done and loaded.done_reason == "load"


class City(BaseModel):
    name: str = Field(max_length=12)
    capital: bool


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
      a: The first number
      b: The second number
    """
    return a + b


def test_format_holds_the_answer_to_a_json_schema(server_url: str) -> None:
    client = ollama.Client(host=server_url)
    for seed in range(3):
        answer = client.chat(model="tiny-llama", messages=MESSAGES, format=City.model_json_schema(),
                             options={"seed": seed, "num_predict": 200})
        City.model_validate_json(answer.message.content or "")
    answer = client.generate(model="tiny-llama", prompt="JSON:", format="json", options={"num_predict": 40})
    assert (answer.response or "").startswith("{")


def test_with_tools_the_answer_is_text_or_a_well_formed_call(server_url: str) -> None:
    client = ollama.Client(host=server_url)
    calls = []
    for seed in range(6):
        answer = client.chat(model="tiny-llama", messages=MESSAGES, tools=[add], options={"seed": seed,
                                                                                        "num_predict": 200})
        calls += answer.message.tool_calls or []
        assert answer.message.tool_calls or not (answer.message.content or "").startswith("{")
    # Ollama has no tool_choice: the model chooses text or a call (the random weights choose text), and a
    # call is always well formed. Forced calls are tested through the OpenAI API (test_structured.py).
    for call in calls:
        assert call.function.name == "add" and set(call.function.arguments) == {"a", "b"}


def test_logprobs_come_with_each_piece(server_url: str) -> None:
    answer = ollama.Client(host=server_url).chat(model="tiny-llama", messages=MESSAGES, logprobs=True,
                                                 top_logprobs=2, options={"num_predict": 6, "temperature": 0})
    assert answer.logprobs and len(answer.logprobs) == answer.eval_count
    assert all(len(t.top_logprobs or []) == 2 and t.logprob <= 0 for t in answer.logprobs)


def test_embed_matches_the_openai_embeddings_of_the_same_model(server_url: str) -> None:
    client = ollama.Client(host=server_url)
    texts = ["NPUs run small models well.", "The fox jumps."]
    embedded = client.embed(model="minilm", input=texts)
    assert embedded.prompt_eval_count and len(embedded.embeddings) == 2
    reference = httpx.post(f"{server_url}/v1/embeddings", json={"model": "minilm", "input": texts}).json()
    for got, want in zip(embedded.embeddings, reference["data"], strict=True):
        np.testing.assert_allclose(got, want["embedding"], atol=1e-6)
    single = client.embeddings(model="minilm", prompt=texts[0])
    np.testing.assert_allclose(single.embedding, embedded.embeddings[0], atol=1e-6)


def test_a_history_sent_back_with_its_thinking_is_answered_as_without_it(server_url: str) -> None:
    client = ollama.Client(host=server_url)
    options = {"num_predict": 4, "temperature": 0}
    first = client.chat(model="tiny-llama", messages=MESSAGES, options=options)
    history = [*MESSAGES, {"role": "assistant", "content": first.message.content}, {"role": "user", "content": "and?"}]
    plain = client.chat(model="tiny-llama", messages=history, options=options)
    history[-2] = history[-2] | {"thinking": "what the user wants"}
    sent_back = client.chat(model="tiny-llama", messages=history, options=options)
    assert sent_back.message.content == plain.message.content
    assert sent_back.prompt_eval_count == plain.prompt_eval_count


@pytest.mark.parametrize(("path", "body", "named"), [
    ("/api/chat", {"messages": MESSAGES, "options": {"mirostat": 2}}, "options.mirostat"),
    ("/api/chat", {"messages": MESSAGES, "keep_alive": 0}, "keep_alive"),
    ("/api/chat", {"messages": MESSAGES, "think": True}, "think"),
    ("/api/chat", {"messages": MESSAGES, "frobnicate": 1}, "frobnicate"),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}, "images"),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi", "mood": "calm"}]}, "messages[0].mood"),
    ("/api/chat", {"messages": MESSAGES, "options": {"num_ctx": 4}}, "prompt"),
    ("/api/generate", {"prompt": "hi", "suffix": "end"}, "suffix"),
    ("/api/generate", {"prompt": "hi", "context": [10 ** 9]}, "context"),
    ("/api/generate", {"prompt": "hi", "options": {"num_predict": 0}}, "num_predict"),
])
def test_what_npuctl_cannot_honour_is_a_400_naming_it(server_url: str, path: str, body: dict[str, object],
                                                      named: str) -> None:
    response = httpx.post(f"{server_url}{path}", json={"model": "tiny-llama", "stream": False} | body)
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]


def test_an_unknown_model_is_a_404_the_client_reports(server_url: str) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=server_url).chat(model="nope", messages=MESSAGES)
    assert caught.value.status_code == 404 and "nope" in caught.value.error


def test_a_stream_is_newline_delimited_json(server_url: str) -> None:
    body = {"model": "tiny-llama", "messages": MESSAGES, "options": {"num_predict": 5}}
    with httpx.stream("POST", f"{server_url}/api/chat", json=body) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert [line["done"] for line in lines][-1] is True and len(lines) >= 2


def test_show_returns_the_models_own_chat_template(server_url: str, tiny_llama_build: BuildResult) -> None:
    assert tiny_llama_build.model_dir is not None
    config = json.loads((tiny_llama_build.model_dir / "tokenizer_config.json").read_text())
    template = config.get("chat_template") or (tiny_llama_build.model_dir / "chat_template.jinja").read_text()
    shown = ollama.Client(host=server_url).show("tiny-llama")
    assert shown.template == template and "{%" in template
    assert ollama.Client(host=server_url).show("minilm").template == ""
