"""Reranking: `POST /v1/rerank` and `POST /rerank`. Requests in the shapes of Cohere (v1), Jina and infinity
(`documents`: strings or objects with a `text`), and of Hugging Face text-embeddings-inference (`texts`,
`return_text`, `raw_scores`, `truncate`); answers in Cohere's shape (`results` of index, relevance_score,
document), or TEI's (a list of index, score, text) to a TEI-shaped request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl.runtime.scoring import relevance
from npuctl.runtime.text import Tokens
from npuctl.schema.models import Api, Task
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.body import answered
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.limits import tokenized
from npuctl.serve.models import ScoringService
from npuctl.serve.scoring.requests import RerankRequest, RerankV2Request, model_name, token_limit_error


@dataclass(frozen=True)
class _Document:
    text: str
    shown: dict[str, Any]
    """What `return_documents` gives back: Cohere's {"text": ...}, or the client's own object with all its fields."""


def rerank_routes(ctx: ServeContext) -> list[BaseRoute]:
    async def rerank(request: Request) -> Response:
        asked = await ctx.body(request, RerankRequest)
        tei = asked.texts is not None
        documents = _documents(asked.texts or asked.documents or [], "texts" if tei else "documents", asked.rank_fields)
        shown = bool(asked.return_text if tei else asked.return_documents)
        scores, used, served = await _scored(request, ctx, asked.model, asked.query, documents,
                                             bool(asked.raw_scores), truncate=asked.truncate)
        order = sorted(range(len(documents)), key=lambda i: -scores[i])[: asked.top_n or len(documents)]
        if tei:
            return JSONResponse([{"index": i, "score": float(scores[i])} | ({"text": documents[i].text} if shown else {})
                                 for i in order])
        results = [{"index": i, "relevance_score": float(scores[i])} | ({"document": documents[i].shown} if shown else {})
                   for i in order]
        return JSONResponse({
            "id": str(uuid.uuid4()), "object": "rerank", "model": served, "results": results,
            "usage": {"prompt_tokens": used, "total_tokens": used},
            "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
        })

    async def rerank_v2(request: Request) -> Response:
        """Cohere's v2 (ClientV2.rerank): documents are strings, and no document comes back."""
        asked = await ctx.body(request, RerankV2Request)
        documents = _documents(asked.documents, "documents", None)
        scores, used, served = await _scored(request, ctx, asked.model, asked.query, documents, False,
                                             max_tokens=asked.max_tokens_per_doc)
        order = sorted(range(len(documents)), key=lambda i: -scores[i])[: asked.top_n or len(documents)]
        return JSONResponse({
            "id": str(uuid.uuid4()), "model": served,
            "results": [{"index": i, "relevance_score": float(scores[i])} for i in order],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1},
                     "tokens": {"input_tokens": used}},
        })

    return [
        Route("/v1/rerank", ctx.endpoint(Api.OPENAI, rerank), methods=["POST"]),
        Route("/rerank", ctx.endpoint(Api.OPENAI, rerank), methods=["POST"]),
        Route("/v2/rerank", ctx.endpoint(Api.OPENAI, rerank_v2), methods=["POST"]),
    ]


async def _scored(request: Request, ctx: ServeContext, asked_model: str | None, query: str,
                  documents: list[_Document], raw: bool, *, truncate: bool | None = None,
                  max_tokens: int | None = None) -> tuple[list[float], int, str]:
    """Each document's relevance to `query`, the tokens used, and the model's name. `max_tokens` (Cohere v2's
    max_tokens_per_doc): documents are cut there; only the model's own limit or more can be honoured."""
    name = model_name(ctx, asked_model, Task.RERANK)
    with ctx.using(request, name, Api.OPENAI, ScoringService) as model:
        if model.task is not Task.RERANK:
            raise ApiError(404, f"the model {name!r} does not serve this kind of request (it is a "
                           f"{model.task.value} model, not a reranker)", param="model")
        limit = model.model.encoder.max_tokens
        if max_tokens is not None and max_tokens < limit:
            raise ApiError(400, f"'max_tokens_per_doc' must be an integer of at least {limit}: this model reads a "
                           f"query with its document up to {limit} tokens and cuts the rest", param="max_tokens_per_doc")
        cut = True if max_tokens is not None else model.truncate if truncate is None else truncate
        encoder = model.model.encoder
        tokens = await tokenized([d.text for d in documents], lambda texts: encoder.encode_pairs(query, texts))
        if not cut:
            _check_lengths(tokens, limit)
        logits = await answered(request, model.batcher.submit(tokens), model.timeout_seconds)
        return [float(s) for s in relevance(np.stack(logits), raw=raw)], sum(len(t.ids) for t in tokens), model.name


def _documents(value: list[str] | list[str | dict[str, Any]], field: str,
               rank_fields: list[str] | None) -> list[_Document]:
    documents = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            text, shown = item, {"text": item}
        else:
            text, shown = _object_text(item, i, rank_fields), item
        if not text.strip():
            raise ApiError(400, f"{field}[{i}] is empty", param=f"{field}[{i}]")
        documents.append(_Document(text, shown))
    return documents


def _object_text(item: dict[str, Any], index: int, rank_fields: list[str] | None) -> str:
    """The text of a document object: its `text`, or with `rank_fields` those fields' values in that order."""
    fields = rank_fields or ["text"]
    values = [item[f] for f in fields if f in item]
    if not values or not all(isinstance(v, str) for v in values):
        raise ApiError(400, f"documents[{index}] needs string fields {', '.join(repr(f) for f in fields)}",
                       param=f"documents[{index}]")
    return "\n".join(values)


def _check_lengths(tokens: list[Tokens], limit: int) -> None:
    long = next((i for i, t in enumerate(tokens) if t.truncated), None)
    if long is not None:
        raise token_limit_error(f"the query with documents[{long}]", limit, "documents")

