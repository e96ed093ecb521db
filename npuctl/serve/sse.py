"""Server-Sent Events responses that notice a client going away at once (not at the next write) and always
run their cleanup, so a generation stops and frees its slot the moment nobody reads it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import anyio
import anyio.lowlevel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from npuctl.serve.fastjson import dumps

DONE = "[DONE]"


Event = dict[str, Any] | str


class EventStream(StreamingResponse):
    """A response sending each event of `events` as `data: <json>` (strings as they are), each group of events in
    one write; `on_close` runs once when the stream ends, fails, or the client disconnects."""

    def __init__(self, events: AsyncIterator[list[Event]], on_close: Callable[[], None]) -> None:
        # __call__ below sends the events itself; the parent only supplies status and headers.
        super().__init__(cast(Any, events), media_type="text/event-stream",
                         headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._events = events
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                async for events in self._events:
                    body = b"".join(b"data: " + (e.encode() if isinstance(e, str) else dumps(e)) + b"\n\n" for e in events)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    # A send to a gone client returns at once, and a full queue of pieces never waits: without
                    # this, a fast generator would be drained to its end before `watch` saw the disconnect.
                    await anyio.lowlevel.checkpoint()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client is gone mid-write; nothing left to tell it
        finally:
            self._on_close()
