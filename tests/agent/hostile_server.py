"""A web server on 127.0.0.1 that misbehaves on purpose, one behaviour per path: a body larger than it says
or without end, one byte at a time, redirects anywhere. Counts what it sent, so a test can tell that the client
stopped reading."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Answer = Callable[[BaseHTTPRequestHandler, "HostileServer"], None]

_CHUNK = b"x" * (1 << 16)


class HostileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Answer] = {}
        self.sent = 0
        """Body bytes written so far, over every request."""
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with server._lock:
                    server.requests.append(self.path)
                answer = server.routes.get(self.path.split("?", 1)[0])
                if answer is None:
                    self.send_error(404)
                    return
                try:
                    answer(self, server)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up: what a client that stops reading does

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, n: int) -> None:
        with self._lock:
            self.sent += n

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


def static(body: bytes, etag: str | None = None) -> Answer:
    def answer(handler: BaseHTTPRequestHandler, server: HostileServer) -> None:
        if etag and handler.headers.get("If-None-Match") == etag:
            handler.send_response(304)
            handler.send_header("ETag", etag)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        if etag:
            handler.send_header("ETag", etag)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        server.count(len(body))
    return answer


def endless(total: int | None = None, declared: int | None = None) -> Answer:
    """A body of `total` bytes (None: without end, until the client hangs up), with no Content-Length (the
    connection's end ends it) or a `declared` one."""
    def answer(handler: BaseHTTPRequestHandler, server: HostileServer) -> None:
        handler.send_response(200)
        if declared is not None:
            handler.send_header("Content-Length", str(declared))
        handler.send_header("Connection", "close")
        handler.end_headers()
        left = total
        while (left is None or left > 0) and not server.stopping.is_set():
            chunk = _CHUNK if left is None else _CHUNK[:left]
            handler.wfile.write(chunk)
            server.count(len(chunk))
            if left is not None:
                left -= len(chunk)
        handler.close_connection = True
    return answer


def trickle(seconds_per_byte: float, body: bytes = b"{" * 4096) -> Answer:
    """A valid-looking start, one byte at a time: each read gets something, so no read timeout fires."""
    def answer(handler: BaseHTTPRequestHandler, server: HostileServer) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for byte in body:
            if server.stopping.wait(seconds_per_byte):
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            server.count(1)
    return answer


def redirect(location: str, status: int = 302) -> Answer:
    def answer(handler: BaseHTTPRequestHandler, server: HostileServer) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


@dataclass
class RssGuard:
    """Samples a process's resident memory (from /proc, Linux) and a health URL while a hostile poll runs."""

    pid: int
    peak_kib: int = 0

    def sample(self) -> int:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    self.peak_kib = max(self.peak_kib, rss)
                    return rss
        raise AssertionError(f"no VmRSS in /proc/{self.pid}/status")


def wait_until(condition: Callable[[], bool], timeout: float, every: Callable[[], None] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if every is not None:
            every()
        if condition():
            return True
        time.sleep(0.2)
    return False
