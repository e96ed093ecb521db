"""The TEI and TGI routes: `/embed`, `/predict`, `/generate`, `/generate_stream`, `/info`, and `POST /`, which is
what huggingface_hub's InferenceClient(model=URL) posts to: there the one model of this server answers as TEI or
TGI would for its kind (TEI's `/rerank` is the reranking API's, npuctl/serve/scoring/rerank.py)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl import __version__
from npuctl.schema.models import Api
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.body import read_json
from npuctl.serve.http.errors import ApiError
from npuctl.serve.models import EmbeddingService, GenerationService, ScoringService
from npuctl.serve.ollama.routes import RUNNING
from npuctl.serve.tei.choosing import EMBED, GENERATE, PREDICT, chosen, kind_named
from npuctl.serve.tei.encoders import embed, predict
from npuctl.serve.tei.generate import generate
from npuctl.serve.tei.requests import GenerateRequest, TeiEmbedRequest, TeiPredictRequest


def tei_routes(ctx: ServeContext) -> list[BaseRoute]:
    async def embed_route(request: Request) -> Response:
        asked = await ctx.body(request, TeiEmbedRequest)
        return await embed(request, ctx, asked, chosen(ctx, asked.model, (EMBED,)))

    async def predict_route(request: Request) -> Response:
        asked = await ctx.body(request, TeiPredictRequest)
        return await predict(request, ctx, asked, chosen(ctx, asked.model, (PREDICT,)))

    async def generate_route(request: Request) -> Response:
        asked = _streamed(await ctx.body(request, GenerateRequest), False)
        return await generate(request, ctx, asked, chosen(ctx, asked.model, (GENERATE,)), stream=False)

    async def generate_stream_route(request: Request) -> Response:
        asked = _streamed(await ctx.body(request, GenerateRequest), True)
        return await generate(request, ctx, asked, chosen(ctx, asked.model, (GENERATE,)), stream=True)

    async def root(request: Request) -> Response:
        """`GET /`: Ollama's "Ollama is running", for clients looking for a server. `POST /`: TEI's and TGI's,
        what the one model here does with `inputs`. One route, so that a wrong method's 405 names all three."""
        if request.method != "POST":
            return PlainTextResponse(RUNNING)
        body = await read_json(request, ctx.max_body_bytes)
        name = chosen(ctx, body.get("model") if isinstance(body, dict) else None, (EMBED, PREDICT, GENERATE))
        kind = kind_named(ctx, name)
        try:
            if kind == EMBED:
                return await embed(request, ctx, ctx.parse(request, TeiEmbedRequest, body), name)
            if kind == PREDICT:
                return await predict(request, ctx, ctx.parse(request, TeiPredictRequest, body), name)
            asked = ctx.parse(request, GenerateRequest, body)
            return await generate(request, ctx, asked, name, stream=asked.stream)
        except ApiError as exc:
            if exc.status != 400:
                raise
            # The body may be meant for another kind of model than the one here: say which answered.
            raise ApiError(400, f"POST / answers as the model here, {name!r}, does ({kind}): {exc.message}",
                           param=exc.param) from exc

    async def info(request: Request) -> Response:
        """TEI's and TGI's description of the server's one model (of the kind named by `model` when several)."""
        name = chosen(ctx, request.query_params.get("model"), (EMBED, PREDICT, GENERATE))
        model = next((m for m in ctx.registry.models() if m.name == name), None)
        if model is None:
            raise ApiError(404, f"the model {name!r} does not exist", param="model", code="model_not_found")
        facts: dict[str, Any] = {"model_id": model.name, "model_sha": None, "model_dtype": "float32",
                                 "version": __version__, "router": "npuctl"}
        if isinstance(model, EmbeddingService):
            facts |= {"model_type": {"embedding": {"pooling": "mean"}},
                      "max_input_length": model.model.encoder.max_tokens, "max_client_batch_size": 2048}
        elif isinstance(model, ScoringService):
            labels = dict(enumerate(model.model.head.labels))
            facts |= {"model_type": {"classifier": {"id2label": labels, "label2id": {v: k for k, v in labels.items()}}},
                      "max_input_length": model.model.encoder.max_tokens}
        elif isinstance(model, GenerationService):
            facts |= {"max_input_tokens": model.max_input_tokens, "max_total_tokens": model.model.context_length,
                      "max_best_of": 1, "max_stop_sequences": 4}
        return JSONResponse(facts)

    return [
        Route("/embed", ctx.endpoint(Api.OPENAI, embed_route), methods=["POST"]),
        Route("/predict", ctx.endpoint(Api.OPENAI, predict_route), methods=["POST"]),
        Route("/generate", ctx.endpoint(Api.OPENAI, generate_route), methods=["POST"]),
        Route("/generate_stream", ctx.endpoint(Api.OPENAI, generate_stream_route), methods=["POST"]),
        Route("/info", ctx.endpoint(Api.OPENAI, info, counted=False), methods=["GET"]),
        Route("/", ctx.endpoint(Api.OPENAI, root), methods=["GET", "HEAD", "POST"]),
    ]


def _streamed(asked: GenerateRequest, stream: bool) -> GenerateRequest:
    """`stream` is the root's choice; on /generate and /generate_stream the path chose (TGI ignores the field
    there: here a `stream` that asks the other way is a 400)."""
    if "stream" in asked.model_fields_set and asked.stream != stream:
        path = "/generate_stream" if asked.stream else "/generate"
        raise ApiError(400, f"'stream': {str(asked.stream).lower()} asks for {path}'s answer (or POST / with "
                       "stream)", param="stream")
    return asked
