"""OpenAI-compatible routes: `POST /v1/embeddings`, `GET /v1/models`, `GET /v1/models/{model}`."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl.runtime.embeddings import Embedding
from npuctl.runtime.text import TextEncoder, Tokens
from npuctl.schema.models import Api
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.body import answered, read_json
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.fastjson import FastJSONResponse
from npuctl.serve.http.limits import check_rows, check_tokens, tokenized
from npuctl.serve.models import EmbeddingService

OWNED_BY = "npuctl"


def openai_routes(ctx: ServeContext) -> list[BaseRoute]:
    async def embeddings(request: Request) -> Response:
        body = await read_json(request, ctx.max_body_bytes)
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise ApiError(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        with ctx.using(request, body.get("model"), Api.OPENAI, EmbeddingService) as model:
            dimensions = body.get("dimensions")
            if dimensions is not None and dimensions != model.model.dimensions:
                raise ApiError(
                    400, f"this model only gives {model.model.dimensions}-dimensional embeddings", param="dimensions"
                )
            tokens = await tokenized(body.get("input"), input_tokens, model.model.encoder, model.truncate)
            vectors = await answered(request, model.batcher.submit([t.ids for t in tokens]), model.timeout_seconds)
            used = sum(len(t.ids) for t in tokens)
            data = [
                {"object": "embedding", "index": i, "embedding": _encode(vector, encoding)}
                for i, vector in enumerate(vectors)
            ]
            return FastJSONResponse(
                {"object": "list", "data": data, "model": model.name, "usage": {"prompt_tokens": used, "total_tokens": used}}
            )

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_card(name) for name in _openai_names(ctx)]})

    async def get_model(request: Request) -> Response:
        name = request.path_params["model"]
        if name not in _openai_names(ctx):
            raise ApiError(404, f"the model {name!r} does not exist", param="model", code="model_not_found")
        return JSONResponse(_card(name))

    return [
        Route("/v1/embeddings", ctx.endpoint(Api.OPENAI, embeddings), methods=["POST"]),
        Route("/v1/models", ctx.endpoint(Api.OPENAI, list_models), methods=["GET"]),
        Route("/v1/models/{model:path}", ctx.endpoint(Api.OPENAI, get_model), methods=["GET"]),
    ]


def input_tokens(value: Any, encoder: TextEncoder, truncate: bool) -> list[Tokens]:
    """OpenAI's four input forms: a string, strings, a token array, token arrays. Token arrays are the
    model's complete input ids (special tokens included), as the model's tokenizer.json makes them."""
    if isinstance(value, str):
        value = [value]
    elif _is_token_array(value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "'input' must be a string, a list of strings, or token arrays, and not empty", param="input")
    check_rows(len(value), "'input'", param="input")
    if all(isinstance(item, str) for item in value):
        if any(not item for item in value):
            raise ApiError(400, "'input' must not contain empty strings", param="input")
        tokens = encoder.encode(value)
    elif all(_is_token_array(item) for item in value):
        tokens = [_checked_ids(item, i, encoder) for i, item in enumerate(value)]
    else:
        raise ApiError(400, "'input' must be all strings or all token arrays (lists of integers)", param="input")
    check_tokens(sum(len(t.ids) for t in tokens), "'input'", param="input")
    if not truncate:
        long = next((i for i, t in enumerate(tokens) if t.truncated), None)
        if long is not None:
            raise ApiError(
                400, f"input[{long}] is longer than the model's limit of {encoder.max_tokens} tokens", param="input"
            )
    return tokens


def _is_token_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _checked_ids(ids: list[int], index: int, encoder: TextEncoder) -> Tokens:
    bad = next((t for t in ids if not 0 <= t < encoder.vocab_size), None)
    if bad is not None:
        raise ApiError(400, f"input[{index}] has token id {bad}, outside the vocabulary (0..{encoder.vocab_size - 1})", param="input")
    return encoder.clip(ids)


def _encode(vector: Embedding, encoding: str) -> Embedding | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    if not np.isfinite(vector).all():
        raise ValueError("the model gave a non-finite embedding")  # JSON has no NaN: a server fault, as before
    return np.ascontiguousarray(vector)  # written by orjson straight from the buffer


def _openai_names(ctx: ServeContext) -> list[str]:
    return [name for model in ctx.registry.models() if model.speaks(Api.OPENAI) and model.status.ready for name in model.names]


def _card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNED_BY}
