"""Request checks shared by the rerank and classify APIs."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from npuctl.schema.models import Api, Task
from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.body import read_json
from npuctl.serve.http.errors import ApiError
from npuctl.serve.models import ScoringService


async def json_object(request: Request, limit: int, fields: frozenset[str]) -> dict[str, Any]:
    """The body: a JSON object of `fields` only (a field this endpoint would ignore is refused, naming it)."""
    body = await read_json(request, limit)
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r} (this endpoint takes {', '.join(sorted(fields))})",
                       param=unknown[0])
    return body


def flag(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false, not {value!r}", param=name)
    return value


def model_name(ctx: ServeContext, body: dict[str, Any], task: Task) -> object:
    """The request's `model`; without one (TEI's clients send none), the one model of `task` that serves."""
    if "model" in body:
        return body["model"]
    served = [m.name for m in ctx.registry.models()
              if isinstance(m, ScoringService) and m.task is task and m.speaks(Api.OPENAI)]
    if len(served) == 1:
        return served[0]
    if not served:
        raise ApiError(404, f"no {task.value} model serves here", param="model", code="model_not_found")
    raise ApiError(400, f"'model' is required: {len(served)} {task.value} models serve here "
                        f"({', '.join(sorted(served))})", param="model")


def token_limit_error(what: str, limit: int, param: str) -> ApiError:
    return ApiError(400, f"{what} is longer than this model's limit of {limit} tokens (its longest sequence bucket, "
                         "or spec.serve.maxInputTokens); shorten it, or send truncate: true", param=param)
