"""Dynamic batching: merged batches, bounded queues, timeouts and departed clients, and every answer
delivered to the request that asked for it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

import httpx
import numpy as np
import pytest

from npuctl.serve.batching import Batcher, QueueFull
from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve


def test_200_concurrent_requests_against_a_queue_of_32(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    model = minilm("minilm", serve={"queueLimit": 32, "maxBatch": 8})
    server = serve(model)
    texts = [f"request number {i} is about {['cats', 'ships', 'tax law', 'opera'][i % 4]}" for i in range(200)]
    expected = model.model.embed([t.ids for t in model.model.encoder.encode(texts)])  # type: ignore[attr-defined]

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http:
            return await asyncio.gather(
                *(http.post("/v1/embeddings", json={"model": "minilm", "input": t, "encoding_format": "float"}) for t in texts)
            )

    answers = asyncio.run(send_all())
    codes = [a.status_code for a in answers]
    assert codes.count(429) > 0 and codes.count(200) > 0
    assert set(codes) <= {200, 429}
    for text, want, answer in zip(texts, expected, answers):
        if answer.status_code == 429:
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.json()["error"]["type"] == "rate_limit_error"
        else:
            got = np.array(answer.json()["data"][0]["embedding"])
            assert got @ want > 0.9999, text


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def run(rows: list[int]) -> list[int]:
        gate.wait(5)
        sizes.append(len(rows))
        return [row * 10 for row in rows]

    batcher: Batcher[int, int] = Batcher("double", run, max_batch=16, window_seconds=0.05, queue_limit=100)

    async def main() -> list[list[int]]:
        tasks = [asyncio.ensure_future(batcher.submit([i, i + 1000])) for i in range(20)]
        await asyncio.sleep(0.1)
        gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert results == [[i * 10, (i + 1000) * 10] for i in range(20)]
    assert max(sizes) > 2 and max(sizes) <= 16
    batcher.close()
    assert batcher.join(5)


def test_a_full_queue_refuses_and_a_cancelled_request_frees_its_slot() -> None:
    gate = threading.Event()
    batcher: Batcher[int, int] = Batcher("slow", lambda rows: gate.wait(5) and rows, max_batch=1, window_seconds=0, queue_limit=2)

    async def main() -> None:
        running = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.sleep(0.05)  # the worker holds request 0; two more fill the queue
        waiting = [asyncio.ensure_future(batcher.submit([i])) for i in (1, 2)]
        await asyncio.sleep(0.01)
        assert batcher.waiting == 2
        with pytest.raises(QueueFull) as full:
            await batcher.submit([3])
        assert full.value.retry_after >= 1
        waiting[0].cancel()
        await asyncio.sleep(0.01)
        assert batcher.waiting == 1
        gate.set()
        assert await running == [0] and await waiting[1] == [2]

    asyncio.run(main())
    batcher.close()


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on() -> None:
    def run(rows: Sequence[int]) -> list[int]:
        if 13 in rows:
            raise ValueError("unlucky")
        return list(rows)

    batcher: Batcher[int, int] = Batcher("flaky", run, max_batch=1, window_seconds=0, queue_limit=10)

    async def main() -> None:
        with pytest.raises(ValueError, match="unlucky"):
            await batcher.submit([13])
        assert await batcher.submit([7]) == [7]

    asyncio.run(main())
    batcher.close()


INFER = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]},
                   {"name": "mask", "datatype": "INT64", "shape": [1, 4], "data": [1, 1, 1, 1]}]}


def blocked(model: ServedModel, gate: threading.Event, entered: threading.Event | None = None) -> ServedModel:
    """`model` with inference held until `gate` opens; `entered` is set when a request reaches it."""
    run = model.model.run  # type: ignore[attr-defined]

    def held(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if entered is not None:
            entered.set()
        gate.wait(10)
        return run(feeds)

    model.model.run = held  # type: ignore[attr-defined]
    return model


def wait_until(condition: Callable[[], bool]) -> bool:
    for _ in range(500):
        if condition():
            return True
        threading.Event().wait(0.01)
    return False


def test_a_request_past_its_timeout_gets_504(serve: Serve, tensor: Callable[..., ServedModel]) -> None:
    gate = threading.Event()
    server = serve(blocked(tensor("slow", serve={"timeoutSeconds": 0.2}), gate))
    try:
        answer = httpx.post(f"{server.url}/v2/models/slow/infer", json=INFER)
        assert answer.status_code == 504 and "timeoutSeconds" in answer.json()["error"]
    finally:
        gate.set()


def test_a_departed_client_frees_its_queue_slot(serve: Serve, tensor: Callable[..., ServedModel]) -> None:
    gate, entered = threading.Event(), threading.Event()
    model = blocked(tensor("patient", serve={"timeoutSeconds": 60}), gate, entered)
    batcher = model.batcher
    assert batcher is not None
    server = serve(model)
    url = f"{server.url}/v2/models/patient/infer"
    errors: list[Exception] = []

    def impatient() -> None:
        try:
            httpx.post(url, json=INFER, timeout=1.0)
        except httpx.ReadTimeout as exc:
            errors.append(exc)

    first = threading.Thread(target=httpx.post, args=(url,), kwargs={"json": INFER, "timeout": 60})
    second = threading.Thread(target=impatient)
    try:
        first.start()
        assert entered.wait(10)  # the first request holds the worker
        second.start()
        assert wait_until(lambda: batcher.waiting == 1)  # the second waits in the queue...
        second.join(10)
        assert errors  # ...until its client gives up
        assert wait_until(lambda: batcher.waiting == 0)
    finally:
        gate.set()
        first.join(10)
