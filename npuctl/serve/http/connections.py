"""Limits on connections that uvicorn does not set: a deadline for each request's headers, and a cap on open
connections. uvicorn closes a kept-alive connection that stays idle after a response (`timeout_keep_alive`), but
a connection that never sends a request, or sends its headers a byte at a time, is held forever by both its
protocols (h11 and httptools), and its `limit_concurrency` answers 503 only once a request's headers are in:
idle sockets still pile up (the probe of issue 26 held 500 for 60 s)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import uvicorn
from uvicorn.server import ServerState

if TYPE_CHECKING:
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HttpImplementation = Literal["auto", "h11", "httptools"]
REFUSED_LINGER_SECONDS = 1.0
"""How long a refused connection is kept half-closed, reading and dropping what its client sends, so the client
reads the 503 instead of a reset (closing a socket with unread bytes sends RST)."""


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client connection may hold. Defaults: a browser or SDK never comes near them; a client that opens
    sockets and sends nothing loses them in seconds."""

    header_timeout_seconds: float = 10.0
    """From a connection's opening, or from the first byte of a later request on it, until that request's
    headers are complete. Past it: 408 (if part of a request came) and the connection is closed."""
    keep_alive_seconds: int = 5
    """An idle connection between requests is closed after this long (uvicorn's `timeout_keep_alive`, whole
    seconds)."""
    max_connections: int = 512
    """Open connections at most; one more is answered 503 and closed at once. Above the 200 SSE streams a busy
    PC may hold."""


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration with the connection limits its protocols then enforce."""

    def __init__(self, app: Any, *, host: str, port: int, limits: ConnectionLimits,
                 http: HttpImplementation = "auto", **options: Any) -> None:
        super().__init__(app, host=host, port=port, http=GuardedConnection,
                         timeout_keep_alive=limits.keep_alive_seconds, **options)
        self.limits = limits
        self.implementation = http


class GuardedConnection(asyncio.Protocol):
    """uvicorn's HTTP protocol for one connection, wrapped: the header deadline and the connection cap around it,
    everything else passed through. uvicorn builds one per accepted socket with these arguments."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.limits = config.limits if isinstance(config, ServerConfig) else ConnectionLimits()
        implementation = config.implementation if isinstance(config, ServerConfig) else "auto"
        self.inner = _protocol(implementation)(config=config, server_state=server_state, app_state=app_state,
                                               _loop=_loop)
        self.connections = server_state.connections
        self.loop = _loop or asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.refused = False
        self.partial = False
        """Bytes of a request came, its headers are not complete."""
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        self.transport = transport
        if len(self.connections) >= self.limits.max_connections:
            self._refuse(transport)
            return
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.inner.data_received(data)
        if not self._awaiting_headers():
            self.partial = False
            self._disarm()
        elif data:
            self.partial = True
            if self.deadline is None:  # the first byte of a request after a response: its headers' clock starts
                self._arm()

    def eof_received(self) -> bool | None:
        return None if self.refused else self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self.refused:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()

    def _awaiting_headers(self) -> bool:
        """No request is being read or answered: the next one has not sent its whole headers yet."""
        cycle = self.inner.cycle
        return cycle is None or cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(self.limits.header_timeout_seconds, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        self.deadline = None
        transport = self.transport
        if transport is None or transport.is_closing() or not self._awaiting_headers():
            return
        if self.partial:
            transport.write(_answer(408, f"the request's headers did not arrive within "
                                         f"{self.limits.header_timeout_seconds:g} s"))
        transport.close()

    def _refuse(self, transport: asyncio.Transport) -> None:
        self.refused = True
        transport.write(_answer(503, f"the server has {len(self.connections)} connections open, its limit; "
                                     "retry later", {"Retry-After": "1"}))
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(REFUSED_LINGER_SECONDS, transport.close)
        else:
            transport.close()


def _protocol(implementation: HttpImplementation) -> type[H11Protocol | HttpToolsProtocol]:
    """uvicorn's protocol class: httptools where it is installed (as uvicorn's "auto"), else h11."""
    if implementation != "h11":
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:
            if implementation == "httptools":
                raise
        else:
            return HttpToolsProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol


def _answer(status: int, message: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, with the JSON error body of the Open Inference
    Protocol and Ollama (the request's path, which would pick the API's shape, is not known here)."""
    body = json.dumps({"error": message}).encode()
    phrase = {408: "Request Timeout", 503: "Service Unavailable"}[status]
    lines = [f"HTTP/1.1 {status} {phrase}", "Content-Type: application/json", f"Content-Length: {len(body)}",
             "Connection: close", *(f"{name}: {value}" for name, value in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
