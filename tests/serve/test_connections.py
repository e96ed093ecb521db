"""Connections that hold the server without finishing a request, on real uvicorn servers
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
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from npuctl.serve.app import create_app
from npuctl.serve.http.connections import ConnectionLimits, HttpImplementation
from npuctl.serve.http.server import BackgroundServer
from npuctl.serve.registry import ModelRegistry
from tests.fuzzing import FULL, HTTP_CASES, fuzz_settings

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


REQUESTS = [GET, b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 30\r\n\r\n{\"model\": \"x\", \"input\": \"hi\"}",
            b"PUT /agent/v1/manifests/x.yaml HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer x\r\n\r\n"]


@st.composite
def stalled(draw: st.DrawFn) -> tuple[bytes, int]:
    """What one connection sends before it stops: a request cut anywhere (nothing, part of its headers, all of
    them), a header that never ends, or bytes that are no HTTP; and how many 0.1 s pieces it trickles them in."""
    request = draw(st.sampled_from(REQUESTS))
    sent = draw(st.one_of(st.builds(lambda cut: request[:cut], st.integers(0, len(request))),
                          st.builds(lambda n: request[: request.index(b"\r\n") + 2] + b"X-Long: " + b"a" * n,
                                    st.integers(0, 4000)),
                          st.binary(max_size=200)))
    return sent, draw(st.integers(1, 4))


@fuzz_settings(HTTP_CASES * 8 if FULL else 8)
@given(connections=st.lists(stalled(), min_size=1, max_size=40))
def test_stalled_connections_are_all_closed_never_5xx(connections: list[tuple[bytes, int]]) -> None:
    """A batch of connections that each stop somewhere in a request, sent together: every one is closed by the
    server within the wait, with nothing, a 4xx or (a request that was whole) its answer; never a 5xx."""
    server = FUZZED[0]
    sockets = [connect(server) for _ in connections]
    try:
        for piece in range(4):
            for sock, (sent, pieces) in zip(sockets, connections, strict=True):
                size = -(-len(sent) // pieces)
                if piece < pieces and sent[piece * size:(piece + 1) * size]:
                    try:
                        sock.sendall(sent[piece * size:(piece + 1) * size])
                    except (BrokenPipeError, ConnectionResetError):
                        pass
            time.sleep(0.1)
        for sock in sockets:
            try:
                answer = until_closed(sock)
            except ConnectionResetError:
                continue  # closed with bytes of ours unread: a reset, still closed
            statuses = [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
            assert all(status < 500 for status in statuses), answer[:300]
    finally:
        for sock in sockets:
            sock.close()
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200


FUZZED: list[BackgroundServer] = []


@pytest.fixture(scope="module", autouse=True)
def fuzzed_server() -> Iterator[None]:
    """One server (the default HTTP protocol) for the hypothesis property, which cannot take a function fixture.
    A body cut short is the body deadline's (1 s here): the headers were whole."""
    app = create_app(ModelRegistry(), routes=[Route("/slow", slow, methods=["GET"])], body_timeout_seconds=1)
    with BackgroundServer(app, limits=ConnectionLimits(0.5, 1, 64)) as running:
        FUZZED.append(running)
        yield
        FUZZED.clear()
