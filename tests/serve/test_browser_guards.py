"""What browsers' requests need, against a real server on 127.0.0.1: a JSON content type, this server's Host (and
Host names a client makes up are not kept) and an allowed Origin, with CORS preflights answered for it."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from npuctl.serve.http import guards
from npuctl.serve.http.guards import WebPolicy
from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve


def test_browser_requests_need_json_this_host_and_an_allowed_origin(
        serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    server = serve(minilm("minilm"), web=WebPolicy.of(cors_origins=["https://app.example"]))
    body = b'{"model": "minilm", "input": "hello"}'
    url = f"{server.url}/v1/embeddings"
    plain = httpx.post(url, content=body, headers={"content-type": "text/plain", "origin": "https://app.example"})
    assert plain.status_code == 415 and "must send the request body as JSON" in plain.json()["error"]["message"]
    rebound = httpx.post(url, json={"model": "minilm", "input": "x"}, headers={"host": f"evil.example:{server.port}"})
    assert rebound.status_code == 421 and "Host" in rebound.json()["error"]["message"]
    local = httpx.post(url, json={"model": "minilm", "input": "x"}, headers={"host": f"localhost:{server.port}"})
    assert local.status_code == 200
    evil = httpx.post(url, json={"model": "minilm", "input": "x"}, headers={"origin": "http://evil.example"})
    assert evil.status_code == 403 and "Origin" in evil.json()["error"]["message"]
    refused = httpx.options(url, headers={"origin": "http://evil.example", "access-control-request-method": "POST"})
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
    preflight = httpx.options(url, headers={"origin": "https://app.example", "access-control-request-method": "POST",
                                            "access-control-request-headers": "content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "content-type" in preflight.headers["access-control-allow-headers"].lower()
    allowed = httpx.post(url, json={"model": "minilm", "input": "x"}, headers={"origin": "https://app.example"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    same = httpx.post(url, json={"model": "minilm", "input": "x"}, headers={"origin": server.url})
    assert same.status_code == 200, "a page the server itself serves is not foreign"


def test_host_names_a_client_makes_up_are_refused_and_not_kept(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    # The server keeps the addresses it parses from Host headers; a client choosing a new huge Host for every
    # request must not make it keep them (300 x 16 KB would be ~5 MB), and what it keeps stays bounded.
    server = serve(minilm("minilm"))
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/v1/models").status_code == 200
        kept = guards._parse_ip.cache_info().currsize
        for i in range(300):
            answer = http.get("/v1/models", headers={"host": f"{i}{'1' * 16_000}:{server.port}"})
            assert answer.status_code == 421 and "Host" in answer.json()["error"]["message"]
        assert guards._parse_ip.cache_info().currsize == kept
        addresses = [http.get("/v1/models", headers={"host": f"10.0.{i // 256}.{i % 256}"}) for i in range(300)]
    assert all(answer.status_code == 421 for answer in addresses)
    assert guards._parse_ip.cache_info().currsize <= 256
