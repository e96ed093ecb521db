"""Running the app under uvicorn: in the foreground (`npuctl serve`), or on a background thread for
a caller that has its own main loop (the agent, tests, benchmarks)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp

from npuctl.serve.http.connections import ConnectionLimits, HttpImplementation, ServerConfig


class PortInUse(OSError):
    """The address to listen on is taken (or not this machine's); the message says which and what to do."""


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, so a taken port is reported before anything else starts (builds take
    minutes; finding out after them is too late)."""
    # IPPROTO_TCP named, not 0: asyncio's own loop sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it a response written as headers then body waits ~40 ms for the client's delayed ACK (uvloop, which
    # `uvicorn.run` picks, sets it anyway; the agent's asyncio.run loop does not).
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    if os.name == "nt":
        # Windows' SO_REUSEADDR would let this socket share a port another server listens on.
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_EXCLUSIVEADDRUSE", socket.SO_REUSEADDR), 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            raise PortInUse(exc.errno, f"port {port} on {host} is already in use (another npuctl agent or server?): "
                            "stop it, or choose another port") from exc
        raise PortInUse(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def run(app: ASGIApp, sock: socket.socket, limits: ConnectionLimits = ConnectionLimits()) -> None:
    """Serve on a bound socket until SIGINT/SIGTERM."""
    host, port = sock.getsockname()[:2]
    try:
        uvicorn.Server(server_config(app, host, port, limits)).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the SIGINT it handled, after shutting down cleanly
    finally:
        sock.close()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for a process that runs uvicorn inside its own loop (the agent): uvloop where it is installed
    (Linux, macOS), as `uvicorn.run` picks for `npuctl serve`: it takes less CPU per request than asyncio's. None
    (asyncio's own loop) where it is not, as on Windows, which uvloop does not support."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class BackgroundServer:
    """uvicorn on its own thread, on a socket bound before it starts (port 0 picks a free port)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0,
                 limits: ConnectionLimits = ConnectionLimits(), http: HttpImplementation = "auto") -> None:
        self._socket = bind(host, port)
        self.app = app
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._server = uvicorn.Server(server_config(app, host, self.port, limits, http))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def server_config(app: ASGIApp, host: str, port: int, limits: ConnectionLimits = ConnectionLimits(),
                  http: HttpImplementation = "auto") -> uvicorn.Config:
    """The one uvicorn configuration, for `npuctl serve`, the agent, tests and benchmarks."""
    # Connections are kept for clients that reuse them (the OpenAI client does) within `limits`; access logs are
    # the metrics' job; the app has no startup or shutdown hooks (lifespan off).
    return ServerConfig(app, host=host, port=port, limits=limits, http=http, log_level="warning", access_log=False,
                        timeout_graceful_shutdown=5, lifespan="off")
