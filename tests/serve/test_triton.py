"""Triton's official HTTP client (`tritonclient[http]`) in its default modes, against a real server holding the
tiny tensor graph and MiniLM: binary tensor data both ways, BYTES included, versioned routes, compressed request
bodies, and the model configuration, repository index and statistics extensions."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from npuctl.serve.models import ServedModel
from tests.serve.conftest import TENSOR_WEIGHT, Serve

X = np.array([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]], dtype=np.float32)
MASK = np.array([[1, 1, 0, 1], [1, 0, 1, 1]], dtype=np.int64)
EXPECTED = (X * TENSOR_WEIGHT * MASK).astype(np.float32)
LIMIT = 1 << 20


@pytest.fixture
def server_url(serve: Serve, tensor: Callable[..., ServedModel], minilm: Callable[..., ServedModel]) -> str:
    return serve(tensor("tiny"), minilm(), max_body_bytes=LIMIT).url


@pytest.fixture
def client(server_url: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server_url.removeprefix("http://"))
    yield client
    client.close()


def tiny_inputs() -> list[triton.InferInput]:
    x, mask = triton.InferInput("x", [2, 4], "FP32"), triton.InferInput("mask", [2, 4], "INT64")
    x.set_data_from_numpy(X)  # binary_data=True: the client's default
    mask.set_data_from_numpy(MASK)
    return [x, mask]


def test_binary_inputs_and_outputs_by_default(client: triton.InferenceServerClient) -> None:
    result = client.infer("tiny", tiny_inputs())
    np.testing.assert_allclose(result.as_numpy("y"), EXPECTED)
    [y] = result.get_response()["outputs"]
    assert y["parameters"]["binary_data_size"] == EXPECTED.nbytes and "data" not in y


def test_an_output_asked_as_json_comes_as_json(client: triton.InferenceServerClient) -> None:
    result = client.infer("tiny", tiny_inputs(), outputs=[triton.InferRequestedOutput("y", binary_data=False)])
    [y] = result.get_response()["outputs"]
    assert "parameters" not in y
    np.testing.assert_allclose(np.array(y["data"]).reshape(2, 4), EXPECTED)


def test_bytes_inputs_in_binary_embed_as_the_openai_api_does(client: triton.InferenceServerClient,
                                                            server_url: str) -> None:
    texts = ["NPUs run small models well.", "Ünïcödé — survives"]
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    vectors = client.infer("minilm", [text]).as_numpy("embedding")
    reference = httpx.post(f"{server_url}/v1/embeddings", json={"model": "minilm", "input": texts}).json()["data"]
    np.testing.assert_allclose(vectors, [item["embedding"] for item in reference], atol=1e-5)


def test_the_version_metadata_lists_is_served_under_versions(client: triton.InferenceServerClient) -> None:
    [version] = client.get_model_metadata("tiny")["versions"]
    assert client.is_model_ready("tiny", version)
    assert client.get_model_metadata("tiny", version)["name"] == "tiny"
    result = client.infer("tiny", tiny_inputs(), model_version=version)
    assert result.get_response()["model_version"] == version
    with pytest.raises(InferenceServerException, match="no version '7'"):
        client.infer("tiny", tiny_inputs(), model_version="7")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies(client: triton.InferenceServerClient, algorithm: str) -> None:
    result = client.infer("tiny", tiny_inputs(), request_compression_algorithm=algorithm)
    np.testing.assert_allclose(result.as_numpy("y"), EXPECTED)


def test_a_zip_bomb_hits_the_size_limit_after_inflating(server_url: str) -> None:
    bomb = zlib.compressobj(wbits=31)  # gzip: 64 MiB of zeros in about 64 KiB
    body = b"".join(bomb.compress(bytes(1 << 20)) for _ in range(64)) + bomb.flush()
    assert len(body) < LIMIT
    answer = httpx.post(f"{server_url}/v2/models/tiny/infer", content=body,
                        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert answer.status_code == 413 and "inflates past the limit" in answer.json()["error"]
    small = httpx.post(f"{server_url}/v1/embeddings", content=gzip.compress(b'{"model": "minilm", "input": "hi"}'),
                       headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert small.status_code == 200  # every API takes compressed bodies
    broken = httpx.post(f"{server_url}/v2/models/tiny/infer", content=b"not gzip",
                        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert broken.status_code == 400 and "not valid gzip" in broken.json()["error"]
    unknown = httpx.post(f"{server_url}/v2/models/tiny/infer", content=b"{}",
                         headers={"Content-Encoding": "br", "Content-Type": "application/json"})
    assert unknown.status_code == 415


def test_config_repository_index_and_statistics(client: triton.InferenceServerClient) -> None:
    assert set(client.get_server_metadata()["extensions"]) == {"binary_tensor_data", "model_configuration",
                                                                "model_repository", "statistics"}
    config = client.get_model_config("tiny")
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("x", "TYPE_FP32", [-1, 4]),
                                                                                ("mask", "TYPE_INT64", [-1, 4])]
    assert client.get_model_config("minilm")["input"][0]["data_type"] == "TYPE_STRING"
    index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert set(index) == {"tiny", "minilm"} and index["tiny"]["state"] == "READY"
    for _ in range(3):
        client.infer("tiny", tiny_inputs())
    with pytest.raises(InferenceServerException):
        client.infer("tiny", tiny_inputs()[:1])  # 'mask' is missing: a failed inference
    [stats] = client.get_inference_statistics("tiny")["model_stats"]
    assert stats["inference_count"] == 6 and stats["execution_count"] == 3
    assert stats["inference_stats"]["success"]["count"] == 3 and stats["inference_stats"]["fail"]["count"] == 1
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} == {"tiny", "minilm"}


@pytest.mark.parametrize(("parameters", "named"), [
    ({"sequence_id": 3}, "sequence_id"),
    ({"priority": 1}, "priority"),
])
def test_request_parameters_npuctl_cannot_honour_are_a_400(client: triton.InferenceServerClient,
                                                           parameters: dict[str, int], named: str) -> None:
    with pytest.raises(InferenceServerException, match=named):
        client.infer("tiny", tiny_inputs(), parameters=parameters)


def test_a_binary_input_that_claims_more_bytes_than_sent_is_a_400(server_url: str) -> None:
    header = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"parameters":{"binary_data_size":32}},' \
             b'{"name":"mask","datatype":"INT64","shape":[2,4],"parameters":{"binary_data_size":64}}]}'
    answer = httpx.post(f"{server_url}/v2/models/tiny/infer", content=header + X.tobytes() + MASK.tobytes()[:10],
                        headers={"Inference-Header-Content-Length": str(len(header))})
    assert answer.status_code == 400 and "'mask'" in answer.json()["error"]
