"""Running the app under uvicorn: in the foreground (`npuctl serve`), or on a background thread for
a caller that has its own main loop (the agent, tests, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp


def run(app: ASGIApp, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    try:
        uvicorn.Server(server_config(app, host, port)).run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the SIGINT it handled, after shutting down cleanly


class BackgroundServer:
    """uvicorn on its own thread, on a socket bound before it starts (port 0 picks a free port)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.app = app
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._server = uvicorn.Server(server_config(app, host, self.port))
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


def server_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    """The one uvicorn configuration, for `npuctl serve`, the agent, tests and benchmarks."""
    # Connections are kept for clients that reuse them (the OpenAI client does); access logs are the
    # metrics' job; the app has no startup or shutdown hooks (lifespan off).
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                          lifespan="off")
