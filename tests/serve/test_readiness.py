"""Readiness is honest: a deployment that would have to run on the CPU against `fallback: none` is not
ready, says why, and has no session at all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from npuctl.runtime import loading
from npuctl.runtime.sessions import OpenedSession
from npuctl.serve.models import ServedModel, Unavailable
from tests.serve.conftest import Serve


def test_fallback_none_without_an_npu_is_not_ready_and_opens_no_cpu_session(
    serve: Serve, minilm: Callable[..., ServedModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu_sessions: list[Path] = []

    def open_cpu(model: Path, choice: object = None) -> OpenedSession:
        cpu_sessions.append(model)
        raise AssertionError("a CPU session was opened")

    monkeypatch.setattr(loading, "open_cpu", open_cpu)
    strict = minilm("npu-only", runtime={"device": "npu", "fallback": "none"})
    assert isinstance(strict, Unavailable) and cpu_sessions == []
    assert not strict.status.ready and strict.status.provider is None
    monkeypatch.undo()
    server = serve(strict, minilm("relaxed"))

    ready = httpx.get(f"{server.url}/v2/models/npu-only/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False and body["reason"] == "SimulatorNotAllowed"
    assert "fallback is none" in body["message"] and "simulator" in body["message"]

    health = httpx.get(f"{server.url}/v2/health/ready")
    assert health.status_code == 503 and set(health.json()["notReady"]) == {"npu-only"}

    refused = httpx.post(f"{server.url}/v1/embeddings", json={"model": "npu-only", "input": "hello"})
    assert refused.status_code == 503 and "SimulatorNotAllowed" in refused.json()["error"]["message"]
    assert {m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]} == {"relaxed"}
    assert httpx.post(f"{server.url}/v1/embeddings", json={"model": "relaxed", "input": "hello"}).status_code == 200


def test_the_cpu_fallback_says_why_it_is_on_the_cpu(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    server = serve(minilm("auto"))
    status = httpx.get(f"{server.url}/v2/models/auto").json()["status"]
    assert status["ready"] is True and status["where"] == "cpu" and status["provider"] == "CPUExecutionProvider"
    assert status["npu_coverage"] == 0.0 and "simulator" in status["message"]
