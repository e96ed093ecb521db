"""TEI's `/embed` (a list of vectors) and `/predict` (labels with scores), with the fields huggingface_hub's
`feature_extraction` and `text_classification` send; a field that cannot be honoured is a 400 naming it."""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from npuctl.schema.models import Api, Task
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.body import answered
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.fastjson import FastJSONResponse
from npuctl.serve.http.limits import check_rows
from npuctl.serve.models import EmbeddingService, ScoringService
from npuctl.serve.openai.embeddings import input_tokens
from npuctl.serve.scoring.requests import flag, token_limit_error

EMBED_FIELDS = frozenset({"model", "inputs", "normalize", "truncate", "truncation_direction", "prompt_name",
                          "dimensions", "encoding_format"})
PREDICT_FIELDS = frozenset({"model", "inputs", "parameters", "raw_scores", "truncate", "truncation_direction"})


def texts(body: dict[str, Any]) -> list[str]:
    value = body.get("inputs")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(t, str) and t.strip() for t in items):
        raise ApiError(400, "'inputs' must be a non-empty string or a list of them", param="inputs")
    check_rows(len(items), "'inputs'", param="inputs")
    return items


def check_fields(body: dict[str, Any], fields: frozenset[str]) -> None:
    unknown = sorted(set(body) - fields)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r} (this endpoint takes {', '.join(sorted(fields))})",
                       param=unknown[0])
    if body.get("truncation_direction", "right") not in ("right", "Right"):
        raise ApiError(400, "only 'truncation_direction': 'right' is supported (the end is cut)",
                       param="truncation_direction")


async def embed(request: Request, ctx: ServeContext, body: dict[str, Any], name: str) -> Response:
    check_fields(body, EMBED_FIELDS)
    items = texts(body)
    if body.get("prompt_name") is not None:
        raise ApiError(400, "'prompt_name' is not supported: send the prompt in 'inputs'", param="prompt_name")
    if body.get("encoding_format", "float") != "float":
        raise ApiError(400, "only 'encoding_format': 'float' is supported here (base64: POST /v1/embeddings)",
                       param="encoding_format")
    with ctx.using(request, name, Api.OPENAI, EmbeddingService) as model:
        normalized = model.model.pooling.normalize
        if flag(body, "normalize", True) != normalized:
            raise ApiError(400, f"this deployment's embeddings are {'' if normalized else 'not '}normalized "
                           "(spec.model.normalize): send normalize: " + str(normalized).lower(), param="normalize")
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != model.model.dimensions:
            raise ApiError(400, f"this model only gives {model.model.dimensions}-dimensional embeddings",
                           param="dimensions")
        # TEI's default is to refuse a long input (truncate: false); the deployment's own default here.
        tokens = input_tokens(items, model.model.encoder, flag(body, "truncate", model.truncate))
        vectors = await answered(request, model.batcher.submit([t.ids for t in tokens]), model.timeout_seconds)
        return FastJSONResponse([vector.tolist() for vector in vectors])


async def predict(request: Request, ctx: ServeContext, body: dict[str, Any], name: str) -> Response:
    check_fields(body, PREDICT_FIELDS)
    items = texts(body)
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict) or set(parameters) - {"function_to_apply", "top_k"}:
        raise ApiError(400, "'parameters' takes function_to_apply and top_k", param="parameters")
    top_k = parameters.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ApiError(400, f"'parameters.top_k' must be a positive integer, not {top_k!r}", param="parameters.top_k")
    function = parameters.get("function_to_apply")
    raw = flag(body, "raw_scores") or function == "none"
    with ctx.using(request, name, Api.OPENAI, ScoringService) as model:
        if model.task is not Task.CLASSIFICATION:
            raise ApiError(404, f"the model {name!r} is not a classifier", param="model")
        head = model.model.head
        if function not in (None, "none", "softmax" if not head.multi_label else "sigmoid"):
            raise ApiError(400, f"'parameters.function_to_apply' {function!r}: this model's scores are "
                           f"{'sigmoid' if head.multi_label else 'softmax'} (or none: raw logits)",
                           param="parameters.function_to_apply")
        tokens = model.model.encoder.encode(items)
        if not flag(body, "truncate", model.truncate):
            long = next((i for i, t in enumerate(tokens) if t.truncated), None)
            if long is not None:
                raise token_limit_error(f"inputs[{long}]", model.model.encoder.max_tokens, "inputs")
        logits = np.stack(await answered(request, model.batcher.submit(tokens), model.timeout_seconds))
        scores = logits.astype(np.float64) if raw else head.probabilities(logits)
        answers = [[{"label": head.labels[j], "score": float(row[j])} for j in np.argsort(-row, kind="stable")]
                   [:top_k] for row in scores]
        return JSONResponse(answers)  # a list per input, a single input too (as the Inference API answers)
