"""T5-style text2text generation: the tiny trained T5 exported (encoder + one-step decoder) and served on the CPU;
its greedy tokens against transformers' generate, the openai client streaming, sampling, and the limits."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import openai
import pytest

from npuctl.artifacts import Store, artifacts_of, build_deployment
from npuctl.runtime.generation import Sampling
from npuctl.runtime.placement import Artifacts
from npuctl.schema.models import ModelDeployment
from npuctl.serve.models import GenerationService, ServedModel, load_served
from tests.conftest import TinyModels, task_manifest
from tests.serve.conftest import Serve
from tests.tiny_t5 import PAIRS

TASK = "text2text-generation"


@pytest.fixture(scope="module")
def t5_build(tiny_models: TinyModels, task_store: Store, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[ModelDeployment, Artifacts]:
    loaded = task_manifest(tmp_path_factory.mktemp("t5-manifests"), tiny_models[TASK], TASK, "t5")
    return loaded.deployment, artifacts_of(build_deployment(loaded, store=task_store))


@pytest.fixture
def t5(t5_build: tuple[ModelDeployment, Artifacts]) -> ServedModel:
    """The T5 loaded on the CPU for one test (a server that stops retires the models it held)."""
    model = load_served(*t5_build)
    assert model.status.ready, model.status
    return model


def _generate(folder: Path, prompts: list[str], max_new_tokens: int = 16) -> list[list[int]]:
    """transformers' greedy answers (without the decoder start token)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(folder)).eval()
    answers = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        answers.append(model.generate(ids, do_sample=False, max_new_tokens=max_new_tokens)[0, 1:].tolist())
    return answers


def test_greedy_tokens_match_transformers(t5: ServedModel, tiny_models: TinyModels) -> None:
    assert isinstance(t5, GenerationService)
    prompts = [*PAIRS, "translate English to German: good world"]
    want = _generate(tiny_models[TASK], prompts)
    for prompt, expected in zip(prompts, want, strict=True):
        ids = t5.model.tokenizer.plain(prompt)
        got = []
        for token in t5.model.tokens(ids, Sampling(16, 0.0), threading.Event()):
            got.append(token)
            if token in t5.model.eos_token_ids:
                break
        assert got == expected, prompt
    assert len({tuple(w) for w in want}) > 2, "the trained model answers prompts differently"


def test_openai_client_streams_from_t5(serve: Serve, t5: ServedModel, tiny_models: TinyModels) -> None:
    from transformers import AutoTokenizer

    server = serve(t5)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    prompt = "translate English to German: hello world"
    [tokens] = _generate(tiny_models[TASK], [prompt])
    expected = AutoTokenizer.from_pretrained(str(tiny_models[TASK])).decode(tokens, skip_special_tokens=True)
    whole = client.completions.create(model="t5", prompt=prompt, max_tokens=16, temperature=0)
    assert whole.choices[0].text == expected and whole.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model="t5", messages=[{"role": "user", "content": prompt}], stream=True,
                                            temperature=0, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(tokens) - 1
    sampled = [client.completions.create(model="t5", prompt=prompt, max_tokens=8, temperature=1.5, seed=7).choices[0].text
               for _ in range(2)]
    assert sampled[0] == sampled[1], "a seed makes sampling repeatable"
    assert 'npuctl_generations_total{finish_reason="stop",model="t5"}' in httpx.get(f"{server.url}/metrics").text
    meta = httpx.get(f"{server.url}/v2/models/t5").json()
    assert meta["task"] == "text2text-generation" and meta["maxOutputTokens"] == 16 and meta["maxInputTokens"] == 32


def test_limits_get_400_and_serving_goes_on(serve: Serve, t5: ServedModel) -> None:
    server = serve(t5)
    url = f"{server.url}/v1/completions"
    long = httpx.post(url, json={"model": "t5", "prompt": "hello world " * 40})
    assert long.status_code == 400 and "at most 32 input tokens" in long.json()["error"]["message"]
    over = httpx.post(url, json={"model": "t5", "prompt": "hello", "max_tokens": 17})
    assert over.status_code == 400 and "spec.shapes.maxOutputTokens" in over.json()["error"]["message"]
    assert httpx.post(url, json={"model": "t5", "prompt": "hello", "max_tokens": 4}).status_code == 200
