"""The OpenAPI paths besides OpenAI's: the Open Inference Protocol with Triton's extensions, Ollama's API,
/metrics, and the agent's control API."""

from __future__ import annotations

from typing import Any

from npuctl.serve.oip.requests import IndexRequest, InferRequest, Tensor
from npuctl.serve.ollama.bodies import (
    EmbedRequest,
    OllamaChatRequest,
    OllamaGenerateRequest,
    PromptEmbeddingRequest,
    ShowRequest,
)
from npuctl.serve.openapi.components import ref
from npuctl.serve.openapi.parts import ANY_OBJECT, errors, json_body, obj, path_param, request

MANIFEST_FILE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.ya?ml$"
"""The agent's manifest file names (npuctl.agent.files.SAFE_FILE; the serve layer does not import the agent's)."""


def oip_paths() -> dict[str, Any]:
    tensor = ref(Tensor)  # an answer's tensors have the request's form
    infer = ref(InferRequest)
    answer = json_body(obj({"model_name": {"type": "string"}, "model_version": {"type": "string"},
                            "outputs": {"type": "array", "items": tensor}}, required=["model_name", "outputs"]),
                       "output tensors (binary ones after the JSON, application/octet-stream)",
                       "application/octet-stream")
    ready = json_body(ANY_OBJECT, "readiness")
    by_model: dict[str, Any] = {
        "": {"get": {"summary": "signature and status", "responses": {"200": json_body(ANY_OBJECT, "metadata"),
                                                                      **errors("PlainError", 404)}}},
        "/ready": {"get": {"summary": "readiness", "responses": {"200": ready, "503": ready,
                                                                 **errors("PlainError", 404)}}},
        "/config": {"get": {"summary": "model configuration (Triton's fields)",
                            "responses": {"200": json_body(ANY_OBJECT, "configuration"),
                                          **errors("PlainError", 404)}}},
        "/stats": {"get": {"summary": "inference statistics", "responses": {
            "200": json_body(ANY_OBJECT, "statistics"), **errors("PlainError", 404)}}},
        "/infer": {"post": {
            "summary": "inference on JSON tensors, or binary ones (Triton's binary tensor data extension: this JSON, "
                       "then the tensors' bytes, its length in Inference-Header-Content-Length)",
            "requestBody": request(infer),
            "responses": {"200": answer, **errors("PlainError", 400, 404, 408, 413, 415, 429, 503, 504)}}},
    }
    paths: dict[str, Any] = {
        "/v2": {"get": {"summary": "server metadata and extensions",
                        "responses": {"200": json_body(ANY_OBJECT, "name, version, extensions")}}},
        "/v2/health/live": {"get": {"summary": "liveness", "responses": {"200": json_body(ANY_OBJECT, "live")}}},
        "/v2/health/ready": {"get": {"summary": "readiness of every model", "responses": {"200": ready, "503": ready}}},
        "/v2/repository/index": {"post": {
            "summary": "every model over /v2 and its state",
            "requestBody": request(ref(IndexRequest)) | {"required": False},
            "responses": {"200": json_body({"type": "array", "items": ANY_OBJECT}, "models"),
                          **errors("PlainError", 400)}}},
        "/v2/models/stats": {"get": {"summary": "inference statistics of every model",
                                     "responses": {"200": json_body(ANY_OBJECT, "statistics")}}},
    }
    for tail, operations in by_model.items():
        for prefix, parameters in (("/v2/models/{name}", [path_param("name")]),
                                   ("/v2/models/{name}/versions/{version}", [path_param("name"),
                                                                             path_param("version")])):
            paths[prefix + tail] = {method: op | {"parameters": parameters} for method, op in operations.items()}
    return paths


def ollama_paths() -> dict[str, Any]:
    chat, generate = ref(OllamaChatRequest), ref(OllamaGenerateRequest)
    failures = errors("PlainError", 400, 404, 408, 413, 415, 429, 503, 504)
    answer = json_body(ANY_OBJECT, "the answer (or an NDJSON stream)", "application/x-ndjson")

    def post(summary: str, body: dict[str, Any], ok: dict[str, Any]) -> dict[str, Any]:
        return {"post": {"summary": summary, "requestBody": request(body), "responses": {"200": ok, **failures}}}

    listing = json_body(obj({"models": {"type": "array", "items": ANY_OBJECT}}, required=["models"]), "models")
    return {
        "/": {"get": {"summary": "'Ollama is running', for clients looking for a server",
                      "responses": {"200": {"description": "text", "content": {
                          "text/plain": {"schema": {"type": "string"}}}}}}},
        "/api/version": {"get": {"summary": "Ollama API version", "responses": {
            "200": json_body(obj({"version": {"type": "string"}}, required=["version"]), "version")}}},
        "/api/tags": {"get": {"summary": "models", "responses": {"200": listing}}},
        "/api/ps": {"get": {"summary": "loaded models (all that serve)", "responses": {"200": listing}}},
        "/api/show": post("one model's details", ref(ShowRequest), json_body(ANY_OBJECT, "details")),
        "/api/chat": post("Ollama chat", chat, answer),
        "/api/generate": post("Ollama generate", generate, answer),
        "/api/embed": post("Ollama embeddings", ref(EmbedRequest), json_body(ANY_OBJECT, "embeddings")),
        "/api/embeddings": post("Ollama embeddings (older endpoint)", ref(PromptEmbeddingRequest),
                                json_body(ANY_OBJECT, "embedding")),
    }


def metrics_paths() -> dict[str, Any]:
    return {"/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
        "200": {"description": "text exposition format, or OpenMetrics when Accept asks for it", "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/openmetrics-text": {"schema": {"type": "string"}}}}}}}}


def control_paths() -> dict[str, Any]:
    token: list[dict[str, list[str]]] = [{"agentToken": []}]
    listing = json_body(obj({"items": {"type": "array", "items": ANY_OBJECT}}, required=["items"]), "items")
    return {
        "/agent/v1/deployments": {"get": {"summary": "deployments with status", "responses": {
            "200": listing, **errors("ControlError", 401)}}},
        "/agent/v1/deployments/{name}": {
            "get": {"summary": "one deployment", "parameters": [path_param("name")],
                    "responses": {"200": json_body(ANY_OBJECT, "the deployment"), **errors("ControlError", 401, 404)}},
            "delete": {"summary": "remove its manifest file", "parameters": [path_param("name")], "security": token,
                       "responses": {"200": json_body(ANY_OBJECT, "deleted"),
                                     **errors("ControlError", 401, 404, 409)}},
        },
        "/agent/v1/manifests/{file}": {"put": {
            "summary": "write a manifest file into the watched folder", "security": token,
            "parameters": [path_param("file") | {"schema": {"type": "string", "pattern": MANIFEST_FILE}},
                           {"name": "dryRun", "in": "query", "schema": {"type": "boolean"}}],
            # An empty body is an empty manifest file: no deployments.
            "requestBody": {"required": False, "content": {"application/yaml": {"schema": {}}}},
            "responses": {"200": json_body(ANY_OBJECT, "planned changes"),
                          **errors("ControlError", 400, 401, 404, 408, 409, 413, 415, 422)}}},
        "/agent/v1/events": {"get": {
            "summary": "recent events", "parameters": [{"name": "name", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": listing, **errors("ControlError", 401)}}},
        "/agent/v1/sources": {"get": {"summary": "the manifest sources the agent follows, and their state",
                                      "responses": {"200": listing, **errors("ControlError", 401)}}},
        "/agent/v1/process": {"get": {"summary": "the agent process's CPU seconds, memory and event loop, and the host (for "
                                                 "npuctl bench)",
                                      "responses": {"200": json_body(ANY_OBJECT, "process figures"),
                                                    **errors("ControlError", 401)}}},
        "/agent/v1/deployments/{name}/bench": {"put": {
            "summary": "keep a bench result (npuctl bench -o json) in the deployment's status", "security": token,
            "parameters": [path_param("name")],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/BenchResult"}}}},
            "responses": {"200": json_body(ANY_OBJECT, "kept"),
                          **errors("ControlError", 400, 401, 404, 408, 413, 415, 422)}}},
    }
