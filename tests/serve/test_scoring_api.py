"""Rerankers and classifiers over HTTP: the tiny trained BERT cross-encoder and 3-label classifier, exported and
served on the CPU, against transformers' own outputs; the cohere client; TEI and infinity request shapes; bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cohere
import httpx
import numpy as np
import pytest

from npuctl.artifacts import BuildResult, Store, artifacts_of, build_deployment
from npuctl.cli.oneshot import build_and_load
from npuctl.schema.loader import LoadedDeployment
from npuctl.serve.models import ServedModel, load_served
from tests.conftest import TinyModels, task_manifest
from tests.serve.conftest import Serve
from tests.tiny_bert import QUERIES, SENTIMENT

QUERY = "how do I reset my password"
DOCUMENTS = [d for documents in QUERIES.values() for d in documents]


def _reference(folder: Path, first: list[str], second: list[str] | None = None) -> np.ndarray:
    """transformers' logits for texts (or text pairs), in fp32 on torch."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    batch = tokenizer(first, second, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.numpy().astype(np.float64)


@pytest.fixture(scope="module")
def built(tiny_models: TinyModels, task_store: Store, tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, tuple[LoadedDeployment, BuildResult]]:
    folder = tmp_path_factory.mktemp("scoring-manifests")
    result = {}
    for task in ("rerank", "classification"):
        loaded = task_manifest(folder, tiny_models[task], task, serve={"batchWindowMs": 20, "truncate": False})
        result[task] = (loaded, build_deployment(loaded, store=task_store))
    return result


def served(built: dict[str, tuple[LoadedDeployment, BuildResult]], task: str) -> ServedModel:
    loaded, result = built[task]
    return load_served(loaded.deployment, artifacts_of(result))


def test_rerank_scores_match_transformers(serve: Serve, built: dict, tiny_models: TinyModels) -> None:
    server = serve(served(built, "rerank"))
    documents = [*DOCUMENTS[:3], {"text": DOCUMENTS[3], "id": "doc-3"}]
    answer = httpx.post(f"{server.url}/v1/rerank", json={"model": "rerank", "query": QUERY, "documents": documents,
                                                         "top_n": 3, "return_documents": True}).json()
    want = 1 / (1 + np.exp(-_reference(tiny_models["rerank"], [QUERY] * 4, DOCUMENTS[:4])[:, 0]))
    order = list(np.argsort(-want))[:3]
    assert [r["index"] for r in answer["results"]] == order
    for result in answer["results"]:
        assert abs(result["relevance_score"] - want[result["index"]]) < 1e-4
    assert answer["results"][0]["index"] in (0, 1), "the trained cross-encoder puts a password document first"
    by_index = {r["index"]: r["document"] for r in answer["results"]}
    assert all(d == ({"text": DOCUMENTS[i]} if i < 3 else documents[3]) for i, d in by_index.items())
    assert answer["usage"]["total_tokens"] > 0 and answer["model"] == "rerank"


def test_cohere_client_reranks(serve: Serve, built: dict) -> None:
    server = serve(served(built, "rerank"))
    client = cohere.Client(base_url=server.url, api_key="unused", timeout=30)
    answer = client.rerank(model="rerank", query=QUERY, documents=DOCUMENTS, top_n=2, return_documents=True)
    assert [r.index for r in answer.results][0] in (0, 1)
    assert len(answer.results) == 2 and answer.results[0].relevance_score >= answer.results[1].relevance_score
    assert answer.results[0].document is not None and answer.results[0].document.text == DOCUMENTS[answer.results[0].index]
    with pytest.raises(cohere.errors.BadRequestError):
        client.rerank(model="rerank", query="", documents=DOCUMENTS)


def test_tei_and_infinity_shapes(serve: Serve, built: dict, tiny_models: TinyModels) -> None:
    server = serve(served(built, "rerank"))
    logits = _reference(tiny_models["rerank"], [QUERY] * 2, DOCUMENTS[:2])[:, 0]
    # TEI: `texts`, `return_text`, `raw_scores`; no model (the one reranker serves); a list in answer.
    tei = httpx.post(f"{server.url}/rerank", json={"query": QUERY, "texts": DOCUMENTS[:2], "raw_scores": True,
                                                   "return_text": True}).json()
    assert isinstance(tei, list) and {r["index"] for r in tei} == {0, 1}
    assert all(abs(r["score"] - logits[r["index"]]) < 1e-4 and r["text"] == DOCUMENTS[r["index"]] for r in tei)
    # infinity: plain documents, return_documents false by default.
    infinity = httpx.post(f"{server.url}/rerank", json={"model": "rerank", "query": QUERY, "documents": DOCUMENTS[:2],
                                                        "raw_scores": False}).json()
    assert all("document" not in r for r in infinity["results"]) and infinity["object"] == "rerank"


def test_rerank_pairs_are_batched(serve: Serve, built: dict) -> None:
    server = serve(served(built, "rerank"))

    async def many() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url) as client:
            answers = await asyncio.gather(*(client.post("/v1/rerank", json={"model": "rerank", "query": QUERY,
                                                                             "documents": DOCUMENTS[:3]})
                                             for _ in range(6)))
        return [a.status_code for a in answers]

    assert asyncio.run(many()) == [200] * 6
    metrics = httpx.get(f"{server.url}/metrics").text
    rows = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("npuctl_batch_size_sum")))
    batches = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("npuctl_batch_size_count")))
    assert rows == 18 and batches < 6, "six 3-document requests ran as fewer, larger batches of pairs"


def test_rerank_bad_input_gets_400_and_serving_goes_on(serve: Serve, built: dict) -> None:
    server = serve(served(built, "rerank"))
    url = f"{server.url}/v1/rerank"
    cases = [
        ({"model": "rerank", "query": QUERY, "documents": ["x"] * 1001}, "at most 1000"),
        ({"model": "rerank", "query": "  ", "documents": DOCUMENTS}, "'query' must be a non-empty string"),
        ({"model": "rerank", "query": QUERY, "documents": [" ".join(["password"] * 40)]}, "limit of 32 tokens"),
        ({"model": "rerank", "query": QUERY, "documents": DOCUMENTS, "max_chunks_per_doc": 2}, "unknown field"),
        ({"model": "rerank", "query": QUERY, "documents": DOCUMENTS, "top_n": 0}, "'top_n' must be a positive"),
        ({"model": "rerank", "query": QUERY, "documents": [{"title": "no text"}]}, "needs string fields 'text'"),
    ]
    for body, message in cases:
        answer = httpx.post(url, json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert message in answer.json()["error"]["message"]
    fine = httpx.post(url, json={"model": "rerank", "query": QUERY, "documents": DOCUMENTS})
    assert fine.status_code == 200 and len(fine.json()["results"]) == len(DOCUMENTS)


def test_classify_matches_transformers(serve: Serve, built: dict, tiny_models: TinyModels) -> None:
    server = serve(served(built, "classification"))
    texts = [SENTIMENT["negative"][0], SENTIMENT["neutral"][1], SENTIMENT["positive"][2]]
    answer = httpx.post(f"{server.url}/v1/classify", json={"model": "classification", "input": texts}).json()
    logits = _reference(tiny_models["classification"], texts)
    want = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = ["negative", "neutral", "positive"]
    for row, expected in zip(answer["data"], want, strict=True):
        assert [item["label"] for item in row] == [labels[i] for i in np.argsort(-expected)]
        assert all(abs(item["score"] - expected[labels.index(item["label"])]) < 1e-4 for item in row)
    assert answer["data"][1][0]["label"] == "neutral" and answer["object"] == "classify"
    raw = httpx.post(f"{server.url}/classify", json={"input": texts[0], "raw_scores": True}).json()
    assert abs(raw["data"][0][0]["score"] - logits[0].max()) < 1e-4
    meta = httpx.get(f"{server.url}/v2/models/classification").json()
    assert meta["task"] == "classification" and meta["labels"] == labels and meta["endpoints"][0] == "/v1/classify"


def test_classify_bad_input_and_a_model_without_labels(serve: Serve, built: dict, tiny_models: TinyModels,
                                                       task_store: Store, tmp_path: Path) -> None:
    unlabeled = build_and_load(task_manifest(tmp_path, tiny_models["no-labels"], "classification", "no-labels"),
                               store=task_store)
    assert not unlabeled.status.ready and "id2label is missing" in unlabeled.status.message
    server = serve(served(built, "classification"), served(built, "rerank"), unlabeled)
    url = f"{server.url}/v1/classify"
    cases = [
        ({"model": "classification", "input": []}, "'input' must be a string or a non-empty list"),
        ({"model": "classification", "input": [" ".join(["awful"] * 40)]}, "limit of 32 tokens"),
        ({"model": "classification", "input": ["x"] * 2049}, "at most 2048"),
    ]
    for body, message in cases:
        answer = httpx.post(url, json=body)
        assert answer.status_code == 400 and message in answer.json()["error"]["message"], answer.text
    wrong = httpx.post(url, json={"model": "rerank", "input": ["x"]})
    assert wrong.status_code == 404 and "not a classifier" in wrong.json()["error"]["message"]
    refused = httpx.post(url, json={"model": "no-labels", "input": ["fine"]})
    assert refused.status_code == 503 and "config.json: id2label is missing" in refused.json()["error"]["message"]
    assert httpx.post(url, json={"model": "classification", "input": ["fine"]}).status_code == 200


def test_cohere_client_v2_reranks(serve: Serve, built: dict, tiny_models: TinyModels) -> None:
    server = serve(served(built, "rerank"))
    client = cohere.ClientV2(base_url=server.url, api_key="unused", timeout=30)
    answer = client.rerank(model="rerank", query=QUERY, documents=DOCUMENTS, top_n=2)
    want = 1 / (1 + np.exp(-_reference(tiny_models["rerank"], [QUERY] * len(DOCUMENTS), DOCUMENTS)[:, 0]))
    assert [r.index for r in answer.results] == list(np.argsort(-want))[:2]
    assert all(abs(r.relevance_score - want[r.index]) < 1e-4 for r in answer.results)
    assert answer.meta is not None and answer.meta.api_version is not None and answer.meta.api_version.version == "2"
    limit = client.rerank(model="rerank", query=QUERY, documents=DOCUMENTS, max_tokens_per_doc=100000)
    assert len(limit.results) == len(DOCUMENTS)
    with pytest.raises(cohere.errors.BadRequestError) as refused:
        client.rerank(model="rerank", query=QUERY, documents=DOCUMENTS, max_tokens_per_doc=4)
    assert "max_tokens_per_doc" in str(refused.value.body)
    with pytest.raises(cohere.errors.BadRequestError):
        client.rerank(model="rerank", query=QUERY, documents=DOCUMENTS, priority=1)
