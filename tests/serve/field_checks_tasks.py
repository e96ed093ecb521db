"""The request-field audit's checks for the rerank (Cohere v1 and v2, TEI), classify, TEI (/embed, /predict), TGI
(/generate) and Open Inference Protocol (infer) bodies: each sends one field and asserts what a user of it would
see, or the 400 naming it. One server holds one model of each kind (TEI's and TGI's routes take the one there)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.serve.field_audit import Post, refused
from tests.serve.test_oip import tensors
from tests.tiny_bert import QUERIES

RERANK, RERANK_V2, CLASSIFY = "/v1/rerank", "/v2/rerank", "/v1/classify"
EMBED, PREDICT, GENERATE, INFER = "/embed", "/predict", "/generate", "/v2/models/tiny/infer"
DOCUMENTS = [d for documents in QUERIES.values() for d in documents][:4]
QUERY = "how do I reset my password"
LONG = " ".join(["password"] * 40)
"""Longer than the tiny BERT's 32 tokens."""
Check = Callable[[Post, str], None]


def base(path: str) -> dict[str, Any]:
    return {
        RERANK: {"model": "rerank", "query": QUERY, "documents": DOCUMENTS},
        RERANK_V2: {"model": "rerank", "query": QUERY, "documents": DOCUMENTS},
        CLASSIFY: {"model": "classification", "input": "a fine sentence"},
        EMBED: {"inputs": "a sentence"},
        PREDICT: {"inputs": "a fine sentence"},
        GENERATE: {"inputs": "The quick brown", "parameters": {"max_new_tokens": 12}},
        INFER: tensors(),
    }[path]


def ok(answer: httpx.Response) -> Any:
    assert answer.status_code == 200, answer.text
    return answer.json()


def scores(path: str, answer: httpx.Response) -> list[float]:
    body = ok(answer)
    if path in (RERANK, RERANK_V2):
        rows = body if isinstance(body, list) else body["results"]
        return [r.get("relevance_score", r.get("score")) for r in sorted(rows, key=lambda r: r["index"])]
    rows = body["data"][0] if path == CLASSIFY else body[0]
    return [entry["score"] for entry in sorted(rows, key=lambda entry: entry["label"])]


def with_parameters(path: str, **parameters: Any) -> dict[str, Any]:
    request = base(path)
    return request | {"parameters": (request.get("parameters") or {}) | parameters}


def generated(post: Post, **parameters: Any) -> str:
    return str(ok(post(GENERATE, with_parameters(GENERATE, **parameters)))[0]["generated_text"])


# Shared by several bodies.

def check_model(post: Post, path: str) -> None:
    answer = post(path, base(path) | {"model": "no-such-model"})
    assert answer.status_code == 404 and "no-such-model" in answer.text


def changes(field: str, value: Any) -> Check:
    def check(post: Post, path: str) -> None:
        assert ok(post(path, base(path) | {field: value})) != ok(post(path, base(path)))
    return check


def check_top_n(post: Post, path: str) -> None:
    answer = ok(post(path, base(path) | {"top_n": 2}))
    assert len(answer["results"]) == 2
    refused(post, path, base(path) | {"top_n": 0}, "top_n")


def check_raw_scores(post: Post, path: str) -> None:
    raw = scores(path, post(path, base(path) | {"raw_scores": True}))
    assert raw != scores(path, post(path, base(path))) and not all(0 <= s <= 1 for s in raw)


def check_truncate(field: str) -> Check:
    def check(post: Post, path: str) -> None:
        long = base(path) | ({field: [LONG]} if field != "query" else {"query": LONG})
        refused(post, path, long | {"truncate": False}, "32 tokens")
        ok(post(path, long | {"truncate": True}))
    return check


def check_direction(post: Post, path: str) -> None:
    ok(post(path, base(path) | {"truncation_direction": "right"}))
    refused(post, path, base(path) | {"truncation_direction": "left"}, "truncation_direction")


def refuses(field: str, value: Any) -> Check:
    def check(post: Post, path: str) -> None:
        refused(post, path, base(path) | {field: value}, field)
    return check


# Rerank.

def check_texts(post: Post, path: str) -> None:
    answer = ok(post(path, {"query": QUERY, "texts": DOCUMENTS}))
    assert isinstance(answer, list) and sorted(r["index"] for r in answer) == [0, 1, 2, 3]
    assert [r["score"] for r in answer] == [r["relevance_score"] for r in ok(post(path, base(path)))["results"]]


def check_return_documents(post: Post, path: str) -> None:
    shown = ok(post(path, base(path) | {"return_documents": True}))["results"]
    assert all(r["document"] == {"text": DOCUMENTS[r["index"]]} for r in shown)
    assert all("document" not in r for r in ok(post(path, base(path)))["results"])


def check_return_text(post: Post, path: str) -> None:
    shown = ok(post(path, {"query": QUERY, "texts": DOCUMENTS, "return_text": True}))
    assert all(r["text"] == DOCUMENTS[r["index"]] for r in shown)
    refused(post, path, base(path) | {"return_text": True}, "return_text")


def check_rank_fields(post: Post, path: str) -> None:
    objects = [{"title": "unrelated words", "body": d} for d in DOCUMENTS]
    by_body = scores(path, post(path, base(path) | {"documents": objects, "rank_fields": ["body"]}))
    assert by_body == scores(path, post(path, base(path)))
    refused(post, path, base(path) | {"documents": objects}, "'text'")


def check_max_tokens_per_doc(post: Post, path: str) -> None:
    ok(post(path, base(path) | {"documents": [LONG], "max_tokens_per_doc": 100_000}))  # cut at the model's limit
    refused(post, path, base(path) | {"max_tokens_per_doc": 4}, "max_tokens_per_doc")


# Classify and TEI's /predict.

def check_user(post: Post, path: str) -> None:
    assert scores(path, post(path, base(path) | {"user": "someone"})) == scores(path, post(path, base(path)))
    refused(post, path, base(path) | {"user": 3}, "user")


def check_predict_parameters(post: Post, path: str) -> None:
    assert len(ok(post(path, with_parameters(path, top_k=1)))[0]) == 1
    raw = scores(path, post(path, with_parameters(path, function_to_apply="none")))
    assert raw == scores(path, post(path, base(path) | {"raw_scores": True}))
    refused(post, path, with_parameters(path, function_to_apply="sigmoid"), "function_to_apply")
    refused(post, path, with_parameters(path, top_k=0), "top_k")


# TEI's /embed.

def check_normalize(post: Post, path: str) -> None:
    ok(post(path, base(path) | {"normalize": True}))
    refused(post, path, base(path) | {"normalize": False}, "normalize")


def check_dimensions(post: Post, path: str) -> None:
    assert len(ok(post(path, base(path) | {"dimensions": 384}))[0]) == 384
    refused(post, path, base(path) | {"dimensions": 8}, "384-dimensional")


def check_encoding_format(post: Post, path: str) -> None:
    assert ok(post(path, base(path) | {"encoding_format": "float"})) == ok(post(path, base(path)))
    refused(post, path, base(path) | {"encoding_format": "base64"}, "encoding_format")


def check_embed_truncate(post: Post, path: str) -> None:
    long = base(path) | {"inputs": "word " * 600}
    refused(post, path, long | {"truncate": False}, "limit")
    ok(post(path, long | {"truncate": True}))


# TGI's /generate.

def check_stream(post: Post, path: str) -> None:
    ok(post(path, base(path) | {"stream": False}))
    refused(post, path, base(path) | {"stream": True}, "stream")


def check_max_new_tokens(post: Post, path: str) -> None:
    assert ok(post(path, with_parameters(path, max_new_tokens=3, details=True)))["details"]["generated_tokens"] == 3


def sampled(**parameters: Any) -> Check:
    """A sampling parameter: the answers differ from the greedy one (which TGI gives unless asked to sample)."""
    def check(post: Post, path: str) -> None:
        greedy = generated(post)
        assert any(generated(post, seed=seed, **parameters) != greedy for seed in range(3))
    return check


def narrowing(**parameters: Any) -> Check:
    """top_p/top_k so narrow that sampling hot can only take the most likely token: the greedy answer."""
    def check(post: Post, path: str) -> None:
        assert generated(post, temperature=2, seed=5, **parameters) == generated(post)
    return check


def check_typical_p(post: Post, path: str) -> None:
    """Asking for typical sampling samples (as TGI does); 0 would keep no token."""
    sampled(typical_p=0.9)(post, path)
    refused(post, path, with_parameters(path, typical_p=0), "typical_p")


def check_seed(post: Post, path: str) -> None:
    first = generated(post, do_sample=True, seed=11)
    assert generated(post, do_sample=True, seed=11) == first
    assert any(generated(post, do_sample=True, seed=s) != first for s in (12, 13, 14))


def check_details(post: Post, path: str) -> None:
    answer = ok(post(path, with_parameters(path, details=True)))
    assert answer["details"]["finish_reason"] == "length" and isinstance(ok(post(path, base(path))), list)


def check_return_full_text(post: Post, path: str) -> None:
    assert generated(post, return_full_text=True) == base(path)["inputs"] + generated(post)


def penalised(name: str, value: float) -> Check:
    def check(post: Post, path: str) -> None:
        assert generated(post, max_new_tokens=40, **{name: value}) != generated(post, max_new_tokens=40)
        refused(post, path, with_parameters(path, **{name: 50}), name)
    return check


def check_stop(post: Post, path: str) -> None:
    whole = generated(post)
    stop = whole[len(whole) // 2:][:3]
    assert generated(post, stop=[stop]) == whole[:whole.index(stop)]


def refused_parameter(name: str, value: Any) -> Check:
    def check(post: Post, path: str) -> None:
        ok(post(path, with_parameters(path, **{name: None})))
        refused(post, path, with_parameters(path, **{name: value}), f"parameters.{name}")
    return check


# The Open Inference Protocol's infer.

def check_id(post: Post, path: str) -> None:
    assert ok(post(path, base(path) | {"id": "mine"}))["id"] == "mine"


def check_inputs(post: Post, path: str) -> None:
    other = base(path)["inputs"]
    other = [other[0] | {"data": [[4.0, 3.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0]]}, other[1]]
    assert ok(post(path, base(path) | {"inputs": other}))["outputs"] != ok(post(path, base(path)))["outputs"]


def check_outputs(post: Post, path: str) -> None:
    [y] = ok(post(path, base(path) | {"outputs": [{"name": "y"}]}))["outputs"]
    assert y["name"] == "y" and "data" in y
    binary = post(path, base(path) | {"outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
    assert binary.status_code == 200 and b'"binary_data_size"' in binary.content
    refused(post, path, base(path) | {"outputs": [{"name": "q"}]}, "'q'")


def check_binary_data_output(post: Post, path: str) -> None:
    answer = post(path, base(path) | {"parameters": {"binary_data_output": True}})
    assert answer.status_code == 200 and b'"binary_data_size"' in answer.content
    refused(post, path, base(path) | {"parameters": {"binary_data_output": 3}}, "binary_data_output")


def check_timeout(post: Post, path: str) -> None:
    """Triton's timeout (microseconds) shortens the model's: 1 µs cannot be met, an hour is the model's own."""
    ok(post(path, base(path) | {"parameters": {"timeout": 3_600_000_000}}))
    assert post(path, base(path) | {"parameters": {"timeout": 1}}).status_code == 504
    refused(post, path, base(path) | {"parameters": {"timeout": 0}}, "timeout")
