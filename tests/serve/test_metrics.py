"""/metrics parses with prometheus_client's own parser and moves with traffic."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from npuctl.serve.models import ServedModel
from tests.serve.conftest import Serve

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_parse_and_move(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    server = serve(minilm("minilm"))
    before = scrape(server.url)
    assert value(before, "npuctl_model_provider", model="minilm", provider="CPUExecutionProvider", device="cpu") == 1
    assert value(before, "npuctl_model_ready", model="minilm") == 1
    assert value(before, "npuctl_model_readiness_info", model="minilm", reason="Serving") == 1
    assert value(before, "npuctl_queue_depth", model="minilm") == 0

    for _ in range(3):
        httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": ["a", "b"]})
    httpx.post(f"{server.url}/v1/embeddings", json={"model": "minilm", "input": []})
    for probe in ("/v2/health/live", "/v2/health/ready", "/v2/models/minilm/ready"):
        assert httpx.get(f"{server.url}{probe}").status_code == 200
    after = scrape(server.url)

    assert not [key for key in after if key[0] == "npuctl_requests_total" and ("api", "oip") in key[1]], \
        "health probes are counted as requests"
    assert value(after, "npuctl_requests_total", model="minilm", api="openai", code="200") == 3
    assert value(after, "npuctl_requests_total", model="minilm", api="openai", code="400") == 1
    assert value(after, "npuctl_request_errors_total", model="minilm", api="openai", type="invalid_request_error") == 1
    assert value(after, "npuctl_request_duration_seconds_count", model="minilm", api="openai") == 4
    assert value(after, "npuctl_batch_size_count", model="minilm") == 3
    assert value(after, "npuctl_batch_size_sum", model="minilm") == 6
    assert value(after, "npuctl_inference_duration_seconds_count", model="minilm") == 3


def test_a_model_not_ready_keeps_one_ready_series_and_says_why(serve: Serve, minilm: Callable[..., ServedModel]) -> None:
    from npuctl.serve.models import ModelStatus, Unavailable
    from tests.serve.conftest import deployment

    server = serve(minilm("minilm"), Unavailable(deployment("later"), ModelStatus(False, "Loading", "loading")))
    samples = scrape(server.url)
    assert value(samples, "npuctl_model_ready", model="later") == 0
    assert value(samples, "npuctl_model_readiness_info", model="later", reason="Loading") == 1
    assert [k for k in samples if k[0] == "npuctl_model_npu_coverage_ratio"] == [
        ("npuctl_model_npu_coverage_ratio", frozenset({("model", "minilm")}))]


def test_two_servers_keep_separate_counters(serve: Serve, tensor: Callable[..., ServedModel]) -> None:
    one, two = serve(tensor("tiny")), serve(tensor("tiny"))
    httpx.get(f"{one.url}/v2/models/tiny")
    assert value(scrape(one.url), "npuctl_requests_total", model="tiny", api="oip", code="200") == 1
    assert value(scrape(two.url), "npuctl_requests_total", model="tiny", api="oip", code="200") == 0
