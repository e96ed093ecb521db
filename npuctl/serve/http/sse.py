"""Server-Sent Events responses that notice a client going away at once (not at the next write) and always
run their cleanup, so a generation stops and frees its slot the moment nobody reads it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import anyio
import anyio.lowlevel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from npuctl.serve.http.fastjson import dumps

DONE = "[DONE]"


class EventStream(StreamingResponse):
    """A response sending each item of `events` as `data: <json>` (strings as they are); `on_close` runs once
    when the stream ends, fails, or the client disconnects. While `more()` says the next event is already
    waiting, frames are gathered and sent in one write: a burst of tokens costs one write, not one each."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[dict[str, Any] | str], on_close: Callable[[], None],
                 more: Callable[[], bool] = lambda: False) -> None:
        # __call__ below sends the events itself; the parent only supplies status and headers.
        super().__init__(cast(Any, events), media_type=self.media_type,
                         headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._events = events
        self._on_close = on_close
        self._more = more

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                frames: list[bytes] = []
                async for event in self._events:
                    frames.append(self.frame(event))
                    if self._more():
                        continue
                    await send({"type": "http.response.body", "body": b"".join(frames), "more_body": True})
                    frames.clear()
                    # A send to a gone client returns at once, and a full queue of pieces never waits: without
                    # this, a fast generator would be drained to its end before `watch` saw the disconnect.
                    await anyio.lowlevel.checkpoint()
                await send({"type": "http.response.body", "body": b"".join(frames), "more_body": False})
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client is gone mid-write; nothing left to tell it
        finally:
            self._on_close()

    def frame(self, event: dict[str, Any] | str) -> bytes:
        return b"data: " + (event.encode() if isinstance(event, str) else dumps(event)) + b"\n\n"


class LineStream(EventStream):
    """The same, as newline-delimited JSON (Ollama's streaming): one object per line."""

    media_type = "application/x-ndjson"

    def frame(self, event: dict[str, Any] | str) -> bytes:
        return dumps(event) + b"\n"
