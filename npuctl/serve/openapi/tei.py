"""The OpenAPI description of the TEI and TGI routes (npuctl/serve/tei/)."""

from __future__ import annotations

from typing import Any

from npuctl.serve.openapi.parts import ANY_OBJECT, NAME, errors, json_body, obj, request

_ERRORS = (400, 404, 408, 413, 415, 429, 503, 504)


def tei_paths() -> dict[str, Any]:
    text = {"type": "string", "pattern": "\\S"}
    inputs = {"oneOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": 2048}]}
    model = {**NAME, "description": "optional when one model of the kind serves (TEI's and TGI's clients send none)"}
    embed = {**obj({"model": model, "inputs": inputs, "normalize": {"type": "boolean"},
                    "truncate": {"type": "boolean"},
                    "truncation_direction": {"type": "string", "enum": ["right", "Right"]},
                    "dimensions": {"type": "integer", "nullable": True},
                    "encoding_format": {"type": "string", "enum": ["float"]}}, required=["inputs"]),
             "additionalProperties": False}
    predict = {**obj({"model": model, "inputs": inputs, "raw_scores": {"type": "boolean"},
                      "truncate": {"type": "boolean"},
                      "truncation_direction": {"type": "string", "enum": ["right", "Right"]},
                      "parameters": {**obj({"function_to_apply": {"type": "string",
                                                                  "enum": ["softmax", "sigmoid", "none"]},
                                            "top_k": {"type": "integer", "minimum": 1}}),
                                     "additionalProperties": False, "nullable": True}}, required=["inputs"]),
               "additionalProperties": False}
    number = {"type": "number", "nullable": True}
    parameters = {**obj({
        "max_new_tokens": {"type": "integer", "minimum": 1, "nullable": True},
        "temperature": {**number, "minimum": 0, "maximum": 2}, "top_p": {**number, "minimum": 0, "maximum": 1},
        "top_k": {"type": "integer", "minimum": 0, "nullable": True}, "seed": {"type": "integer", "minimum": 0,
                                                                            "nullable": True},
        "do_sample": {"type": "boolean", "nullable": True}, "details": {"type": "boolean", "nullable": True},
        "return_full_text": {"type": "boolean", "nullable": True},
        "repetition_penalty": {**number, "minimum": 0.01, "maximum": 10},
        "frequency_penalty": {**number, "minimum": -2, "maximum": 2},
        "typical_p": {**number, "exclusiveMinimum": True, "minimum": 0, "maximum": 1},
        "stop": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 4, "nullable": True},
    }), "additionalProperties": False, "nullable": True}
    generate = {**obj({"model": model, "inputs": text, "parameters": parameters, "stream": {"type": "boolean"}},
                      required=["inputs"]), "additionalProperties": False}

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
