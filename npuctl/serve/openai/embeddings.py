"""OpenAI-compatible routes: `POST /v1/embeddings`, `GET /v1/models`, `GET /v1/models/{model}`."""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl.runtime.embeddings import Embedding
from npuctl.schema.models import Api
from npuctl.serve.embedding import embed, floats
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.fastjson import FastJSONResponse
from npuctl.serve.models import EmbeddingService
from npuctl.serve.openai.requests import EmbeddingsRequest

OWNED_BY = "npuctl"


def openai_routes(ctx: ServeContext) -> list[BaseRoute]:
    async def embeddings(request: Request) -> Response:
        asked = await ctx.body(request, EmbeddingsRequest)
        with ctx.using(request, asked.model, Api.OPENAI, EmbeddingService) as model:
            done = await embed(request, model, asked.input, truncate=model.truncate, dimensions=asked.dimensions)
            data = [
                {"object": "embedding", "index": i, "embedding": _encode(vector, asked.encoding_format)}
                for i, vector in enumerate(done.vectors)
            ]
            usage = {"prompt_tokens": done.tokens, "total_tokens": done.tokens}
            return FastJSONResponse({"object": "list", "data": data, "model": model.name, "usage": usage})

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


def _encode(vector: Embedding, encoding: str) -> Embedding | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return floats(vector)


def _openai_names(ctx: ServeContext) -> list[str]:
    return [name for model in ctx.registry.models() if model.speaks(Api.OPENAI) and model.status.ready for name in model.names]


def _card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNED_BY}
