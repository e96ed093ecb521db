"""The OpenAPI description of the rerank (Cohere's shape; Jina's, infinity's and TEI's requests too) and classify
(infinity's shape) routes."""

from __future__ import annotations

from typing import Any

from npuctl.serve.openapi.components import ref
from npuctl.serve.openapi.parts import ANY_OBJECT, errors, json_body, obj, request
from npuctl.serve.scoring.requests import ClassifyRequest, RerankRequest, RerankV2Request

_ERRORS = (400, 404, 408, 413, 415, 429, 503, 504)


def task_paths() -> dict[str, Any]:
    result = obj({"index": {"type": "integer"}, "relevance_score": {"type": "number"}, "document": ANY_OBJECT},
                 required=["index", "relevance_score"])
    cohere = obj({"id": {"type": "string"}, "results": {"type": "array", "items": result}, "model": {"type": "string"},
                  "usage": ANY_OBJECT, "meta": ANY_OBJECT}, required=["results"])
    tei = {"type": "array", "items": obj({"index": {"type": "integer"}, "score": {"type": "number"},
                                          "text": {"type": "string"}}, required=["index", "score"])}
    rerank_op = {"post": {
        "summary": "rerank documents for a query with a cross-encoder (task: rerank)",
        "requestBody": request(ref(RerankRequest)),
        "responses": {"200": json_body({"oneOf": [cohere, tei]}, "documents by relevance, most relevant first"),
                      **errors("OpenAIError", *_ERRORS)}}}
    v2_op = {"post": {
        "summary": "Cohere v2 rerank (task: rerank)", "requestBody": request(ref(RerankV2Request)),
        # Under /v2, errors come in the Open Inference Protocol's shape ({"error": "..."}).
        "responses": {"200": json_body(cohere, "documents by relevance, most relevant first"),
                      **errors("PlainError", *_ERRORS)}}}
    label = obj({"label": {"type": "string"}, "score": {"type": "number"}}, required=["label", "score"])
    answer = obj({"object": {"type": "string"}, "model": {"type": "string"}, "usage": ANY_OBJECT,
                  "data": {"type": "array", "items": {"type": "array", "items": label}}}, required=["data"])
    classify_op = {"post": {
        "summary": "classify texts with a sequence classifier (task: classification)",
        "requestBody": request(ref(ClassifyRequest)),
        "responses": {"200": json_body(answer, "every label with its score, per input, most likely first"),
                      **errors("OpenAIError", *_ERRORS)}}}
    return {"/v1/rerank": rerank_op, "/rerank": rerank_op, "/v2/rerank": v2_op, "/v1/classify": classify_op, "/classify": classify_op}
