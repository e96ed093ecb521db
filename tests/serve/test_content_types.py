"""JSON bodies sent without saying they are JSON (issue 27): curl as Ollama's docs show it (`-d`, which says
form), tritonclient's JSON mode (which says nothing) are served; a browser sending a body that is not declared
JSON for a page of another site still gets 415, because that is what skips CORS' preflight."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from npuctl.serve.http.guards import WebPolicy
from npuctl.serve.models import ServedModel
from tests.serve.conftest import TENSOR_WEIGHT, Serve

BODY = b'{"model": "minilm", "input": "hello"}'


def test_curl_as_ollamas_docs_show_it_is_answered(serve: Serve, tiny_llama: Callable[..., ServedModel],
                                                  minilm: Callable[..., ServedModel]) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    server = serve(tiny_llama(), minilm())

    def curl(path: str, body: dict[str, object]) -> str:
        done = subprocess.run(["curl", "-sS", f"{server.url}{path}", "-d", json.dumps(body)], capture_output=True,
                              text=True, timeout=60, check=True)
        return done.stdout

    answer = json.loads(curl("/api/chat", {"model": "tiny-llama", "stream": False, "messages": [
        {"role": "user", "content": "why is the sky blue?"}], "options": {"num_predict": 4}}))
    assert answer["done"] and answer["message"]["role"] == "assistant"
    streamed = [json.loads(line) for line in curl("/api/generate", {
        "model": "tiny-llama", "prompt": "Why is the sky blue?", "options": {"num_predict": 4}}).splitlines()]
    assert streamed[-1]["done"] and len(streamed) > 1
    assert len(json.loads(curl("/api/embed", {"model": "minilm", "input": "hi"}))["embeddings"][0]) == 384
    assert len(json.loads(curl("/v1/embeddings", {"model": "minilm", "input": "hi"}))["data"][0]["embedding"]) == 384


def test_tritonclient_json_mode_is_answered(serve: Serve, tensor: Callable[..., ServedModel]) -> None:
    server = serve(tensor("tiny"))
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    inputs = [triton.InferInput("x", [1, 4], "FP32"), triton.InferInput("mask", [1, 4], "INT64")]
    inputs[0].set_data_from_numpy(x, binary_data=False)
    inputs[1].set_data_from_numpy(np.ones((1, 4), np.int64), binary_data=False)
    try:
        result = client.infer("tiny", inputs, outputs=[triton.InferRequestedOutput("y", binary_data=False)])
    finally:
        client.close()
    np.testing.assert_allclose(result.as_numpy("y"), x * TENSOR_WEIGHT)


def test_a_body_not_declared_json_is_refused_only_from_another_sites_page(
        serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    server = serve(minilm("minilm"), web=WebPolicy.of(cors_origins=["https://app.example"]))
    url = f"{server.url}/v1/embeddings"
    for kind in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {"content-type": kind} if kind else {}
        assert httpx.post(url, content=BODY, headers=headers).status_code == 200, kind
        assert httpx.post(url, content=BODY, headers=headers | {"origin": server.url}).status_code == 200, kind
        # A page of an allowed site sends a simple request (no preflight) only when the body is not declared JSON.
        page = httpx.post(url, content=BODY, headers=headers | {"origin": "https://app.example"})
        assert page.status_code == 415 and "application/json" in page.json()["error"]["message"], kind
        stripped = httpx.post(url, content=BODY, headers=headers | {"sec-fetch-site": "cross-site"})
        assert stripped.status_code == 415, kind
    refused = httpx.post(url, content=b"input=hello", headers={"content-type": "application/x-www-form-urlencoded"})
    assert refused.status_code == 400 and "not valid JSON" in refused.json()["error"]["message"]


def test_litellm_ollama_providers_are_answered(serve: Serve, tiny_llama: Callable[..., ServedModel],
                                               minilm: Callable[..., ServedModel],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # litellm fetches its model price list from GitHub at import unless told to use its own copy.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = pytest.importorskip("litellm", reason="litellm is not installed (pip install 'npuctl[dev]')")
    server = serve(tiny_llama(), minilm())
    messages = [{"role": "user", "content": "Hello"}]
    for provider in ("ollama", "ollama_chat"):
        answer = litellm.completion(model=f"{provider}/tiny-llama", api_base=server.url, messages=messages,
                                    max_tokens=4, temperature=0)
        assert answer.choices[0].message.content, provider
        assert answer.usage.completion_tokens == 4, provider
    embedded = litellm.embedding(model="ollama/minilm", api_base=server.url, input=["a sentence"])
    assert len(embedded.data[0]["embedding"]) == 384
