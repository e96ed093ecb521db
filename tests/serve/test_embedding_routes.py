"""The one embedding use case behind every embedding route (npuctl/serve/embedding.py): OpenAI's, Ollama's two and
TEI's give the same vector for the same text, and each hands a large input's tokenizing to a thread
(`limits.tokenized`), so a request of megabytes does not hold up the event loop (Ollama's routes and TEI's did)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from npuctl.serve.http import limits
from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve

LARGE = "word " * 500
"""2,500 characters: past limits.INLINE_INPUT, so tokenized in a thread."""
ROUTES = {
    "/v1/embeddings": ({"model": "minilm", "input": LARGE}, lambda body: body["data"][0]["embedding"]),
    "/api/embed": ({"model": "minilm", "input": LARGE}, lambda body: body["embeddings"][0]),
    "/api/embeddings": ({"model": "minilm", "prompt": LARGE}, lambda body: body["embedding"]),
    "/embed": ({"inputs": LARGE}, lambda body: body[0]),
}


def test_every_route_tokenizes_a_large_input_off_the_event_loop_and_gives_the_same_vector(
        serve: Serve, minilm: Callable[..., ServedModel], monkeypatch: pytest.MonkeyPatch) -> None:
    handed: list[str] = []
    threaded = limits.run_in_threadpool

    async def recorded(work: Callable[..., Any], *args: Any) -> Any:
        handed.append(path)
        return await threaded(work, *args)

    monkeypatch.setattr(limits, "run_in_threadpool", recorded)
    server = serve(minilm())
    vectors = {}
    for path, (body, vector) in ROUTES.items():
        answer = httpx.post(f"{server.url}{path}", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        vectors[path] = np.array(vector(answer.json()))
    assert handed == list(ROUTES)
    for path, vector in vectors.items():
        np.testing.assert_allclose(vector, vectors["/v1/embeddings"], rtol=1e-5, atol=1e-6, err_msg=path)
