"""The OpenAPI 3.0 description of everything on the server's port: OpenAI /v1, Open Inference Protocol
/v2, /metrics and the agent's control API. Served at /openapi.json; a copy is kept in schema/openapi.json."""

from __future__ import annotations

from typing import Any

from npuctl import __version__


def openapi() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "npuctl", "version": __version__,
                 "description": "Models served by npuctl (OpenAI and Open Inference Protocol), and its agent's control API."},
        "paths": {**_openai(), **_tasks(), **_oip(), **_metrics(), **_control()},
        "components": {
            "securitySchemes": {"agentToken": {"type": "http", "scheme": "bearer",
                                               "description": "the token in the agent's state folder"}},
            "schemas": {
                "OpenAIError": _object({"error": _object(
                    {"message": {"type": "string"}, "type": {"type": "string"},
                     "param": {"type": "string", "nullable": True}, "code": {"type": "string", "nullable": True}},
                    required=["message", "type"])}, required=["error"]),
                "OIPError": _object({"error": {"type": "string"}}, required=["error"]),
                "ControlError": _object({"error": _object({"message": {"type": "string"}}, required=["message"])},
                                        required=["error"]),
                "Tensor": _object({"name": {"type": "string"}, "datatype": {"type": "string"},
                                   "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                                   "data": {"type": "array", "items": {}}},
                                  required=["name", "datatype", "shape", "data"]),
            },
        },
    }


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(kind: str, *codes: int) -> dict[str, Any]:
    words = {400: "the request is malformed", 401: "the token is missing or wrong", 404: "no such model, deployment or route (the control API is only on an agent)",
             409: "conflicts with another manifest", 413: "the body is over the size limit",
             422: "the manifest is invalid", 429: "the model's queue is full (Retry-After)",
             503: "the model is not ready", 504: "no answer within the model's timeout"}
    return {str(code): _json({"$ref": f"#/components/schemas/{kind}"}, words[code]) for code in codes}


_ANY_OBJECT = {"type": "object"}


def _openai() -> dict[str, Any]:
    token_ids = {"type": "array", "items": {"type": "integer"}, "minItems": 1}
    body = _object({
        "model": {"type": "string"},
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1},
                            token_ids, {"type": "array", "items": token_ids, "minItems": 1}]},
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer"},
        "user": {"type": "string"},
    }, required=["model", "input"])
    model_card = _object({"id": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"},
                          "owned_by": {"type": "string"}}, required=["id", "object"])
    message = _object({"role": {"type": "string"}, "content": {"type": "string"}}, required=["role", "content"])
    generation = {"max_tokens": {"type": "integer"}, "temperature": {"type": "number"}, "top_p": {"type": "number"},
                  "top_k": {"type": "integer"}, "seed": {"type": "integer"}, "stream": {"type": "boolean"},
                  "ignore_eos": {"type": "boolean"},
                  "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}}
    completion = _json(_object({"id": {"type": "string"}, "object": {"type": "string"},
                                "choices": {"type": "array"}}), "the completion (or an SSE stream)")
    return {
        "/v1/chat/completions": {"post": {
            "summary": "OpenAI chat completions", "requestBody": {"required": True, "content": {"application/json": {
                "schema": _object({"model": {"type": "string"}, "messages": {"type": "array", "items": message},
                                   **generation}, required=["model", "messages"])}}},
            "responses": {"200": completion, **_errors("OpenAIError", 400, 404, 413, 429, 503, 504)}}},
        "/v1/completions": {"post": {
            "summary": "OpenAI text completions", "requestBody": {"required": True, "content": {"application/json": {
                "schema": _object({"model": {"type": "string"}, "prompt": {"type": "string"}, **generation},
                                  required=["model", "prompt"])}}},
            "responses": {"200": completion, **_errors("OpenAIError", 400, 404, 413, 429, 503, 504)}}},
        "/v1/embeddings": {"post": {
            "summary": "OpenAI embeddings", "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"200": _json(_object({"object": {"type": "string"}, "data": {"type": "array"},
                                                "model": {"type": "string"}, "usage": _ANY_OBJECT}), "embeddings"),
                          **_errors("OpenAIError", 400, 404, 413, 429, 503, 504)}}},
        "/v1/models": {"get": {"summary": "models that serve now", "responses": {
            "200": _json(_object({"object": {"type": "string"}, "data": {"type": "array", "items": model_card}}), "models")}}},
        "/v1/models/{model}": {"get": {
            "summary": "one model", "parameters": [_path("model")],
            "responses": {"200": _json(model_card, "the model"), **_errors("OpenAIError", 404)}}},
    }


def _oip() -> dict[str, Any]:
    infer = _object({"id": {"type": "string"},
                     "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
                     "outputs": {"type": "array", "items": _object({"name": {"type": "string"}}, required=["name"])}},
                    required=["inputs"])
    answer = _object({"model_name": {"type": "string"}, "model_version": {"type": "string"},
                      "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}}},
                     required=["model_name", "outputs"])
    ready = _json(_ANY_OBJECT, "readiness")
    return {
        "/v2": {"get": {"summary": "server metadata", "responses": {"200": _json(_ANY_OBJECT, "name and version")}}},
        "/v2/health/live": {"get": {"summary": "liveness", "responses": {"200": _json(_ANY_OBJECT, "live")}}},
        "/v2/health/ready": {"get": {"summary": "readiness of every model", "responses": {"200": ready, "503": ready}}},
        "/v2/models/{name}": {"get": {"summary": "signature and status", "parameters": [_path("name")],
                                      "responses": {"200": _json(_ANY_OBJECT, "metadata"), **_errors("OIPError", 404)}}},
        "/v2/models/{name}/ready": {"get": {"summary": "readiness", "parameters": [_path("name")],
                                            "responses": {"200": ready, "503": ready, **_errors("OIPError", 404)}}},
        "/v2/models/{name}/infer": {"post": {
            "summary": "inference on JSON tensors", "parameters": [_path("name")],
            "requestBody": {"required": True, "content": {"application/json": {"schema": infer}}},
            "responses": {"200": _json(answer, "output tensors"), **_errors("OIPError", 400, 404, 413, 429, 503, 504)}}},
    }


def _metrics() -> dict[str, Any]:
    return {"/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
        "200": {"description": "text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}}


def _control() -> dict[str, Any]:
    token: list[dict[str, list[str]]] = [{"agentToken": []}]
    listing = _json(_object({"items": {"type": "array", "items": _ANY_OBJECT}}, required=["items"]), "items")
    return {
        "/agent/v1/deployments": {"get": {"summary": "deployments with status", "responses": {
            "200": listing, **_errors("ControlError", 401, 404)}}},
        "/agent/v1/deployments/{name}": {
            "get": {"summary": "one deployment", "parameters": [_path("name")],
                    "responses": {"200": _json(_ANY_OBJECT, "the deployment"), **_errors("ControlError", 401, 404)}},
            "delete": {"summary": "remove its manifest file", "parameters": [_path("name")], "security": token,
                       "responses": {"200": _json(_ANY_OBJECT, "deleted"), **_errors("ControlError", 401, 404, 409)}},
        },
        "/agent/v1/manifests/{file}": {"put": {
            "summary": "write a manifest file into the watched folder", "security": token,
            "parameters": [_path("file"), {"name": "dryRun", "in": "query", "schema": {"type": "boolean"}}],
            "requestBody": {"required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}},
            "responses": {"200": _json(_ANY_OBJECT, "planned changes"),
                          **_errors("ControlError", 400, 401, 404, 409, 413, 422)}}},
        "/agent/v1/events": {"get": {
            "summary": "recent events", "parameters": [{"name": "name", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": listing, **_errors("ControlError", 401, 404)}}},
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _tasks() -> dict[str, Any]:
    """Rerank (Cohere's shape; Jina's, infinity's and TEI's requests too) and classify (infinity's shape)."""
    document = {"oneOf": [{"type": "string"}, _object({"text": {"type": "string"}})]}
    rerank = _object({
        "model": {"type": "string", "description": "optional when one reranker serves (TEI's clients send none)"},
        "query": {"type": "string"},
        "documents": {"type": "array", "items": document, "description": "Cohere, Jina, infinity (at most 1000)"},
        "texts": {"type": "array", "items": {"type": "string"}, "description": "TEI: answered as TEI's list"},
        "top_n": {"type": "integer", "minimum": 1}, "return_documents": {"type": "boolean"},
        "return_text": {"type": "boolean"}, "raw_scores": {"type": "boolean", "description": "logits, not 0..1"},
        "rank_fields": {"type": "array", "items": {"type": "string"}}, "truncate": {"type": "boolean"},
        "truncation_direction": {"type": "string", "enum": ["right", "Right"]},
    }, required=["query"])
    result = _object({"index": {"type": "integer"}, "relevance_score": {"type": "number"}, "document": _ANY_OBJECT},
                     required=["index", "relevance_score"])
    cohere = _object({"id": {"type": "string"}, "results": {"type": "array", "items": result},
                      "model": {"type": "string"}, "usage": _ANY_OBJECT, "meta": _ANY_OBJECT}, required=["results"])
    tei = {"type": "array", "items": _object({"index": {"type": "integer"}, "score": {"type": "number"},
                                              "text": {"type": "string"}}, required=["index", "score"])}
    rerank_op = {"post": {
        "summary": "rerank documents for a query with a cross-encoder (task: rerank)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": rerank}}},
        "responses": {"200": _json({"oneOf": [cohere, tei]}, "documents by relevance, most relevant first"),
                      **_errors("OpenAIError", 400, 404, 413, 429, 503, 504)}}}
    label = _object({"label": {"type": "string"}, "score": {"type": "number"}}, required=["label", "score"])
    classify = _object({"model": {"type": "string"},
                        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                        "raw_scores": {"type": "boolean"}, "truncate": {"type": "boolean"}, "user": {"type": "string"}},
                       required=["input"])
    classify_op = {"post": {
        "summary": "classify texts with a sequence classifier (task: classification)",
        "requestBody": {"required": True, "content": {"application/json": {"schema": classify}}},
        "responses": {"200": _json(_object({"object": {"type": "string"}, "model": {"type": "string"},
                                            "data": {"type": "array", "items": {"type": "array", "items": label}},
                                            "usage": _ANY_OBJECT}, required=["data"]),
                                   "every label with its score, per input, most likely first"),
                      **_errors("OpenAIError", 400, 404, 413, 429, 503, 504)}}}
    return {"/v1/rerank": rerank_op, "/rerank": rerank_op, "/v1/classify": classify_op, "/classify": classify_op}
