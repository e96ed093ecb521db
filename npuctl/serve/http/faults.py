"""The server's own failures (500s) in its log, at a rate no client controls: the first failure of a kind (the
exception's type and the line that raised it) in an interval is logged with the innermost frames of its
traceback; the others in that interval are only counted, and the count goes out with the next report of the
kind. A client repeating a request that fails makes the log grow by one report per kind and interval, not by
a traceback (a RecursionError's was 183 KB) per request."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from npuctl.serve.http.errors import ApiError, error_response

REPORT_INTERVAL_SECONDS = 60.0
TRACEBACK_FRAMES = 12
"""Innermost frames shown per exception: where it went wrong (a recursion's repeating frames say nothing more)."""
MAX_REPORT_CHARS = 8_000
"""Longest report: an exception's message may quote a whole request."""
MAX_KINDS = 256
"""Kinds remembered; past it the one reported longest ago is forgotten (kinds are places in npuctl's code, so a
client cannot make many)."""

Kind = tuple[str, str, int]
"""An exception's type, and the file and line that raised it."""


@dataclass
class _Seen:
    reported: float
    repeats: int = 0


class FaultLog:
    def __init__(self, logger: logging.Logger, interval: float = REPORT_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[Kind, _Seen] = {}

    def report(self, exc: BaseException, what: str) -> None:
        """Log that `what` (e.g. `POST /v1/chat/completions`) failed with `exc`, unless its kind was reported
        less than an interval ago (then it is counted)."""
        kind = _kind(exc)
        now = self._clock()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen.reported < self._interval:
                seen.repeats += 1
                return
            if seen is None and len(self._seen) >= MAX_KINDS:
                del self._seen[min(self._seen, key=lambda k: self._seen[k].reported)]
            self._seen[kind] = _Seen(now)
        repeats = seen.repeats if seen is not None else 0
        also = (f" (and {repeats} more failures like it in the {self._interval:g} s before, not logged one by one)"
                if repeats else "")
        text = "".join(traceback.format_exception(exc, limit=-TRACEBACK_FRAMES))
        if len(text) > MAX_REPORT_CHARS:
            text = f"{text[:MAX_REPORT_CHARS // 2]}\n[... {len(text) - MAX_REPORT_CHARS:,} characters ...]\n" \
                   f"{text[-MAX_REPORT_CHARS // 2:]}"
        self._logger.error("%s failed%s\n%s", what, also, text.rstrip())


SERVER_FAULTS = FaultLog(logging.getLogger("npuctl.serve"))
"""The serving process's one report of its faults (the API handlers' and the app's)."""


class Faults:
    """ASGI middleware, outermost: an exception nothing else handled is reported to a FaultLog and answered 500
    as JSON (when the answer has not begun), instead of being re-raised for the server to log each time."""

    def __init__(self, app: ASGIApp, faults: FaultLog = SERVER_FAULTS) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        begun = False

        async def sending(message: Message) -> None:
            nonlocal begun
            begun = begun or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            self.faults.report(exc, f"{scope.get('method', '')} {scope.get('path', '')}")
            if not begun:
                await error_response(ApiError(500, "internal server error"), scope.get("path", ""))(scope, receive, send)


def _kind(exc: BaseException) -> Kind:
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is None:
        return type(exc).__qualname__, "", 0
    return type(exc).__qualname__, frame.tb_frame.f_code.co_filename, frame.tb_lineno
