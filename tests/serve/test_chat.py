"""OpenAI chat and text completions through the official client, against the tiny Llama served on the CPU by a
real server (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from npuctl.artifacts import BuildResult
from npuctl.serve.models import GenerationService, ServedModel
from tests.serve.conftest import Serve

MESSAGES = [{"role": "system", "content": "You are tiny."}, {"role": "user", "content": "Hello world, how are you?"}]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_a_streamed_chat_equals_the_whole_answer_with_the_tokenizers_counts(
        serve: Serve, tiny_llama: Callable[..., ServedModel], tiny_llama_build: BuildResult) -> None:
    from transformers import AutoTokenizer

    server = serve(tiny_llama())
    api = client(server.url)
    whole = api.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=40, temperature=0)
    chunks = list(api.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=40, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 3, "the answer came in one piece, not streamed"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content and streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    reference = AutoTokenizer.from_pretrained(tiny_llama_build.model_dir)
    prompt_ids = reference.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert whole.usage.prompt_tokens == len(prompt_ids)
    assert whole.usage.completion_tokens == 40
    assert whole.usage.total_tokens == len(prompt_ids) + 40


def test_the_answer_is_what_onnxruntime_genai_generates_directly(
        serve: Serve, tiny_llama: Callable[..., ServedModel], tiny_llama_build: BuildResult) -> None:
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    server = serve(tiny_llama())
    answer = client(server.url).completions.create(model="tiny-llama", prompt="The quick brown", max_tokens=25,
                                                   temperature=0)
    reference = AutoTokenizer.from_pretrained(tiny_llama_build.model_dir)
    ids = reference("The quick brown")["input_ids"]
    model = og.Model(str(tiny_llama_build.model_dir))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + 25, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    assert answer.choices[0].text == reference.decode(tokens, skip_special_tokens=True)
    assert answer.usage.prompt_tokens == len(ids) and answer.usage.completion_tokens == len(tokens)


def test_stop_strings_end_the_answer_before_them(serve: Serve, tiny_llama: Callable[..., ServedModel]) -> None:
    server = serve(tiny_llama())
    api = client(server.url)
    full = api.completions.create(model="tiny-llama", prompt="Hello", max_tokens=30, temperature=0).choices[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = api.completions.create(model="tiny-llama", prompt="Hello", max_tokens=30, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = api.completions.create(model="tiny-llama", prompt="Hello", max_tokens=30, temperature=0, stop=stop,
                                      stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_a_seed_makes_sampling_repeatable(serve: Serve, tiny_llama: Callable[..., ServedModel]) -> None:
    server = serve(tiny_llama())
    api = client(server.url)

    def sample(seed: int) -> str:
        answer = api.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=20, temperature=0.9,
                                             top_p=0.95, seed=seed, extra_body={"top_k": 20})
        return answer.choices[0].message.content or ""

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_a_client_closing_the_stream_stops_the_generation_and_frees_the_slot(
        serve: Serve, tiny_llama: Callable[..., ServedModel]) -> None:
    server = serve(tiny_llama(serve={"maxBatch": 1, "queueLimit": 1}))
    api = client(server.url)

    def ended(reason: str) -> float:
        return metric(server.url, "npuctl_generations_total", model="tiny-llama", finish_reason=reason)

    def leave_early() -> bool:
        """Read three chunks of an 8000-token answer, hang up; True when the server cancelled it."""
        cancelled, finished = ended("cancelled"), ended("length")
        # ignore_eos: the answer cannot end by itself before the client leaves.
        stream = api.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=8000, temperature=0,
                                             stream=True, extra_body={"ignore_eos": True})
        for _, _chunk in zip(range(3), stream, strict=False):
            pass
        stream.close()
        deadline = time.monotonic() + 60
        while ended("cancelled") == cancelled and ended("length") == finished:
            assert time.monotonic() < deadline, httpx.get(f"{server.url}/metrics").text[-3000:]
            time.sleep(0.01)
        return ended("cancelled") > cancelled

    # The tiny model makes 8000 tokens in a fraction of a second: on a loaded machine the whole answer can
    # be made before the hang-up arrives, so the server gets three chances to show that it stops.
    assert any(leave_early() for _ in range(3)), "the server never stopped a generation whose client left"
    # One slot and a queue of one: had the slot not been freed, this would get 429 or wait forever.
    after = api.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=5, temperature=0)
    assert after.usage is not None and after.usage.completion_tokens == 5


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"messages": []}, "messages", "non-empty array"),
        ({"messages": None}, "messages", "non-empty array"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "'robot'"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", "string"),
        ({"max_tokens": -1}, "max_tokens", "positive integer"),
        ({"max_completion_tokens": 0}, "max_completion_tokens", "positive integer"),
        ({"max_tokens": 9000}, "max_tokens", "context is 8192 tokens"),
        ({"messages": [{"role": "user", "content": "fox " * 9000}]}, "messages", "at most 8191 input tokens"),
        ({"temperature": 3}, "temperature", "from 0 to 2"),
        ({"n": 2}, "n", "n=1"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "stream: true"),
    ],
)
def test_invalid_requests_get_openai_shaped_400s(serve: Serve, tiny_llama: Callable[..., ServedModel],
                                                 body: dict[str, Any], param: str, fragment: str) -> None:
    server = serve(tiny_llama())
    request = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]} | body
    answer = httpx.post(f"{server.url}/v1/chat/completions", json=request)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert fragment in error["message"], error["message"]


def test_the_official_client_raises_bad_request_with_the_limit(serve: Serve,
                                                               tiny_llama: Callable[..., ServedModel]) -> None:
    server = serve(tiny_llama(serve={"maxInputTokens": 16}))
    with pytest.raises(openai.BadRequestError) as refused:
        client(server.url).chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "fox " * 40}])
    assert "at most 16 input tokens" in str(refused.value) and refused.value.code == "context_length_exceeded"


def test_embeddings_models_refuse_chat_and_chat_models_show_in_models(
        serve: Serve, tiny_llama: Callable[..., ServedModel], minilm: Callable[..., ServedModel]) -> None:
    model = tiny_llama()
    assert isinstance(model, GenerationService)
    server = serve(model, minilm())
    api = client(server.url)
    assert {m.id for m in api.models.list()} == {"tiny-llama", "minilm"}
    # As OpenAI answers a chat request to an embedding model: 404, no such model for this endpoint.
    with pytest.raises(openai.NotFoundError, match="does not serve this kind of request"):
        api.chat.completions.create(model="minilm", messages=MESSAGES)


def test_a_genai_folder_is_served_as_it_is_whatever_the_default_precision(
        serve: Serve, tiny_llama_build: BuildResult, tmp_path: Path) -> None:
    from npuctl.artifacts import artifacts_of, build_deployment
    from npuctl.artifacts.store import Store
    from npuctl.serve.models import load_served
    from tests.manifests import write_deployment

    assert tiny_llama_build.model_dir is not None
    loaded = write_deployment(tmp_path, "genai-folder", {  # no precision: the default, w8a16
        "model": {"source": f"file:{tiny_llama_build.model_dir}", "task": "text-generation", "format": "genai"},
        "runtime": {"device": "cpu"}})
    built = build_deployment(loaded, store=Store(tmp_path / "store"))
    assert built.model_dir == tiny_llama_build.model_dir
    server = serve(load_served(loaded.deployment, artifacts_of(built)))
    answer = client(server.url).chat.completions.create(model="genai-folder", messages=MESSAGES, max_tokens=4)
    assert answer.usage is not None and answer.usage.completion_tokens == 4
