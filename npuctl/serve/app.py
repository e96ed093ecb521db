"""The HTTP application: every API on one Starlette app, serving whatever the registry holds."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npuctl.serve.endpoints import ServeContext
from npuctl.serve.http.body import BODY_TIMEOUT_SECONDS, BodyDeadline
from npuctl.serve.http.errors import ApiError, error_response
from npuctl.serve.http.faults import Faults
from npuctl.serve.http.guards import WebGuard, WebPolicy
from npuctl.serve.oip.routes import oip_routes
from npuctl.serve.ollama.routes import ollama_routes
from npuctl.serve.openai.chat import chat_routes
from npuctl.serve.openai.embeddings import openai_routes
from npuctl.serve.openai.responses import responses_routes
from npuctl.serve.openapi.document import openapi
from npuctl.serve.registry import ModelRegistry
from npuctl.serve.scoring.classify import classify_routes
from npuctl.serve.scoring.rerank import rerank_routes
from npuctl.serve.tei.routes import tei_routes

DEFAULT_MAX_BODY_BYTES = 4 << 20


def create_app(
    registry: ModelRegistry,
    *,
    routes: Sequence[BaseRoute] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
    web: WebPolicy = WebPolicy(),
    details: Callable[[Request], bool] | None = None,
    control: bool = False,
) -> Starlette:
    """The server app for `registry`'s models: OpenAI /v1 (embeddings, chat and text completions), Open
    Inference Protocol /v2, Ollama's /api, /metrics, their OpenAPI description at /openapi.json,
    plus `routes` (the agent's control API) on the same port. Models added to, swapped in or removed
    from the registry later are served from the next request on. `web` says which Host names and browser
    origins it answers besides its own address. `details` decides who may read status messages in health and
    model status (they name files and build errors; an agent beyond loopback shows them only with its token).
    `control`: `routes` hold the agent's control API, which /openapi.json then describes too."""
    ctx = ServeContext(registry, max_body_bytes, details)

    async def metrics(request: Request) -> Response:
        body, kind = registry.metrics.render(request.headers.get("accept", ""))
        return Response(body, headers={"content-type": kind})

    description = openapi(control=control)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(description)

    app = Starlette(
        # The caller's routes first: the dashboard's `/` for browsers goes before Ollama's `/` for programs.
        routes=[*routes, *openai_routes(ctx), *chat_routes(ctx), *responses_routes(ctx), *rerank_routes(ctx), *classify_routes(ctx),
                *oip_routes(ctx), *ollama_routes(ctx), *tei_routes(ctx),
                Route("/metrics", metrics, methods=["GET"]),
                Route("/openapi.json", openapi_json, methods=["GET"])],
        exception_handlers=ERROR_HANDLERS,
        middleware=[Middleware(Faults), Middleware(WebGuard, policy=web),
                    Middleware(BodyDeadline, seconds=body_timeout_seconds)],
    )
    app.state.registry = registry
    return app


async def http_error(request: Request, exc: Exception) -> Response:
    # Routing errors (unknown path, wrong method) in the same JSON shapes as the APIs' own errors.
    assert isinstance(exc, HTTPException)
    return error_response(ApiError(exc.status_code, exc.detail, headers=exc.headers), request.url.path)


async def server_error(request: Request, exc: Exception) -> Response:
    """A fault outside the APIs' own handling, in an app without Faults (the server logs the traceback): JSON,
    never plain text."""
    return error_response(ApiError(500, "internal server error"), request.url.path)


ERROR_HANDLERS = {HTTPException: http_error, Exception: server_error}
"""Exception handlers for any app of ours (the fleet dashboard's too): routing errors and faults as JSON."""
