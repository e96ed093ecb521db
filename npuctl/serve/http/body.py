"""Request plumbing shared by the APIs: a size-limited JSON body that must arrive in time, and waiting
for an answer under the model's timeout while watching for the client to go away."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from npuctl.serve.http.compressed import inflater
from npuctl.serve.http.errors import ApiError
from npuctl.serve.http.guards import from_another_site

T = TypeVar("T")

CLIENT_CLOSED = 499
"""Status recorded (never seen by anyone) for requests whose client disconnected: nginx's convention."""
BODY_TIMEOUT_SECONDS = 30.0
"""Time from the request's start until its whole body has arrived."""
JSON_TYPES = re.compile(r"^application/([\w.+-]+\+)?json$")
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


class BodyTimeout(Exception):
    """The request body did not arrive in time (a slow client, or a Content-Length larger than what was sent)."""


class BodyDeadline:
    """ASGI middleware: a request's body must have arrived `seconds` after the request started, else reading
    it raises BodyTimeout (answered 408). Waiting for a disconnect after the body is untimed."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        complete = False

        async def timed() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {self.seconds:g} s") from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, inflated if sent compressed; 413 past `limit` bytes, checked while it streams in (a huge upload
    is never held whole); 408 if it does not arrive in time."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}")
    inflate = inflater(request.headers.get("content-encoding"), limit)
    body = bytearray()
    sent = bytearray()
    try:
        async for chunk in request.stream():
            if inflate is not None:
                sent += chunk
                inflate.feed(chunk)  # the limit applies to the inflated bytes
                continue
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"request body is over the limit of {limit} bytes")
    except BodyTimeout as exc:
        raise ApiError(408, f"{exc}; send the whole body at once (and a Content-Length that matches it)",
                       headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise ApiError(CLIENT_CLOSED, "client closed the request while sending its body") from None
    # Kept as Starlette keeps a body it read (Request.body()), so that a request answered again (its model was
    # loaded on demand meanwhile) reads it again.
    if inflate is not None:
        setattr(request, "_body", bytes(sent))
        return inflate.finish()
    data = bytes(body)
    setattr(request, "_body", data)
    return data


async def read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON; 415 when a browser sent it for another site without saying it is JSON (see
    `check_json_type`), 413 past `limit` bytes, 400 if not JSON (see `parse_json`)."""
    check_json_type(request)
    return parse_json(await read_body(request, limit))


def check_json_type(request: Request) -> None:
    """415 when a browser sent the body for a page of another site and did not say it is JSON.

    A page can make a browser POST text/plain or a form to any site without a CORS preflight; only a JSON
    content type makes the browser ask first. So from another site's page (which the Origin check let through:
    CORS allows it) the body must say it is JSON, and the browser will have preflighted it: the page gets no
    more than CORS grants. Everyone else (curl's `-d`, which says it sends a form; Ollama's and Triton's
    clients, which say nothing) is no page, and their body is taken for the JSON it is; if it is not JSON, that
    is a 400."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not JSON_TYPES.match(kind) and from_another_site(request.headers):
        raise ApiError(415, f"a page of another site must send the request body as JSON, with Content-Type: "
                       f"application/json (got {kind or 'none'!r})")


def parse_json(body: bytes, what: str = "request body") -> Any:
    """`body` as JSON; 400 if it is not JSON, is nested too deeply, or a string holds a lone surrogate (not
    Unicode text: no tokenizer or encoder takes it)."""
    try:
        value = json.loads(body)
        where = _lone_surrogate(value, "") if _ESCAPED_SURROGATE.search(body) else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"{what} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise ApiError(400, f"{what} is nested too deeply") from None
    if where is not None:
        raise ApiError(400, f"{where or 'the body'} holds a lone UTF-16 surrogate (like \\ud800): "
                       "strings must be Unicode text", param=where or None)
    return value


async def answered(request: Request, work: Awaitable[T], timeout: float) -> T:
    """`work`'s result; 504 after `timeout` seconds; if the client disconnects first, the work is
    cancelled (freeing its queue slot) and 499 is recorded."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    if gone in done:
        raise ApiError(CLIENT_CLOSED, "client closed the request")
    raise ApiError(504, f"no answer within {timeout:g} s (the model's spec.serve.timeoutSeconds)")


async def _disconnect(request: Request) -> None:
    # The body is already read, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _lone_surrogate(value: Any, where: str) -> str | None:
    """The place (`input[3]`) of the first string, or key, that is not encodable Unicode; None if all are."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, list):
        items = ((f"{where}[{i}]", item) for i, item in enumerate(value))
    elif isinstance(value, dict):
        for key in value:
            if _lone_surrogate(key, where) is not None:
                return where
        items = ((f"{where}.{key}" if where else key, item) for key, item in value.items())
    else:
        return None
    return next((found for place, item in items if (found := _lone_surrogate(item, place)) is not None), None)
