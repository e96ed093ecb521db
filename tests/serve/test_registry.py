"""Models added, swapped and removed while the server runs: a swap fails no request in flight."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest

from npuctl.serve.app import create_app
from npuctl.serve.http.server import BackgroundServer
from npuctl.serve.models import ServedModel
from npuctl.serve.registry import ModelRegistry
from tests.serve.conftest import Serve, deployment
from tests.serve.test_oip import tensors


def test_swapping_under_load_fails_no_request(tensor: Callable[..., ServedModel]) -> None:
    registry = ModelRegistry()
    first = tensor("tiny", serve={"queueLimit": 1000})
    registry.put(first)
    codes: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def client(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                answer = http.post("/v2/models/tiny/infer", json=tensors())
                codes.append(answer.status_code)
                versions.add(answer.json().get("model_version", ""))

    with BackgroundServer(create_app(registry)) as server:
        clients = [threading.Thread(target=client, args=(server.url,)) for _ in range(4)]
        for thread in clients:
            thread.start()
        replaced = []
        for queue_limit in range(1001, 1006):
            before = len(codes)
            while len(codes) < before + 10:
                threading.Event().wait(0.005)
            replaced.append(registry.put(tensor("tiny", serve={"queueLimit": queue_limit})))
        stop.set()
        for thread in clients:
            thread.join(30)
    assert codes and set(codes) == {200}
    assert len(versions) >= 2
    assert replaced[0] is first
    assert all(old is not None and old.closed.wait(10) for old in replaced)


def test_a_reconfigured_model_keeps_its_sessions(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    old = minilm("minilm")
    server = serve(old)
    registry: ModelRegistry = server_registry(server)
    new = old.reconfigured(deployment("minilm", serve={"name": "renamed", "maxInputTokens": 4}))
    registry.put(new)
    assert old.closed.wait(10)
    answer = httpx.post(f"{server.url}/v1/embeddings", json={"model": "renamed", "input": "a long sentence of words"})
    assert answer.status_code == 200 and answer.json()["usage"]["prompt_tokens"] == 4
    assert httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": "a"}).status_code == 404


def test_remove_and_name_clashes(serve: Serve, tensor: Callable[..., ServedModel]) -> None:
    model = tensor("tiny", serve={"aliases": ["small"]})
    server = serve(model)
    registry = server_registry(server)
    with pytest.raises(ValueError, match="'small' is already served by deployment 'tiny'"):
        registry.put(tensor("other", serve={"name": "small"}))
    assert httpx.get(f"{server.url}/v2/models/small/ready").status_code == 200
    assert registry.remove("tiny") is model and model.closed.wait(10)
    assert httpx.get(f"{server.url}/v2/models/small/ready").status_code == 404
    assert httpx.get(f"{server.url}/v2/health/ready").json()["ready"] is True


def server_registry(server: BackgroundServer) -> ModelRegistry:
    registry = server.app.state.registry  # type: ignore[union-attr]
    assert isinstance(registry, ModelRegistry)
    return registry
