"""What every API handler shares: the registry, request limits, model lookup with a lease, and the
wrapper that answers errors as JSON and records request metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from npuctl.schema.models import Api
from npuctl.serve.batching import BatcherClosed, QueueFull
from npuctl.serve.http import validation
from npuctl.serve.http.body import read_json
from npuctl.serve.http.errors import ApiError, error_response
from npuctl.serve.http.faults import SERVER_FAULTS
from npuctl.serve.models import ServedModel
from npuctl.serve.registry import ModelRegistry, UnknownModel
from npuctl.serve.standby import NotResident, Standby

Handler = Callable[[Request], Awaitable[Response]]
M = TypeVar("M", bound=ServedModel)
B = TypeVar("B", bound=validation.Body)



HIDDEN = "(details need the agent's token)"
"""What a request that may not read status messages gets in their place."""


@dataclass(frozen=True)
class ServeContext:
    registry: ModelRegistry
    max_body_bytes: int
    details: Callable[[Request], bool] | None = None
    """Whether a request may see status messages (they name files and build errors); None: everyone may."""

    async def body(self, request: Request, kind: type[B]) -> B:
        """The request's body read (within max_body_bytes) and parsed as `kind` (see `parse`)."""
        return self.parse(request, kind, await read_json(request, self.max_body_bytes))

    def parse(self, request: Request, kind: type[B], body: Any) -> B:
        """`body` as `kind`; a 400 naming the field that is wrong, counted in the metrics for the model the body
        names (a client's mistake with a model is that model's traffic)."""
        try:
            return validation.parse(kind, body)
        except ApiError:
            name = body.get("model") if isinstance(body, dict) else None
            named = next((m.name for m in self.registry.models() if isinstance(name, str) and name in m.names), None)
            request.state.model = named or request.state.model
            raise

    def message(self, request: Request, message: str) -> str:
        """The one redaction rule of every route that shows status (readiness, model status, the repository index,
        a not-ready model's 503): a status's reason, a CamelCase word, is for everyone; its message, the free text
        of a build or load that names files, folders, digests and server paths, only for a request that may see
        details (on an agent beyond loopback: one with the token)."""
        return message if self.details is None or self.details(request) else HIDDEN

    def endpoint(self, api: Api, handler: Handler, *, counted: bool = True) -> Handler:
        """`handler` with ApiErrors (and server faults) answered as JSON, and every request counted (not health
        probes, `counted` false: they are no inference traffic)."""

        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            request.state.model = ""
            error_type = None
            try:
                response = await _admitted(handler, request)
            except ApiError as exc:
                response, error_type = error_response(exc, request.url.path), exc.openai_type
            except (QueueFull, BatcherClosed) as exc:
                api_error = _overload(exc)
                response, error_type = error_response(api_error, request.url.path), api_error.openai_type
            except Exception as exc:
                SERVER_FAULTS.report(exc, f"{request.method} {request.url.path}")
                response = error_response(ApiError(500, "internal server error"), request.url.path)
                error_type = "server_error"
            if not counted:
                return response
            seconds = time.perf_counter() - started
            self.registry.metrics.observe_request(request.state.model, api, response.status_code, seconds, error_type)
            return response

        return wrapped

    @contextmanager
    def using(self, request: Request, name: object, api: Api, kind: type[M]) -> Iterator[M]:
        """The ready model `name` leased for this request; 404 if unknown, not served over `api` or not of
        `kind`, 503 if declared but not ready."""
        if not isinstance(name, str) or not name:
            raise ApiError(400, "'model' must be a non-empty string", param="model")
        try:
            model = self.registry.acquire(name)
        except UnknownModel:
            raise ApiError(404, f"the model {name!r} does not exist", param="model", code="model_not_found") from None
        try:
            request.state.model = model.name
            if not model.speaks(api):
                raise ApiError(404, f"the model {name!r} is not served over the {api.value} API", param="model")
            if isinstance(model, Standby):
                raise NotResident(model)
            if not model.status.ready:
                status = model.status
                raise ApiError(503, f"the model {name!r} is not ready ({status.reason}): "
                               f"{self.message(request, status.message)}")
            if not isinstance(model, kind):
                # As OpenAI answers a chat request to an embedding model: no such model for this endpoint.
                raise ApiError(404, f"the model {name!r} does not serve this kind of request", param="model",
                               code="model_not_found")
            yield model
        finally:
            model.release()


ADMISSIONS = 3
"""How often one request may find its model standing by: it loads, and could be evicted again before the request
reaches it only under a budget thrashing between models."""


async def _admitted(handler: Handler, request: Request) -> Response:
    """Answer `request`; when its model stands by (onDemand, not loaded), have it loaded and answer again."""
    for _ in range(ADMISSIONS - 1):
        try:
            return await handler(request)
        except NotResident as exc:
            await exc.model.admit()
    return await handler(request)


def _overload(exc: QueueFull | BatcherClosed) -> ApiError:
    if isinstance(exc, QueueFull):
        return ApiError(429, f"{exc}; retry later", code="queue_full", headers={"Retry-After": str(exc.retry_after)})
    return ApiError(503, str(exc), headers={"Retry-After": "1"})
