"""LangChain's `HuggingFaceEndpoint` (langchain-huggingface) in its default mode against npuctl serving one model,
as a TGI server would: text generation whole, streamed and async, with its default sampling parameters (typical_p
0.95 among them). (Its `HuggingFaceEndpointEmbeddings` refuses a URL: it reaches Hugging Face's providers only.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve

endpoints = pytest.importorskip("langchain_huggingface", reason="langchain-huggingface is not installed: "
                                "pip install -e '.[dev]'")


def test_the_endpoint_generates_with_its_default_parameters(serve: Serve,
                                                            tiny_llama: Callable[..., ServedModel]) -> None:
    server = serve(tiny_llama())
    model = endpoints.HuggingFaceEndpoint(endpoint_url=server.url, max_new_tokens=12)
    text = model.invoke("The quick brown")
    assert isinstance(text, str) and text
    assert asyncio.run(model.ainvoke("The quick brown"))
    # Seeded, so that the answer is the same whole and streamed (an unseeded sample may end after one token).
    seeded = endpoints.HuggingFaceEndpoint(endpoint_url=server.url, max_new_tokens=12, seed=7)
    answer = seeded.invoke("The quick brown")
    assert answer == seeded.invoke("The quick brown")
    streamed = list(seeded.stream("The quick brown"))
    assert len(streamed) > 1 and all(isinstance(chunk, str) for chunk in streamed)
    assert "".join(streamed) == answer
    greedy = endpoints.HuggingFaceEndpoint(endpoint_url=server.url, max_new_tokens=12, temperature=None, top_p=None,
                                           typical_p=None)
    completion = httpx.post(f"{server.url}/v1/completions", json={
        "model": "tiny-llama", "prompt": "The quick brown", "max_tokens": 12, "temperature": 0}).json()
    assert greedy.invoke("The quick brown") == completion["choices"][0]["text"]
