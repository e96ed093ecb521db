"""The biggest requests the caps allow, against a real server on 127.0.0.1 with a real model: one does not hold
the model from a small request behind it, stops running when its client leaves, and the row and token caps
hold on every API."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from npuctl.serve.http.limits import MAX_REQUEST_TOKENS, MAX_ROWS
from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve

BIG_TEXT = " ".join(f"word{i}" for i in range(200))  # ~1.6 KB: 2048 of them fit the 4 MiB body limit; each is cut


def batch_rows(url: str, model: str) -> float:
    """Rows the model's sessions have run so far (the sum of the batch-size histogram)."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f'npuctl_batch_size_sum{{model="{model}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_a_small_request_behind_the_biggest_allowed_one_is_answered_first(
        serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    # The biggest request the caps allow: MAX_ROWS inputs. It runs in maxBatch-row slices; the small request
    # arriving meanwhile goes in between two slices, not after the last. The default run sends short inputs
    # (the CPU takes a few seconds); NPUCTL_LOAD=full sends 1.6 KB inputs cut to 128 tokens (tests/README.md).
    full = os.environ.get("NPUCTL_LOAD", "").lower() == "full"
    text, tokens, batch = (BIG_TEXT, 128, 16) if full else ("a few words", 8, 64)
    server = serve(minilm("minilm", serve={"maxBatch": batch, "maxInputTokens": tokens, "truncate": True,
                                           "timeoutSeconds": 600}))
    finished: list[str] = []
    answers: dict[str, httpx.Response] = {}
    timings: dict[str, float] = {}

    def send(name: str, inputs: list[str]) -> None:
        started = time.perf_counter()
        answers[name] = httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": inputs},
                                   timeout=600)
        timings[name] = time.perf_counter() - started
        finished.append(name)

    big = threading.Thread(target=send, args=("big", [text] * MAX_ROWS))
    big.start()
    deadline = time.monotonic() + 120
    while batch_rows(server.url, "minilm") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the big request's first slice has run
    assert batch_rows(server.url, "minilm") > 0, "the big request never started"
    send("small", ["a short question"])
    big.join(600)
    assert answers["small"].status_code == 200 and answers["big"].status_code == 200, answers
    assert finished == ["small", "big"], "the small request waited for the whole big one"
    assert len(answers["big"].json()["data"]) == MAX_ROWS
    print(f"\nbig request ({MAX_ROWS} inputs of {len(text)} characters cut to {tokens} tokens, batches of {batch}): "
          f"{timings['big']:.2f} s; small request sent behind it: {timings['small'] * 1000:.0f} ms")


def test_a_big_request_stops_running_when_its_client_leaves(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    server = serve(minilm("minilm", serve={"maxBatch": 1, "maxInputTokens": 16, "truncate": True}))
    with pytest.raises(httpx.TimeoutException):
        # The client gives up after a moment; the whole request, one row at a time, takes seconds even on an
        # idle machine.
        httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": [BIG_TEXT[:200]] * MAX_ROWS},
                   timeout=httpx.Timeout(30, read=0.5))
    ran = -1.0
    for _ in range(100):  # until no batch has run for a while
        time.sleep(0.5)
        now = batch_rows(server.url, "minilm")
        if now == ran:
            break
        ran = now
    assert 0 < ran < MAX_ROWS, f"{ran} of {MAX_ROWS} rows ran after the client had gone"
    ok = httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": "still serving"}, timeout=30)
    assert ok.status_code == 200


def test_row_and_token_caps_hold_on_every_api(serve: Serve, minilm: Callable[..., ServedModel],
                                              tensor: Callable[..., ServedModel]) -> None:
    server = serve(minilm("minilm", serve={"maxInputTokens": 256, "truncate": True}), tensor("tiny"))
    too_many = httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": ["x"] * (MAX_ROWS + 1)})
    assert too_many.status_code == 400 and str(MAX_ROWS) in too_many.json()["error"]["message"]
    # MAX_ROWS inputs of ~200 tokens: under the body limit, over the token cap.
    tokens = httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": [BIG_TEXT[:1200]] * MAX_ROWS},
                        timeout=60)
    assert tokens.status_code == 400 and f"{MAX_REQUEST_TOKENS}" in tokens.json()["error"]["message"]
    texts = {"name": "text", "datatype": "BYTES", "shape": [50_000], "data": ["hi"] * 50_000}
    oip = httpx.post(f"{server.url}/v2/models/minilm/infer", json={"inputs": [texts]})
    assert oip.status_code == 400 and str(MAX_ROWS) in oip.json()["error"]
    empty = httpx.post(f"{server.url}/v2/models/minilm/infer",
                       json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [0], "data": []}]})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    rows = MAX_ROWS + 1
    tensors = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": [0.5] * (rows * 4)},
                          {"name": "mask", "datatype": "INT64", "shape": [rows, 4], "data": [1] * (rows * 4)}]}
    big = httpx.post(f"{server.url}/v2/models/tiny/infer", json=tensors)
    assert big.status_code == 400 and str(MAX_ROWS) in big.json()["error"]
