"""The metric timeline behind the dashboard's charts: rates and percentiles from the server's own counters and
histograms, the ring buffer's window, and for a chat model (the tiny Llama through a real server) TTFT and
tokens/s."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from npuctl.artifacts import BuildResult, artifacts_of
from npuctl.serve.app import create_app
from npuctl.serve.http.server import BackgroundServer
from npuctl.serve.models import GenerationService, ModelStatus, Unavailable, load_served
from npuctl.serve.registry import ModelRegistry
from npuctl.serve.timeline import Timeline, quantile
from tests.manifests import write_deployment
from tests.serve.conftest import deployment


def test_quantile_interpolates_within_a_bucket_like_prometheus() -> None:
    buckets = [(0.01, 0.0), (0.1, 50.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(buckets, 0.5) == pytest.approx(0.1)
    assert quantile(buckets, 0.25) == pytest.approx(0.055)
    assert quantile(buckets, 0.95) == pytest.approx(0.91)
    assert quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None
    assert quantile([(0.1, 1.0), (float("inf"), 10.0)], 0.95) == pytest.approx(0.1), "+Inf bucket: the largest bound"


def test_timeline_turns_counters_into_rates_and_percentiles(tmp_path: Path) -> None:
    registry = ModelRegistry()
    loaded = write_deployment(tmp_path, "tiny", {"model": {"source": "file:tiny.onnx", "task": "tensor"}})
    registry.put(Unavailable(loaded.deployment, ModelStatus(False, "Loading", "not yet")))
    timeline = Timeline(registry, interval=2.0, window=6.0)
    metrics = registry.metrics
    timeline.sample(at=100.0)
    assert timeline.series()[0].samples == [], "the first reading is only a baseline"
    for seconds in [0.004] * 9 + [0.2]:
        metrics.observe_request("tiny", "oip", 200, seconds, None)
    for _ in range(4):
        metrics.observe_request("tiny", "oip", 429, 0.0001, "rate_limit_exceeded")
    metrics.observe_request("other-model", "oip", 200, 1.0, None)
    timeline.sample(at=102.0)
    [series] = timeline.series()
    assert (series.deployment, series.model, series.chat) == ("tiny", "tiny", False)
    [sample] = series.samples
    assert sample.requests_per_second == pytest.approx(14 / 2)
    assert sample.rejected_per_second == pytest.approx(4 / 2)
    assert sample.latency_p50_ms is not None and 2.5 <= sample.latency_p50_ms <= 5.0
    assert sample.latency_p95_ms is not None and 100 <= sample.latency_p95_ms <= 250
    for at in (104.0, 106.0, 108.0, 110.0):
        timeline.sample(at=at)
    samples = timeline.series()[0].samples
    assert [s.time for s in samples] == [106.0, 108.0, 110.0], "a window of 6 s at 2 s keeps 3 samples"
    assert [s.time for s in timeline.series(recent=3.0, at=110.0)[0].samples] == [108.0, 110.0]
    assert samples[-1].requests_per_second == 0 and samples[-1].latency_p50_ms is None
    registry.remove("tiny")
    timeline.sample(at=112.0)
    assert timeline.series() == [], "a removed deployment's series goes with it"


def test_a_chat_models_samples_carry_time_to_first_token_and_decode_speed(tiny_llama_build: BuildResult) -> None:
    spec = {"model": {"source": "file:unused", "task": "text-generation", "format": "genai"},
            "runtime": {"device": "cpu"}}
    served = load_served(deployment("chat", **spec), artifacts_of(tiny_llama_build))
    assert isinstance(served, GenerationService), served.status
    registry = ModelRegistry()
    registry.put(served)
    timeline = Timeline(registry)
    timeline.sample(at=10.0)
    try:
        with BackgroundServer(create_app(registry)) as server:
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
            for _ in range(3):
                answer = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hello"}],
                                                        max_tokens=12, extra_body={"ignore_eos": True})
                assert answer.usage is not None and answer.usage.completion_tokens == 12
            timeline.sample(at=12.0)
    finally:
        registry.close()
    [series] = timeline.series()
    assert series.chat and series.model == "chat"
    [sample] = series.samples
    assert sample.requests_per_second == pytest.approx(3 / 2)
    assert sample.ttft_p50_ms is not None and sample.ttft_p50_ms > 0
    assert sample.tokens_per_second is not None and sample.tokens_per_second > 0
    assert sample.queue_depth == 0
