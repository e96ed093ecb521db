"""The OpenAPI description of the TEI and TGI routes (npuctl/serve/tei/)."""

from __future__ import annotations

from typing import Any

from npuctl.serve.openapi.components import ref
from npuctl.serve.openapi.parts import ANY_OBJECT, errors, json_body, request
from npuctl.serve.tei.requests import GenerateRequest, TeiEmbedRequest, TeiPredictRequest

_ERRORS = (400, 404, 408, 413, 415, 429, 503, 504)


def tei_paths() -> dict[str, Any]:
    embed, predict, generate = ref(TeiEmbedRequest), ref(TeiPredictRequest), ref(GenerateRequest)

    def post(summary: str, body: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        return {"post": {"summary": summary, "requestBody": request(body),
                         "responses": {"200": answer, **errors("OpenAIError", *_ERRORS)}}}

    vectors = json_body({"type": "array", "items": {"type": "array", "items": {"type": "number"}}}, "embeddings")
    labels = json_body({"type": "array", "items": {"type": "array", "items": ANY_OBJECT}}, "labels per input")
    generated = json_body({"oneOf": [{"type": "array", "items": ANY_OBJECT}, ANY_OBJECT]},
                          "the generated text (or an SSE stream)", "text/event-stream")
    return {
        "/embed": post("TEI: embeddings (the one embedding model, or `model`)", embed, vectors),
        "/predict": post("TEI: labels with scores (the one classifier, or `model`)", predict, labels),
        "/generate": post("TGI: generated text (the one text-generation model, or `model`)", generate, generated),
        "/generate_stream": post("TGI: generated text as SSE", generate, generated),
        "/info": {"get": {"summary": "TEI/TGI: the one model's facts (or ?model=)",
                          "parameters": [{"name": "model", "in": "query", "required": False,
                                          "schema": {"type": "string", "minLength": 1}}],
                          "responses": {"200": json_body(ANY_OBJECT, "facts"), **errors("OpenAIError", 400, 404)}}},
        "/": post("TEI/TGI: what the one model here does with `inputs` (embed, predict or generate)",
                  {"oneOf": [embed, predict, generate]},
                  json_body({}, "what /embed, /predict or /generate answers", "text/event-stream")),
    }
