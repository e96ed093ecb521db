"""The OpenAPI description of the rerank (Cohere's shape; Jina's, infinity's and TEI's requests too) and classify
(infinity's shape) routes."""

from __future__ import annotations

from typing import Any

from npuctl.serve.openapi.parts import ANY_OBJECT, NAME, errors, json_body, obj, request

_ERRORS = (400, 404, 408, 413, 415, 429, 503, 504)


def task_paths() -> dict[str, Any]:
    text = {"type": "string", "pattern": "\\S"}
    document = {"oneOf": [text, {**obj({"text": text}, required=["text"]), "additionalProperties": True}]}
    rerank = {**obj({
        "model": {**NAME, "description": "optional when one reranker serves (TEI's clients send none)"},
        "query": text,
        "documents": {"type": "array", "items": document, "minItems": 1, "maxItems": 1000,
                      "description": "Cohere, Jina, infinity"},
        "texts": {"type": "array", "items": text, "minItems": 1, "maxItems": 1000,
                  "description": "TEI: answered as TEI's list"},
        "top_n": {"type": "integer", "minimum": 1},
        "return_documents": {"type": "boolean", "description": "with documents"},
        "return_text": {"type": "boolean", "description": "with texts"},
        "raw_scores": {"type": "boolean", "description": "logits, not 0..1"},
        "rank_fields": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                        "description": "with documents"},
        "truncate": {"type": "boolean"}, "truncation_direction": {"type": "string", "enum": ["right", "Right"]},
    }, required=["query"]), "additionalProperties": False, "oneOf": [
        {"required": ["documents"], "not": {"anyOf": [{"required": ["texts"]}, {"required": ["return_text"]}]}},
        {"required": ["texts"], "not": {"anyOf": [{"required": ["documents"]}, {"required": ["return_documents"]},
                                                  {"required": ["rank_fields"]}]}}]}
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
    v2 = {**obj({
        "model": {**NAME, "description": "optional when one reranker serves"}, "query": text,
        "documents": {"type": "array", "items": text, "minItems": 1, "maxItems": 1000},
        "top_n": {"type": "integer", "minimum": 1, "nullable": True},
        "max_tokens_per_doc": {"type": "integer", "nullable": True,
                               "description": "at least the model's input limit (documents are cut there)"},
    }, required=["query", "documents"]), "additionalProperties": False}
    v2_op = {"post": {
        "summary": "Cohere v2 rerank (task: rerank)", "requestBody": request(v2),
        # Under /v2, errors come in the Open Inference Protocol's shape ({"error": "..."}).
        "responses": {"200": json_body(cohere, "documents by relevance, most relevant first"),
                      **errors("PlainError", *_ERRORS)}}}
    label = obj({"label": {"type": "string"}, "score": {"type": "number"}}, required=["label", "score"])
    classify = {**obj({"model": NAME,
                       "input": {"oneOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": 2048}]},
                       "raw_scores": {"type": "boolean"}, "truncate": {"type": "boolean"}, "user": {"type": "string"}},
                      required=["input"]), "additionalProperties": False}
    answer = obj({"object": {"type": "string"}, "model": {"type": "string"}, "usage": ANY_OBJECT,
                  "data": {"type": "array", "items": {"type": "array", "items": label}}}, required=["data"])
    classify_op = {"post": {
        "summary": "classify texts with a sequence classifier (task: classification)", "requestBody": request(classify),
        "responses": {"200": json_body(answer, "every label with its score, per input, most likely first"),
                      **errors("OpenAIError", *_ERRORS)}}}
    return {"/v1/rerank": rerank_op, "/rerank": rerank_op, "/v2/rerank": v2_op, "/v1/classify": classify_op, "/classify": classify_op}
