"""Values a request may not carry, against a real server on 127.0.0.1 with real models: strings that are not
Unicode text (lone surrogates) and tensor data of the wrong kind are 400s, never converted."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from npuctl.artifacts import BuildResult, artifacts_of
from npuctl.runtime.placement import Artifacts
from npuctl.serve.http.limits import MAX_ROWS
from npuctl.serve.models import ServedModel, load_served
from tests.serve.conftest import Serve, deployment


def test_lone_surrogates_are_400s_on_every_api(serve: Serve, minilm: Callable[..., ServedModel],
                                               tiny_llama_build: BuildResult) -> None:
    artifacts: Artifacts = artifacts_of(tiny_llama_build)
    chat = load_served(deployment("tiny-llama", model={"source": "file:unused", "task": "text-generation",
                                                       "format": "genai"}, runtime={"device": "cpu"}), artifacts)
    server = serve(minilm("minilm"), chat)
    json_type = {"content-type": "application/json"}
    bodies = {
        "/v1/embeddings": '{"model": "minilm", "input": ["fine", "bad \\ud800 here"]}',
        "/v2/models/minilm/infer": '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], '
                                   '"data": ["\\udfff"]}]}',
        "/v1/chat/completions": '{"model": "tiny-llama", "messages": [{"role": "user", "content": "\\ud83d"}]}',
    }
    for path, body in bodies.items():
        answer = httpx.post(f"{server.url}{path}", content=body.encode(), headers=json_type, timeout=30)
        assert answer.status_code == 400, (path, answer.status_code, answer.text)
        assert "surrogate" in answer.text
    many = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}] * (MAX_ROWS + 1)}
    assert httpx.post(f"{server.url}/v1/chat/completions", json=many).status_code == 400, "the row cap holds for chat"
    # A surrogate pair is one character (an emoji), not an error.
    pair = '{"model": "minilm", "input": "smile \\ud83d\\ude00"}'
    assert httpx.post(f"{server.url}/v1/embeddings", content=pair.encode(), headers=json_type).status_code == 200


def test_tensor_data_of_the_wrong_kind_is_refused_not_converted(serve: Serve, tensor: Callable[..., ServedModel]) -> None:
    # numpy would turn 1.5 into 1 for the INT64 mask, "2" into 2.0 and null into NaN for the FP32 input.
    server = serve(tensor("tiny"))
    good_x = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
    good_mask = {"name": "mask", "datatype": "INT64", "shape": [1, 4], "data": [1, 1, 1, 1]}
    for x, mask in [(good_x, good_mask | {"data": [1.5, 1, 1, 1]}), (good_x | {"data": ["2", 1, 1, 1]}, good_mask),
                    (good_x | {"data": [None, 1, 1, 1]}, good_mask), (good_x | {"data": [True, False, True, True]}, good_mask),
                    (good_x, good_mask | {"data": [2**63, 1, 1, 1]})]:
        answer = httpx.post(f"{server.url}/v2/models/tiny/infer", json={"inputs": [x, mask]})
        assert answer.status_code == 400 and "values" in answer.json()["error"], (x, mask, answer.text)
    assert httpx.post(f"{server.url}/v2/models/tiny/infer", json={"inputs": [good_x, good_mask]}).status_code == 200
