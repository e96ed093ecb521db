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
from npuctl.serve.models import ScoringService
from npuctl.serve.scoring.requests import flag, json_object, model_name, token_limit_error

MAX_INPUTS = 2048
"""Inputs per request, as infinity allows."""
FIELDS = frozenset({"model", "input", "raw_scores", "truncate", "user"})


def classify_routes(ctx: ServeContext) -> list[BaseRoute]:
    async def classify(request: Request) -> Response:
        body = await json_object(request, ctx.max_body_bytes, FIELDS)
        texts = _inputs(body.get("input"))
        raw = flag(body, "raw_scores")
        name = model_name(ctx, body, Task.CLASSIFICATION)
        with ctx.using(request, name, Api.OPENAI, ScoringService) as model:
            if model.task is not Task.CLASSIFICATION:
                raise ApiError(404, f"the model {name!r} does not serve this kind of request (it is a "
                               f"{model.task.value} model, not a classifier)", param="model")
            tokens = model.model.encoder.encode(texts)
            if not flag(body, "truncate", model.truncate):
                long = next((i for i, t in enumerate(tokens) if t.truncated), None)
                if long is not None:
                    raise token_limit_error(f"input[{long}]", model.model.encoder.max_tokens, "input")
            logits = np.stack(await answered(request, model.batcher.submit(tokens), model.timeout_seconds))
            head = model.model.head
            scores = logits.astype(np.float64) if raw else head.probabilities(logits)
            data = [[{"label": head.labels[j], "score": float(row[j])} for j in np.argsort(-row, kind="stable")]
                    for row in scores]
            used = sum(len(t.ids) for t in tokens)
            return JSONResponse({"object": "classify", "data": data, "model": model.name,
                                 "usage": {"prompt_tokens": used, "total_tokens": used},
                                 "id": f"classify-{uuid.uuid4().hex}", "created": int(time.time())})

    return [
        Route("/v1/classify", ctx.endpoint(Api.OPENAI, classify), methods=["POST"]),
        Route("/classify", ctx.endpoint(Api.OPENAI, classify), methods=["POST"]),
    ]


def _inputs(value: Any) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "'input' must be a string or a non-empty list of strings", param="input")
    if len(texts) > MAX_INPUTS:
        raise ApiError(400, f"'input' holds {len(texts)} items; at most {MAX_INPUTS} are allowed", param="input")
    empty = next((i for i, t in enumerate(texts) if not t.strip()), None)
    if empty is not None:
        raise ApiError(400, f"input[{empty}] is empty", param="input")
    return texts
