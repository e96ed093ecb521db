"""The OpenAPI 3.0 description of one process's port, with the constraints the server enforces: `npuctl serve`
(OpenAI /v1, Open Inference Protocol /v2 with Triton's extensions, Ollama's /api, /metrics), and the agent (the
same, plus its control API /agent/v1). Served at /openapi.json; copies in schema/openapi.json and
schema/openapi-agent.json."""

from __future__ import annotations

from typing import Any

from npuctl import __version__
from npuctl.serve.oip.requests import IndexRequest, InferRequest
from npuctl.serve.ollama.bodies import (
    EmbedRequest,
    OllamaChatRequest,
    OllamaGenerateRequest,
    PromptEmbeddingRequest,
    ShowRequest,
)
from npuctl.serve.openai.requests import ChatRequest, CompletionRequest, EmbeddingsRequest
from npuctl.serve.openai.responses_request import ResponsesRequest
from npuctl.serve.openapi.components import components, ref
from npuctl.serve.openapi.others import control_paths, metrics_paths, oip_paths, ollama_paths
from npuctl.serve.openapi.parts import ANY_OBJECT, errors, json_body, obj, path_param, request
from npuctl.serve.openapi.tasks import task_paths
from npuctl.serve.openapi.tei import tei_paths
from npuctl.serve.scoring.requests import ClassifyRequest, RerankRequest, RerankV2Request
from npuctl.serve.tei.requests import GenerateRequest, TeiEmbedRequest, TeiPredictRequest


def openapi(*, control: bool = False) -> dict[str, Any]:
    """The document for `npuctl serve`, or with `control` for an agent (its control API on the same port)."""
    paths = {**_openai(), **oip_paths(), **ollama_paths(), **metrics_paths(), **task_paths()}
    for path, operations in tei_paths().items():
        paths[path] = {**paths.get(path, {}), **operations}  # `/`: Ollama's GET and TEI's POST
    title = "npuctl agent" if control else "npuctl serve"
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": title, "version": __version__,
                 "description": "Models served by npuctl: OpenAI, Open Inference Protocol (with Triton's "
                                "extensions) and Ollama APIs" + (", and the agent's control API." if control else ".")},
        "paths": paths | (control_paths() if control else {}),
        "components": {"schemas": {
            "OpenAIError": obj({"error": obj(
                {"message": {"type": "string"}, "type": {"type": "string"},
                 "param": {"type": "string", "nullable": True}, "code": {"type": "string", "nullable": True}},
                required=["message", "type"])}, required=["error"]),
            "PlainError": obj({"error": {"type": "string"}}, required=["error"]),
            "ControlError": obj({"error": obj({"message": {"type": "string"}}, required=["message"])},
                                required=["error"]),
            **request_components(),
        }},
    }
    if control:
        document["components"]["schemas"] |= bench_schemas()
        document["components"]["securitySchemes"] = {"agentToken": {
            "type": "http", "scheme": "bearer", "description": "the token in the agent's state folder"}}
    return document


def _openai() -> dict[str, Any]:
    embeddings = ref(EmbeddingsRequest)
    card = obj({"id": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"},
                "owned_by": {"type": "string"}}, required=["id", "object"])
    answer = json_body(obj({"id": {"type": "string"}, "object": {"type": "string"}, "choices": {"type": "array"}}),
                       "the completion (or an SSE stream)", "text/event-stream")
    failures = errors("OpenAIError", 400, 404, 408, 413, 415, 429, 503, 504)
    chat, completion = ref(ChatRequest), ref(CompletionRequest)
    return {
        "/v1/responses": {"post": {"summary": "OpenAI responses", "requestBody": request(ref(ResponsesRequest)),
                                   "responses": {"200": json_body(obj({"id": {"type": "string"}, "object": {
                                       "type": "string"}, "output": {"type": "array"}}),
                                       "the response (or an SSE stream of its events)", "text/event-stream"),
                                       **failures}}},
        "/v1/chat/completions": {"post": {"summary": "OpenAI chat completions", "requestBody": request(chat),
                                          "responses": {"200": answer, **failures}}},
        "/v1/completions": {"post": {"summary": "OpenAI text completions", "requestBody": request(completion),
                                     "responses": {"200": answer, **failures}}},
        "/v1/embeddings": {"post": {
            "summary": "OpenAI embeddings", "requestBody": request(embeddings),
            "responses": {"200": json_body(obj({"object": {"type": "string"}, "data": {"type": "array"},
                                                "model": {"type": "string"}, "usage": ANY_OBJECT}), "embeddings"),
                          **failures}}},
        "/v1/models": {"get": {"summary": "models that serve now", "responses": {
            "200": json_body(obj({"object": {"type": "string"}, "data": {"type": "array", "items": card}}),
                             "models")}}},
        "/v1/models/{model}": {"get": {
            "summary": "one model", "parameters": [path_param("model")],
            "responses": {"200": json_body(card, "the model"), **errors("OpenAIError", 404)}}},
    }


def bench_schemas() -> dict[str, Any]:
    """`npuctl bench`'s result and the models in it, as OpenAPI components (what PUT .../bench takes)."""
    from npuctl.schema.bench import BenchResult

    return components(BenchResult)


def request_components() -> dict[str, Any]:
    """Every request body's schema, from the model the server validates it with."""
    return components(ResponsesRequest, ChatRequest, CompletionRequest, EmbeddingsRequest, InferRequest, IndexRequest,
                      OllamaChatRequest, OllamaGenerateRequest, EmbedRequest, PromptEmbeddingRequest, ShowRequest,
                      RerankRequest, RerankV2Request, ClassifyRequest, TeiEmbedRequest, TeiPredictRequest,
                      GenerateRequest)
