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
from npuctl.serve.models import ScoringService
from npuctl.serve.scoring.requests import flag, json_object, model_name, token_limit_error

MAX_DOCUMENTS = 1000
"""Documents per request: Cohere's recommended maximum."""
FIELDS = frozenset({"model", "query", "documents", "texts", "top_n", "return_documents", "return_text", "raw_scores",
                    "rank_fields", "truncate", "truncation_direction"})
V2_FIELDS = frozenset({"model", "query", "documents", "top_n", "max_tokens_per_doc", "relevant_spans", "priority"})


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
        top_n = _top_n(body)
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
        scores, used, served = await _scored(request, ctx, body, query, documents, raw)
        order = sorted(range(len(documents)), key=lambda i: -scores[i])[: top_n or len(documents)]
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
        body = await json_object(request, ctx.max_body_bytes, V2_FIELDS)
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ApiError(400, "'query' must be a non-empty string", param="query")
        if not isinstance(body.get("documents"), list) or not all(isinstance(d, str) for d in body["documents"]):
            raise ApiError(400, "'documents' must be a non-empty list of strings", param="documents")
        documents = _documents(body, "documents")
        top_n = _top_n(body)
        for name, why in (("relevant_spans", "relevant spans are not computed"),
                          ("priority", "requests are served in the order they come")):
            if body.get(name) not in (None, False):
                raise ApiError(400, f"'{name}' is not supported: {why}", param=name)
        scores, used, served = await _scored(request, ctx, body, query, documents, False,
                                             max_tokens=body.get("max_tokens_per_doc"))
        order = sorted(range(len(documents)), key=lambda i: -scores[i])[: top_n or len(documents)]
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


async def _scored(request: Request, ctx: ServeContext, body: dict[str, Any], query: str, documents: list[_Document],
                  raw: bool, max_tokens: Any = None) -> tuple[list[float], int, str]:
    """Each document's relevance to `query`, the tokens used, and the model's name. `max_tokens` (Cohere v2's
    max_tokens_per_doc): documents are cut there; only the model's own limit or more can be honoured."""
    name = model_name(ctx, body, Task.RERANK)
    with ctx.using(request, name, Api.OPENAI, ScoringService) as model:
        if model.task is not Task.RERANK:
            raise ApiError(404, f"the model {name!r} does not serve this kind of request (it is a "
                           f"{model.task.value} model, not a reranker)", param="model")
        limit = model.model.encoder.max_tokens
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < limit):
            raise ApiError(400, f"'max_tokens_per_doc' must be an integer of at least {limit}: this model reads a "
                           f"query with its document up to {limit} tokens and cuts the rest", param="max_tokens_per_doc")
        truncate = True if max_tokens is not None else flag(body, "truncate", model.truncate)
        tokens = model.model.encoder.encode_pairs(query, [d.text for d in documents])
        if not truncate:
            _check_lengths(tokens, limit)
        logits = await answered(request, model.batcher.submit(tokens), model.timeout_seconds)
        return [float(s) for s in relevance(np.stack(logits), raw=raw)], sum(len(t.ids) for t in tokens), model.name


def _top_n(body: dict[str, Any]) -> int | None:
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise ApiError(400, f"'top_n' must be a positive integer, not {top_n!r}", param="top_n")
    return top_n


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

