"""The OpenAPI description of the rerank (Cohere's shape; Jina's, infinity's and TEI's requests too) and classify
(infinity's shape) routes."""

from __future__ import annotations

from typing import Any

from npuctl.serve.openapi_parts import ANY_OBJECT, errors, json_body, obj, request

_ERRORS = (400, 404, 413, 429, 503, 504)


def task_paths() -> dict[str, Any]:
    document = {"oneOf": [{"type": "string"}, obj({"text": {"type": "string"}})]}
    rerank = obj({
        "model": {"type": "string", "description": "optional when one reranker serves (TEI's clients send none)"},
        "query": {"type": "string"},
        "documents": {"type": "array", "items": document, "description": "Cohere, Jina, infinity (at most 1000)"},
        "texts": {"type": "array", "items": {"type": "string"}, "description": "TEI: answered as TEI's list"},
        "top_n": {"type": "integer", "minimum": 1}, "return_documents": {"type": "boolean"},
        "return_text": {"type": "boolean"}, "raw_scores": {"type": "boolean", "description": "logits, not 0..1"},
        "rank_fields": {"type": "array", "items": {"type": "string"}}, "truncate": {"type": "boolean"},
        "truncation_direction": {"type": "string", "enum": ["right", "Right"]},
    }, required=["query"])
    result = obj({"index": {"type": "integer"}, "relevance_score": {"type": "number"}, "document": ANY_OBJECT},
                 required=["index", "relevance_score"])
    cohere = obj({"id": {"type": "string"}, "results": {"type": "array", "items": result}, "model": {"type": "string"},
                  "usage": ANY_OBJECT, "meta": ANY_OBJECT}, required=["results"])
    tei = {"type": "array", "items": obj({"index": {"type": "integer"}, "score": {"type": "number"},
                                          "text": {"type": "string"}}, required=["index", "score"])}
    rerank_op = {"post": {
        "summary": "rerank documents for a query with a cross-encoder (task: rerank)", "requestBody": request(rerank),
        "responses": {"200": json_body({"oneOf": [cohere, tei]}, "documents by relevance, most relevant first"),
                      **errors("OpenAIError", *_ERRORS)}}}
    label = obj({"label": {"type": "string"}, "score": {"type": "number"}}, required=["label", "score"])
    classify = obj({"model": {"type": "string"},
                    "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                    "raw_scores": {"type": "boolean"}, "truncate": {"type": "boolean"}, "user": {"type": "string"}},
                   required=["input"])
    answer = obj({"object": {"type": "string"}, "model": {"type": "string"}, "usage": ANY_OBJECT,
                  "data": {"type": "array", "items": {"type": "array", "items": label}}}, required=["data"])
    classify_op = {"post": {
        "summary": "classify texts with a sequence classifier (task: classification)", "requestBody": request(classify),
        "responses": {"200": json_body(answer, "every label with its score, per input, most likely first"),
                      **errors("OpenAIError", *_ERRORS)}}}
    return {"/v1/rerank": rerank_op, "/rerank": rerank_op, "/v1/classify": classify_op, "/classify": classify_op}
