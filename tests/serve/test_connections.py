"""Connections that hold the server without finishing a request (issue 26, finding 11), on real uvicorn servers
on 127.0.0.1 built by the project's server code, with each of uvicorn's HTTP protocols (h11 is what a machine
without httptools wheels gets): silent sockets, headers sent a byte at a time, a kept-alive connection that
trickles its next request, idle ones after a response, and more connections than the cap."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from click.testing import CliRunner
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from npuctl.serve.app import create_app
from npuctl.serve.http.connections import ConnectionLimits, HttpImplementation
from npuctl.serve.http.server import BackgroundServer
from npuctl.serve.registry import ModelRegistry

IMPLEMENTATIONS: list[HttpImplementation] = ["h11", "httptools"]
LIMITS = ConnectionLimits(header_timeout_seconds=1.0, keep_alive_seconds=1, max_connections=16)
WAIT = 10.0
"""How long a test socket waits for the server to answer or close: far past every limit above."""
GET = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def slow(request: Request) -> Response:
    await asyncio.sleep(3 * LIMITS.header_timeout_seconds)
    return JSONResponse({"slow": True})


@pytest.fixture(params=IMPLEMENTATIONS, scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[BackgroundServer]:
    if request.param == "httptools":
        pytest.importorskip("httptools")
    app = create_app(ModelRegistry(), routes=[Route("/slow", slow, methods=["GET"])])
    with BackgroundServer(app, limits=LIMITS, http=request.param) as running:
        yield running


def connect(server: BackgroundServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open after WAIT s."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_connections_that_send_nothing_are_closed(server: BackgroundServer) -> None:
    sockets = [connect(server) for _ in range(LIMITS.max_connections - 2)]
    try:
        answers = [until_closed(sock) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    assert answers == [b""] * len(sockets)  # closed, and nothing said to a client that asked nothing
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200


def test_headers_sent_a_byte_at_a_time_get_408_and_the_connection_closes(server: BackgroundServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sent = 0
        try:
            for _ in range(int(WAIT / 0.1)):  # one header byte every 0.1 s, never the blank line that ends them
                sock.sendall(b"X")
                sent += 1
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert b"did not arrive within 1 s" in json.loads(body)["error"].encode()
    assert sent < WAIT / 0.1  # cut off while still trickling


def test_a_kept_alive_connection_that_trickles_its_next_request_is_closed(server: BackgroundServer) -> None:
    # uvicorn's keep-alive timer stops at the first byte of the next request; the header deadline takes over.
    with connect(server) as sock:
        sock.sendall(GET)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        try:
            for byte in GET[:-4]:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert until_closed(sock).startswith(b"HTTP/1.1 408")


def test_an_idle_kept_alive_connection_is_closed(server: BackgroundServer) -> None:
    with connect(server) as sock:
        sock.sendall(GET)
        answer = until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1, answer


def test_requests_that_take_longer_than_the_header_timeout_are_not_cut(server: BackgroundServer) -> None:
    with httpx.Client(base_url=server.url, timeout=WAIT) as client:
        assert client.get("/slow").json() == {"slow": True}  # 3 header timeouts long
        for _ in range(5):  # and the connection is reused while it is busy
            assert client.get("/v2/health/live").status_code == 200


def test_one_connection_past_the_cap_gets_503_json_and_the_server_still_serves(server: BackgroundServer) -> None:
    held = [connect(server) for _ in range(LIMITS.max_connections)]
    try:
        time.sleep(0.2)  # let the server accept them all before the extra one
        with connect(server) as extra:
            try:
                extra.sendall(GET)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = until_closed(extra)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head, answer
        assert "connections open, its limit" in json.loads(body)["error"]
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + WAIT
    while (status := httpx.get(f"{server.url}/v2/health/live").status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)  # the server sees the held ones go
    assert status == 200


def test_the_serve_commands_help_gives_the_defaults_of_the_limits() -> None:
    from npuctl.cli.agents import serve

    text = " ".join(CliRunner().invoke(serve, ["--help"]).output.split())
    defaults = ConnectionLimits()
    assert f"(default {defaults.header_timeout_seconds:g})" in text
    assert f"(default {defaults.keep_alive_seconds})" in text
    assert f"(default {defaults.max_connections})" in text
