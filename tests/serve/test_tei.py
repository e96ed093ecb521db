"""huggingface_hub's InferenceClient(model=URL) in its default mode against npuctl serving one model per server, as
TEI and TGI would: feature_extraction (MiniLM), text_classification (a tiny classifier), text_generation (the tiny
Llama, whole and streamed); and TEI's and TGI's own routes (/embed, /predict, /generate, /generate_stream, /info)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import httpx
import numpy as np
from huggingface_hub import InferenceClient

from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve
from tests.serve.test_scoring_api import (
    built,  # noqa: F401
    served,  # noqa: F401  (its `built` fixture builds the classifier)
)


def test_feature_extraction_equals_the_openai_embedding(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    server = serve(minilm())
    vector = InferenceClient(model=server.url).feature_extraction("a sentence")
    reference = httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": "a sentence"}).json()
    np.testing.assert_allclose(vector.reshape(-1), reference["data"][0]["embedding"], rtol=1e-5, atol=1e-6)
    embedded = httpx.post(f"{server.url}/embed", json={"inputs": ["a sentence", "another"]}).json()
    assert len(embedded) == 2 and len(embedded[0]) == 384
    refused = httpx.post(f"{server.url}/embed", json={"inputs": "x", "normalize": False})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "normalize"
    info = httpx.get(f"{server.url}/info").json()
    assert info["model_id"] == "minilm" and info["max_input_length"] > 0


def test_text_classification_gives_every_label_most_likely_first(serve: Serve, built: dict) -> None:  # noqa: F811
    server = serve(served(built, "classification"))
    labels = InferenceClient(model=server.url).text_classification("a sentence")
    whole = httpx.post(f"{server.url}/v1/classify", json={"input": "a sentence"}).json()["data"][0]
    assert [(label.label, round(label.score, 5)) for label in labels] == \
        [(entry["label"], round(entry["score"], 5)) for entry in whole]
    top = httpx.post(f"{server.url}/predict", json={"inputs": ["a", "b"], "parameters": {"top_k": 1}}).json()
    assert len(top) == 2 and all(len(row) == 1 for row in top)


def test_text_generation_whole_and_streamed(serve: Serve, tiny_llama: Callable[..., ServedModel]) -> None:
    server = serve(tiny_llama())
    client = InferenceClient(model=server.url)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a parameter the client had to drop would warn
        text = client.text_generation("The quick brown", max_new_tokens=12)
        detailed = client.text_generation("The quick brown", max_new_tokens=12, details=True)
        streamed = list(client.text_generation("The quick brown", max_new_tokens=12, stream=True))
    completion = httpx.post(f"{server.url}/v1/completions", json={
        "model": "tiny-llama", "prompt": "The quick brown", "max_tokens": 12, "temperature": 0}).json()
    assert text == completion["choices"][0]["text"] == detailed.generated_text == "".join(streamed)
    assert detailed.details is not None and detailed.details.generated_tokens == 12
    assert detailed.details.finish_reason == "length"
    full = httpx.post(f"{server.url}/generate", json={"inputs": "The quick brown", "parameters": {
        "max_new_tokens": 12, "return_full_text": True}}).json()
    assert full == [{"generated_text": "The quick brown" + text}]
    refused = httpx.post(f"{server.url}/generate", json={"inputs": "x", "parameters": {"watermark": True}})
    assert refused.status_code == 400 and "watermark" in refused.json()["error"]["message"]
    assert httpx.get(f"{server.url}/info").json()["max_total_tokens"] == 8192


def test_post_at_the_root_needs_one_model_or_a_name(serve: Serve, minilm: Callable[..., ServedModel],
                                                     tiny_llama: Callable[..., ServedModel]) -> None:
    server = serve(minilm(), tiny_llama())
    both = httpx.post(server.url, json={"inputs": "x"})
    assert both.status_code == 400 and "minilm, tiny-llama" in both.json()["error"]["message"]
    assert len(httpx.post(server.url, json={"inputs": "x", "model": "minilm"}).json()[0]) == 384
    assert httpx.get(server.url).text == "Ollama is running"
    assert set(httpx.delete(server.url).headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
