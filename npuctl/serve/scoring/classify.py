"""Classification in infinity's shape: `POST /v1/classify` (and `/classify`) takes `input` (a string or strings) and
answers, per input, every label with its score, most likely first. Labels are the model's id2label; scores are
softmax, or sigmoid per label for multi-label models (config.json's problem_type); `raw_scores: true` gives logits."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl.schema.models import Api, Task
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.body import answered
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.limits import tokenized
from npuctl.serve.models import ScoringService
from npuctl.serve.scoring.requests import ClassifyRequest, model_name, token_limit_error


def classify_routes(ctx: ServeContext) -> list[BaseRoute]:
    async def classify(request: Request) -> Response:
        asked = await ctx.body(request, ClassifyRequest)
        texts = [asked.input] if isinstance(asked.input, str) else asked.input
        raw = asked.raw_scores
        name = model_name(ctx, asked.model, Task.CLASSIFICATION)
        with ctx.using(request, name, Api.OPENAI, ScoringService) as model:
            if model.task is not Task.CLASSIFICATION:
                raise ApiError(404, f"the model {name!r} does not serve this kind of request (it is a "
                               f"{model.task.value} model, not a classifier)", param="model")
            data, used = await classified(request, model, texts, asked.truncate, "input", raw=raw)
            return JSONResponse({"object": "classify", "data": data, "model": model.name,
                                 "usage": {"prompt_tokens": used, "total_tokens": used},
                                 "id": f"classify-{uuid.uuid4().hex}", "created": int(time.time())})

    return [
        Route("/v1/classify", ctx.endpoint(Api.OPENAI, classify), methods=["POST"]),
        Route("/classify", ctx.endpoint(Api.OPENAI, classify), methods=["POST"]),
    ]


Scores = list[list[dict[str, Any]]]


async def classified(request: Request, model: ScoringService, texts: list[str], truncate: bool | None, field: str, *,
                     raw: bool) -> tuple[Scores, int]:
    """Every label with its score per text, most likely first (`raw`: logits), and the tokens read. A text past
    the model's limit is cut, or with `truncate` false (the deployment's choice when None) a 400 naming it."""
    tokens = await tokenized(texts, model.model.encoder.encode)
    if not (model.truncate if truncate is None else truncate):
        long = next((i for i, t in enumerate(tokens) if t.truncated), None)
        if long is not None:
            raise token_limit_error(f"{field}[{long}]", model.model.encoder.max_tokens, field)
    logits = np.stack(await answered(request, model.batcher.submit(tokens), model.timeout_seconds))
    head = model.model.head
    scores = logits.astype(np.float64) if raw else head.probabilities(logits)
    labelled = [[{"label": head.labels[j], "score": float(row[j])} for j in np.argsort(-row, kind="stable")]
                for row in scores]
    return labelled, sum(len(t.ids) for t in tokens)
