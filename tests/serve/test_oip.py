"""Open Inference Protocol v2 over HTTP/JSON: health, metadata, readiness, and infer with checked tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from npuctl.serve.models import ServedModel
from tests.serve.conftest import TENSOR_WEIGHT, Serve

X = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]
MASK = [[1, 1, 0, 1], [1, 0, 1, 1]]


def tensors(**overrides: dict[str, Any] | None) -> dict[str, Any]:
    inputs = {
        "x": {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X},
        "mask": {"name": "mask", "datatype": "INT64", "shape": [2, 4], "data": [v for row in MASK for v in row]},
    }
    for name, tensor in overrides.items():
        if tensor is None:
            del inputs[name]
        else:
            inputs[name] = {**inputs.get(name, {}), **tensor}
    return {"id": "req-1", "inputs": list(inputs.values())}


def test_infer_runs_the_graph(serve: Serve, tensor: Callable[..., ServedModel]) -> None:
    server = serve(tensor("tiny"))
    answer = httpx.post(f"{server.url}/v2/models/tiny/infer", json=tensors())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_name"] == "tiny" and body["id"] == "req-1"
    [y] = body["outputs"]
    assert y["name"] == "y" and y["datatype"] == "FP32" and y["shape"] == [2, 4]
    expected = np.array(X, dtype=np.float32) * TENSOR_WEIGHT * np.array(MASK)
    assert np.allclose(np.array(y["data"]).reshape(2, 4), expected)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"x": {"shape": [2, 5]}}, "'x' has shape [2, 5]"),
        ({"x": {"shape": [8]}}, "'x' has shape [8]"),
        ({"x": {"datatype": "INT32"}}, "'x' has datatype 'INT32'"),
        ({"mask": {"datatype": "FP32"}}, "'mask' has datatype 'FP32'"),
        ({"mask": None}, "'mask' is missing"),
        ({"x": {"data": [1.0, 2.0]}}, "'x' has 2 values"),
        ({"x": {"data": ["a", "b", "c", "d", "e", "f", "g", "h"]}}, "'x': 'data' is not a list of FP32"),
        ({"x": {"data": None}}, "'x' needs 'data'"),
        ({"x": {"shape": "2x4"}}, "'x' needs a 'shape'"),
        ({"z": {"name": "z", "datatype": "FP32", "shape": [1], "data": [1.0]}}, "'z' is not an input"),
    ],
)
def test_malformed_tensors_get_400_naming_the_input(
    serve: Serve, tensor: Callable[..., ServedModel], override: dict[str, Any], fragment: str
) -> None:
    server = serve(tensor("tiny"))
    answer = httpx.post(f"{server.url}/v2/models/tiny/infer", json=tensors(**override))
    assert answer.status_code == 400
    assert fragment in answer.json()["error"]


def test_bad_bodies_and_unknown_models_are_4xx(serve: Serve, tensor: Callable[..., ServedModel]) -> None:
    server = serve(tensor("tiny"))
    assert httpx.post(f"{server.url}/v2/models/tiny/infer", content=b"[1,",
                      headers={"content-type": "application/json"}).status_code == 400
    assert httpx.post(f"{server.url}/v2/models/tiny/infer", json={"inputs": 3}).status_code == 400
    unknown_output = httpx.post(f"{server.url}/v2/models/tiny/infer", json={**tensors(), "outputs": [{"name": "q"}]})
    assert unknown_output.status_code == 400 and "'q'" in unknown_output.json()["error"]
    missing = httpx.post(f"{server.url}/v2/models/other/infer", json=tensors())
    assert missing.status_code == 404 and "other" in missing.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/other/ready").status_code == 404


def test_health_metadata_and_readiness(serve: Serve, tensor: Callable[..., ServedModel]) -> None:
    server = serve(tensor("tiny"))
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    ready = httpx.get(f"{server.url}/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    meta = httpx.get(f"{server.url}/v2/models/tiny").json()
    assert meta["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "mask", "datatype": "INT64", "shape": [-1, 4]},
    ]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["status"]["provider"] == "CPUExecutionProvider"
    model_ready = httpx.get(f"{server.url}/v2/models/tiny/ready")
    assert model_ready.status_code == 200 and model_ready.json()["ready"] is True


def test_an_embeddings_model_takes_text_over_oip(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    server = serve(minilm())
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["hello there", "goodbye"]}]}
    answer = httpx.post(f"{server.url}/v2/models/minilm/infer", json=body)
    assert answer.status_code == 200, answer.text
    [embedding] = answer.json()["outputs"]
    assert embedding["shape"] == [2, 384]
    openai = httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": "goodbye"}).json()
    assert np.allclose(embedding["data"][384:], openai["data"][0]["embedding"], atol=1e-5)
