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
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.body import answered
from npuctl.serve.models import ScoringService
from npuctl.serve.scoring.requests import flag, json_object, model_name, token_limit_error

MAX_DOCUMENTS = 1000
"""Documents per request: Cohere's recommended maximum."""
FIELDS = frozenset({"model", "query", "documents", "texts", "top_n", "return_documents", "return_text", "raw_scores",
                    "rank_fields", "truncate", "truncation_direction"})


@dataclass(frozen=True)
class _Document:
    text: str
    shown: dict[str, Any]
    """What `return_documents` gives back: Cohere's {"text": ...}, or the client's own object with all its fields."""


def rerank_routes(ctx: ServeContext) -> list[BaseRoute]:
    async def rerank(request: Request) -> Response:
        body = await json_object(request, ctx.max_body_bytes, FIELDS)
        tei = "texts" in body
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ApiError(400, "'query' must be a non-empty string", param="query")
        documents = _documents(body, "texts" if tei else "documents")
        top_n = body.get("top_n")
        if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
            raise ApiError(400, f"'top_n' must be a positive integer, not {top_n!r}", param="top_n")
        misplaced = next((f for f in (("documents", "return_documents", "rank_fields") if tei else ("return_text",))
                          if f in body), None)
        if misplaced is not None:
            other = "'documents' (Cohere, Jina, infinity)" if tei else "'texts' (TEI)"
            raise ApiError(400, f"'{misplaced}' goes only with {other}", param=misplaced)
        shown = flag(body, "return_text" if tei else "return_documents")
        raw = flag(body, "raw_scores")
        if body.get("truncation_direction", "right") not in ("right", "Right"):
            raise ApiError(400, "only 'truncation_direction': 'right' is supported (the end of a document is cut)",
                           param="truncation_direction")
        name = model_name(ctx, body, Task.RERANK)
        with ctx.using(request, name, Api.OPENAI, ScoringService) as model:
            if model.task is not Task.RERANK:
                raise ApiError(404, f"the model {name!r} does not serve this kind of request (it is a "
                               f"{model.task.value} model, not a reranker)", param="model")
            truncate = flag(body, "truncate", model.truncate)
            tokens = model.model.encoder.encode_pairs(query, [d.text for d in documents])
            if not truncate:
                _check_lengths(tokens, model.model.encoder.max_tokens)
            logits = await answered(request, model.batcher.submit(tokens), model.timeout_seconds)
            scores = relevance(np.stack(logits), raw=raw)
            order = sorted(range(len(documents)), key=lambda i: -scores[i])[: top_n or len(documents)]
            used = sum(len(t.ids) for t in tokens)
            if tei:
                return JSONResponse([{"index": i, "score": float(scores[i])} | ({"text": documents[i].text} if shown else {})
                                     for i in order])
            results = [{"index": i, "relevance_score": float(scores[i])} | ({"document": documents[i].shown} if shown else {})
                       for i in order]
            return JSONResponse({
                "id": str(uuid.uuid4()), "object": "rerank", "model": model.name, "results": results,
                "usage": {"prompt_tokens": used, "total_tokens": used},
                "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
            })

    return [
        Route("/v1/rerank", ctx.endpoint("openai", rerank), methods=["POST"]),
        Route("/rerank", ctx.endpoint("openai", rerank), methods=["POST"]),
    ]


def _documents(body: dict[str, Any], field: str) -> list[_Document]:
    value = body.get(field)
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"'{field}' must be a non-empty list of documents", param=field)
    if len(value) > MAX_DOCUMENTS:
        raise ApiError(400, f"'{field}' holds {len(value)} documents; at most {MAX_DOCUMENTS} are allowed per request",
                       param=field)
    rank_fields = body.get("rank_fields")
    if rank_fields is not None and (not isinstance(rank_fields, list) or not rank_fields
                                    or not all(isinstance(f, str) and f for f in rank_fields)):
        raise ApiError(400, "'rank_fields' must be a non-empty list of field names", param="rank_fields")
    documents = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            text, shown = item, {"text": item}
        elif isinstance(item, dict) and field == "documents":
            text, shown = _object_text(item, i, rank_fields), item
        else:
            kind = "a string or an object with a 'text'" if field == "documents" else "a string"
            raise ApiError(400, f"{field}[{i}] must be {kind}", param=f"{field}[{i}]")
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

