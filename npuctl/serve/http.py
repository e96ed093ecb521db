"""Request plumbing shared by the APIs: a size-limited JSON body, and waiting for an answer under
the model's timeout while watching for the client to go away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request

from npuctl.serve.compressed import inflater
from npuctl.serve.errors import ApiError

T = TypeVar("T")

CLIENT_CLOSED = 499
"""Status recorded (never seen by anyone) for requests whose client disconnected: nginx's convention."""


async def read_body(request: Request, limit: int) -> bytes:
    """The body, inflated if sent compressed; 413 past `limit` bytes, checked while it streams in (a huge upload
    is never held whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}")
    inflate = inflater(request.headers.get("content-encoding"), limit)
    body = bytearray()
    async for chunk in request.stream():
        if inflate is not None:
            inflate.feed(chunk)  # the limit applies to the inflated bytes
            continue
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes")
    return inflate.finish() if inflate is not None else bytes(body)


async def read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON; 413 past `limit` bytes, 400 if not JSON."""
    body = await read_body(request, limit)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc


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
